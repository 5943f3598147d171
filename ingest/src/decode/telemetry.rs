//! `{"ts": …, "metrics": {"energy_kwh": 1234.5, …}}`, or an array of them.

use estatemon_domain::metric::{resolve_json_name, MetricError};
use estatemon_domain::Reading;
use serde_json::Value;

use super::{each_item, kind, parse_number, parse_ts, Decoded};
use crate::dead_letter::{Reason, Reject};

pub fn decode_telemetry(device_id: &str, value: &Value, out: &mut Decoded) {
    each_item(value, out, |item, at, out| {
        let Value::Object(obj) = item else {
            out.rejects.push(Reject::new(
                Reason::InvalidField,
                format!("{at}telemetry must be an object, got {}", kind(item)),
            ));
            return;
        };
        let ts = match parse_ts(obj.get("ts"), at) {
            Ok(ts) => ts,
            Err(r) => return out.rejects.push(r),
        };
        let metrics = match obj.get("metrics") {
            Some(Value::Object(m)) if !m.is_empty() => m,
            Some(Value::Object(_)) => {
                return out.rejects.push(Reject::new(
                    Reason::MissingField,
                    format!("{at}metrics is empty"),
                ))
            }
            None => {
                return out.rejects.push(Reject::new(
                    Reason::MissingField,
                    format!("{at}metrics is missing"),
                ))
            }
            Some(other) => {
                return out.rejects.push(Reject::new(
                    Reason::InvalidField,
                    format!("{at}metrics must be an object, got {}", kind(other)),
                ))
            }
        };
        for (name, raw) in metrics {
            let field = format!("{at}metrics.{name}");
            let resolved = match resolve_json_name(name) {
                Ok(r) => r,
                Err(e) => {
                    out.rejects.push(metric_reject(&field, e));
                    continue;
                }
            };
            match parse_number(raw, &field) {
                Ok(v) => out.readings.push(Reading {
                    device_id: device_id.to_owned(),
                    metric: resolved.metric,
                    ts,
                    value: resolved.normalise(v),
                }),
                Err(r) => out.rejects.push(r),
            }
        }
    });
}

pub(crate) fn metric_reject(field: &str, e: MetricError) -> Reject {
    let reason = match e {
        MetricError::UnknownMetric(_) => Reason::UnknownMetric,
        MetricError::UnknownUnit { .. } | MetricError::IncompatibleUnit { .. } => {
            Reason::UnknownUnit
        }
    };
    Reject::new(reason, format!("{field}: {e}"))
}
