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

/// A meter's register as the field sends it: steady use at uneven cadence,
/// with outages, resets to near zero (a firmware update, a replaced meter)
/// and falls that fit nothing (unknown use). (minutes after the start,
/// value) pairs, in time order.
fn register_series() -> impl Strategy<Value = Vec<(i64, f64)>> {
    let step = (
        prop_oneof![
            8 => 1i64..=30,          // ordinary cadence, minutes
            1 => 120i64..=900,       // an outage of 2 to 15 hours
        ],
        0.0f64..=8.0, // use since the last reading
        prop_oneof![
            20 => Just(0u8),         // no event
            1 => Just(1u8),          // reset to near zero
            1 => Just(2u8),          // a fall that fits nothing
        ],
    );
    (0i64..60, proptest::collection::vec(step, 2..150)).prop_map(|(start, steps)| {
        let mut t = start;
        let mut v = 1_000.0;
        let mut out = vec![(t, v)];
        for (dt, used, event) in steps {
            t += dt;
            v = match event {
                1 => used.min(5.0),
                2 => v * 0.5,
                _ => v + used,
            };
            out.push((t, v));
        }
        out
    })
}

proptest! {
    /// Any register series: each hour's use (what `consumption_hourly`
    /// holds) sums, over any run of known hours (a day of them, say), to
    /// the raw intervals' use over the same time: resets, rollovers,
    /// replacements and outages counted once, in the hours they fall in,
    /// never dropped. An hour is given only when its intervals cover it
    /// whole and none of them has an unknown use.
    #[test]
    fn hours_add_up_to_the_raw_readings(points in register_series()) {
        use crate::consumption::{derive, hour_floor, hourly, RegisterPolicy, RegisterSample};
        use chrono::{DateTime, Duration, Utc};
        let t0: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
        let samples: Vec<RegisterSample> = points
            .iter()
            .map(|&(m, value)| RegisterSample { ts: t0 + Duration::minutes(m), value })
            .collect();
        let intervals = derive(&samples, &RegisterPolicy::default());
        let from = hour_floor(samples[0].ts);
        let to = hour_floor(samples[samples.len() - 1].ts) + Duration::hours(1);
        let hours = hourly(&intervals, from, to);
        let share = |a: DateTime<Utc>, b: DateTime<Utc>| -> Option<f64> {
            let mut sum = 0.0;
            for i in &intervals {
                let overlap = (i.end.min(b) - i.start.max(a)).num_milliseconds();
                if overlap > 0 {
                    let len = (i.end - i.start).num_milliseconds() as f64;
                    sum += i.consumption? * overlap as f64 / len;
                }
            }
            Some(sum)
        };
        for h in &hours {
            prop_assert_eq!(h.hour, hour_floor(h.hour));
            prop_assert!(h.used >= 0.0 && h.used.is_finite(), "{:?}", h);
            // Covered whole, by known intervals only.
            prop_assert!(intervals.first().unwrap().start <= h.hour);
            prop_assert!(intervals.last().unwrap().end >= h.hour + Duration::hours(1));
            let raw = share(h.hour, h.hour + Duration::hours(1));
            prop_assert!(raw.is_some(), "an hour with unknown use was given: {:?}", h);
            prop_assert!((raw.unwrap() - h.used).abs() <= 1e-9 * (1.0 + h.used), "{:?} vs {:?}", h, raw);
        }
        // Every run of consecutive known hours sums to the raw use of its span.
        let mut i = 0;
        while i < hours.len() {
            let mut j = i;
            while j + 1 < hours.len() && hours[j + 1].hour == hours[j].hour + Duration::hours(1) {
                j += 1;
            }
            let summed: f64 = hours[i..=j].iter().map(|h| h.used).sum();
            let raw = share(hours[i].hour, hours[j].hour + Duration::hours(1)).unwrap();
            prop_assert!((summed - raw).abs() <= 1e-6 * (1.0 + raw), "{} vs {}", summed, raw);
            i = j + 1;
        }
        // No hour that could be known is dropped: every whole hour inside
        // the readings whose intervals are all known is given.
        let mut h = from;
        while h + Duration::hours(1) <= to {
            let inside = intervals.first().unwrap().start <= h
                && intervals.last().unwrap().end >= h + Duration::hours(1);
            if inside && share(h, h + Duration::hours(1)).is_some() {
                prop_assert!(hours.iter().any(|x| x.hour == h), "hour {} dropped", h);
            }
            h += Duration::hours(1);
        }
    }
}
