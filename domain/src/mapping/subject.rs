//! MQTT topics as NATS subjects, the way the NATS server's MQTT gateway
//! names them (nats-server `server/mqtt.go`: `mqttToNATSSubjectConversion`
//! and `natsSubjectToMQTTTopic`), so that a device publishing MQTT to a
//! NATS node and ingest reading the JetStream stream agree on every topic:
//!
//! | MQTT            | NATS              |
//! |-----------------|-------------------|
//! | `a/b/c`         | `a.b.c`           |
//! | `spBv1.0/g/n`   | `spBv1//0.g.n`    | (a dot in a level)
//! | `/a`            | `/.a`             | (an empty first level)
//! | `a//b`          | `a./.b`           | (an empty level)
//! | `a/`            | `a./`             | (an empty last level)
//! | `+`, `#`        | `*`, `>`          | (filters only)
//!
//! Whitespace cannot be carried (the gateway refuses such a topic), nor
//! NATS's own wildcards `*` and `>` in a topic name.

/// The subject the gateway publishes an MQTT topic on, or (with
/// `wildcards`) the subject filter matching what an MQTT filter matches.
pub fn to_subject(topic: &str, wildcards: bool) -> Result<String, String> {
    if topic.is_empty() {
        return Err("an empty topic has no subject".into());
    }
    let chars: Vec<char> = topic.chars().collect();
    let mut out = String::with_capacity(topic.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '/' => {
                if i == 0 || out.ends_with('.') {
                    // An empty level before this separator.
                    out.push_str("/.");
                } else if i == chars.len() - 1 || chars[i + 1] == '/' {
                    // An empty level after it.
                    out.push_str("./");
                } else {
                    out.push('.');
                }
            }
            '.' => out.push_str("//"),
            c if c.is_whitespace() => {
                return Err(format!("`{topic}`: NATS subjects cannot hold whitespace"))
            }
            '+' | '#' if !wildcards => {
                return Err(format!("`{topic}`: a topic name holds no wildcard"))
            }
            '+' => out.push('*'),
            '#' => out.push('>'),
            '*' | '>' => {
                return Err(format!(
                    "`{topic}`: `{c}` is a NATS wildcard and cannot be carried"
                ))
            }
            c => out.push(c),
        }
    }
    // An empty last level after an empty one (`/`, `//`): the server
    // closes it with `/` (nats-server `mqttToNATSSubjectConversion`).
    if out.ends_with('.') {
        out.push('/');
    }
    Ok(out)
}

/// The subject filters a stream needs to capture everything an MQTT
/// filter matches: `a/#` matches `a` itself too, which `a.>` does not.
pub fn filter_subjects(filter: &str) -> Result<Vec<String>, String> {
    let main = to_subject(filter, true)?;
    Ok(match filter.strip_suffix("/#") {
        Some(parent) if !parent.is_empty() => vec![to_subject(parent, true)?, main],
        _ => vec![main],
    })
}

/// The MQTT topic of a subject the gateway (or a NATS client following
/// its convention) published on.
/// A subject filter as the MQTT topic filter of the same topics
/// (`a.*.b.>` is `a/+/b/#`, `spBv1//0.>` is `spBv1.0/#`).
pub fn to_filter(subject: &str) -> String {
    to_topic(subject)
        .split('/')
        .map(|l| match l {
            "*" => "+",
            ">" => "#",
            l => l,
        })
        .collect::<Vec<_>>()
        .join("/")
}

pub fn to_topic(subject: &str) -> String {
    let chars: Vec<char> = subject.chars().collect();
    let mut out = String::with_capacity(subject.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' => match chars.get(i + 1) {
                Some('.') => {
                    out.push('/');
                    i += 1;
                }
                Some('/') => {
                    out.push('.');
                    i += 1;
                }
                // The `/` of an empty last level (`a./`), or a lone one.
                _ => {}
            },
            '.' => out.push('/'),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Checks a configured stream subject: non-empty tokens, `>` only last,
/// no whitespace.
pub fn check_subject(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(format!("`{s}`: a subject is non-empty, without whitespace"));
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!("`{s}`: empty token"));
        }
        if *t == ">" && i != tokens.len() - 1 {
            return Err(format!("`{s}`: `>` only as the last token"));
        }
        if t.len() > 1 && (t.contains('*') || t.contains('>')) {
            return Err(format!("`{s}`: `*` and `>` are whole tokens"));
        }
    }
    Ok(())
}

/// Whether the subject filter `filter` matches `subject` (NATS rules).
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_gateways_own_examples() {
        for (topic, subject) in [
            ("a/b/c", "a.b.c"),
            ("spBv1.0/plant/NDATA/node-1", "spBv1//0.plant.NDATA.node-1"),
            ("/a", "/.a"),
            ("a//b", "a./.b"),
            ("a/", "a./"),
            ("//", "/././"),
            ("/", "/./"),
            ("tele/大廈A/SENSOR", "tele.大廈A.SENSOR"),
        ] {
            assert_eq!(to_subject(topic, false).unwrap(), subject, "{topic}");
            assert_eq!(to_topic(subject), topic, "{subject}");
        }
        assert_eq!(
            to_subject("estatemon/+/+/telemetry", true).unwrap(),
            "estatemon.*.*.telemetry"
        );
        assert_eq!(
            filter_subjects("spBv1.0/#").unwrap(),
            vec!["spBv1//0".to_owned(), "spBv1//0.>".to_owned()]
        );
        assert!(to_subject("a b", false).is_err());
        assert!(to_subject("a/+", false).is_err());
        assert!(to_subject("a/*", true).is_err());
        assert!(check_subject("a.>.b").is_err());
        assert!(check_subject("a..b").is_err());
        assert!(check_subject("estatemon.*.*.telemetry").is_ok());
        assert!(matches(
            "estatemon.*.*.telemetry",
            "estatemon.s.d.telemetry"
        ));
        assert!(!matches("estatemon.*.*.telemetry", "estatemon.s.d.events"));
        assert!(matches("spBv1//0.>", "spBv1//0.g.NDATA.n"));
        assert!(!matches("a.>", "a"));
    }

    proptest! {
        /// Every topic the gateway carries comes back as itself.
        #[test]
        fn a_topic_survives_the_round_trip(topic in "[a-zA-Z0-9_./\\-大廈]{1,40}") {
            let subject = to_subject(&topic, false).unwrap();
            prop_assert_eq!(to_topic(&subject), topic);
        }

        /// A topic matches a filter in MQTT exactly when its subject
        /// matches the filter's subjects in NATS.
        #[test]
        fn filters_match_as_in_mqtt(
            levels in proptest::collection::vec("[ab.]{1,2}", 1..5),
            pattern in proptest::collection::vec(0u8..3, 1..5),
        ) {
            let topic = levels.join("/");
            let mut f: Vec<String> = Vec::new();
            for (i, p) in pattern.iter().enumerate() {
                match p {
                    0 => f.push(levels.get(i).cloned().unwrap_or_else(|| "a".into())),
                    1 => f.push("+".into()),
                    _ => { f.push("#".into()); break; }
                }
            }
            let filter = f.join("/");
            let mqtt = crate::mapping::topic::filter_matches(&filter, &topic);
            let subject = to_subject(&topic, false).unwrap();
            let nats = filter_subjects(&filter).unwrap().iter().any(|s| matches(s, &subject));
            prop_assert_eq!(mqtt, nats, "filter {} topic {} subject {}", filter, topic, subject);
        }
    }
}
