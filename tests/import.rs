//! `estatemon import` on meter data nobody here wrote: OpenEEmeter's
//! bundled daily sample and its NOAA temperatures (tests/fixtures/eemeter,
//! Apache-2.0), a Chicago-time site 11 years back. The import must credit
//! every daily read to its local day, keep the sample's one missing value
//! unknown, refuse what is too old unless history is asked for (with line
//! numbers), and the measured saving must come out near the sample's design
//! saving of 10 %. The hourly sample of the same meter is measured by the
//! hourly model (CalTRACK time of week and temperature) too.

mod common;

use common::*;
use serde_json::Value;

const REGISTRY: &str = r#"
[[site]]
id = "il-sample"
name = "OpenEEmeter sample, Illinois"
time_zone = "America/Chicago"
latitude = 39.84
longitude = -89.68
weather = ["il-weather"]

[[device]]
id = "il-meter"
kind = "electricity_meter"
site = "il-sample"
area = "whole_building"
purpose = "hvac"

[[device]]
id = "il-submeter"
kind = "electricity_meter"
site = "il-sample"
area = "plant"
purpose = "general"

[[device]]
id = "il-weather"
kind = "sensor"
site = "il-sample"
area = "outdoor"
purpose = "general"

# eemeter's sample: intervention 2016-12-26 .. 2017-01-04, a year of
# baseline before and a year of reporting after.
[[retrofit]]
id = "sample"
name = "eemeter sample retrofit"
site = "il-sample"
purpose = "hvac"
date = 2017-01-04
baseline_from = 2015-12-26
baseline_to = 2016-12-26
reporting_to = 2018-01-04
drivers = ["cooling_degree_days", "heating_degree_days"]
"#;

