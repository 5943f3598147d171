//! What ingest does with a message on a mapped topic, in one place for
//! ingest and `estatemon mapping test`: availability, topics known to
//! carry nothing, and every mapping whose topic and conditions fit.

use chrono::{DateTime, Utc};

use super::{Mapped, Mapping, MappingError, Said};

/// What the mappings made of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// No mapping's topic (nor availability topic) fits.
    NoMapping,
    /// A device's online/offline message.
    Availability(Result<Said, MappingError>),
    /// A topic the named mapping knows carries no readings.
    Ignored(String),
    Mapped {
        /// One result per mapping whose topic and conditions fit.
        results: Vec<Mapped>,
        /// Mappings that could not read the message at all.
        errors: Vec<MappingError>,
        /// Mappings whose topic fits but whose `when` does not hold.
        unmet: Vec<String>,
        /// A retained message without a time of its own, delivered again
        /// at (re)subscription: its readings' time is unknown, so they are
        /// not stored (the mappings it came through).
        retained_without_time: Vec<String>,
    },
}

/// Routes a message through `mappings`. `retained`: the broker delivered
/// it from its retained store (a subscription's first message).
pub fn route(
    mappings: &[Mapping],
    topic: &str,
    payload: &[u8],
    received_at: DateTime<Utc>,
    retained: bool,
) -> Routed {
    let refs: Vec<&Mapping> = mappings.iter().collect();
    route_refs(&refs, topic, payload, received_at, retained)
}

fn route_refs(
    mappings: &[&Mapping],
    topic: &str,
    payload: &[u8],
    received_at: DateTime<Utc>,
    retained: bool,
) -> Routed {
    if let Some(said) = mappings
        .iter()
        .find_map(|m| m.apply_availability(topic, payload))
    {
        return Routed::Availability(said);
    }
    if let Some(m) = mappings.iter().find(|m| m.ignores(topic)) {
        return Routed::Ignored(m.name.clone());
    }
    let mut any = false;
    let (mut results, mut errors, mut unmet, mut stale) = (vec![], vec![], vec![], vec![]);
    for m in mappings.iter().copied() {
        if m.match_topic(topic).is_none() {
            continue;
        }
        any = true;
        match m.apply(topic, payload, received_at) {
            Ok(None) => unmet.push(m.name.clone()),
            Ok(Some(mut out)) => {
                if retained && out.time_from_receipt {
                    out.readings.clear();
                    stale.push(m.name.clone());
                }
                results.push(out);
            }
            Err(e) => errors.push(e),
        }
    }
    if !any {
        return Routed::NoMapping;
    }
    Routed::Mapped {
        results,
        errors,
        unmet,
        retained_without_time: stale,
    }
}

/// The mappings in force, indexed by their literal topics: Home
/// Assistant discovery adds one mapping per entity (thousands on a large
/// site), each on a plain state topic, and a message must not be tried
/// against all of them.
#[derive(Debug, Clone, Default)]
pub struct MappingSet {
    mappings: Vec<Mapping>,
    /// Literal topic (a mapping's or its availability's) → mappings.
    literal: std::collections::HashMap<String, Vec<usize>>,
    /// Mappings whose topic or availability topic has wildcards.
    patterns: Vec<usize>,
}

fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['+', '#', '{', '}'])
}

impl MappingSet {
    pub fn new(mappings: Vec<Mapping>) -> MappingSet {
        let mut set = MappingSet {
            mappings,
            ..MappingSet::default()
        };
        set.index();
        set
    }

    fn index(&mut self) {
        self.literal.clear();
        self.patterns.clear();
        for (i, m) in self.mappings.iter().enumerate() {
            let mut topics = vec![m.topic.as_str()];
            topics.extend(m.availability.as_ref().map(|a| a.topic.as_str()));
            if topics.iter().all(|t| is_literal(t)) && m.ignore.is_empty() {
                for t in topics {
                    let at = self.literal.entry(t.to_owned()).or_default();
                    if !at.contains(&i) {
                        at.push(i);
                    }
                }
            } else {
                self.patterns.push(i);
            }
        }
    }

    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// Adds mappings, then keeps those `keep` accepts.
    pub fn update(&mut self, add: Vec<Mapping>, keep: impl Fn(&Mapping) -> bool) {
        self.mappings.retain(|m| keep(m));
        self.mappings.extend(add);
        self.index();
    }

    /// Routes a message through the mappings that may fit its topic, in
    /// their configured order (see [`route`]).
    pub fn route(
        &self,
        topic: &str,
        payload: &[u8],
        received_at: DateTime<Utc>,
        retained: bool,
    ) -> Routed {
        let mut candidates: Vec<usize> = self.patterns.clone();
        if let Some(l) = self.literal.get(topic) {
            candidates.extend(l);
            candidates.sort_unstable();
        }
        let subset: Vec<&Mapping> = candidates.into_iter().map(|i| &self.mappings[i]).collect();
        route_refs(&subset, topic, payload, received_at, retained)
    }
}

/// What a Home Assistant discovery config changed in a [`MappingSet`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovered {
    /// The entities now read: (mapping name, state topic, availability
    /// topic), the topics to subscribe.
    pub added: Vec<(String, String, Option<String>)>,
    /// Entities not read because a configured mapping (a profile or
    /// `[[ingest.mapping]]`) already reads their state topic: reading it
    /// again would store every reading twice under another device id.
    /// (entity, the mapping that reads it).
    pub read_elsewhere: Vec<(String, String)>,
}

/// Whether a mapping came from discovery config `name` (a sensor config,
/// or a component of a device config, `name#component`).
fn of_config(m: &Mapping, name: &str) -> bool {
    m.name == name
        || m.name
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('#'))
}

impl MappingSet {
    /// The mappings discovery config `replaces` announces, in place of what
    /// it announced before; the one bookkeeping ingest and `mapping test`
    /// share.
    pub fn discovered(&mut self, replaces: &str, mut new: Vec<Mapping>) -> Discovered {
        let mut out = Discovered::default();
        new.retain(|m| {
            let reader = self.mappings.iter().find(|x| {
                !x.name.starts_with("homeassistant:") && x.match_topic(&m.topic).is_some()
            });
            if let Some(x) = reader {
                out.read_elsewhere.push((m.name.clone(), x.name.clone()));
            }
            reader.is_none()
        });
        super::homeassistant::disambiguate(&self.mappings, &mut new, replaces);
        out.added = new
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    m.topic.clone(),
                    m.availability.as_ref().map(|a| a.topic.clone()),
                )
            })
            .collect();
        self.update(new, |x| !of_config(x, replaces));
        out
    }

    /// Drops what discovery config `name` announced (an empty retained
    /// config).
    pub fn removed(&mut self, name: &str) {
        self.update(Vec::new(), |x| !of_config(x, name));
    }
}
