//! Entrapments (困人) as incidents: the alarm, the rescue service's
//! acknowledgement (a `rescue` event or the on-call acknowledgement of the
//! alert, whichever came first), the rescuer on site, the passenger
//! released, the lift back in service; or a false alarm, closed as such.
//! The response time is from the alarm to the rescuer on site, against the
//! estate's 15-minute target for emergencies.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// The estate's response target for an emergency repair (DOMAIN.md).
pub const RESPONSE_TARGET: Duration = Duration::minutes(15);
/// How long after an alarm its steps are looked for (a later alarm of the
/// same lift starts a new incident).
const HORIZON: Duration = Duration::hours(24);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub lift: String,
    pub building: Option<String>,
    pub alarm_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Who acknowledged: `rescue service` (the event), named by the lift's
    /// responsible contractor when the registry has one (`rescue service:
    /// Lift contractor: Otis`), or the on-call name.
    pub acknowledged_by: Option<String>,
    /// The company answering the lift's alarms: the registry's
    /// `responsible` for the lift.
    #[serde(default)]
    pub rescue_company: Option<String>,
    pub rescuer_on_site_at: Option<DateTime<Utc>>,
    pub released_at: Option<DateTime<Utc>>,
    pub back_in_service_at: Option<DateTime<Utc>>,
    pub false_alarm: bool,
    /// Alarm to rescuer on site, minutes.
    pub response_minutes: Option<f64>,
    /// Alarm to passenger released, minutes.
    pub release_minutes: Option<f64>,
    /// Rescuer on site within the target; none while nobody is there yet.
    pub within_target: Option<bool>,
    /// `open`, `released`, `closed` (back in service) or `false_alarm`.
    #[serde(deserialize_with = "crate::static_str::deserialize")]
    pub status: crate::static_str::Label,
}

/// What happened on one lift, in time order.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    Alarm,
    /// A `rescue` step (`acknowledged`, `rescuer_on_site`, `released`,
    /// `false_alarm`).
    Rescue(String),
    /// The on-call acknowledgement of the entrapment alert, by whom.
    Ack(String),
    /// A state event; `idle`, `moving` and `door_open` are normal service.
    State(String),
}

/// The incidents of one lift from its happenings (sorted by time).
pub fn build(
    lift: &str,
    building: Option<&str>,
    events: &[(DateTime<Utc>, Happening)],
) -> Vec<Incident> {
    let alarms: Vec<DateTime<Utc>> = events
        .iter()
        .filter(|(_, h)| *h == Happening::Alarm)
        .map(|(t, _)| *t)
        .collect();
    let mut out = Vec::new();
    for (k, &alarm) in alarms.iter().enumerate() {
        let until = alarms
            .get(k + 1)
            .copied()
            .unwrap_or(alarm + HORIZON)
            .min(alarm + HORIZON);
        let mut i = Incident {
            lift: lift.to_owned(),
            building: building.map(str::to_owned),
            alarm_at: alarm,
            acknowledged_at: None,
            acknowledged_by: None,
            rescue_company: None,
            rescuer_on_site_at: None,
            released_at: None,
            back_in_service_at: None,
            false_alarm: false,
            response_minutes: None,
            release_minutes: None,
            within_target: None,
            status: "open",
        };
        for (t, h) in events.iter().filter(|(t, _)| *t >= alarm && *t < until) {
            let first = |slot: &mut Option<DateTime<Utc>>| {
                if slot.is_none() {
                    *slot = Some(*t);
                }
            };
            match h {
                Happening::Alarm => {}
                Happening::Rescue(step) => match step.as_str() {
                    "acknowledged" if i.acknowledged_at.is_none() => {
                        i.acknowledged_at = Some(*t);
                        i.acknowledged_by = Some("rescue service".into());
                    }
                    "rescuer_on_site" => first(&mut i.rescuer_on_site_at),
                    "released" => first(&mut i.released_at),
                    "false_alarm" => i.false_alarm = true,
                    _ => {}
                },
                Happening::Ack(by) if i.acknowledged_at.is_none() => {
                    i.acknowledged_at = Some(*t);
                    i.acknowledged_by = Some(by.clone());
                }
                Happening::Ack(_) => {}
                // Back in normal service: the first such state after the alarm.
                Happening::State(s)
                    if *t > alarm && matches!(s.as_str(), "idle" | "moving" | "door_open") =>
                {
                    first(&mut i.back_in_service_at)
                }
                Happening::State(_) => {}
            }
        }
        let minutes = |t: Option<DateTime<Utc>>| t.map(|t| (t - alarm).num_seconds() as f64 / 60.0);
        i.response_minutes = minutes(i.rescuer_on_site_at);
        i.release_minutes = minutes(i.released_at);
        i.within_target = i.rescuer_on_site_at.map(|t| t - alarm <= RESPONSE_TARGET);
        i.status = if i.false_alarm {
            "false_alarm"
        } else if i.back_in_service_at.is_some() {
            "closed"
        } else if i.released_at.is_some() {
            "released"
        } else {
            "open"
        };
        out.push(i);
    }
    out
}

