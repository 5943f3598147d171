//! Paths into a JSON payload: `$` (the whole payload), `ENERGY.Total`,
//! `params.switch:0.aenergy.total` (a key may hold `:`), `a.b[0]`,
//! `a.b[*].c` (every element), `params.*.apower` (every key).

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
    /// Every element or value.
    All,
}

pub(super) fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    // The whole payload (a bare number: `21.5`).
    if path == "$" {
        return Ok(steps);
    }
    for part in path.split('.') {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        match key {
            "" if rest.is_empty() => return Err(format!("`{path}`: an empty step")),
            "" => {}
            "*" => steps.push(Step::All),
            k => steps.push(Step::Key(k.to_owned())),
        }
        let mut rest = rest;
        while !rest.is_empty() {
            let end = rest
                .find(']')
                .ok_or_else(|| format!("`{path}`: unclosed ["))?;
            let inner = &rest[1..end];
            steps.push(match inner {
                "*" => Step::All,
                n => Step::Index(
                    n.parse()
                        .map_err(|_| format!("`{path}`: `[{n}]` is not an index"))?,
                ),
            });
            rest = &rest[end + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("`{path}`: text after ]"));
            }
        }
    }
    Ok(steps)
}

/// Whether a path fans out (`*` or `[*]`).
pub(super) fn fans_out(path: &str) -> bool {
    parse_path(path).is_ok_and(|s| s.contains(&Step::All))
}

/// The values a path reaches, each with the key or index its last `*`
/// matched. A path that does not parse reaches nothing.
pub fn select<'v>(json: &'v Value, path: &str) -> Vec<(&'v Value, Option<String>)> {
    let Ok(steps) = parse_path(path) else {
        return Vec::new();
    };
    let mut current: Vec<(&Value, Option<String>)> = vec![(json, None)];
    for step in &steps {
        let mut next = Vec::new();
        for (v, key) in current {
            match (step, v) {
                (Step::Key(k), Value::Object(m)) => {
                    if let Some(x) = m.get(k) {
                        next.push((x, key));
                    }
                }
                (Step::Index(i), Value::Array(a)) => {
                    if let Some(x) = a.get(*i) {
                        next.push((x, key));
                    }
                }
                (Step::All, Value::Array(a)) => {
                    next.extend(a.iter().enumerate().map(|(i, x)| (x, Some(i.to_string()))));
                }
                (Step::All, Value::Object(m)) => {
                    next.extend(m.iter().map(|(k, x)| (x, Some(k.clone()))));
                }
                _ => {}
            }
        }
        current = next;
    }
    current.into_iter().filter(|(v, _)| !v.is_null()).collect()
}

pub(super) fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
