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
    // With a one-year limit nothing is left: every row would be a dead
    // letter with its line; the file is refused whole, nothing stored
    // (dead letters neither), exit 2.
    let mut strict = estatemon(&db);
    strict
        .env("ESTATEMON_INGEST_MAX_AGE_DAYS", "365")
        .args(["import", "--device", "il-meter", meter]);
    let refused = strict.output().unwrap();
    let text = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{text}");
    assert!(
        text.contains("nothing could be imported (810 dead letter(s), none stored)"),
        "{text}"
    );
    let printed = String::from_utf8_lossy(&refused.stdout);
    assert!(printed.contains("timestamp_too_old: line 2:"), "{printed}");
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 0);
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

const PGE_REGISTRY: &str = r#"
[[site]]
id = "sf-office"
name = "An office in San Francisco"
time_zone = "America/Los_Angeles"
latitude = 37.79
longitude = -122.39

[[device]]
id = "sf-meter"
kind = "electricity_meter"
site = "sf-office"
area = "whole_building"
purpose = "general"

[[device]]
id = "sf-meter-2"
kind = "electricity_meter"
site = "sf-office"
area = "plant"
purpose = "general"
"#;

/// A PG&E Green Button "Download My Data" CSV as its downloads are laid
/// out (PG&E's own description of Green Button, and the same Opower layout
/// PECO, ComEd and Con Edison publish): `Name`, `Address`, `Account
/// Number`, `Service` preamble lines and a blank line, then `TYPE,DATE,START
/// TIME,END TIME,USAGE,UNITS,COST,NOTES`, 15-minute rows with the date and
/// the times of day apart, the fall-back hour of 2 November 2025 written
/// twice. The layout is reproduced from these documented downloads, the
/// values made up (22.8–23.5 kWh a day). Returns the text and each day's
/// use as the file says it.
fn pge_download() -> (String, Vec<f64>) {
    let mut s = String::from(
        "Name,JANE DOE\nAddress,\"77 BEALE ST, SAN FRANCISCO CA 94105\"\n\
         Account Number,1234567890\nService,Service 1\n\n\
         TYPE,DATE,START TIME,END TIME,USAGE,UNITS,COST,NOTES\n",
    );
    let mut days = Vec::new();
    for (d, day) in ["2025-11-01", "2025-11-02", "2025-11-03"]
        .iter()
        .enumerate()
    {
        let mut hours: Vec<u32> = (0..24).collect();
        if *day == "2025-11-02" {
            hours.insert(2, 1);
        }
        let mut total = 0.0;
        let mut k = 0;
        for h in hours {
            for m in [0, 15, 30, 45] {
                let kwh = format!("{:.2}", 0.20 + 0.02 * ((k * 7 + d) % 5) as f64);
                total += kwh.parse::<f64>().unwrap();
                k += 1;
                let note = if *day == "2025-11-01" && h == 3 && m < 30 {
                    "This read was estimated"
                } else {
                    ""
                };
                s.push_str(&format!(
                    "Electric usage,{day},{h:02}:{m:02},{h:02}:{:02},{kwh},kWh,$0.06,{note}\n",
                    m + 14
                ));
            }
        }
        days.push(total);
    }
    (s, days)
}

#[tokio::test]
async fn a_green_button_download_imports_with_its_days_intact() {
    let db = TestDb::new(&admin_url());
    let registry = std::env::temp_dir().join(format!("{}.toml", unique("pge")));
    std::fs::write(&registry, PGE_REGISTRY).unwrap();
    run(estatemon(&db).args(["registry", "load"]).arg(&registry));
    let (text, days) = pge_download();
    // 96 quarter hours on ordinary days, 100 on the fall-back day.
    assert!(
        (22.8..=23.5).contains(&days[0]) && days[1] > days[0],
        "{days:?}"
    );
    // An exact repeat and a conflicting one, as concatenated downloads have.
    let text = format!(
        "{text}Electric usage,2025-11-01,10:00,10:14,{},kWh,$0.06,\n\
         Electric usage,2025-11-03,10:00,10:14,9.99,kWh,$0.06,\n",
        text.lines()
            .find(|l| l.contains("2025-11-01,10:00"))
            .unwrap()
            .split(',')
            .nth(4)
            .unwrap()
    );
    let file = |name: &str, bytes: &[u8]| {
        let path = std::env::temp_dir().join(format!("{}-{name}", unique("pge")));
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let csv = file("pge_electric_interval_data.csv", text.as_bytes());
    let import = |args: &[&str], path: &std::path::Path| {
        estatemon(&db)
            .arg("import")
            .args(args)
            .arg(path)
            .output()
            .unwrap()
    };

    // The date named as the time would put 100 intervals on one stamp: refused,
    // the columns to name in the message, nothing stored.
    let out = import(&["--device", "sf-meter", "--time-column", "DATE"], &csv);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--date-column 'DATE' --time-column 'START TIME'"),
        "{err}"
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 0);

    let out = import(&["--device", "sf-meter"], &csv);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "294 row(s) from columns `DATE + START TIME` and `USAGE`, interval reads in kWh, 15 min",
        "header on line 6: 5 line(s) before it skipped",
        "1 exact duplicate row(s) dropped (lines 299)",
        "1 dead letter(s)",
        "quality (column `NOTES`): 2 estimated, 0 actual, 290 unflagged",
        "estimated (stored like the others; readings carry no quality): lines 19, 20, \
         2025-11-01 03:00 .. 2025-11-01 03:15",
        "4 row(s) in the hour a clock change repeats",
    ] {
        assert!(summary.contains(expected), "{expected}\n{summary}");
    }
    assert!(!summary.contains("hole"), "{summary}");
    // Each local day's use is the file's, the 25-hour day too.
    let client = db.client().await;
    for (k, (from, to)) in [
        ("2025-11-01T00:00:00-07:00", "2025-11-02T00:00:00-07:00"),
        ("2025-11-02T00:00:00-07:00", "2025-11-03T00:00:00-08:00"),
        ("2025-11-03T00:00:00-08:00", "2025-11-04T00:00:00-08:00"),
    ]
    .into_iter()
    .enumerate()
    {
        let stored: f64 = client
            .query_one(
                &format!(
                    "SELECT max(value) FILTER (WHERE ts = '{to}') - max(value) FILTER (WHERE ts = '{from}')
                       FROM readings WHERE device_id = 'sf-meter'"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            (stored - days[k]).abs() < 1e-6,
            "day {k}: {stored} vs {}",
            days[k]
        );
    }
    // The conflicting repeat is a dead letter with both values.
    let detail: String = client
        .query_one(
            "SELECT detail FROM dead_letters WHERE reason = 'conflicting_duplicate'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        detail.starts_with("line 300:") && detail.contains("this row says 9.99 kWh"),
        "{detail}"
    );

    // Excel's "Unicode text" (UTF-16 with a BOM) reads as its UTF-8 twin;
    // bytes that are neither are refused with exit 2 and store nothing.
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let wide = file("unicode.csv", &utf16);
    let out = import(&["--device", "sf-meter-2", "--dry-run"], &wide);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && printed.contains("read as UTF-16LE text")
            && printed.contains("294 row(s)"),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let latin1 = file("latin1.csv", b"start,temp \xB0F\n2025-11-01,1\n");
    let out = import(&["--device", "sf-meter-2"], &latin1);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8 or UTF-16"));
    assert_eq!(
        db.count("SELECT count(*) FROM readings WHERE device_id = 'sf-meter-2'")
            .await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM dead_letters").await, 1);
    for f in [&registry, &csv, &wide, &latin1] {
        let _ = std::fs::remove_file(f);
    }
}
