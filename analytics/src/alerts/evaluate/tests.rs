use super::*;
use crate::window::{readings_frame, Devices};
use estatemon_domain::rules::RuleSet;

fn t0() -> DateTime<Utc> {
    // 2026-06-08 00:00 in Hong Kong.
    Utc.with_ymd_and_hms(2026, 6, 7, 16, 0, 0).unwrap()
}

fn min(m: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(m)
}

fn device(id: &str, kind: &str, purpose: &str, area: &str) -> DeviceLabels {
    DeviceLabels {
        id: id.into(),
        kind: kind.into(),
        site: Some("hv".into()),
        building: Some("tower-a".into()),
        area: Some(area.into()),
        purpose: Some(purpose.into()),
    }
}

fn devices() -> Devices {
    let mut d = Devices::default();
    for l in [
        device("water-1", "water_meter", "domestic_water", "pump_room"),
        device("lift-1", "lift", "lifts", "lift_shaft"),
        device("lift-2", "lift", "lifts", "lift_shaft"),
        device("fire-1", "sensor", "fire_protection", "pump_room"),
        device("light-1", "electricity_meter", "public_lighting", "garage"),
        device("light-2", "electricity_meter", "public_lighting", "garage"),
        device("gate-1", "access_gate", "security", "lobby"),
    ] {
        d.labels.insert(l.id.clone(), l);
    }
    d.zones.insert("hv".into(), chrono_tz::Asia::Hong_Kong);
    d
}

fn window(now: DateTime<Utc>, rows: Vec<(&str, &str, DateTime<Utc>, f64)>) -> Window {
    let devices = devices();
    let readings = readings_frame(
        &devices,
        rows.into_iter()
            .map(|(d, m, t, v)| (d.to_owned(), m.to_owned(), t, v)),
    )
    .unwrap();
    Window {
        now,
        devices,
        readings,
        registers: Default::default(),
        events: vec![],
        readings_since: now - Duration::hours(3),
        last_seen_before: Default::default(),
        last_message: Default::default(),
        offline: Default::default(),
        history: Default::default(),
    }
}

fn rule(name: &str) -> Rule {
    RuleSet::defaults()
        .rules
        .into_iter()
        .find(|r| r.name == name)
        .unwrap()
}

fn state_of<'a>(findings: &'a [Finding], subject: &str) -> Option<&'a State> {
    findings
        .iter()
        .find(|f| f.subject == subject)
        .map(|f| &f.state)
}

/// Night flow (01:00–05:00 local, above 2.5 for 1 h, clear at 2.0) every
/// 15 minutes, with a leak of 2 m³/h on a night flow of 1.4 from 01:00 local.
#[test]
fn night_flow_fires_after_its_for_and_only_at_night() {
    let r = rule("night_water_flow");
    let flow = |m: i64| if m >= 60 { 3.4 } else { 1.4 };
    let rows = |until: i64| -> Vec<_> {
        (0..=until / 15)
            .map(|i| ("water-1", "flow_m3h", min(i * 15), flow(i * 15)))
            .collect()
    };
    // 01:45: 45 minutes of breach, not yet an hour.
    let f = evaluate(&r, &window(min(105), rows(105))).unwrap();
    assert_eq!(f.len(), 0, "{f:?}");
    // 02:00: an hour since 01:00.
    let f = evaluate(&r, &window(min(120), rows(120))).unwrap();
    assert_eq!(
        state_of(&f, "water-1"),
        Some(&State::Firing {
            since: min(60),
            last: min(120),
            value: Some(3.4)
        })
    );
    assert_eq!(
        f[0].device.as_ref().unwrap().purpose.as_deref(),
        Some("domestic_water")
    );
    // Daytime flow of the same size is not a leak.
    let day: Vec<_> = (0..=8)
        .map(|i| ("water-1", "flow_m3h", min(10 * 60 + i * 15), 3.4))
        .collect();
    let f = evaluate(&r, &window(min(12 * 60), day)).unwrap();
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn thresholds_hold_between_the_trigger_and_the_clear_level() {
    let r = rule("lift_motor_hot"); // above 85 for 10m, clear at 75
    let series = |values: &[f64]| -> Vec<_> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| ("lift-1", "motor_temp_c", min(i as i64 * 5), *v))
            .collect()
    };
    let hot = series(&[70.0, 86.0, 88.0, 90.0]);
    let f = evaluate(&r, &window(min(15), hot)).unwrap();
    assert!(
        matches!(state_of(&f, "lift-1"), Some(State::Firing { since, .. }) if *since == min(5))
    );
    // Cooled to 80: above the clear level, below the trigger: no finding.
    let between = series(&[70.0, 86.0, 88.0, 90.0, 80.0]);
    let f = evaluate(&r, &window(min(20), between)).unwrap();
    assert_eq!(state_of(&f, "lift-1"), None);
    let cooled = series(&[70.0, 86.0, 88.0, 90.0, 80.0, 74.0]);
    let f = evaluate(&r, &window(min(25), cooled)).unwrap();
    assert_eq!(state_of(&f, "lift-1"), Some(&State::Clear { at: min(25) }));
    // A short spike never fires (for = 10m).
    let spike = series(&[70.0, 95.0, 70.0]);
    let f = evaluate(&r, &window(min(10), spike)).unwrap();
    assert_eq!(state_of(&f, "lift-1"), Some(&State::Clear { at: min(10) }));
}

