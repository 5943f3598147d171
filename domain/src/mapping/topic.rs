//! Topic patterns of mappings and MQTT filters.
//!
//! A pattern's levels are literals, `+` (any one level), a final `#`,
//! captures of one level (`{site}`, `{device_id}`, or any `{name}` a
//! value's `device` template may use) and one capture of one or more
//! levels (`{device_id+}`: Zigbee2MQTT's friendly names with `/` in them,
//! a Shelly's multi-level `topic_prefix`), joined by `/` when captured.

/// One level of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level<'p> {
    Literal(&'p str),
    Any,
    Rest,
    One(&'p str),
    Many(&'p str),
}

fn levels(pattern: &str) -> Vec<Level<'_>> {
    pattern
        .split('/')
        .map(|l| match l {
            "+" => Level::Any,
            "#" => Level::Rest,
            _ => match l.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                Some(name) => match name.strip_suffix('+') {
                    Some(n) => Level::Many(n),
                    None => Level::One(name),
                },
                None => Level::Literal(l),
            },
        })
        .collect()
}

/// What a pattern may be: `Err` says why not.
pub fn check(pattern: &str) -> Result<(), String> {
    let ls = levels(pattern);
    let many = ls.iter().filter(|l| matches!(l, Level::Many(_))).count();
    if many > 1 {
        return Err(format!(
            "`{pattern}`: at most one capture of several levels"
        ));
    }
    if let Some(i) = ls.iter().position(|l| *l == Level::Rest) {
        if i + 1 != ls.len() {
            return Err(format!("`{pattern}`: # must be last"));
        }
        if many > 0 {
            return Err(format!(
                "`{pattern}`: a capture of several levels and # cannot be combined"
            ));
        }
    }
    for l in pattern.split('/') {
        let inner = l.strip_prefix('{').and_then(|x| x.strip_suffix('}'));
        let bad = match inner {
            Some(n) => {
                let n = n.strip_suffix('+').unwrap_or(n);
                n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
            None => l.contains(['{', '}']) || (l.contains(['+', '#']) && l.len() > 1),
        };
        if bad {
            return Err(format!(
                "`{l}`: a level is a literal, +, #, {{name}} or {{name+}}"
            ));
        }
    }
    Ok(())
}

/// The subscription filter of a pattern: one-level captures as `+`, and
/// `#` from a capture of several levels on.
pub fn filter_of(pattern: &str) -> String {
    let mut out = Vec::new();
    for (raw, l) in pattern.split('/').zip(levels(pattern)) {
        match l {
            Level::Many(_) | Level::Rest => {
                out.push("#");
                break;
            }
            Level::One(_) | Level::Any => out.push("+"),
            Level::Literal(_) => out.push(raw),
        }
    }
    out.join("/")
}

/// A topic's captures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    pairs: Vec<(String, String)>,
}

impl Captures {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `{name}` of every capture replaced in `template`.
    pub fn fill(&self, template: &str) -> String {
        let mut out = template.to_owned();
        for (n, v) in &self.pairs {
            out = out.replace(&format!("{{{n}}}"), v);
        }
        out
    }
}

fn level_fits(l: Level<'_>, part: &str, caps: &mut Captures) -> bool {
    match l {
        Level::Literal(x) => x == part,
        Level::Any => !part.is_empty(),
        Level::One(n) => {
            if part.is_empty() {
                return false;
            }
            caps.pairs.push((n.to_owned(), part.to_owned()));
            true
        }
        Level::Rest | Level::Many(_) => true,
    }
}

/// The captures of `topic` when it fits `pattern`.
pub fn captures(pattern: &str, topic: &str) -> Option<Captures> {
    let ls = levels(pattern);
    let parts: Vec<&str> = topic.split('/').collect();
    let mut caps = Captures::default();
    if let Some(i) = ls.iter().position(|l| matches!(l, Level::Many(_))) {
        let Level::Many(name) = ls[i] else {
            unreachable!()
        };
        let tail = ls.len() - i - 1;
        if parts.len() < ls.len() {
            return None;
        }
        for (l, p) in ls[..i].iter().zip(&parts[..i]) {
            if !level_fits(*l, p, &mut caps) {
                return None;
            }
        }
        let rest = &parts[parts.len() - tail..];
        for (l, p) in ls[i + 1..].iter().zip(rest) {
            if !level_fits(*l, p, &mut caps) {
                return None;
            }
        }
        let middle = &parts[i..parts.len() - tail];
        if middle.iter().any(|p| p.is_empty()) {
            return None;
        }
        caps.pairs.push((name.to_owned(), middle.join("/")));
        return Some(caps);
    }
    for (i, l) in ls.iter().enumerate() {
        if *l == Level::Rest {
            return Some(caps);
        }
        let part = parts.get(i)?;
        if !level_fits(*l, part, &mut caps) {
            return None;
        }
    }
    (parts.len() == ls.len()).then_some(caps)
}

/// The filter without a shared-subscription prefix (`$share/<group>/`).
fn unshared(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
        None => filter,
    }
}

/// Whether an MQTT filter matches a topic (MQTT 3.1.1 §4.7; `$` topics
/// match only filters that name them).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let filter = unshared(filter);
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    for (i, l) in f.iter().enumerate() {
        match *l {
            "#" => return true,
            "+" if i < t.len() => {}
            x if t.get(i) == Some(&x) => {}
            _ => return false,
        }
    }
    f.len() == t.len()
}

