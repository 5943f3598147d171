//! Topic templates: which payload format a topic carries and which device
//! (and site) it names. Pure; tested without a broker.

use estatemon_domain::config::TopicsConfig;

pub use estatemon_domain::device::MAX_ID_LEN;

/// The payload format of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Telemetry,
    Events,
    Senml,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Telemetry => "telemetry",
            Channel::Events => "events",
            Channel::Senml => "senml",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Site,
    Device,
}

#[derive(Debug, Clone)]
struct Template {
    channel: Channel,
    levels: Vec<Level>,
}

/// What a topic says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicMatch<'a> {
    pub channel: Channel,
    pub site: Option<&'a str>,
    pub device_id: &'a str,
}

/// The configured templates, matched in order telemetry, events, senml.
#[derive(Debug, Clone)]
pub struct Topics {
    templates: Vec<Template>,
}

impl Topics {
    /// Templates are checked by the configuration loader; this trusts them.
    pub fn new(config: &TopicsConfig) -> Topics {
        let parse = |channel, template: &str| Template {
            channel,
            levels: template
                .split('/')
                .map(|l| match l {
                    "{site}" => Level::Site,
                    "{device_id}" => Level::Device,
                    other => Level::Literal(other.to_owned()),
                })
                .collect(),
        };
        Topics {
            templates: vec![
                parse(Channel::Telemetry, &config.telemetry),
                parse(Channel::Events, &config.events),
                parse(Channel::Senml, &config.senml),
            ],
        }
    }

    /// Subscription filters, wide enough that every message under a
    /// template's fixed prefix reaches ingest: `estatemon/{site}/{device_id}/telemetry`
    /// subscribes `estatemon/#`, so a topic one level short or with a stray
    /// suffix is received and kept as an `unknown_topic` dead letter instead
    /// of never arriving. A template that starts with a placeholder has no
    /// prefix to widen (`#` would take the whole broker) and subscribes as
    /// written, placeholders as `+`. With a group, each filter is a shared
    /// subscription `$share/{group}/…`.
    pub fn filters(&self, shared_group: Option<&str>) -> Vec<String> {
        let mut wide: Vec<Vec<&str>> = self
            .templates
            .iter()
            .map(|t| {
                let prefix: Vec<&str> = t
                    .levels
                    .iter()
                    .map_while(|l| match l {
                        Level::Literal(s) => Some(s.as_str()),
                        Level::Site | Level::Device => None,
                    })
                    .collect();
                if prefix.is_empty() {
                    t.levels
                        .iter()
                        .map(|l| match l {
                            Level::Literal(s) => s.as_str(),
                            Level::Site | Level::Device => "+",
                        })
                        .collect()
                } else if prefix.len() == t.levels.len() {
                    // No placeholder at all (the loader refuses this; keep
                    // it exact rather than guess).
                    prefix
                } else {
                    prefix.into_iter().chain(["#"]).collect()
                }
            })
            .collect();
        // Shortest first, then drop what a kept `prefix/#` already covers.
        wide.sort_by_key(|f| f.len());
        let mut kept: Vec<Vec<&str>> = Vec::new();
        for f in wide {
            let covered = kept.iter().any(|k| {
                k.last() == Some(&"#") && f.len() >= k.len() - 1 && {
                    let head = &k[..k.len() - 1];
                    head.iter().zip(&f).all(|(a, b)| a == b)
                }
            });
            if !covered {
                kept.push(f);
            }
        }
        kept.into_iter()
            .map(|levels| {
                let filter = levels.join("/");
                match shared_group {
                    Some(group) => format!("$share/{group}/{filter}"),
                    None => filter,
                }
            })
            .collect()
    }

    /// The first template the topic fits.
    pub fn matches<'a>(&self, topic: &'a str) -> Option<TopicMatch<'a>> {
        let parts: Vec<&str> = topic.split('/').collect();
        'templates: for t in &self.templates {
            if t.levels.len() != parts.len() {
                continue;
            }
            let (mut site, mut device) = (None, None);
            for (level, part) in t.levels.iter().zip(&parts) {
                match level {
                    Level::Literal(l) if l != part => continue 'templates,
                    Level::Literal(_) => {}
                    Level::Site => site = Some(*part),
                    Level::Device => device = Some(*part),
                }
            }
            // Ids become primary keys: an empty or absurdly long one is not
            // a device (and a key over ~2.7 kB would fail the whole batch).
            let Some(device_id) = device.filter(|d| !d.is_empty() && d.len() <= MAX_ID_LEN) else {
                continue;
            };
            if site.is_some_and(|s| s.len() > MAX_ID_LEN) {
                continue;
            }
            return Some(TopicMatch {
                channel: t.channel,
                site: site.filter(|s| !s.is_empty()),
                device_id,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout() {
        let topics = Topics::new(&TopicsConfig::default());
        // One wide filter: a topic one level short still arrives (and
        // becomes an `unknown_topic` dead letter).
        assert_eq!(topics.filters(None), vec!["estatemon/#"]);
        assert_eq!(
            topics.filters(Some("ingest")),
            vec!["$share/ingest/estatemon/#"]
        );
        let m = topics.matches("estatemon/hv/meter-1/senml").unwrap();
        assert_eq!(
            (m.channel, m.site, m.device_id),
            (Channel::Senml, Some("hv"), "meter-1")
        );
        assert!(topics.matches("estatemon/hv/meter-1/other").is_none());
        assert!(topics.matches("estatemon/hv/telemetry").is_none());
        let long = format!("estatemon/hv/{}/telemetry", "x".repeat(MAX_ID_LEN + 1));
        assert!(topics.matches(&long).is_none());
    }

    #[test]
    fn gateway_layouts_without_site() {
        let topics = Topics::new(&TopicsConfig {
            telemetry: "gw/{device_id}/up".into(),
            events: "gw/{device_id}/evt".into(),
            senml: "lwm2m/{device_id}".into(),
        });
        let m = topics.matches("gw/pump-3/up").unwrap();
        assert_eq!(
            (m.channel, m.site, m.device_id),
            (Channel::Telemetry, None, "pump-3")
        );
        assert_eq!(topics.matches("lwm2m/x").unwrap().channel, Channel::Senml);
        assert_eq!(topics.filters(None), vec!["gw/#", "lwm2m/#"]);
    }

    #[test]
    fn template_starting_with_a_placeholder_is_not_widened_to_everything() {
        let topics = Topics::new(&TopicsConfig {
            telemetry: "{device_id}/up".into(),
            events: "dev/{site}/{device_id}/evt".into(),
            senml: "dev/{device_id}/senml".into(),
        });
        assert_eq!(topics.filters(None), vec!["+/up", "dev/#"]);
    }
}
