use super::*;
use chrono::TimeZone;

fn model(seed: u64) -> SiteModel {
    let registry = Registry::parse(crate::DEFAULT_SITE, std::path::Path::new("default")).unwrap();
    SiteModel::new(&registry, None, seed).unwrap()
}

#[test]
fn same_seed_same_messages() {
    let topics = TopicsConfig::default();
    let t = Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap();
    let (mut a, mut b) = (model(7), model(7));
    for i in 0..20 {
        let at = t + Duration::minutes(15 * i);
        assert_eq!(
            a.step(at, Duration::minutes(15), &topics),
            b.step(at, Duration::minutes(15), &topics)
        );
    }
}

#[test]
fn a_split_model_sends_what_the_whole_one_does() {
    let topics = TopicsConfig::default();
    let t = Utc.with_ymd_and_hms(2026, 3, 2, 1, 0, 0).unwrap();
    let mut whole = model(3);
    let mut parts = model(3).split(3);
    for i in 0..40 {
        let at = t + Duration::minutes(15 * i);
        let mut a = whole.step(at, Duration::minutes(15), &topics);
        let mut b: Vec<Message> = parts
            .iter_mut()
            .flat_map(|p| p.step(at, Duration::minutes(15), &topics))
            .collect();
        a.sort_by(|x, y| x.topic.cmp(&y.topic));
        b.sort_by(|x, y| x.topic.cmp(&y.topic));
        assert_eq!(a, b);
    }
}

#[test]
fn lobby_lighting_follows_darkness_and_registers_only_rise() {
    let topics = TopicsConfig::default();
    let mut m = model(1);
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap(); // 08:00 HKT
    let lobby_kw = |msgs: &[Message]| -> f64 {
        let msg = msgs
            .iter()
            .find(|m| m.topic.contains("hv-a-lobby-light"))
            .unwrap();
        let v: Value = serde_json::from_slice(&msg.payload).unwrap();
        v["metrics"]["power_kw"].as_f64().unwrap()
    };
    let noon = lobby_kw(&m.step(start + Duration::hours(4), Duration::minutes(15), &topics));
    let night = lobby_kw(&m.step(start + Duration::hours(15), Duration::minutes(15), &topics));
    assert!(night > 5.0 * noon, "night {night} noon {noon}");
    let before = m.registers();
    m.step(start + Duration::hours(16), Duration::minutes(15), &topics);
    for (id, v) in m.registers() {
        assert!(v >= before[&id], "{id}");
    }
}

#[test]
fn registers_every_fifteen_minutes_gauges_every_step() {
    let registry = Registry::parse(crate::DEFAULT_SITE, std::path::Path::new("default")).unwrap();
    let mut m = SiteModel::with_scenario(&registry, None, Scenario::default(), 1, 900).unwrap();
    let topics = TopicsConfig::default();
    let t = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap();
    let energy = |msgs: &[Message]| {
        msgs.iter()
            .filter(|m| String::from_utf8_lossy(&m.payload).contains("energy_kwh"))
            .count()
    };
    assert!(energy(&m.step(t, Duration::minutes(1), &topics)) > 0);
    let later = m.step(t + Duration::minutes(1), Duration::minutes(1), &topics);
    assert_eq!(energy(&later), 0);
    assert!(later
        .iter()
        .any(|m| String::from_utf8_lossy(&m.payload).contains("power_kw")));
}

