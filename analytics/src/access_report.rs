//! The weekly access report: what the security team reads every week about
//! a site's gates. Denied bursts, forced and held-open doors, expired
//! temporary cards presented, and activity at unusual hours, with
//! credentials only as their pseudonyms (the clear card numbers never
//! reach the database).
//!
//! [`build`] is pure (events in, report out; the counting runs on polars);
//! [`load`] reads the week's events.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use polars::prelude::*;
use serde::Serialize;
use tokio_postgres::Client;

/// One gate event of the week.
#[derive(Debug, Clone, PartialEq)]
pub struct GateEvent {
    pub gate: String,
    pub ts: DateTime<Utc>,
    pub event_type: String,
    pub result: Option<String>,
    pub method: Option<String>,
    pub credential: Option<String>,
    pub credential_expired: bool,
    pub duration_s: Option<f64>,
}

/// What counts as suspicious.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Denied swipes of one credential within `burst_window` that make a burst.
    pub burst_count: usize,
    pub burst_window: Duration,
    /// Local hours counted as unusual: `[from, to)`, wrapping midnight.
    pub unusual_from_hour: u32,
    pub unusual_to_hour: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            burst_count: 5,
            burst_window: Duration::minutes(10),
            unusual_from_hour: 0,
            unusual_to_hour: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateSummary {
    pub gate: String,
    pub granted: u64,
    pub denied: u64,
    pub forced: u64,
    pub held_open: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Burst {
    pub credential: String,
    pub gate: String,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub denied: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoorEvent {
    pub gate: String,
    pub ts: DateTime<Utc>,
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpiredUse {
    pub credential: String,
    pub gate: String,
    pub ts: DateTime<Utc>,
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnusualHours {
    pub credential: String,
    pub swipes: u64,
    pub gates: u64,
    pub first: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessReport {
    pub site: String,
    pub time_zone: String,
    /// ISO week, e.g. `2026-W23`.
    pub week: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub swipes: u64,
    pub denied: u64,
    pub by_method: BTreeMap<String, u64>,
    pub gates: Vec<GateSummary>,
    pub denied_bursts: Vec<Burst>,
    pub doors_forced: Vec<DoorEvent>,
    pub doors_held_open: Vec<DoorEvent>,
    pub expired_cards: Vec<ExpiredUse>,
    pub unusual_hours: Vec<UnusualHours>,
    /// Pseudonymised with the site's key: the same card is the same
    /// pseudonym every week, but no card number appears.
    pub credentials_note: &'static str,
}

/// Monday 00:00 to the next Monday 00:00, local time, of an ISO week
/// written `2026-W23`.
pub fn week_bounds(week: &str, tz: Tz) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let bad = || format!("`{week}` is not an ISO week like 2026-W23");
    let (year, w) = week.split_once("-W").ok_or_else(bad)?;
    let (year, w): (i32, u32) = (
        year.parse().map_err(|_| bad())?,
        w.parse().map_err(|_| bad())?,
    );
    let monday = NaiveDate::from_isoywd_opt(year, w, Weekday::Mon).ok_or_else(bad)?;
    let local = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(bad)
    };
    Ok((local(monday)?, local(monday + Duration::days(7))?))
}

/// The ISO week (`2026-W23`) of the last full week before `now` at `tz`.
pub fn last_week(now: DateTime<Utc>, tz: Tz) -> String {
    let d = (now.with_timezone(&tz) - Duration::days(7)).date_naive();
    let w = d.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

fn ts(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).single().unwrap_or_default()
}

/// Builds the report from the week's gate events.
pub fn build(
    site: &str,
    tz: Tz,
    week: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    events: &[GateEvent],
    t: Thresholds,
) -> PolarsResult<AccessReport> {
    let access: Vec<&GateEvent> = events.iter().filter(|e| e.event_type == "access").collect();
    let unusual = |e: &GateEvent| {
        let h = e.ts.with_timezone(&tz).hour();
        if t.unusual_from_hour <= t.unusual_to_hour {
            (t.unusual_from_hour..t.unusual_to_hour).contains(&h)
        } else {
            h >= t.unusual_from_hour || h < t.unusual_to_hour
        }
    };
    let frame = df!(
        "gate" => events.iter().map(|e| e.gate.as_str()).collect::<Vec<_>>(),
        "ts" => events.iter().map(|e| e.ts.timestamp()).collect::<Vec<_>>(),
        "type" => events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        "result" => events.iter().map(|e| e.result.as_deref()).collect::<Vec<_>>(),
        "method" => events.iter().map(|e| e.method.as_deref()).collect::<Vec<_>>(),
        "credential" => events.iter().map(|e| e.credential.as_deref()).collect::<Vec<_>>(),
        "unusual" => events.iter().map(unusual).collect::<Vec<_>>(),
    )?;
    let count_if = |e: Expr| e.cast(DataType::UInt32).sum();

    // Per gate.
    let gates_df = frame
        .clone()
        .lazy()
        .group_by([col("gate")])
        .agg([
            count_if(col("result").eq(lit("granted"))).alias("granted"),
            count_if(col("result").eq(lit("denied"))).alias("denied"),
            count_if(col("type").eq(lit("door_forced"))).alias("forced"),
            count_if(col("type").eq(lit("door_held_open"))).alias("held"),
        ])
        .sort(["gate"], SortMultipleOptions::default())
        .collect()?;
    let mut gates = Vec::new();
    {
        let g = gates_df.column("gate")?.str()?;
        let cols: Vec<_> = ["granted", "denied", "forced", "held"]
            .iter()
            .map(|c| gates_df.column(c).and_then(|c| c.cast(&DataType::UInt64)))
            .collect::<PolarsResult<_>>()?;
        for i in 0..gates_df.height() {
            let v = |k: usize| cols[k].u64().ok().and_then(|c| c.get(i)).unwrap_or(0);
            gates.push(GateSummary {
                gate: g.get(i).unwrap_or("").to_owned(),
                granted: v(0),
                denied: v(1),
                forced: v(2),
                held_open: v(3),
            });
        }
    }

    // Swipes by method.
    let methods = frame
        .clone()
        .lazy()
        .filter(col("type").eq(lit("access")))
        .group_by([col("method")])
        .agg([col("ts").count().alias("n")])
        .collect()?;
    let mut by_method = BTreeMap::new();
    {
        let m = methods.column("method")?.str()?;
        let n = methods.column("n")?.cast(&DataType::UInt64)?;
        let n = n.u64()?;
        for i in 0..methods.height() {
            by_method.insert(
                m.get(i).unwrap_or("unknown").to_owned(),
                n.get(i).unwrap_or(0),
            );
        }
    }

    // Unusual hours: granted or denied swipes by credential at night.
    let night = frame
        .clone()
        .lazy()
        .filter(
            col("type")
                .eq(lit("access"))
                .and(col("unusual"))
                .and(col("credential").is_not_null()),
        )
        .group_by([col("credential")])
        .agg([
            col("ts").count().alias("swipes"),
            col("gate").n_unique().alias("gates"),
            col("ts").min().alias("first"),
        ])
        .sort(
            ["swipes", "credential"],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        )
        .collect()?;
    let mut unusual_hours = Vec::new();
    {
        let c = night.column("credential")?.str()?;
        let s = night.column("swipes")?.cast(&DataType::UInt64)?;
        let g = night.column("gates")?.cast(&DataType::UInt64)?;
        let f = night.column("first")?.i64()?;
        for i in 0..night.height() {
            unusual_hours.push(UnusualHours {
                credential: c.get(i).unwrap_or("").to_owned(),
                swipes: s.u64()?.get(i).unwrap_or(0),
                gates: g.u64()?.get(i).unwrap_or(0),
                first: ts(f.get(i).unwrap_or(0)),
            });
        }
    }

    // Denied bursts: a sliding window over each credential's denied swipes.
    let mut by_credential: BTreeMap<&str, Vec<&GateEvent>> = BTreeMap::new();
    for e in access
        .iter()
        .filter(|e| e.result.as_deref() == Some("denied"))
    {
        if let Some(c) = e.credential.as_deref() {
            by_credential.entry(c).or_default().push(e);
        }
    }
    let mut denied_bursts = Vec::new();
    for (credential, mut rows) in by_credential {
        rows.sort_by_key(|e| e.ts);
        let mut start = 0;
        let mut current: Option<Burst> = None;
        for end in 0..rows.len() {
            while rows[end].ts - rows[start].ts > t.burst_window {
                start += 1;
            }
            let n = end + 1 - start;
            match &mut current {
                Some(b) if rows[end].ts - b.last <= t.burst_window => {
                    b.last = rows[end].ts;
                    b.denied += 1;
                }
                _ if n >= t.burst_count => {
                    if let Some(b) = current.take() {
                        denied_bursts.push(b);
                    }
                    current = Some(Burst {
                        credential: credential.to_owned(),
                        gate: rows[end].gate.clone(),
                        first: rows[start].ts,
                        last: rows[end].ts,
                        denied: n as u64,
                    });
                }
                _ => {}
            }
        }
        denied_bursts.extend(current);
    }
    denied_bursts.sort_by_key(|b| b.first);

    let door = |kind: &str| -> Vec<DoorEvent> {
        events
            .iter()
            .filter(|e| e.event_type == kind)
            .map(|e| DoorEvent {
                gate: e.gate.clone(),
                ts: e.ts,
                seconds: e.duration_s,
            })
            .collect()
    };
    let expired_cards = access
        .iter()
        .filter(|e| e.credential_expired)
        .map(|e| ExpiredUse {
            credential: e.credential.clone().unwrap_or_default(),
            gate: e.gate.clone(),
            ts: e.ts,
            result: e.result.clone().unwrap_or_default(),
        })
        .collect();
    Ok(AccessReport {
        site: site.to_owned(),
        time_zone: tz.name().to_owned(),
        week: week.to_owned(),
        from,
        to,
        swipes: access.len() as u64,
        denied: access
            .iter()
            .filter(|e| e.result.as_deref() == Some("denied"))
            .count() as u64,
        by_method,
        gates,
        denied_bursts,
        doors_forced: door("door_forced"),
        doors_held_open: door("door_held_open"),
        expired_cards,
        unusual_hours,
        credentials_note: "credentials are keyed pseudonyms (HMAC-SHA-256), never card numbers",
    })
}

/// The site's time zone and the week's gate events.
pub async fn load(
    client: &Client,
    site: &str,
    week: &str,
) -> anyhow::Result<(Tz, (DateTime<Utc>, DateTime<Utc>), Vec<GateEvent>)> {
    let row = client
        .query_opt("SELECT time_zone FROM sites WHERE site_id = $1", &[&site])
        .await?
        .ok_or_else(|| anyhow::anyhow!("no site `{site}` in the registry"))?;
    let tz: Tz = row
        .get::<_, String>(0)
        .parse()
        .map_err(|e| anyhow::anyhow!("site {site}: time zone: {e}"))?;
    let bounds = week_bounds(week, tz).map_err(|e| anyhow::anyhow!(e))?;
    let rows = client
        .query(
            "SELECT e.device_id, e.ts, e.event_type, e.result, e.method, e.credential,
                    coalesce(e.credential_expired, false), e.duration_s
               FROM events e JOIN devices d USING (device_id)
              WHERE d.site_id = $1 AND d.kind = 'access_gate'
                AND e.ts >= $2 AND e.ts < $3
                AND e.event_type IN ('access', 'door_forced', 'door_held_open', 'tamper')
              ORDER BY e.ts",
            &[&site, &bounds.0, &bounds.1],
        )
        .await?;
    let events = rows
        .iter()
        .map(|r| GateEvent {
            gate: r.get(0),
            ts: r.get(1),
            event_type: r.get(2),
            result: r.get(3),
            method: r.get(4),
            credential: r.get(5),
            credential_expired: r.get(6),
            duration_s: r.get(7),
        })
        .collect();
    Ok((tz, bounds, events))
}

/// The report as Markdown, for e-mail or a ticket.
pub fn markdown(r: &AccessReport) -> String {
    use std::fmt::Write;
    let local = |t: DateTime<Utc>| {
        t.with_timezone(&r.time_zone.parse::<Tz>().unwrap_or(chrono_tz::UTC))
            .format("%a %d %b %H:%M")
            .to_string()
    };
    let mut s = String::new();
    let _ = writeln!(s, "# Access report, {} — {}\n", r.site, r.week);
    let _ = writeln!(
        s,
        "{} to {} ({}). {} swipes, {} denied. {}.\n",
        local(r.from),
        local(r.to),
        r.time_zone,
        r.swipes,
        r.denied,
        r.credentials_note
    );
    let _ = writeln!(
        s,
        "## Gates\n\n| gate | granted | denied | forced | held open |\n|---|---:|---:|---:|---:|"
    );
    for g in &r.gates {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            g.gate, g.granted, g.denied, g.forced, g.held_open
        );
    }
    let _ = writeln!(s, "\n## Denied bursts\n");
    if r.denied_bursts.is_empty() {
        let _ = writeln!(s, "None.");
    }
    for b in &r.denied_bursts {
        let _ = writeln!(
            s,
            "- `{}` at {}: {} denied, {} – {}",
            b.credential,
            b.gate,
            b.denied,
            local(b.first),
            local(b.last)
        );
    }
    for (title, list) in [
        ("Doors forced", &r.doors_forced),
        ("Doors held open", &r.doors_held_open),
    ] {
        let _ = writeln!(s, "\n## {title}\n");
        if list.is_empty() {
            let _ = writeln!(s, "None.");
        }
        for d in list {
            let held = d.seconds.map(|x| format!(", {x:.0} s")).unwrap_or_default();
            let _ = writeln!(s, "- {} at {}{held}", d.gate, local(d.ts));
        }
    }
    let _ = writeln!(s, "\n## Expired temporary cards\n");
    if r.expired_cards.is_empty() {
        let _ = writeln!(s, "None.");
    }
    for e in &r.expired_cards {
        let _ = writeln!(
            s,
            "- `{}` at {} {} ({})",
            e.credential,
            e.gate,
            local(e.ts),
            e.result
        );
    }
    let _ = writeln!(s, "\n## Activity at unusual hours\n");
    let total: u64 = r.unusual_hours.iter().map(|u| u.swipes).sum();
    let repeated: Vec<&UnusualHours> = r.unusual_hours.iter().filter(|u| u.swipes >= 2).collect();
    let _ = writeln!(
        s,
        "{total} swipes by {} credentials at unusual hours; those with two or more:\n",
        r.unusual_hours.len()
    );
    if repeated.is_empty() {
        let _ = writeln!(s, "None.");
    }
    for u in repeated {
        let _ = writeln!(
            s,
            "- `{}`: {} swipes at {} gate(s), first {}",
            u.credential,
            u.swipes,
            u.gates,
            local(u.first)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, h: u32, m: u32) -> DateTime<Utc> {
        // Local Hong Kong time in ISO week 2026-W23 (Mon 1 June).
        chrono_tz::Asia::Hong_Kong
            .with_ymd_and_hms(2026, 6, day, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn swipe(gate: &str, t: DateTime<Utc>, result: &str, cred: &str) -> GateEvent {
        GateEvent {
            gate: gate.into(),
            ts: t,
            event_type: "access".into(),
            result: Some(result.into()),
            method: Some("card".into()),
            credential: Some(cred.into()),
            credential_expired: false,
            duration_s: None,
        }
    }

    #[test]
    fn the_week_is_cut_in_local_time() {
        let hk = chrono_tz::Asia::Hong_Kong;
        let (from, to) = week_bounds("2026-W23", hk).unwrap();
        assert_eq!(from, at(1, 0, 0));
        assert_eq!(to - from, Duration::days(7));
        assert!(week_bounds("2026-23", hk).is_err());
        assert!(week_bounds("2026-W54", hk).is_err());
        assert_eq!(last_week(at(10, 12, 0), hk), "2026-W23");
    }

    #[test]
    fn the_report_finds_what_the_security_team_looks_for() {
        let hk = chrono_tz::Asia::Hong_Kong;
        let bounds = week_bounds("2026-W23", hk).unwrap();
        let mut events = vec![
            swipe("gate-a", at(2, 9, 0), "granted", "p1"),
            swipe("gate-a", at(2, 9, 1), "granted", "p2"),
            // p3: six denied in eight minutes, then one more much later.
            swipe("gate-b", at(3, 19, 0), "denied", "p3"),
            swipe("gate-b", at(3, 19, 2), "denied", "p3"),
            swipe("gate-b", at(3, 19, 3), "denied", "p3"),
            swipe("gate-b", at(3, 19, 5), "denied", "p3"),
            swipe("gate-b", at(3, 19, 7), "denied", "p3"),
            swipe("gate-b", at(3, 19, 8), "denied", "p3"),
            swipe("gate-b", at(4, 19, 8), "denied", "p3"),
            // p4: four denied in ten minutes: not a burst.
            swipe("gate-a", at(3, 8, 0), "denied", "p4"),
            swipe("gate-a", at(3, 8, 3), "denied", "p4"),
            swipe("gate-a", at(3, 8, 6), "denied", "p4"),
            swipe("gate-a", at(3, 8, 9), "denied", "p4"),
            // p5 at 02:30 and 03:10 local on two gates.
            swipe("gate-a", at(5, 2, 30), "granted", "p5"),
            swipe("gate-b", at(5, 3, 10), "granted", "p5"),
        ];
        events.push(GateEvent {
            credential_expired: true,
            ..swipe("gate-a", at(6, 10, 0), "denied", "p6")
        });
        events.push(GateEvent {
            event_type: "door_forced".into(),
            result: None,
            credential: None,
            ..swipe("gate-b", at(6, 2, 40), "", "")
        });
        events.push(GateEvent {
            event_type: "door_held_open".into(),
            result: None,
            credential: None,
            duration_s: Some(420.0),
            ..swipe("gate-a", at(6, 22, 15), "", "")
        });
        let r = build("hv", hk, "2026-W23", bounds, &events, Thresholds::default()).unwrap();
        assert_eq!(r.swipes, 16);
        assert_eq!(r.denied, 12);
        assert_eq!(r.by_method["card"], 16);
        assert_eq!(r.denied_bursts.len(), 1, "{:?}", r.denied_bursts);
        let b = &r.denied_bursts[0];
        assert_eq!(
            (b.credential.as_str(), b.gate.as_str(), b.denied),
            ("p3", "gate-b", 6)
        );
        assert_eq!((b.first, b.last), (at(3, 19, 0), at(3, 19, 8)));
        assert_eq!(r.doors_forced.len(), 1);
        assert_eq!(r.doors_held_open[0].seconds, Some(420.0));
        assert_eq!(r.expired_cards.len(), 1);
        assert_eq!(r.expired_cards[0].credential, "p6");
        assert_eq!(r.unusual_hours.len(), 1);
        assert_eq!(
            (
                r.unusual_hours[0].credential.as_str(),
                r.unusual_hours[0].swipes,
                r.unusual_hours[0].gates
            ),
            ("p5", 2, 2)
        );
        let a = r.gates.iter().find(|g| g.gate == "gate-a").unwrap();
        assert_eq!((a.granted, a.denied, a.held_open), (3, 5, 1));
        let md = markdown(&r);
        assert!(md.contains("`p3` at gate-b: 6 denied"), "{md}");
        assert!(md.contains("Wed 03 Jun 19:00"), "{md}");
    }
}
