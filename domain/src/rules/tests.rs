use super::*;
use crate::pseudonym::Pseudonymiser;

fn parse(text: &str) -> Result<RuleSet, ConfigError> {
    RuleSet::parse(text, Path::new("rules.toml"))
}

fn lift() -> DeviceLabels {
    DeviceLabels {
        id: "hv-a-lift-1".into(),
        kind: "lift".into(),
        site: Some("harbour-view".into()),
        building: Some("tower-a".into()),
        area: Some("lift_shaft".into()),
        purpose: Some("lifts".into()),
    }
}

#[test]
fn the_shipped_rules_are_valid_and_cover_the_cases() {
    let set = RuleSet::defaults();
    let kinds: HashSet<&str> = set.rules.iter().map(|r| r.condition.kind()).collect();
    for kind in [
        "threshold",
        "rate",
        "stale",
        "consumption",
        "event",
        "denied",
    ] {
        assert!(kinds.contains(kind), "no {kind} rule shipped");
    }
    assert_eq!(set.deadlines.of(Severity::Emergency), Span(900));
    assert_eq!(set.deadlines.of(Severity::Ordinary), Span(7200));
    assert_eq!(set.deadlines.of(Severity::Routine), Span(86_400));
    let immediate: Vec<&str> = set
        .rules
        .iter()
        .filter(|r| r.immediate)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        immediate,
        ["lift_entrapment", "door_forced", "fire_main_pressure_low"]
    );
    let fire = set
        .rules
        .iter()
        .find(|r| r.name == "fire_main_pressure_low")
        .unwrap();
    match &fire.condition {
        Condition::Threshold(t) => assert_eq!(t.level(), Level::Below(0.5)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn spans_and_hours_parse() {
    assert_eq!(Span::parse("90s"), Ok(Span(90)));
    assert_eq!(Span::parse("15m"), Ok(Span(900)));
    assert_eq!(Span::parse("2h"), Ok(Span(7200)));
    assert_eq!(Span::parse("1d"), Ok(Span(86_400)));
    assert!(Span::parse("15").is_err());
    assert!(Span::parse("m").is_err());
    assert!(Span::parse("-5m").is_err());
    assert!(Span::parse("400d").is_err());
    assert_eq!(Span(7200).to_string(), "2h");
    let night = Hours::parse("01:00-05:00").unwrap();
    assert!(night.contains(60) && night.contains(299) && !night.contains(300));
    let wrap = Hours::parse("22:00-06:00").unwrap();
    assert!(wrap.contains(23 * 60) && wrap.contains(0) && !wrap.contains(12 * 60));
    assert!(Hours::parse("25:00-01:00").is_err());
    assert!(Hours::parse("01:00-01:00").is_err());
}

#[test]
fn selectors_match_every_given_field() {
    let any = Selector::default();
    assert!(any.matches(&lift()));
    let set = parse(
        r#"
[[rule]]
name = "a"
severity = "ordinary"
select = { kind = ["lift", "access_gate"], building = "tower-a" }
stale = { after = "1h" }
"#,
    )
    .unwrap();
    let sel = &set.rules[0].select;
    assert!(sel.matches(&lift()));
    assert!(!sel.matches(&DeviceLabels {
        building: Some("tower-b".into()),
        ..lift()
    }));
    assert!(!sel.matches(&DeviceLabels {
        kind: "water_meter".into(),
        ..lift()
    }));
    assert!(!sel.matches(&DeviceLabels {
        building: None,
        ..lift()
    }));
}

#[test]
fn bad_rules_name_the_line_and_the_field() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[[rule]]\nname = \"a\"\nseverity = \"urgent\"\nstale = { after = \"1h\" }\n",
            3,
            "severity",
            "unknown variant",
        ),
        (
            "[[rule]]\nname = \"a\"\nseverity = \"ordinary\"\nselect = { kind = \"lifts\" }\nstale = { after = \"1h\" }\n",
            4,
            "rule.select.kind",
            "unknown variant `lifts`",
        ),
        (
            "[[rule]]\nname = \"a\"\nseverity = \"ordinary\"\nstale = { after = \"1 hour\" }\n",
            4,
            "rule.stale.after",
            "unit must be",
        ),
        (
            "[[rule]]\nname = \"hot\"\nseverity = \"ordinary\"\nthreshold = { metric = \"motor_temp_c\", above = 80.0, clear = 90.0 }\n",
            4,
            "rule[hot].threshold.clear",
            "safe side",
        ),
        (
            "[[rule]]\nname = \"e\"\nseverity = \"ordinary\"\nthreshold = { metric = \"energy_kwh\", above = 1.0 }\n",
            4,
            "rule[e].threshold.metric",
            "consumption",
        ),
        (
            "[[rule]]\nname = \"two\"\nseverity = \"ordinary\"\nstale = { after = \"1h\" }\nrate = { metric = \"pressure_mpa\", fall = 0.1, window = \"5m\" }\n",
            2,
            "rule[two].condition",
            "exactly one",
        ),
        (
            "[[rule]]\nname = \"x\"\nseverity = \"ordinary\"\nstale = { after = \"1h\" }\n\n[[rule]]\nname = \"x\"\nseverity = \"ordinary\"\nstale = { after = \"2h\" }\n",
            2,
            "rule[x].name",
            "two rules",
        ),
        (
            "[[rule]]\nname = \"w\"\nseverity = \"ordinary\"\nimmediate = true\nthreshold = { metric = \"flow_m3h\", above = 1.0, for = \"1h\" }\n",
            5,
            "rule[w].threshold.for",
            "one reading",
        ),
        (
            "[[rule]]\nname = \"f\"\nseverity = \"ordinary\"\nevent = { type = \"fire\" }\n",
            4,
            "type",
            "unknown event type `fire`",
        ),
    ];
    for (text, line, field, message) in cases {
        let err = parse(text).expect_err(text);
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("rules.toml:{line}")),
            "{shown} (wanted line {line})"
        );
        assert!(shown.contains(field), "{shown} (wanted field {field})");
        assert!(shown.contains(message), "{shown} (wanted {message})");
    }
}