#[test]
fn weekday_peaks_and_quiet_holidays() {
    let m = model(1);
    let monday = |h| Utc.with_ymd_and_hms(2026, 3, 2, h, 0, 0).unwrap() - Duration::hours(8);
    assert!(m.occupancy(monday(8) + Duration::minutes(20)) > 3.0 * m.occupancy(monday(3)));
    assert!(m.occupancy(monday(19)) > m.occupancy(monday(14)));
    let registry = Registry::parse(crate::DEFAULT_SITE, std::path::Path::new("default")).unwrap();
    let scenario = Scenario::parse(
        crate::DEFAULT_SITE,
        std::path::Path::new("default"),
        &registry,
        "harbour-view",
    )
    .unwrap();
    let mut holidays: Vec<NaiveDate> = scenario.holidays.iter().copied().collect();
    holidays.sort();
    let holiday = *holidays
        .iter()
        .find(|d| {
            !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
                && !scenario.holidays.contains(&(**d + Duration::days(7)))
        })
        .expect("a weekday holiday");
    let m = SiteModel::with_scenario(&registry, None, scenario, 1, 900).unwrap();
    let morning = |d: NaiveDate| {
        m.shared
            .tz
            .from_local_datetime(&d.and_hms_opt(8, 20, 0).unwrap())
            .unwrap()
            .with_timezone(&Utc)
    };
    let workday = holiday + Duration::days(7);
    assert!(
        m.occupancy(morning(workday)) > 1.5 * m.occupancy(morning(holiday)),
        "{holiday} is quieter than {workday}"
    );
}

