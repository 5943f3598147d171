//! Dead letters: messages (or parts of messages) that could not be stored,
//! kept with their topic, raw payload and a reason a person can read.
//!
//! A dead letter never stops the stream, and the good readings around it are
//! stored. Payloads from the events topic may carry access credentials; they
//! are redacted here before the payload goes anywhere.

use chrono::{DateTime, Utc};
use estatemon_domain::pseudonym::Pseudonymiser;

/// Why something was rejected. The label is stable: dashboards and alert
/// rules count dead letters by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InvalidJson,
    NonFiniteValue,
    MissingField,
    InvalidField,
    InvalidTimestamp,
    TimestampInFuture,
    TimestampTooOld,
    UnknownMetric,
    UnknownUnit,
    UnknownEventType,
    InvalidValue,
    UnknownTopic,
    PayloadTooLarge,
    EmptyPayload,
    /// Valid by every rule estatemon knows, refused by the database (a
    /// constraint added by an operator, a value out of a column's range).
    StorageRejected,
    /// Not a Sparkplug B protobuf on a Sparkplug topic.
    InvalidProtobuf,
    /// Out of Sparkplug's order: DATA before BIRTH, an alias no birth
    /// defined, the death of an earlier session.
    SparkplugOutOfState,
    /// A patrol app's inspection the ledger refused: no such device, or an
    /// item not on the device's checklist.
    InspectionRefused,
    /// Not a loss: a device whose clock is not set (a time before 2010);
    /// its readings were stored at their receipt, and this says so.
    ClockUnsynced,
    /// An imported row whose time an earlier row of the file already gave,
    /// with another value (the earlier row is kept).
    ConflictingDuplicate,
}

impl Reason {
    pub const ALL: &'static [Reason] = &[
        Reason::InvalidJson,
        Reason::NonFiniteValue,
        Reason::MissingField,
        Reason::InvalidField,
        Reason::InvalidTimestamp,
        Reason::TimestampInFuture,
        Reason::TimestampTooOld,
        Reason::UnknownMetric,
        Reason::UnknownUnit,
        Reason::UnknownEventType,
        Reason::InvalidValue,
        Reason::UnknownTopic,
        Reason::PayloadTooLarge,
        Reason::EmptyPayload,
        Reason::StorageRejected,
        Reason::InvalidProtobuf,
        Reason::SparkplugOutOfState,
        Reason::InspectionRefused,
        Reason::ClockUnsynced,
        Reason::ConflictingDuplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::NonFiniteValue => "non_finite_value",
            Reason::MissingField => "missing_field",
            Reason::InvalidField => "invalid_field",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::TimestampInFuture => "timestamp_in_future",
            Reason::TimestampTooOld => "timestamp_too_old",
            Reason::UnknownMetric => "unknown_metric",
            Reason::UnknownUnit => "unknown_unit",
            Reason::UnknownEventType => "unknown_event_type",
            Reason::InvalidValue => "invalid_value",
            Reason::UnknownTopic => "unknown_topic",
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::EmptyPayload => "empty_payload",
            Reason::StorageRejected => "storage_rejected",
            Reason::InvalidProtobuf => "invalid_protobuf",
            Reason::SparkplugOutOfState => "sparkplug_out_of_state",
            Reason::InspectionRefused => "inspection_refused",
            Reason::ClockUnsynced => "clock_unsynced",
            Reason::ConflictingDuplicate => "conflicting_duplicate",
        }
    }
}

/// One problem inside a message: its reason and where (`metrics.energy_btu:
/// unknown unit`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub reason: Reason,
    pub detail: String,
}

impl Reject {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Reject {
        Reject {
            reason,
            detail: detail.into(),
        }
    }
}

/// A row of `dead_letters`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub received_at: DateTime<Utc>,
    pub topic: String,
    pub payload: Vec<u8>,
    pub reason: Reason,
    pub detail: String,
    /// What makes a redelivery of the same message recognisable (see
    /// [`DeadLetter::identify`]); `None` stores every copy.
    pub fingerprint: Option<Vec<u8>>,
}

