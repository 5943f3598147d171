//! Access and lift events: `{"ts": …, "type": "access", "result": "granted",
//! "method": "card", "credential": "…", "direction": "in"}`,
//! `{"type": "door_forced"}`, `{"type": "door_held_open", "seconds": 95}`,
//! `{"type": "fault", "code": "entrapment"}`, `{"type": "state", "state": "idle"}`;
//! or an array of them.
//!
//! The credential is pseudonymised here, the first moment estatemon holds it.

use estatemon_domain::event::{
    AccessMethod, AccessResult, Direction, Event, EventDetail, EventType, LiftState, RescueStep,
};
use estatemon_domain::pseudonym::Pseudonymiser;
use serde_json::{Map, Value};

use super::{each_item, kind, parse_number, parse_ts, Decoded};
use crate::dead_letter::{Reason, Reject};

pub fn decode_events(device_id: &str, value: &Value, p: &Pseudonymiser, out: &mut Decoded) {
    each_item(value, out, |item, at, out| {
        let Value::Object(obj) = item else {
            out.rejects.push(Reject::new(
                Reason::InvalidField,
                format!("{at}event must be an object, got {}", kind(item)),
            ));
            return;
        };
        let ts = match parse_ts(obj.get("ts"), at) {
            Ok(ts) => ts,
            Err(r) => return out.rejects.push(r),
        };
        match detail(obj, at, p, device_id, ts) {
            Ok(detail) => out.events.push(Event {
                device_id: device_id.to_owned(),
                ts,
                detail,
            }),
            Err(r) => out.rejects.push(r),
        }
    });
}

fn required<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a str, Reject> {
    match obj.get(key) {
        // PostgreSQL text cannot hold NUL; reject it here rather than fail the batch.
        Some(Value::String(s)) if s.contains('\0') => Err(Reject::new(
            Reason::InvalidField,
            format!("{at}{key} contains a NUL character"),
        )),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        None | Some(Value::Null) => Err(Reject::new(
            Reason::MissingField,
            format!("{at}{key} is missing"),
        )),
        Some(other) => Err(Reject::new(
            Reason::InvalidField,
            format!("{at}{key} must be non-empty text, got {}", kind(other)),
        )),
    }
}

fn choice<T>(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    parse: fn(&str) -> Option<T>,
    allowed: &[&str],
) -> Result<T, Reject> {
    let s = required(obj, key, at)?;
    parse(s).ok_or_else(|| {
        Reject::new(
            Reason::InvalidField,
            format!("{at}{key} `{s}` is not one of {}", allowed.join(", ")),
        )
    })
}

fn names<T: Copy>(all: &[T], f: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|x| f(*x)).collect()
}

/// An optional credential, pseudonymised (a card number sent as a number
/// too; never echoed in a detail).
fn credential(
    obj: &Map<String, Value>,
    at: &str,
    p: &Pseudonymiser,
) -> Result<Option<estatemon_domain::pseudonym::Pseudonym>, Reject> {
    match obj.get("credential") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(p.pseudonymise(s))),
        Some(Value::Number(n)) => Ok(Some(p.pseudonymise(&n.to_string()))),
        Some(other) => Err(Reject::new(
            Reason::InvalidField,
            format!("{at}credential must be text, got {}", kind(other)),
        )),
    }
}