/// Issue 30: the simulator expresses what estates see, each in what the
/// lifts publish: per-lift duty and fault rates, out-of-service and
/// inspection states, a late rescuer, a false alarm, failed test calls, a
/// trip-counter reset, a maintenance visit without a technician's card.
#[test]
fn lifts_express_what_estates_see() {
    let registry_text = crate::DEFAULT_SITE
        .split("\n[scenario]")
        .next()
        .unwrap()
        .to_owned();
    let text = format!(
        "{registry_text}
[scenario]
[[scenario.device]]
id = \"hv-a-lift-1\"
duty = 2.0
lift_faults_per_year = 0.0
[[scenario.device]]
id = \"hv-b-lift-1\"
duty = 0.5

[[scenario.fault]]
kind = \"lift_false_alarm\"
device = \"hv-a-lift-1\"
start = 2026-06-02T10:00:00
minutes = 30
[[scenario.fault]]
kind = \"lift_entrapment\"
device = \"hv-b-lift-1\"
start = 2026-06-02T11:00:00
minutes = 40
seconds = 1500
[[scenario.fault]]
kind = \"lift_out_of_service\"
device = \"hv-a-lift-1\"
start = 2026-06-03T09:00:00
minutes = 120
[[scenario.fault]]
kind = \"lift_inspection\"
device = \"hv-b-lift-1\"
start = 2026-06-03T14:00:00
minutes = 60
[[scenario.fault]]
kind = \"alarm_test_failed\"
device = \"hv-a-lift-1\"
start = 2026-06-04T00:00:00
minutes = 2880
[[scenario.fault]]
kind = \"counter_reset\"
device = \"hv-b-lift-1\"
start = 2026-06-05T12:00:00
[[scenario.fault]]
kind = \"lift_maintenance\"
device = \"hv-a-lift-1\"
start = 2026-06-05T09:00:00
minutes = 60
code = \"no_card\"
"
    );
    let path = std::path::Path::new("site.toml");
    let registry = Registry::parse(&text, path).unwrap();
    let scenario =
        crate::scenario::Scenario::parse(&text, path, &registry, "harbour-view").unwrap();
    let mut m = SiteModel::with_scenario(&registry, None, scenario, 5, 900).unwrap();
    let hk = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(&format!("{s}+08:00"))
            .unwrap()
            .with_timezone(&Utc)
    };
    let ids = m
        .device_ids()
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    let index = |id: &str| ids.iter().position(|d| d == id).unwrap();
    let (a, b) = (index("hv-a-lift-1"), index("hv-b-lift-1"));
    let mut events: Vec<(usize, SimEvent)> = Vec::new();
    let mut b_trips: Vec<(DateTime<Utc>, f64)> = Vec::new();
    let step = Duration::minutes(5);
    let mut t = hk("2026-06-01T00:05:00");
    while t <= hk("2026-06-07T00:00:00") {
        for r in m.reports(t, step) {
            match r {
                Report::Events { device, events: e } if device == a || device == b => {
                    events.extend(e.into_iter().map(|e| (device, e)));
                }
                Report::Telemetry {
                    device,
                    ts,
                    metrics,
                } if device == b => {
                    if let Some((_, v)) = metrics.iter().find(|(k, _)| *k == Metric::Trips) {
                        b_trips.push((ts, *v));
                    }
                }
                _ => {}
            }
        }
        t += step;
    }
    let at = |device: usize, when: &str, kind: SimEventKind| {
        assert!(
            events
                .iter()
                .any(|(d, e)| *d == device && e.ts == hk(when) && e.kind == kind),
            "no {kind:?} of {} at {when}: {:?}",
            ids[device],
            events
                .iter()
                .filter(|(d, _)| *d == device)
                .map(|(_, e)| e)
                .collect::<Vec<_>>()
        )
    };
    // The false alarm: alarm, acknowledged, closed as false; never in fault.
    at(
        a,
        "2026-06-02T10:00:00",
        SimEventKind::Fault {
            code: "entrapment".into(),
        },
    );
    at(
        a,
        "2026-06-02T10:01:00",
        SimEventKind::Rescue(RescueStep::Acknowledged),
    );
    at(
        a,
        "2026-06-02T10:30:00",
        SimEventKind::Rescue(RescueStep::FalseAlarm),
    );
    assert!(!events.iter().any(|(d, e)| *d == a
        && e.kind == SimEventKind::State(LiftState::Fault)
        && e.ts >= hk("2026-06-02T10:00:00")
        && e.ts < hk("2026-06-02T10:30:00")));
    // The late rescuer: on site 25 minutes after the alarm.
    at(
        b,
        "2026-06-02T11:25:00",
        SimEventKind::Rescue(RescueStep::RescuerOnSite),
    );
    // Out of service, then back; the inspection, then back.
    at(
        a,
        "2026-06-03T09:00:00",
        SimEventKind::State(LiftState::OutOfService),
    );
    at(
        a,
        "2026-06-03T11:00:00",
        SimEventKind::State(LiftState::Idle),
    );
    at(
        b,
        "2026-06-03T14:00:00",
        SimEventKind::State(LiftState::Inspection),
    );
    at(
        b,
        "2026-06-03T15:00:00",
        SimEventKind::State(LiftState::Idle),
    );
    // Test calls fail for two days, pass before and after.
    at(
        a,
        "2026-06-03T03:00:00",
        SimEventKind::AlarmTest { passed: true },
    );
    at(
        a,
        "2026-06-04T03:00:00",
        SimEventKind::AlarmTest { passed: false },
    );
    at(
        a,
        "2026-06-05T03:00:00",
        SimEventKind::AlarmTest { passed: false },
    );
    at(
        a,
        "2026-06-06T03:00:00",
        SimEventKind::AlarmTest { passed: true },
    );
    // The visit without a card: the maintenance state, no card.
    at(
        a,
        "2026-06-05T09:00:00",
        SimEventKind::State(LiftState::Maintenance),
    );
    assert!(!events
        .iter()
        .any(|(d, e)| *d == a && matches!(e.kind, SimEventKind::MaintenanceMode { .. })));
    // The trip counter falls once, at the reset.
    let falls: Vec<DateTime<Utc>> = b_trips
        .windows(2)
        .filter(|w| w[1].1 < w[0].1)
        .map(|w| w[1].0)
        .collect();
    assert_eq!(falls.len(), 1, "{falls:?}");
    assert!(
        falls[0] >= hk("2026-06-05T12:00:00") && falls[0] <= hk("2026-06-05T12:15:00"),
        "{falls:?}"
    );
    // Duty 2 against 0.5: four times the trips, within the noise.
    let truth = m.device_truth();
    let ratio = truth["hv-a-lift-1"].consumption / truth["hv-b-lift-1"].consumption;
    assert!((3.0..5.5).contains(&ratio), "trips ratio {ratio}");
}