/// `estatemon savings` of the sample site over its reporting year, as JSON.
fn savings_json(db: &TestDb) -> Value {
    let savings = estatemon(db)
        .args([
            "savings",
            "--site",
            "il-sample",
            "--until",
            "2018-01-04",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        savings.status.success(),
        "{}",
        String::from_utf8_lossy(&savings.stderr)
    );
    serde_json::from_slice(&savings.stdout).unwrap()
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eemeter")
        .join(name)
}

#[tokio::test]
async fn an_eemeter_sample_imports_and_measures_near_its_design_saving() {
    let db = TestDb::new(&admin_url());
    let registry = std::env::temp_dir().join(format!("{}.toml", unique("il")));
    std::fs::write(&registry, REGISTRY).unwrap();
    run(estatemon(&db).args(["registry", "load"]).arg(&registry));
    let import = |args: &[&str]| {
        let mut c = estatemon(&db);
        // Keep history: retention would drop 2015 at the next maintenance.
        c.env("ESTATEMON_STORAGE_RETENTION_DAYS", "0")
            .arg("import")
            .args(args);
        c.output().unwrap()
    };
    let meter = fixture("il-electricity-cdd-hdd-daily.csv.gz");
    let meter = meter.to_str().unwrap();

    // Without --accept-history, what is older than ingest.max_age_days
    // (3,650 days by default) is refused by line; a dry run says so and
    // stores nothing.
    let dry = import(&["--device", "il-meter", "--dry-run", meter]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success() && text.contains("dry run"), "{text}");
    assert!(
        text.contains("timestamp_too_old: line 2: 2015-11-22T06:00:00+00:00")
            && text.contains("--accept-history"),
        "{text}"
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 0);
    // With a one-year limit nothing is left: every row a dead letter with
    // its line, nothing stored, exit 2.
    let mut strict = estatemon(&db);
    strict
        .env("ESTATEMON_INGEST_MAX_AGE_DAYS", "365")
        .args(["import", "--device", "il-meter", meter]);
    let refused = strict.output().unwrap();
    let text = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{text}");
    assert!(text.contains("nothing could be imported"), "{text}");
    assert_eq!(
        db.count(
            "SELECT count(*) FROM dead_letters
              WHERE topic = 'import/il-electricity-cdd-hdd-daily.csv.gz' AND detail LIKE 'line %'"
        )
        .await,
        810,
        "every row, the one without a value too"
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await, 0);

    let out = import(&["--device", "il-meter", "--accept-history", meter]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("810 row(s)") && text.contains("interval reads in kWh, daily"),
        "{text}"
    );
    assert!(
        text.contains("1 row(s) without a value (lines 811)"),
        "{text}"
    );
    // 809 days with a value: a start and 809 ends.
    assert_eq!(
        db.count("SELECT count(*) FROM readings WHERE device_id = 'il-meter'")
            .await,
        810
    );
    // Each day's use lands on its local day: the register rises by the
    // sample's value between Chicago midnights (2016-06-07: 14.9 kWh).
    let client = db.client().await;
    let rise: f64 = client
        .query_one(
            "SELECT max(value) - min(value) FROM readings WHERE device_id = 'il-meter'
               AND ts IN ('2016-06-07T00:00:00-05:00', '2016-06-08T00:00:00-05:00')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((rise - 14.9).abs() < 1e-6, "{rise}");
    // Importing the same interval file again would mix two registers.
    let again = import(&["--device", "il-meter", "--accept-history", meter]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot be mixed"));

    let temps = fixture("il-tempF.csv.gz");
    let out = import(&[
        "--device",
        "il-weather",
        "--unit",
        "°F",
        "--accept-history",
        temps.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("gauge reads in °F, 1 h"), "{text}");
    let july: f64 = client
        .query_one(
            "SELECT avg(value) FROM readings WHERE device_id = 'il-weather'
               AND ts >= '2016-07-01' AND ts < '2016-08-01'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((20.0..30.0).contains(&july), "Illinois in July, °C: {july}");

    // No daily meter's day is a gap in the data quality.
    let all = savings_json(&db);
    let s = &all[0];
    let fraction = s["savings_fraction"].as_f64().unwrap();
    let u = s["uncertainty"].as_f64().unwrap() / s["adjusted_baseline"].as_f64().unwrap();
    println!(
        "eemeter sample: estatemon adjusted baseline {:.1} kWh, actual {:.1} kWh, saving \
         {:.2} % ± {:.2} points (90 %), design 10 %; notes {}",
        s["adjusted_baseline"].as_f64().unwrap(),
        s["actual"].as_f64().unwrap(),
        fraction * 100.0,
        u * 100.0,
        s["notes"]
    );
    assert!(
        s["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("outdoor temperature from il-weather")),
        "{}",
        s["notes"]
    );
    // A daily meter gives the hourly model nothing, and the notes say so.
    assert!(
        s["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("no hourly model: the group's meters have no hourly data")),
        "{}",
        s["notes"]
    );
    assert!(s["hourly"].is_null());
    // CalTRACK's balance-point search and degree-hours: within a point of
    // the design saving (eemeter 4.1.1's own daily model on the same data
    // and periods: 7.95 %, BENCHMARKS.md).
    assert!((fraction - 0.10).abs() < 0.01, "{fraction}");
    let chosen = &s["temperature_model"];
    assert_eq!(chosen["form"], "heating and cooling", "{chosen}");
    assert_eq!(s["baseline"]["days_used"], 366, "{}", s["baseline"]);
    // Month by month: a file that follows on from the last one continues
    // its register; one after a gap starts lower (the gap is unknown use).
    let part = |name: &str, rows: &str| {
        let path = std::env::temp_dir().join(format!("{}-{name}.csv", unique("part")));
        std::fs::write(&path, format!("start,value\n{rows}")).unwrap();
        path
    };
    let jan = part("jan", "2026-01-29,10\n2026-01-30,11\n2026-01-31,12\n");
    let feb = part("feb", "2026-02-01,13\n2026-02-02,14\n");
    let apr = part("apr", "2026-04-01,20\n2026-04-02,21\n");
    for f in [&jan, &feb, &apr] {
        let out = import(&["--device", "il-submeter", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(f);
    }
    let reg: Vec<f64> = client
        .query(
            "SELECT value FROM readings WHERE device_id = 'il-submeter' ORDER BY ts",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let steps: Vec<f64> = reg.windows(2).map(|w| w[1] - w[0]).collect();
    // jan: start + 3 ends; feb: 2 ends on from jan's last; apr: a lower
    // start, then 2 ends.
    assert_eq!(reg.len(), 4 + 2 + 3, "{reg:?}");
    assert_eq!(&steps[..5], &[10.0, 11.0, 12.0, 13.0, 14.0], "{steps:?}");
    assert!(steps[5] < 0.0, "the gap reads as unknown: {steps:?}");
    assert_eq!(&steps[6..], &[20.0, 21.0]);
    let _ = std::fs::remove_file(&registry);
}

#[tokio::test]
async fn the_hourly_sample_measures_near_its_design_saving_with_the_hourly_model() {
    let db = TestDb::new(&admin_url());
    let registry = std::env::temp_dir().join(format!("{}.toml", unique("il-hourly")));
    // The same site: the hourly sample goes to its HVAC meter.
    std::fs::write(&registry, REGISTRY).unwrap();
    run(estatemon(&db).args(["registry", "load"]).arg(&registry));
    for (device, file, unit) in [
        ("il-meter", "il-electricity-cdd-hdd-hourly.csv.gz", None),
        ("il-weather", "il-tempF.csv.gz", Some("°F")),
    ] {
        let mut c = estatemon(&db);
        c.env("ESTATEMON_STORAGE_RETENTION_DAYS", "0").args([
            "import",
            "--device",
            device,
            "--accept-history",
        ]);
        if let Some(u) = unit {
            c.args(["--unit", u]);
        }
        let out = c.arg(fixture(file)).output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all = savings_json(&db);
    let s = &all[0];
    let h = &s["hourly"];
    let fraction = h["savings_fraction"].as_f64().unwrap_or(f64::NAN);
    let u = h["uncertainty"].as_f64().unwrap_or(f64::NAN)
        / h["adjusted_baseline"].as_f64().unwrap_or(f64::NAN);
    println!(
        "eemeter hourly sample: estatemon hourly saving {:.2} % ± {:.2} points (90 %), daily \
         model {:.2} %, design 10 %: {h}",
        fraction * 100.0,
        u * 100.0,
        s["savings_fraction"].as_f64().unwrap_or(f64::NAN) * 100.0,
    );
    // eemeter 4.1.1's own hourly model on the same data and periods: 10.90 %
    // (BENCHMARKS.md). estatemon's must be at least as close to the design.
    assert!((fraction - 0.10).abs() <= 0.009, "{h}");
    assert!(u > 0.0 && u < 0.05, "{h}");
    // OpenEEmeter's hourly sample is hour-to-hour noise around its daily
    // shape (CV(RMSE) about 108 % hourly): ASHRAE 14's hourly limit (30 %)
    // is honestly failed, while the NMBE out of sample is near zero.
    let cv = h["cv_rmse"].as_f64().unwrap();
    assert_eq!(h["meets_guideline"], cv <= 0.30, "{h}");
    assert!(
        h["nmbe_out_of_sample"].as_f64().unwrap().abs() < 0.02,
        "{h}"
    );
    // A year of baseline hours (2016 is a leap year), all but a few known.
    let hours = h["baseline_hours"].as_u64().unwrap();
    assert!((8_700..=8_784).contains(&hours), "{h}");
    assert!(
        s["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("hourly model (CalTRACK")),
        "{}",
        s["notes"]
    );
    let _ = std::fs::remove_file(&registry);
}
