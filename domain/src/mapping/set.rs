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
    for m in mappings {
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