/// A redelivered message is recognised within this long of its first copy.
pub const REDELIVERY_WINDOW_S: i64 = 3600;

impl DeadLetter {
    /// Marks the letter with its message's identity ([`dead_letters`] does
    /// it for every letter it makes) so that the copy a
    /// broker redelivers after a crash (ingest committed, the
    /// acknowledgement never left) is not stored twice: SHA-256 of topic,
    /// payload (credentials already pseudonymised), reason and the MQTT
    /// packet id or JetStream stream sequence. QoS 1/2 redelivery keeps the packet id; a QoS 0 message is
    /// never redelivered and gets no fingerprint, so identical malformed
    /// messages a device repeats are all kept. The store skips a letter
    /// whose fingerprint it holds from the last [`REDELIVERY_WINDOW_S`].
    pub fn identify(&mut self, packet_id: Option<u64>) {
        use sha2::{Digest, Sha256};
        self.fingerprint = packet_id.map(|id| {
            let mut h = Sha256::new();
            h.update(self.topic.as_bytes());
            h.update([0]);
            h.update(&self.payload);
            h.update([0]);
            h.update(self.reason.as_str().as_bytes());
            // An MQTT packet id hashes as it always did (two bytes).
            match u16::try_from(id) {
                Ok(pkid) => h.update(pkid.to_be_bytes()),
                Err(_) => h.update(id.to_be_bytes()),
            }
            h.finalize().to_vec()
        });
    }
}

const MAX_DETAIL: usize = 2000;

/// PostgreSQL text cannot hold NUL; input can (JSON `\u0000`). Shown as `\0`.
pub fn sanitize(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\\0")
    } else {
        text.to_owned()
    }
}

/// Folds a message's rejects into one dead letter per reason, so a gateway
/// batch with 100 bad readings does not store its payload 100 times.
pub fn dead_letters(
    topic: &str,
    payload: &[u8],
    received_at: DateTime<Utc>,
    rejects: &[Reject],
    pseudonymiser: &Pseudonymiser,
    packet_id: Option<u64>,
) -> Vec<DeadLetter> {
    if rejects.is_empty() {
        return Vec::new();
    }
    // Every topic: a card number sent to the wrong topic is still a card number.
    let payload = redact_credentials(payload, pseudonymiser);
    let mut reasons: Vec<Reason> = rejects.iter().map(|r| r.reason).collect();
    reasons.sort();
    reasons.dedup();
    reasons
        .into_iter()
        .map(|reason| {
            let details: Vec<&str> = rejects
                .iter()
                .filter(|r| r.reason == reason)
                .map(|r| r.detail.as_str())
                .collect();
            let mut detail = details.join("; ");
            if detail.len() > MAX_DETAIL {
                let mut cut = MAX_DETAIL;
                while !detail.is_char_boundary(cut) {
                    cut -= 1;
                }
                detail.truncate(cut);
                detail.push_str(&format!(" … ({} problems)", details.len()));
            }
            let mut letter = DeadLetter {
                received_at,
                topic: sanitize(topic),
                payload: payload.clone(),
                reason,
                detail: sanitize(&detail),
                fingerprint: None,
            };
            letter.identify(packet_id);
            letter
        })
        .collect()
}

