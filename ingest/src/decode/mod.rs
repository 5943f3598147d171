//! Payload formats into domain types. Pure functions over bytes: no clock,
//! no I/O; every malformed input becomes a [`Reject`] with a reason, never a
//! panic (see the fuzz-style test in `tests`).

mod events;
mod senml;
mod telemetry;

use chrono::{DateTime, TimeZone, Utc};
use estatemon_domain::event::Event;
use estatemon_domain::pseudonym::Pseudonymiser;
use estatemon_domain::Reading;
use serde_json::Value;

use crate::dead_letter::{Reason, Reject};
use crate::topic::Channel;

pub use events::decode_events;
pub use senml::decode_senml;
pub use telemetry::decode_telemetry;

/// What one message yielded.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decoded {
    pub readings: Vec<Reading>,
    pub events: Vec<Event>,
    pub rejects: Vec<Reject>,
}

/// Decodes a message of the given channel from `device_id`.
pub fn decode(
    channel: Channel,
    device_id: &str,
    payload: &[u8],
    pseudonymiser: &Pseudonymiser,
) -> Decoded {
    let value = match parse_json(payload) {
        Ok(v) => v,
        Err(reject) => {
            return Decoded {
                rejects: vec![reject],
                ..Default::default()
            }
        }
    };
    let mut out = Decoded::default();
    match channel {
        Channel::Telemetry => decode_telemetry(device_id, &value, &mut out),
        Channel::Senml => decode_senml(device_id, &value, &mut out),
        Channel::Events => decode_events(device_id, &value, pseudonymiser, &mut out),
    }
    out
}

/// Parses JSON, telling a `NaN` (which JSON cannot carry, but Python's
/// `json.dumps` emits) apart from other syntax errors.
pub fn parse_json(payload: &[u8]) -> Result<Value, Reject> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(Reject::new(Reason::EmptyPayload, "payload is empty"));
    }
    serde_json::from_slice(payload).map_err(|e| {
        let text = String::from_utf8_lossy(payload);
        if ["NaN", "Infinity"].iter().any(|t| text.contains(t)) {
            Reject::new(
                Reason::NonFiniteValue,
                format!("NaN or Infinity in payload ({e})"),
            )
        } else {
            Reject::new(Reason::InvalidJson, e.to_string())
        }
    })
}

/// `ts` as RFC 3339 text or epoch milliseconds.
pub(crate) fn parse_ts(value: Option<&Value>, at: &str) -> Result<DateTime<Utc>, Reject> {
    match value {
        None | Some(Value::Null) => Err(Reject::new(
            Reason::MissingField,
            format!("{at}ts is missing"),
        )),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                Reject::new(
                    Reason::InvalidTimestamp,
                    format!("{at}ts `{s}` is not RFC 3339: {e}"),
                )
            }),
        Some(Value::Number(n)) => {
            let ms = n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 9.0e15)
                    .map(|f| f.round() as i64)
            });
            ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .ok_or_else(|| {
                    Reject::new(
                        Reason::InvalidTimestamp,
                        format!("{at}ts {n} is not epoch milliseconds"),
                    )
                })
        }
        Some(other) => Err(Reject::new(
            Reason::InvalidTimestamp,
            format!(
                "{at}ts must be RFC 3339 text or epoch ms, got {}",
                kind(other)
            ),
        )),
    }
}

/// A numeric value, with the reasons a person would want for each failure.
pub(crate) fn parse_number(value: &Value, at: &str) -> Result<f64, Reject> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| Reject::new(Reason::NonFiniteValue, format!("{at}: {n} is not finite"))),
        Value::String(s)
            if matches!(
                s.to_ascii_lowercase().as_str(),
                "nan" | "inf" | "-inf" | "infinity" | "-infinity"
            ) =>
        {
            Err(Reject::new(Reason::NonFiniteValue, format!("{at}: `{s}`")))
        }
        Value::Null => Err(Reject::new(Reason::MissingField, format!("{at} is null"))),
        other => Err(Reject::new(
            Reason::InvalidField,
            format!("{at} must be a number, got {}", kind(other)),
        )),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Applies `f` to the value or to each element of an array (gateway batch),
/// labelling errors with the element index.
pub(crate) fn each_item(
    value: &Value,
    out: &mut Decoded,
    mut f: impl FnMut(&Value, &str, &mut Decoded),
) {
    match value {
        Value::Array(items) if items.is_empty() => out
            .rejects
            .push(Reject::new(Reason::EmptyPayload, "empty array")),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                f(item, &format!("[{i}]."), out);
            }
        }
        other => f(other, "", out),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