#[test]
fn disabled_rules_are_validated_but_not_loaded() {
    let set = parse(
        "[[rule]]\nname = \"a\"\nseverity = \"ordinary\"\nenabled = false\nstale = { after = \"1h\" }\n",
    )
    .unwrap();
    assert!(set.rules.is_empty());
}

#[test]
fn immediate_rules_match_single_events_and_readings() {
    let set = RuleSet::defaults();
    let names = |it: &mut dyn Iterator<Item = &Rule>| -> Vec<String> {
        it.map(|r| r.name.clone()).collect()
    };
    let trapped = EventDetail::Fault {
        code: "entrapment".into(),
    };
    assert_eq!(
        names(&mut set.immediate_for_event(&lift(), &trapped)),
        ["lift_entrapment"]
    );
    let door = EventDetail::Fault {
        code: "door_fault".into(),
    };
    assert!(names(&mut set.immediate_for_event(&lift(), &door)).is_empty());
    let sensor = DeviceLabels {
        id: "hv-fire-main-pressure".into(),
        kind: "sensor".into(),
        purpose: Some("fire_protection".into()),
        ..DeviceLabels::default()
    };
    assert_eq!(
        names(&mut set.immediate_for_reading(&sensor, Metric::PressureMpa, 0.42)),
        ["fire_main_pressure_low"]
    );
    assert!(names(&mut set.immediate_for_reading(&sensor, Metric::PressureMpa, 0.5)).is_empty());
    assert!(names(&mut set.immediate_for_reading(&lift(), Metric::PressureMpa, 0.1)).is_empty());
}

#[test]
fn event_rules_filter_on_their_details() {
    let held = EventRule {
        event_type: EventTypeName(EventType::DoorHeldOpen),
        codes: vec![],
        min_seconds: Some(180.0),
        credential_expired: false,
        resolve_after: Span(1800),
    };
    assert!(held.matches(&EventDetail::DoorHeldOpen { seconds: 420.0 }));
    assert!(!held.matches(&EventDetail::DoorHeldOpen { seconds: 60.0 }));
    assert!(!held.matches(&EventDetail::DoorForced));
    let expired = EventRule {
        event_type: EventTypeName(EventType::Access),
        codes: vec![],
        min_seconds: None,
        credential_expired: true,
        resolve_after: Span(1800),
    };
    let access = |exp: bool, result| EventDetail::Access {
        result,
        method: crate::event::AccessMethod::Card,
        credential: Some(Pseudonymiser::new(b"k").pseudonymise("card-1")),
        direction: None,
        credential_expired: exp,
    };
    assert!(expired.matches(&access(true, AccessResult::Granted)));
    assert!(expired.matches(&access(true, AccessResult::Denied)));
    assert!(!expired.matches(&access(false, AccessResult::Granted)));
    assert!(Denied::counts(&access(false, AccessResult::Denied)));
    assert!(!Denied::counts(&access(false, AccessResult::Granted)));
}