/// A patrol app's inspection: `{"type": "inspection", "by": "Wang Wei",
/// "results": {"noise": "ok", "lubricant": "fail"}, "readings":
/// {"lubricant_level": 0.6}, "note": "…"}`.
fn inspection(
    obj: &Map<String, Value>,
    at: &str,
    device_id: &str,
    ts: chrono::DateTime<chrono::Utc>,
) -> Result<EventDetail, Reject> {
    use estatemon_domain::inspection::{ItemResult, Report};
    let by = required(obj, "by", at)?.trim().to_owned();
    if by.chars().count() > 100 {
        return Err(Reject::new(
            Reason::InvalidField,
            format!("{at}by is over 100 characters"),
        ));
    }
    let object = |key: &str| -> Result<Option<&Map<String, Value>>, Reject> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(Reject::new(
                Reason::InvalidField,
                format!("{at}{key} must be an object, got {}", kind(other)),
            )),
        }
    };
    let mut results = std::collections::BTreeMap::new();
    for (item, v) in object("results")?.into_iter().flatten() {
        let r = v.as_str().and_then(ItemResult::parse).ok_or_else(|| {
            Reject::new(
                Reason::InvalidValue,
                format!("{at}results.{item} must be ok, fail or fail_large"),
            )
        })?;
        results.insert(item.clone(), r);
    }
    let mut readings = std::collections::BTreeMap::new();
    for (name, v) in object("readings")?.into_iter().flatten() {
        readings.insert(
            name.clone(),
            parse_number(v, &format!("{at}readings.{name}"))?,
        );
    }
    let note = match obj.get("note") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(Reject::new(
                Reason::InvalidField,
                format!("{at}note must be text, got {}", kind(other)),
            ))
        }
    };
    let report = Report {
        device: device_id.to_owned(),
        by,
        at: ts,
        results,
        readings,
        note,
    };
    report
        .check_fields()
        .map_err(|why| Reject::new(Reason::InvalidValue, format!("{at}{why}")))?;
    Ok(EventDetail::Inspection(Box::new(report)))
}

fn detail(
    obj: &Map<String, Value>,
    at: &str,
    p: &Pseudonymiser,
    device_id: &str,
    ts: chrono::DateTime<chrono::Utc>,
) -> Result<EventDetail, Reject> {
    let type_name = required(obj, "type", at)?;
    let Some(event_type) = EventType::parse(type_name) else {
        return Err(Reject::new(
            Reason::UnknownEventType,
            format!(
                "{at}type `{type_name}` is not one of {}",
                names(EventType::ALL, EventType::as_str).join(", ")
            ),
        ));
    };
    Ok(match event_type {
        EventType::Access => {
            let result = choice(
                obj,
                "result",
                at,
                AccessResult::parse,
                &names(AccessResult::ALL, AccessResult::as_str),
            )?;
            let method = choice(
                obj,
                "method",
                at,
                AccessMethod::parse,
                &names(AccessMethod::ALL, AccessMethod::as_str),
            )?;
            let credential = credential(obj, at, p)?;
            let direction = match obj.get("direction") {
                None | Some(Value::Null) => None,
                Some(_) => Some(choice(
                    obj,
                    "direction",
                    at,
                    Direction::parse,
                    &names(Direction::ALL, Direction::as_str),
                )?),
            };
            let credential_expired = match obj.get("credential_expired").or(obj.get("expired")) {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(Reject::new(
                        Reason::InvalidField,
                        format!(
                            "{at}credential_expired must be true or false, got {}",
                            kind(other)
                        ),
                    ))
                }
            };
            EventDetail::Access {
                result,
                method,
                credential,
                direction,
                credential_expired,
            }
        }
        EventType::DoorForced => EventDetail::DoorForced,
        EventType::Tamper => EventDetail::Tamper,
        EventType::DoorHeldOpen => {
            let field = format!("{at}seconds");
            let seconds = obj
                .get("seconds")
                .ok_or_else(|| Reject::new(Reason::MissingField, format!("{field} is missing")))
                .and_then(|v| parse_number(v, &field))?;
            if seconds < 0.0 {
                return Err(Reject::new(
                    Reason::InvalidValue,
                    format!("{field} is negative ({seconds})"),
                ));
            }
            EventDetail::DoorHeldOpen { seconds }
        }
        EventType::Fault => EventDetail::Fault {
            code: required(obj, "code", at)?.trim().to_ascii_lowercase(),
        },
        EventType::AlarmTest => EventDetail::AlarmTest {
            passed: match required(obj, "result", at)?.trim() {
                "passed" | "ok" => true,
                "failed" => false,
                other => {
                    return Err(Reject::new(
                        Reason::InvalidValue,
                        format!("{at}result `{other}` is not one of passed, failed"),
                    ))
                }
            },
        },
        EventType::Rescue => EventDetail::Rescue {
            step: choice(
                obj,
                "step",
                at,
                RescueStep::parse,
                &names(RescueStep::ALL, RescueStep::as_str),
            )?,
        },
        EventType::State => EventDetail::State {
            state: choice(
                obj,
                "state",
                at,
                LiftState::parse,
                &names(LiftState::ALL, LiftState::as_str),
            )?,
            credential: credential(obj, at, p)?,
        },
        EventType::Inspection => inspection(obj, at, device_id, ts)?,
    })
}