#[test]
fn immediate_thresholds_fire_on_one_sample_and_only_for_selected_devices() {
    let r = rule("fire_main_pressure_low");
    let rows = vec![
        ("fire-1", "pressure_mpa", min(0), 0.62),
        ("fire-1", "pressure_mpa", min(1), 0.42),
        ("lift-1", "pressure_mpa", min(1), 0.1),
    ];
    let f = evaluate(&r, &window(min(1), rows)).unwrap();
    assert_eq!(f.len(), 1);
    assert!(matches!(state_of(&f, "fire-1"), Some(State::Firing { .. })));
}

#[test]
fn rate_fires_on_a_fast_fall() {
    let r = rule("fire_main_pressure_falling"); // fall 0.1 in 15m
    let rows = vec![
        ("fire-1", "pressure_mpa", min(0), 0.62),
        ("fire-1", "pressure_mpa", min(5), 0.60),
        ("fire-1", "pressure_mpa", min(10), 0.49),
    ];
    let f = evaluate(&r, &window(min(10), rows.clone())).unwrap();
    assert!(matches!(state_of(&f, "fire-1"), Some(State::Firing { .. })));
    // Half an hour later the fall has left the window.
    let mut later = rows;
    later.push(("fire-1", "pressure_mpa", min(40), 0.49));
    let f = evaluate(&r, &window(min(40), later)).unwrap();
    assert!(matches!(state_of(&f, "fire-1"), Some(State::Clear { .. })));
}

#[test]
fn stale_devices_fire_but_never_commissioned_ones_do_not() {
    let r = rule("meter_offline"); // 1h, meters only
    let rows = vec![
        ("water-1", "flow_m3h", min(0), 0.1),
        ("light-1", "power_kw", min(110), 1.0),
    ];
    let mut w = window(min(120), rows);
    let f = evaluate(&r, &w).unwrap();
    assert!(
        matches!(state_of(&f, "water-1"), Some(State::Firing { since, .. }) if *since == min(0))
    );
    assert!(matches!(state_of(&f, "light-1"), Some(State::Clear { .. })));
    // Never reported at all: not commissioned, not stale.
    assert_eq!(state_of(&f, "light-2"), None);
    assert_eq!(state_of(&f, "lift-1"), None, "lifts are not selected");
    // Silent through the whole window, last heard of before it.
    w.last_seen_before.insert("light-2".into(), min(-300));
    let f = evaluate(&r, &w).unwrap();
    assert!(
        matches!(state_of(&f, "light-2"), Some(State::Firing { since, .. }) if *since == min(-300))
    );
    // Its data is old, but ingest heard from it a minute ago (catching up
    // on buffered history): sending, not offline.
    w.last_message.insert("light-2".into(), min(119));
    w.last_message.insert("water-1".into(), min(119));
    let f = evaluate(&r, &w).unwrap();
    assert!(matches!(state_of(&f, "light-2"), Some(State::Clear { .. })));
    assert!(matches!(state_of(&f, "water-1"), Some(State::Clear { .. })));
    // Heard from just after `now` (a batch committed while the cycle read
    // its window): heard at `now`, not silent.
    w.last_message.insert("light-2".into(), min(121));
    let f = evaluate(&r, &w).unwrap();
    assert!(
        matches!(state_of(&f, "light-2"), Some(State::Clear { at }) if *at == min(120)),
        "{:?}",
        state_of(&f, "light-2")
    );
    // light-1 reported ten minutes ago, then its Last Will said offline:
    // stale now, not an hour later. A Will older than its last data (it
    // came back without saying so) does not count.
    w.offline.insert("light-1".into(), min(115));
    w.offline.insert("water-1".into(), min(100));
    let f = evaluate(&r, &w).unwrap();
    assert!(
        matches!(state_of(&f, "light-1"), Some(State::Firing { since, .. }) if *since == min(115))
    );
    assert!(matches!(state_of(&f, "water-1"), Some(State::Clear { .. })));
}