#[test]
fn hysteresis_levels() {
    let t = Threshold {
        metric: Metric::FlowM3h,
        above: Some(0.8),
        below: None,
        clear: Some(0.4),
        for_: Span(3600),
        hours: None,
    };
    let level = t.level();
    assert!(level.breached(0.9) && !level.breached(0.8));
    assert!(
        !level.cleared(t.clear_level(), 0.5),
        "between levels: keep state"
    );
    assert!(level.cleared(t.clear_level(), 0.4));
}

#[test]
fn sets_without_the_emergency_rules_are_named() {
    assert!(RuleSet::defaults().missing_emergencies().is_empty());
    // An empty body, or a file holding only a comment: every emergency off.
    for empty in ["", "# nothing here\n"] {
        let set = parse(empty).unwrap();
        assert_eq!(set.missing_emergencies(), Emergency::ALL.to_vec());
        let message = set.missing_emergencies_message().unwrap();
        assert!(message.contains("entrapment") && message.contains("fire_main_pressure_low"));
    }
    // Disabling one, or demoting it to ordinary, or taking it off the
    // ingest path, each leaves that emergency uncovered.
    let shipped = DEFAULT_RULES;
    let cases = [
        (
            shipped.replace(
                "name = \"door_forced\"",
                "name = \"door_forced\"\nenabled = false",
            ),
            Emergency::DoorForced,
        ),
        (
            shipped.replace(
                "summary = \"Passenger trapped in a lift (困人)\"\nseverity = \"emergency\"",
                "summary = \"Passenger trapped in a lift (困人)\"\nseverity = \"ordinary\"",
            ),
            Emergency::Entrapment,
        ),
        (
            shipped.replace(
                "summary = \"Fire-main pressure below 0.5 MPa\"\nseverity = \"emergency\"\nimmediate = true",
                "summary = \"Fire-main pressure below 0.5 MPa\"\nseverity = \"emergency\"\nimmediate = false",
            ),
            Emergency::FireMainPressureLow,
        ),
    ];
    for (text, gone) in cases {
        assert_ne!(text, shipped, "the replacement applied");
        assert_eq!(parse(&text).unwrap().missing_emergencies(), vec![gone]);
    }
}

#[test]
fn emergencies_page_for_devices_the_registry_does_not_know_yet() {
    let set = RuleSet::defaults();
    // Auto-registered by ingest: kind unknown, only the site from the topic.
    let newcomer = DeviceLabels {
        id: "hv-c-lift-9".into(),
        kind: "unknown".into(),
        site: Some("harbour-view".into()),
        ..Default::default()
    };
    let trapped = EventDetail::Fault {
        code: "entrapment".into(),
    };
    let names: Vec<&str> = set
        .immediate_for_event(&newcomer, &trapped)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["lift_entrapment"]);
    let forced: Vec<&str> = set
        .immediate_for_event(&newcomer, &EventDetail::DoorForced)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(forced, ["door_forced"]);
    let low: Vec<&str> = set
        .immediate_for_reading(&newcomer, Metric::PressureMpa, 0.3)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(low, ["fire_main_pressure_low"]);
    // Not ordinary rules: a lift fault of an unknown device waits for the
    // registry.
    let ordinary = set.rules.iter().find(|r| r.name == "lift_fault").unwrap();
    assert!(!ordinary.applies_to(&newcomer));
    // A registered device of another kind is not a lift.
    let meter = DeviceLabels {
        kind: "water_meter".into(),
        purpose: Some("domestic_water".into()),
        ..newcomer.clone()
    };
    assert_eq!(set.immediate_for_event(&meter, &trapped).count(), 0);
    assert_eq!(
        set.immediate_for_reading(&meter, Metric::PressureMpa, 0.3)
            .count(),
        0
    );
    // A site-scoped emergency rule still needs the site.
    let scoped = parse(
        r#"
[[rule]]
name = "trapped_elsewhere"
severity = "emergency"
immediate = true
select = { kind = "lift", site = "other-estate" }
event = { type = "fault", codes = ["entrapment"], resolve_after = "12h" }
"#,
    )
    .unwrap();
    assert_eq!(scoped.immediate_for_event(&newcomer, &trapped).count(), 0);
}
