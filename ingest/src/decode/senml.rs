//! SenML JSON (RFC 8428): an array of records whose base fields (`bn`, `bt`,
//! `bu`, `bv`, `bs`) carry forward to the records after them.
//!
//! Two deliberate departures from "accept anything the RFC allows":
//! a record without an absolute time (no `t`/`bt`, or a relative time below
//! 2^28) is rejected, because a time taken from our own clock would differ
//! on redelivery and defeat exactly-once storage; and only numeric values
//! (`v`, `s`) are accepted, since every estatemon metric is numeric.

use estatemon_domain::metric::resolve_senml;
use estatemon_domain::Reading;
use serde_json::Value;

use super::telemetry::metric_reject;
use super::{kind, parse_number, Decoded};
use crate::dead_letter::{Reason, Reject};
use chrono::{TimeZone, Utc};

/// Times below this are relative to "now" (RFC 8428 §4.5.3).
const RELATIVE_LIMIT: f64 = 268_435_456.0;

pub fn decode_senml(device_id: &str, value: &Value, out: &mut Decoded) {
    let Value::Array(records) = value else {
        out.rejects.push(Reject::new(
            Reason::InvalidField,
            format!("SenML must be an array of records, got {}", kind(value)),
        ));
        return;
    };
    if records.is_empty() {
        out.rejects
            .push(Reject::new(Reason::EmptyPayload, "empty SenML pack"));
        return;
    }
    let mut base_name = String::new();
    let mut base_time = 0.0_f64;
    let mut base_unit: Option<String> = None;
    let mut base_value = 0.0_f64;
    let mut base_sum = 0.0_f64;
    for (i, record) in records.iter().enumerate() {
        let at = format!("[{i}]");
        let Value::Object(r) = record else {
            out.rejects.push(Reject::new(
                Reason::InvalidField,
                format!(
                    "{at}: a SenML record must be an object, got {}",
                    kind(record)
                ),
            ));
            continue;
        };
        let num = |key: &str| -> Result<Option<f64>, Reject> {
            r.get(key)
                .map(|v| parse_number(v, &format!("{at}.{key}")))
                .transpose()
        };
        let text = |key: &str| -> Result<Option<String>, Reject> {
            match r.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(Reject::new(
                    Reason::InvalidField,
                    format!("{at}.{key} must be text, got {}", kind(other)),
                )),
            }
        };
        // Base fields first: they apply to this record too.
        let base = (|| {
            if let Some(bn) = text("bn")? {
                base_name = bn;
            }
            if let Some(bt) = num("bt")? {
                base_time = bt;
            }
            if let Some(bu) = text("bu")? {
                base_unit = Some(bu);
            }
            if let Some(bv) = num("bv")? {
                base_value = bv;
            }
            if let Some(bs) = num("bs")? {
                base_sum = bs;
            }
            Ok::<_, Reject>(())
        })();
        if let Err(reject) = base {
            out.rejects.push(reject);
            continue;
        }
        let fields = (|| {
            let name = format!("{base_name}{}", text("n")?.unwrap_or_default());
            let unit = text("u")?.or_else(|| base_unit.clone());
            let t = num("t")?;
            let value = match (num("v")?, num("s")?) {
                (Some(v), _) => Some(base_value + v),
                (None, Some(s)) => Some(base_sum + s),
                (None, None) => None,
            };
            Ok::<_, Reject>((name, unit, t, value))
        })();
        let (name, unit, t, value) = match fields {
            Ok(f) => f,
            Err(reject) => {
                out.rejects.push(reject);
                continue;
            }
        };
        let Some(value) = value else {
            // A record that only sets base fields carries no value; one with a
            // string, boolean or data value is not something we can store.
            if ["vs", "vb", "vd"].iter().any(|k| r.contains_key(*k)) {
                out.rejects.push(Reject::new(
                    Reason::InvalidField,
                    format!("{at}: only numeric values (v, s) are accepted"),
                ));
            } else if r.contains_key("n") || r.contains_key("t") {
                out.rejects.push(Reject::new(
                    Reason::MissingField,
                    format!("{at}: no value (v or s)"),
                ));
            }
            continue;
        };
        if name.is_empty() {
            out.rejects.push(Reject::new(
                Reason::MissingField,
                format!("{at}: no name (n or bn)"),
            ));
            continue;
        }
        let seconds = base_time + t.unwrap_or(0.0);
        if t.is_none() && !r.contains_key("bt") && base_time == 0.0 {
            out.rejects.push(Reject::new(
                Reason::MissingField,
                format!("{at} `{name}`: no time (t or bt); readings need the device's own time"),
            ));
            continue;
        }
        if seconds < RELATIVE_LIMIT {
            out.rejects.push(Reject::new(
                Reason::InvalidTimestamp,
                format!(
                    "{at} `{name}`: relative time {seconds} s is not accepted; send absolute times"
                ),
            ));
            continue;
        }
        let Some(ts) = Utc
            .timestamp_millis_opt((seconds * 1000.0).round() as i64)
            .single()
        else {
            out.rejects.push(Reject::new(
                Reason::InvalidTimestamp,
                format!("{at} `{name}`: time {seconds} is out of range"),
            ));
            continue;
        };
        match resolve_senml(&name, unit.as_deref()) {
            Ok(resolved) => out.readings.push(Reading {
                device_id: device_id.to_owned(),
                metric: resolved.metric,
                ts,
                value: resolved.normalise(value),
            }),
            Err(e) => out
                .rejects
                .push(metric_reject(&format!("{at} `{name}`"), e)),
        }
    }
}