/// The entrapments of a site's lifts with `from <= alarm < to`.
pub async fn site(
    client: &Client,
    site: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Incident>, tokio_postgres::Error> {
    let lifts: Vec<(String, Option<String>, Option<String>)> = client
        .query(
            "SELECT device_id, building_id, responsible FROM devices
              WHERE kind = 'lift' AND site_id = $1
              ORDER BY device_id",
            &[&site],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut out = Vec::new();
    for (lift, building, company) in lifts {
        let rows = client
            .query(
                "SELECT ts, event_type, code, state FROM events
                  WHERE device_id = $1 AND ts >= $2 AND ts < $3::timestamptz + interval '24 hours'
                    AND (event_type IN ('rescue', 'state')
                         OR (event_type = 'fault' AND code = 'entrapment'))
                 UNION ALL
                 SELECT acknowledged_at, 'ack'::text, acknowledged_by, NULL::text FROM alerts
                  WHERE device_id = $1 AND rule = 'lift_entrapment' AND acknowledged_at IS NOT NULL
                    AND started_at >= $2 AND started_at < $3
                 ORDER BY 1",
                &[&lift, &from, &to],
            )
            .await?;
        let happenings: Vec<(DateTime<Utc>, Happening)> = rows
            .iter()
            .map(|r| {
                let kind: String = r.get(1);
                let h = match kind.as_str() {
                    "fault" => Happening::Alarm,
                    "rescue" => {
                        Happening::Rescue(r.get::<_, Option<String>>(2).unwrap_or_default())
                    }
                    "ack" => Happening::Ack(r.get::<_, Option<String>>(2).unwrap_or_default()),
                    _ => Happening::State(r.get::<_, Option<String>>(3).unwrap_or_default()),
                };
                (r.get(0), h)
            })
            .collect();
        out.extend(
            build(&lift, building.as_deref(), &happenings)
                .into_iter()
                .filter(|i| i.alarm_at < to)
                .map(|mut i| {
                    i.rescue_company = company.clone();
                    if let (Some(c), Some("rescue service")) =
                        (company.as_deref(), i.acknowledged_by.as_deref())
                    {
                        i.acknowledged_by = Some(format!("rescue service: {c}"));
                    }
                    i
                }),
        );
    }
    out.sort_by_key(|i| i.alarm_at);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(m: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 5, 2, 0, 0).unwrap() + Duration::minutes(m)
    }

    #[test]
    fn an_entrapment_step_by_step_and_a_false_alarm() {
        use Happening::*;
        let events = vec![
            (at(-30), State("moving".into())),
            (at(0), Alarm),
            (at(0), State("fault".into())),
            (at(3), Ack("alice".into())),
            (at(4), Rescue("acknowledged".into())),
            (at(11), Rescue("rescuer_on_site".into())),
            (at(24), Rescue("released".into())),
            (at(25), State("idle".into())),
            // A second alarm, a false one: the rescuer arrives late.
            (at(300), Alarm),
            (at(320), Rescue("rescuer_on_site".into())),
            (at(321), Rescue("false_alarm".into())),
        ];
        let got = build("hv-a-lift-1", Some("tower-a"), &events);
        assert_eq!(got.len(), 2);
        let first = &got[0];
        assert_eq!(first.acknowledged_at, Some(at(3)));
        assert_eq!(
            first.acknowledged_by.as_deref(),
            Some("alice"),
            "the earlier of the two"
        );
        assert_eq!(first.rescuer_on_site_at, Some(at(11)));
        assert_eq!(first.released_at, Some(at(24)));
        assert_eq!(first.back_in_service_at, Some(at(25)));
        assert_eq!(first.response_minutes, Some(11.0));
        assert_eq!(first.within_target, Some(true));
        assert_eq!(first.status, "closed");
        let second = &got[1];
        assert_eq!(second.status, "false_alarm");
        assert_eq!(second.within_target, Some(false), "20 minutes is over 15");
        assert!(second.back_in_service_at.is_none());
        // Nobody there yet: open, no verdict on the target.
        let open = build("l", None, &[(at(0), Alarm)]);
        assert_eq!((open[0].status, open[0].within_target), ("open", None));
    }
}