/// Whether some topic matches both filters (so the broker may deliver a
/// message once for each).
pub fn intersect(a: &str, b: &str) -> bool {
    let fa: Vec<&str> = unshared(a).split('/').collect();
    let fb: Vec<&str> = unshared(b).split('/').collect();
    for i in 0..fa.len().max(fb.len()) {
        match (fa.get(i), fb.get(i)) {
            (Some(&"#"), _) | (_, Some(&"#")) => return true,
            (Some(x), Some(y)) if *x == "+" || *y == "+" || x == y => {}
            _ => return false,
        }
    }
    true
}

/// Whether filter `a` matches every topic filter `b` matches (so
/// subscribing to both would deliver those messages twice).
pub fn covers(a: &str, b: &str) -> bool {
    // A shared subscription and a plain one are delivered differently (the
    // Sparkplug host is never shared): neither stands in for the other.
    let group = |f: &str| {
        f.strip_prefix("$share/")
            .and_then(|r| r.split_once('/'))
            .map(|(g, _)| g.to_owned())
    };
    if group(a) != group(b) {
        return false;
    }
    let (a, b) = (unshared(a), unshared(b));
    let fa: Vec<&str> = a.split('/').collect();
    let fb: Vec<&str> = b.split('/').collect();
    for (i, l) in fa.iter().enumerate() {
        match (*l, fb.get(i)) {
            ("#", _) => return !b.starts_with('$') || a.starts_with('$') || i > 0,
            (_, None) => return false,
            (_, Some(&"#")) => return false,
            ("+", Some(_)) => {}
            (x, Some(y)) if x == *y => {}
            _ => return false,
        }
    }
    fa.len() == fb.len()
}

/// The filters, less every one another already covers (the first of
/// equal ones kept).
pub fn minimal(filters: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let covered = filters
            .iter()
            .enumerate()
            .any(|(j, g)| j != i && covers(g, f) && (!covers(f, g) || j < i));
        if !covered {
            out.push(f.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_of_one_and_of_several_levels() {
        let c = captures(
            "zigbee2mqtt/{device_id+}",
            "zigbee2mqtt/floor3/corridor/plug",
        )
        .unwrap();
        assert_eq!(c.get("device_id"), Some("floor3/corridor/plug"));
        let c = captures(
            "zigbee2mqtt/{device_id+}/availability",
            "zigbee2mqtt/floor3/plug/availability",
        )
        .unwrap();
        assert_eq!(c.get("device_id"), Some("floor3/plug"));
        assert!(captures(
            "zigbee2mqtt/{device_id+}/availability",
            "zigbee2mqtt/availability"
        )
        .is_none());
        let c = captures(
            "{device_id+}/status/{component}",
            "home/kitchen/status/switch:0",
        )
        .unwrap();
        assert_eq!(c.get("device_id"), Some("home/kitchen"));
        assert_eq!(c.get("component"), Some("switch:0"));
        assert_eq!(c.fill("{device_id}-{component}"), "home/kitchen-switch:0");
        assert!(captures("gw/{site}/+/{device_id}/#", "gw/hv/x/m1").is_some());
        assert!(captures("gw/{site}/+/{device_id}/#", "gw/hv/x").is_none());
        assert!(captures("a/{device_id}", "a/").is_none());
        assert_eq!(
            filter_of("zigbee2mqtt/{device_id+}/availability"),
            "zigbee2mqtt/#"
        );
        assert_eq!(filter_of("{device_id}/status/{component}"), "+/status/+");
        assert!(check("a/{x+}/{y+}").is_err());
        assert!(check("a/{x+}/#").is_err());
        assert!(check("a/b+c").is_err());
        assert!(check("a/{device_id+}/events/rpc").is_ok());
    }

    #[test]
    fn filters_cover_and_match() {
        assert!(covers("zigbee2mqtt/#", "zigbee2mqtt/+/availability"));
        assert!(covers("$share/g/zigbee2mqtt/#", "$share/g/zigbee2mqtt/+"));
        assert!(
            !covers("$share/g/+/#", "spBv1.0/#"),
            "a shared filter never stands in for a plain one"
        );
        assert!(intersect("+/status/+", "zigbee2mqtt/#"));
        assert!(intersect("a/b", "a/+"));
        assert!(!intersect("tele/+/SENSOR", "zigbee2mqtt/#"));
        assert!(!intersect("a/b", "a/b/c"));
        assert!(intersect("a/#", "a"));
        assert!(!covers("zigbee2mqtt/+", "zigbee2mqtt/#"));
        assert!(covers("+/events/rpc", "plug/events/rpc"));
        assert!(!covers("+/online", "zigbee2mqtt/#"));
        assert!(covers("#", "a/b"));
        assert!(!covers("#", "$SYS/x"));
        assert_eq!(
            minimal(&[
                "zigbee2mqtt/+/availability".into(),
                "zigbee2mqtt/#".into(),
                "zigbee2mqtt/#".into(),
                "tele/+/SENSOR".into()
            ]),
            ["zigbee2mqtt/#", "tele/+/SENSOR"]
        );
        assert!(filter_matches("zigbee2mqtt/#", "zigbee2mqtt/a/b"));
        assert!(filter_matches("zigbee2mqtt/#", "zigbee2mqtt"));
        assert!(filter_matches("+/status/+", "p/status/switch:0"));
        assert!(!filter_matches("+/status/+", "p/status"));
        assert!(!filter_matches("#", "$SYS/broker"));
    }
}