#[test]
fn consumption_adds_up_the_area_since_local_midnight() {
    let r = rule("daily_public_lighting_energy"); // per area, above 400 kWh
    let mut w = window(min(20 * 60), vec![]);
    // 23:00 the evening before, then hourly: 15 kWh/h per meter.
    for (id, start) in [("light-1", 1000.0), ("light-2", 5000.0)] {
        let series: Vec<_> = (-1..=20)
            .map(|h| (min(h * 60), start + 15.0 * (h + 1) as f64))
            .collect();
        w.registers.insert((id.into(), "energy_kwh".into()), series);
    }
    let f = evaluate(&r, &w).unwrap();
    // 20 h × 15 kWh × 2 meters = 600 kWh since midnight (not 630).
    match state_of(&f, "hv/garage") {
        Some(State::Firing { since, value, .. }) => {
            assert_eq!(*since, min(0));
            assert!((value.unwrap() - 600.0).abs() < 1e-6, "{value:?}");
        }
        other => panic!("{other:?}"),
    }
    // A reset in the register is not negative use.
    let mut series: Vec<_> = (0..=10)
        .map(|h| (min(h * 60), 500.0 + 10.0 * h as f64))
        .collect();
    series.push((min(11 * 60), 3.0));
    w.registers.clear();
    w.registers
        .insert(("light-1".into(), "energy_kwh".into()), series);
    let f = evaluate(&r, &w).unwrap();
    match state_of(&f, "hv/garage") {
        Some(State::Clear { .. }) => {}
        other => panic!("{other:?}"),
    }
}

fn event(device: &str, m: i64, event_type: &str) -> EventRow {
    EventRow {
        device: device.into(),
        ts: min(m),
        event_type: event_type.into(),
        code: None,
        result: None,
        credential: None,
        credential_expired: false,
        duration_s: None,
        state: None,
    }
}

#[test]
fn event_rules_match_details_and_quiet_down() {
    let mut w = window(min(10), vec![]);
    w.events = vec![
        EventRow {
            code: Some("entrapment".into()),
            ..event("lift-1", 2, "fault")
        },
        EventRow {
            code: Some("door_fault".into()),
            ..event("lift-2", 3, "fault")
        },
        EventRow {
            duration_s: Some(60.0),
            ..event("gate-1", 4, "door_held_open")
        },
    ];
    let f = evaluate(&rule("lift_entrapment"), &w).unwrap();
    assert_eq!(f.len(), 1);
    assert!(
        matches!(state_of(&f, "lift-1"), Some(State::Firing { since, .. }) if *since == min(2))
    );
    assert!(
        evaluate(&rule("door_held_open"), &w).unwrap().is_empty(),
        "60 s < 180 s"
    );
    // Still trapped 38 minutes later: faults wait for the lift, not a timer.
    w.now = min(40);
    let f = evaluate(&rule("lift_entrapment"), &w).unwrap();
    assert!(matches!(state_of(&f, "lift-1"), Some(State::Firing { .. })));
    // A forced door is over 30 quiet minutes after it.
    w.events.push(event("gate-1", 5, "door_forced"));
    let f = evaluate(&rule("door_forced"), &w).unwrap();
    assert_eq!(state_of(&f, "gate-1"), Some(&State::Clear { at: min(35) }));
    // Released: the lift reports idle again, so the entrapment is over then.
    w.now = min(20);
    w.events.push(EventRow {
        state: Some("idle".into()),
        ..event("lift-1", 17, "state")
    });
    let f = evaluate(&rule("lift_entrapment"), &w).unwrap();
    assert_eq!(state_of(&f, "lift-1"), Some(&State::Clear { at: min(17) }));
}

