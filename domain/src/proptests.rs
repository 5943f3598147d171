//! Property tests of the domain's parsers: the configuration loader, the
//! rules file, the registry file and the small value parsers. Arbitrary
//! input never panics (it is an error naming the file, line and field);
//! valid input round-trips. The case count is proptest's (256 by default,
//! `PROPTEST_CASES` for a long run; BENCHMARKS.md records one).

use std::path::Path;

use proptest::prelude::*;

use crate::config::Config;
use crate::device::Registry;
use crate::rules::{Hours, RuleSet, Span};

/// Text that looks like TOML often enough to get past the first token:
/// arbitrary lines of keys, tables, values and junk.
fn tomlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        proptest::sample::select(vec![
            "url",
            "writers",
            "mode",
            "listen",
            "max_points",
            "name",
            "severity",
            "select",
            "threshold",
            "event",
            "after",
            "for",
            "hours",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        Just("\"x\"".to_owned()),
        Just("\"15m\"".to_owned()),
        Just("\"99999999999999999999d\"".to_owned()),
        Just("\"01:00-05:00\"".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e308".to_owned()),
        Just("nan".to_owned()),
        Just("{ kind = \"lift\" }".to_owned()),
        Just("{ metric = \"pressure_mpa\", below = 0.5 }".to_owned()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        ".{0,20}".prop_map(|s| format!("{s:?}")),
    ];
    let line = prop_oneof![
        (key.clone(), value).prop_map(|(k, v)| format!("{k} = {v}")),
        prop_oneof![
            Just("[mqtt]"),
            Just("[ingest]"),
            Just("[api]"),
            Just("[storage]"),
            Just("[alerts]"),
            Just("[[rule]]"),
            Just("[severity]"),
            Just("[[site]]"),
            Just("[[device]]"),
            Just("[mqtt.topics]"),
        ]
        .prop_map(str::to_owned),
        ".{0,40}",
    ];
    proptest::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #[test]
    fn the_config_loader_never_panics(text in tomlish()) {
        let _ = Config::from_toml(&text, Path::new("fuzz.toml"), Vec::new());
    }

    #[test]
    fn the_config_loader_never_panics_on_any_text(text in ".{0,200}") {
        let _ = Config::from_toml(&text, Path::new("fuzz.toml"), Vec::new());
    }

    #[test]
    fn environment_overrides_never_panic(
        key in prop_oneof![
            Just("ESTATEMON_DATABASE_URL".to_owned()),
            Just("ESTATEMON_INGEST_WRITERS".to_owned()),
            Just("ESTATEMON_API_MAX_POINTS".to_owned()),
            Just("ESTATEMON_MQTT__TOPICS__TELEMETRY".to_owned()),
            "ESTATEMON_[A-Z_]{1,30}",
        ],
        value in ".{0,40}",
    ) {
        let _ = Config::from_toml("", Path::new("fuzz.toml"), vec![(key, value)]);
    }

    #[test]
    fn valid_configs_round_trip(
        writers in 1usize..16,
        max_points in 10usize..100_000,
        pool_size in 1usize..64,
        per_minute in 0u32..10_000,
    ) {
        let mut config = Config::default();
        config.ingest.writers = writers;
        config.api.max_points = max_points;
        config.api.pool_size = pool_size;
        config.api.unauthenticated_per_minute = per_minute;
        let text = toml::to_string(&config).unwrap();
        let back = Config::from_toml(&text, Path::new("round.toml"), Vec::new()).unwrap();
        prop_assert_eq!(back, config);
    }

    #[test]
    fn the_rules_loader_never_panics(text in tomlish()) {
        if let Ok(set) = RuleSet::parse(&text, Path::new("rules.toml")) {
            // Whatever loads can be asked what it leaves unpaged.
            let _ = set.missing_emergencies_message();
        }
    }

    #[test]
    fn the_registry_loader_never_panics(text in tomlish()) {
        let _ = Registry::parse(&text, Path::new("site.toml"));
    }

    #[test]
    fn spans_and_hours_never_panic(text in ".{0,30}") {
        let _ = Span::parse(&text);
        let _ = Hours::parse(&text);
    }

    #[test]
    fn spans_round_trip(n in 0i64..=366, unit in prop_oneof![Just("s"), Just("m"), Just("h"), Just("d")]) {
        let text = format!("{n}{unit}");
        if let Ok(span) = Span::parse(&text) {
            prop_assert_eq!(Span::parse(&span.to_string()), Ok(span));
        } else {
            // Only spans over a year are refused.
            prop_assert!(unit == "d" && n > 366 || unit == "h" && n * 3600 > 366 * 86_400);
        }
    }
}