/// Replaces the value of every `"credential"` member by its pseudonym. Works
/// on JSON and, textually, on payloads that are not valid JSON.
pub fn redact_credentials(payload: &[u8], pseudonymiser: &Pseudonymiser) -> Vec<u8> {
    if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(payload) {
        // Keep the payload byte for byte unless there was something to hide.
        if !redact_value(&mut value, pseudonymiser) {
            return payload.to_vec();
        }
        return serde_json::to_vec(&value).unwrap_or_default();
    }
    if !payload.windows(12).any(|w| w == b"\"credential\"") {
        return payload.to_vec();
    }
    let text = String::from_utf8_lossy(payload);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    while let Some(pos) = rest.find("\"credential\"") {
        let (before, after) = rest.split_at(pos + "\"credential\"".len());
        out.push_str(before);
        // Skip `: "value"` if it is there; otherwise drop what follows up to
        // the next delimiter, to be safe.
        let trimmed = after.trim_start().strip_prefix(':').map(str::trim_start);
        match trimmed {
            Some(v) if v.starts_with('"') => {
                // Find the closing quote, skipping escaped ones (`\"`).
                let bytes = v.as_bytes();
                let mut i = 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let end = (i + 1).min(v.len());
                out.push_str(":\"<redacted>\"");
                rest = &v[end..];
            }
            Some(v) => {
                let end = v.find([',', '}', ']']).unwrap_or(v.len());
                out.push_str(":\"<redacted>\"");
                rest = &v[end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out.into_bytes()
}

/// Returns whether anything was replaced.
fn redact_value(value: &mut serde_json::Value, p: &Pseudonymiser) -> bool {
    let mut changed = false;
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "credential" {
                    changed = true;
                    *v = match v {
                        serde_json::Value::String(s) => serde_json::Value::String(format!(
                            "pseudonym:{}",
                            p.pseudonymise(s).as_str()
                        )),
                        _ => serde_json::Value::String("<redacted>".into()),
                    };
                } else {
                    changed |= redact_value(v, p);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                changed |= redact_value(v, p);
            }
        }
        _ => {}
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_survive_redaction() {
        let p = Pseudonymiser::new(b"k");
        let cases: &[&[u8]] = &[
            br#"{"type":"access","credential":"CARD-777","result":"maybe"}"#,
            br#"[{"type":"access","credential":"CARD-777"}]"#,
            br#"{"type":"access","credential":"CARD-777","result":"granted""#,
            br#"{"type":"access","credential": CARD-777 ,"x":1"#,
            br#"{"type":"access","credential":"ab\"CARD-777","x":1"#,
        ];
        for payload in cases {
            let out = String::from_utf8(redact_credentials(payload, &p)).unwrap();
            assert!(!out.contains("777"), "{out}");
            assert!(out.contains("credential"), "{out}");
        }
    }

    #[test]
    fn one_dead_letter_per_reason() {
        let rejects = vec![
            Reject::new(Reason::UnknownUnit, "a"),
            Reject::new(Reason::UnknownUnit, "b"),
            Reject::new(Reason::NonFiniteValue, "c"),
        ];
        let dl = dead_letters(
            "t",
            b"{}",
            Utc::now(),
            &rejects,
            &Pseudonymiser::new(b"k"),
            None,
        );
        assert_eq!(dl.len(), 2);
        assert_eq!(dl[0].reason, Reason::NonFiniteValue);
        assert_eq!(dl[1].detail, "a; b");
    }

    #[test]
    fn redeliveries_share_a_fingerprint_and_other_messages_do_not() {
        let letter = |topic: &str, payload: &[u8], packet: Option<u64>| {
            dead_letters(
                topic,
                payload,
                Utc::now(),
                &[Reject::new(Reason::InvalidJson, "x")],
                &Pseudonymiser::new(b"k"),
                packet,
            )
            .remove(0)
            .fingerprint
        };
        let first = letter("a/b", b"{bad", Some(7));
        assert!(first.is_some());
        assert_eq!(first, letter("a/b", b"{bad", Some(7)), "redelivery");
        assert_ne!(first, letter("a/b", b"{bad", Some(8)));
        assert_ne!(first, letter("a/c", b"{bad", Some(7)));
        assert_ne!(first, letter("a/b", b"{bae", Some(7)));
        assert_eq!(letter("a/b", b"{bad", None), None, "QoS 0: keep every copy");
    }
}