#[test]
fn denied_bursts_count_one_credential_within_the_window() {
    let r = rule("denied_swipes_credential"); // 5 within 10m
    let swipe = |m: i64, cred: &str| EventRow {
        result: Some("denied".into()),
        credential: Some(cred.into()),
        ..event("gate-1", m, "access")
    };
    let mut w = window(min(30), vec![]);
    // Four of card A in 10 minutes, then a fifth 12 minutes after the
    // first: not a burst. Five of card B within 8 minutes: a burst.
    w.events = [0, 2, 4, 9, 12]
        .iter()
        .map(|m| swipe(*m, "A"))
        .chain([10, 12, 14, 16, 18].iter().map(|m| swipe(*m, "B")))
        .collect();
    let f = evaluate(&r, &w).unwrap();
    assert_eq!(f.len(), 1, "{f:?}");
    match state_of(&f, "B") {
        Some(State::Firing { since, last, .. }) => {
            assert_eq!((*since, *last), (min(10), min(18)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f[0].device.as_ref().unwrap().id, "gate-1");
}

/// Issue 30: a lift's fault alert follows the lift. A fault after the lift
/// was back in service starts its own alert (not at the earlier fault), and
/// a lift that reports its state keeps its alert while it stays down, past
/// `resolve_after` (12 h) and after its fault event has left the window;
/// it clears when the lift is back in service. `resolve_after` remains the
/// fallback for a lift that never reports its state.
#[test]
fn a_lift_fault_alert_follows_the_lift() {
    let r = rule("lift_fault");
    let fault = |device: &str, m: i64| EventRow {
        code: Some("door_fault".into()),
        ..event(device, m, "fault")
    };
    let state = |m: i64, s: &str| EventRow {
        state: Some(s.into()),
        ..event("lift-1", m, "state")
    };
    // A door fault at 23:29, back in service at 23:40, another at 09:03.
    let mut w = window(min(600), vec![]);
    w.events = vec![
        fault("lift-1", -31),
        state(-20, "idle"),
        fault("lift-1", 543),
    ];
    let f = evaluate(&r, &w).unwrap();
    match state_of(&f, "lift-1") {
        Some(State::Firing { since, .. }) => {
            assert_eq!(*since, min(543), "starts at its own fault")
        }
        other => panic!("{other:?}"),
    }
    // Down for a day: a fault state with its fault at 00:00.
    let mut w = window(min(13 * 60), vec![]);
    w.events = vec![state(0, "fault"), fault("lift-1", 0), fault("lift-2", 0)];
    w.history
        .state
        .insert("lift-1".into(), ("fault".into(), min(0)));
    let f = evaluate(&r, &w).unwrap();
    assert_eq!(
        state_of(&f, "lift-1"),
        Some(&State::Held),
        "still down after 13 h"
    );
    // lift-2 never reports a state: resolve_after is its fallback.
    assert_eq!(
        state_of(&f, "lift-2"),
        Some(&State::Clear { at: min(12 * 60) })
    );
    // 24 h on, the fault event has left the window: still held.
    w.now = min(24 * 60);
    w.events.clear();
    let f = evaluate(&r, &w).unwrap();
    assert_eq!(state_of(&f, "lift-1"), Some(&State::Held));
    // Back in service at 24:05: over then.
    w.now = min(24 * 60 + 10);
    w.history
        .state
        .insert("lift-1".into(), ("idle".into(), min(24 * 60 + 5)));
    let f = evaluate(&r, &w).unwrap();
    assert_eq!(
        state_of(&f, "lift-1"),
        Some(&State::Clear {
            at: min(24 * 60 + 5)
        })
    );
}

/// Issue 30: a lift on class A's daily cycle and its own 15-day check,
/// never inspected since it began to report 40 days ago: class A's rule
/// finds each missed day (subject `lift@date`), the own-cycle rule each
/// missed 15-day window, named apart (`lift@date (15d cycle)`).
#[test]
fn both_tracks_of_a_lift_are_judged_each_by_its_rule() {
    use estatemon_domain::inspection::{Cycle, EquipmentClass};
    let mut w = window(t0(), vec![]);
    w.history.inspections.insert(
        "lift-1".into(),
        crate::window::Inspected {
            tracks: vec![
                (Some(EquipmentClass::A), EquipmentClass::A.cycle()),
                (None, Cycle::parse("15d").unwrap()),
            ],
            zone: chrono_tz::Asia::Hong_Kong,
            times: vec![],
            since: Some(t0() - Duration::days(40)),
        },
    );
    let lift = device("lift-1", "lift", "lifts", "lift_shaft");
    let selected = vec![&lift];
    let of = |classes: &[&str]| {
        let rule = InspectionRule {
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
        };
        inspection(&rule, &w, &selected)
    };
    let daily = of(&["A"]);
    assert_eq!(daily.len(), 10, "the last 10 daily windows: {daily:?}");
    assert!(
        daily.iter().all(|f| !f.subject.contains("cycle")),
        "{daily:?}"
    );
    let own = of(&["none"]);
    assert!(!own.is_empty(), "the 15-day windows: {own:?}");
    assert!(
        own.iter()
            .all(|f| f.subject.starts_with("lift-1@") && f.subject.ends_with(" (15d cycle)")),
        "{own:?}"
    );
    assert!(own.iter().all(|f| matches!(f.state, State::Firing { .. })));
}
