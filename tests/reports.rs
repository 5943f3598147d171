//! Savings and the quarterly report end to end: a simulated site with
//! retrofits (whose true savings the simulator books) is backfilled into a
//! real database; the measured savings must match the truth within 2
//! percentage points, a season-only "retrofit" must show no saving, and
//! the report must be built, stored, listed, rendered in every format and
//! drawn by a real browser.

mod common;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use common::*;
use estatemon_analytics::report::{store, Quarter};
use estatemon_domain::config::EnergyConfig;
use estatemon_simulators::truth::GroundTruth;
use serde_json::Value;

fn backfill(db: &TestDb, site: &std::path::Path, from: &str, to: &str) -> GroundTruth {
    let truth = std::env::temp_dir().join(format!("{}.json", unique("truth")));
    run(estatemon(db)
        .args(["simulate", "backfill", "--direct", "--site-file"])
        .arg(site)
        .args(["--from", from, "--to", to, "--interval-s", "900", "--truth"])
        .arg(&truth));
    let t = GroundTruth::read(&truth).unwrap();
    let _ = std::fs::remove_file(&truth);
    t
}

fn savings_json(db: &TestDb, until: &str) -> Vec<Value> {
    let out = estatemon(db)
        .args([
            "savings",
            "--site",
            "harbour-view",
            "--until",
            until,
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {}", v["id"]))
}

#[test]
fn measured_savings_match_the_simulators_truth_and_seasons_are_not_savings() {
    let db = TestDb::new(&admin_url());
    // A season-only check: lobby lighting "retrofitted" on 2025-10-01 —
    // nothing changed then; the baseline is summer, the reporting period
    // winter (the real LED retrofit comes later, on 2026-04-01).
    let site = site_file(
        r#"
[[retrofit]]
id = "season-check"
name = "Season check: lobby lighting, no retrofit"
site = "harbour-view"
purpose = "public_lighting"
area = "lobby"
date = 2025-10-01
baseline_from = 2025-04-01
reporting_to = 2026-04-01
target = 0.35
"#,
    );
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("simulators/sites/harbour-view.toml");
    let truth = backfill(
        &db,
        &shipped,
        "2025-04-01T00:00:00+08:00",
        "2026-10-01T00:00:00+08:00",
    );
    run(estatemon(&db).args(["registry", "load"]).arg(&site));
    let measured = savings_json(&db, "2026-10-01");
    assert_eq!(
        measured.len(),
        truth.retrofits.len() + 1,
        "every retrofit and the season check"
    );
    let by_name: HashMap<&str, &Value> = measured
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s))
        .collect();
    for t in &truth.retrofits {
        let s = by_name
            .get(t.name.as_str())
            .unwrap_or_else(|| panic!("no measurement of `{}`", t.name));
        let want = t.saving.true_saving.unwrap();
        let got = f(s, "savings_fraction");
        println!(
            "{}: measured {:.2} % (± {:.0} {} at 90 %), truth {:.2} %",
            t.name,
            got * 100.0,
            f(s, "uncertainty"),
            s["unit"].as_str().unwrap(),
            want * 100.0
        );
        assert!(
            (got - want).abs() <= 0.02,
            "{}: measured {got:.4}, truth {want:.4}",
            t.name
        );
        assert_eq!(s["meets_guideline"], true, "{}: {:?}", t.name, s["notes"]);
        let model = &s["daily_model"];
        assert!(f(model, "cv_rmse") <= 0.30 && f(model, "nmbe").abs() <= 0.10);
        assert!(f(s, "uncertainty") > 0.0 && f(s, "fractional_uncertainty") < 0.5);
        assert!(f(s, "cost_saved") > 0.0 && f(s, "co2_kg_saved") > 0.0);
        assert_eq!(f(s, "target"), t.target.unwrap());
    }

    let season = by_name["Season check: lobby lighting, no retrofit"];
    let fraction = f(season, "savings_fraction");
    println!(
        "season check: measured {:.2} % (no retrofit)",
        fraction * 100.0
    );
    assert!(fraction.abs() <= 0.02, "a seasonal artefact: {fraction}");
    // … where comparing the two periods directly shows a large change.
    let mean = |reporting: bool| {
        let v: Vec<f64> = season["daily"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["reporting"] == reporting)
            .filter_map(|p| p["actual"].as_f64())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let naive = 1.0 - mean(true) / mean(false);
    println!(
        "season check: before/after comparison {:.2} %",
        naive * 100.0
    );
    assert!(naive < -0.05, "the check needs a seasonal swing: {naive}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarterly_report_is_generated_stored_and_renders_in_a_browser() {
    let db = TestDb::new(&admin_url());
    // A meter registered after the history (the simulator never saw it):
    // its use must show as missing.
    let extra = site_file(
        r#"
[[device]]
id = "hv-new-chiller-meter"
name = "New chiller meter (not yet wired)"
kind = "electricity_meter"
site = "harbour-view"
building = "podium"
area = "plant_room"
purpose = "hvac"
"#,
    );
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("simulators/sites/harbour-view.toml");
    backfill(
        &db,
        &shipped,
        "2025-04-01T00:00:00+08:00",
        "2026-07-01T00:00:00+08:00",
    );
    run(estatemon(&db).args(["registry", "load"]).arg(&extra));

    // Quarters close in the site's time zone (UTC+8): at 23:30 on 30 June
    // local time the last closed quarter is Q1; at 00:30 on 1 July, Q2.
    let mut client = db.client().await;
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    assert_eq!(
        store::due(&client, at("2026-06-30T23:30:00+08:00"))
            .await
            .unwrap(),
        vec![(
            "harbour-view".to_owned(),
            "2026Q1".parse::<Quarter>().unwrap()
        )]
    );
    let closed = at("2026-07-01T00:30:00+08:00");
    assert_eq!(
        store::due(&client, closed).await.unwrap(),
        vec![(
            "harbour-view".to_owned(),
            "2026Q2".parse::<Quarter>().unwrap()
        )]
    );
    let generated = store::generate_due_reports(
        &mut client,
        &EnergyConfig::default(),
        &Default::default(),
        closed,
    )
    .await
    .unwrap();
    assert_eq!(generated.len(), 1);
    assert!(
        store::due(&client, closed).await.unwrap().is_empty(),
        "generated once"
    );
    let by: String = client
        .query_one(
            "SELECT generated_by FROM reports WHERE quarter = '2026Q2'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(by, "schedule");

    let garage_kwh = |json: &Value| {
        json["totals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| {
                t["scope"] == "area" && t["name"] == "garage" && t["utility"] == "electricity"
            })
            .unwrap()["quantity"]
            .as_f64()
            .unwrap()
    };
    let scheduled: Value = serde_json::from_slice(
        &store::file(
            &client,
            "harbour-view",
            "2026Q2".parse().unwrap(),
            "report.json",
        )
        .await
        .unwrap()
        .unwrap()
        .1,
    )
    .unwrap();
    // A stray m³ register under an electricity meter's id must not mix
    // into its kWh.
    client
        .execute(
            "INSERT INTO readings (device_id, metric, ts, value) VALUES
               ('hv-garage-light', 'volume_m3', '2026-05-10T00:00:00Z', 5000000),
               ('hv-garage-light', 'volume_m3', '2026-05-11T00:00:00Z', 1)",
            &[],
        )
        .await
        .unwrap();

    // The CLI regenerates it (replacing the stored one) and writes the files.
    let out_dir = std::env::temp_dir().join(unique("reports"));
    let text = run(estatemon(&db)
        .args([
            "report",
            "--site",
            "harbour-view",
            "--quarter",
            "2026Q2",
            "--out",
        ])
        .arg(&out_dir));
    assert!(text.contains("stored"), "{text}");
    assert_eq!(db.count("SELECT count(*) FROM reports").await, 1);
    let listing = run(estatemon(&db).args(["report", "--list"]));
    assert!(
        listing.contains("harbour-view  2026Q2") && listing.contains("report.pdf"),
        "{listing}"
    );
    let dir = out_dir.join("harbour-view-2026Q2");

    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(garage_kwh(&json), garage_kwh(&scheduled));
    // The scheduled report was version 1; regenerated, it is version 2.
    assert_eq!(scheduled["version"], 1);
    assert_eq!(json["version"], 2);
    // The Hong Kong site's own money and carbon (defaults, README "Money
    // and carbon"): HKD at CLP's tariff, CLP's grid factor.
    assert_eq!(json["currency"], "HKD");
    assert_eq!(json["emission_factors"]["electricity_kg_per_kwh"], 0.39);
    assert!(json["tariffs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["source"].as_str().is_some_and(|s| !s.is_empty())));
    let site_row = |j: &Value, u: &str| {
        j["totals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["scope"] == "site" && t["utility"] == u)
            .cloned()
            .unwrap()
    };
    let e = site_row(&json, "electricity");
    assert!(
        (f(&e, "cost") / f(&e, "quantity") - 1.406).abs() < 1e-6,
        "flat CLP tariff: {e}"
    );
    assert!((f(&e, "co2_kg") / f(&e, "quantity") - 0.39).abs() < 1e-9);
    let totals = json["totals"].as_array().unwrap();
    let row = |scope: &str, name: &str, utility: &str| {
        totals
            .iter()
            .find(|t| t["scope"] == scope && t["name"] == name && t["utility"] == utility)
            .unwrap_or_else(|| panic!("no {scope} {name} {utility}"))
    };
    let site_kwh = f(
        row("site", "Harbour View Estate", "electricity"),
        "quantity",
    );
    assert!(site_kwh > 10_000.0, "{site_kwh}");
    assert!(f(row("site", "Harbour View Estate", "water"), "quantity") > 100.0);
    // The silent meter: missing, not zero.
    assert!(row("area", "plant_room", "electricity")["quantity"].is_null());
    assert!(json["data_quality"]["meters_without_data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "hv-new-chiller-meter"));
    // Comparisons with 2026Q1 and 2025Q2, both inside the backfill.
    let cmp = json["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["scope"] == "site" && c["utility"] == "electricity")
        .unwrap();
    assert!(f(cmp, "previous_quarter") > 0.0 && f(cmp, "same_quarter_last_year") > 0.0);
    assert!(f(&json["demand"], "peak_kw") > f(&json["demand"], "night_base_kw"));
    assert!(f(&json["intensity"][0], "kwh_per_m2") > 0.0);
    // Annualised over the quarter's 91 days.
    let eui = &json["intensity"][0];
    assert!(
        (f(eui, "kwh_per_m2_year") / f(eui, "kwh_per_m2") - 365.25 / 91.0).abs() < 1e-9,
        "{eui}"
    );
    assert!(f(eui, "meters") >= 5.0, "{eui}");
    // HVAC against the roof station's degree-days, this quarter and last
    // year's: a Hong Kong spring cools far more than it heats.
    let weather = json["weather"].as_array().unwrap();
    assert_eq!(weather.len(), 2, "{weather:?}");
    assert_eq!(weather[0]["quarter"], "2026Q2");
    assert_eq!(weather[1]["quarter"], "2025Q2");
    for w in weather {
        assert!(f(w, "weather_days") >= 89.0, "{w}");
        assert!(
            f(w, "cooling_degree_days") > f(w, "heating_degree_days"),
            "{w}"
        );
        assert!(f(w, "kwh_per_degree_day") > 0.0, "{w}");
    }
    assert!((f(&weather[0], "normalised_kwh") - f(&weather[0], "hvac_kwh")).abs() < 1e-6);
    let groups = json["savings_groups"].as_array().unwrap();
    let lighting = groups
        .iter()
        .find(|g| g["name"] == "Public lighting")
        .unwrap();
    assert!(
        (f(lighting, "savings_fraction") - 0.36).abs() < 0.03,
        "{lighting}"
    );
    // The group's target traces to its retrofits' registered targets (the
    // M&V plans), weighted by adjusted baseline, never the configuration's
    // default over a registered one.
    let members: Vec<&Value> = json["savings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            lighting["retrofits"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| *n == s["name"])
        })
        .collect();
    assert!(!members.is_empty(), "{lighting}");
    assert!(
        members.iter().all(|s| s["target_registered"] == true),
        "{members:?}"
    );
    let weight: f64 = members.iter().map(|s| f(s, "adjusted_baseline")).sum();
    let expected: f64 = members
        .iter()
        .map(|s| f(s, "target") * f(s, "adjusted_baseline"))
        .sum::<f64>()
        / weight;
    assert!(
        (f(lighting, "target") - expected).abs() < 1e-9,
        "{lighting}"
    );
    let basis = lighting["target_basis"].as_str().unwrap();
    assert!(basis.contains("registered"), "{basis}");
    if members.len() > 1 {
        assert!(basis.contains("weighted by adjusted baseline"), "{basis}");
    }
    // Issue 30: two lifts, each building's total and the site's, with trips
    // and door cycles per lift-day; the totals are the sums of their lifts.
    let lifts = json["lifts"].as_array().unwrap();
    let scoped = |scope: &str| lifts.iter().filter(|l| l["scope"] == scope).count();
    assert_eq!(
        (scoped("lift"), scoped("building"), scoped("site")),
        (2, 2, 1),
        "{lifts:?}"
    );
    let site_row = lifts.iter().find(|l| l["scope"] == "site").unwrap();
    let sum = |key: &str| -> f64 {
        lifts
            .iter()
            .filter(|l| l["scope"] == "lift")
            .map(|l| l[key].as_f64().unwrap_or(0.0))
            .sum()
    };
    assert!(
        (site_row["trips"].as_f64().unwrap() - sum("trips")).abs() < 1e-6,
        "{site_row}"
    );
    assert!((site_row["door_cycles"].as_f64().unwrap() - sum("door_cycles")).abs() < 1e-6);
    assert!(
        site_row["trips_per_day"].as_f64().unwrap() > 0.0,
        "{site_row}"
    );
    // Backfilled straight into the database, never evaluated: the report
    // says its alerts cover none of the quarter, and how to fill them.
    assert_eq!(json["alert_coverage"]["evaluated"], 0.0);
    // Every bridged interval is named with its meter and time, and every
    // corrected interval is listed: the counts agree.
    let events = json["non_routine_events"].as_array().unwrap();
    let bridged = events.iter().filter(|e| e["kind"] == "gap bridged").count();
    assert_eq!(
        bridged as u64,
        json["data_quality"]["gaps"].as_u64().unwrap()
    );
    let corrected: u64 = json["data_quality"]["corrections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_u64().unwrap())
        .sum();
    let register_events = events
        .iter()
        .filter(|e| {
            ["reset", "rollover", "replacement", "spike"].contains(&e["kind"].as_str().unwrap())
        })
        .count();
    assert_eq!(register_events as u64, corrected, "{events:?}");
    assert!(events
        .iter()
        .all(|e| e["meter"].is_string() && e["from"].is_string()));
    assert!(
        json["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("evaluated over 0.0 % of this quarter only")
            && n.as_str().unwrap().contains("analytics replay")),
        "{}",
        json["notes"]
    );
    assert!(f(&json["gates"][0], "granted") > 1000.0);

    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 5, "charts inline");
    for external in ["<script", "<link", " src=", "url("] {
        assert!(!html.contains(external), "self-contained: found {external}");
    }
    assert!(
        html.contains("class=\"n missing\">missing</td>"),
        "missing shown as missing"
    );
    // Well formed: every element opened is closed, in order (issue 17: the
    // scroll wrapper's <div> was closed 11 times without being opened).
    if let Err(e) = balanced_tags(&html) {
        panic!("report.html is not well formed: {e}");
    }
    // The M&V results come as three tables of at most 11 columns, each
    // judged with its uncertainty.
    for table in ["savings_models", "savings", "savings_value"] {
        let start = html
            .find(&format!("<table class=\"{table}\">"))
            .unwrap_or_else(|| panic!("no {table} table"));
        let header = &html[start..start + html[start..].find("</tr>").unwrap()];
        assert!(header.matches("<th>").count() <= 11, "{table}: {header}");
    }
    assert!(
        ["met</td>", "not met</td>", "inconclusive</td>"]
            .iter()
            .any(|v| html.contains(v)),
        "verdicts"
    );
    // One headline per retrofit, the Tower B lift replacement included.
    let headlines = std::fs::read_to_string(dir.join("savings_headlines.csv")).unwrap();
    for s in json["savings"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let line = headlines
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no headline for {name}: {headlines}"));
        assert!(
            line.contains(" saved (") || line.contains("No saving measured this quarter: "),
            "{line}"
        );
    }
    // Enough to refit each model: its terms with standard errors and t
    // values, and every day's drivers beside actual and model use.
    let terms = std::fs::read_to_string(dir.join("savings_model_terms.csv")).unwrap();
    assert!(
        terms.contains("retrofit,term,coefficient,standard error,t value")
            && terms.contains("intercept (kWh a day)")
            && terms.contains("darkness_hours (kWh per h)"),
        "{terms}"
    );
    let days = std::fs::read_to_string(dir.join("savings_daily.csv")).unwrap();
    let header = days.lines().next().unwrap();
    assert!(
        header.contains("darkness_hours (h)") && header.contains("weekend (weekend day (1 or 0))"),
        "{header}"
    );
    let lighting_day = days
        .lines()
        .find(|l| l.contains(",baseline,") && l.contains("kWh"))
        .unwrap();
    assert!(
        lighting_day.split(',').count() == header.split(',').count(),
        "{lighting_day}"
    );
    assert!(
        html.contains("the daily models") && html.contains("standard error"),
        "the equations table"
    );
    assert!(
        html.contains("zenith 90.833°"),
        "the darkness-hours definition"
    );
    assert!(
        !html.contains("public-holiday flags"),
        "the methodology claims a driver the model lacks"
    );
    for section in [
        "Prepared by",
        "7. Methodology",
        "Tariffs the costs use",
        "8. Responsibility, limitations and sign-off",
        "Non-routine events on the retrofits' meters",
        "No non-routine adjustment was made",
    ] {
        assert!(html.contains(section), "the HTML lacks {section}");
    }
    let pdf = std::fs::read(dir.join("report.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert!(
        String::from_utf8_lossy(&pdf).contains("/FontFile2"),
        "the CJK font is embedded"
    );
    assert!(
        pdf.len() < 2_000_000,
        "the font is subset: {} bytes",
        pdf.len()
    );
    // Every word of every page inside the page (poppler's pdftotext, which
    // scripts/test.sh installs): wide tables wrap, they do not run off.
    let bbox = std::process::Command::new("pdftotext")
        .arg("-bbox")
        .arg(dir.join("report.pdf"))
        .arg("-")
        .output()
        .expect("pdftotext (Debian poppler-utils; scripts/test.sh installs it)");
    let bbox = String::from_utf8_lossy(&bbox.stdout);
    let attr = |tag: &str, name: &str| -> f64 {
        let at = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        tag[at..at + tag[at..].find('"').unwrap()].parse().unwrap()
    };
    let (mut page_w, mut words) = (0.0, 0);
    for tag in bbox
        .split('<')
        .filter(|t| t.starts_with("page ") || t.starts_with("word "))
    {
        if tag.starts_with("page ") {
            page_w = attr(tag, "width");
        } else {
            words += 1;
            let (x0, x1) = (attr(tag, "xMin"), attr(tag, "xMax"));
            assert!(
                x0 >= 0.0 && x1 <= page_w,
                "text off the page ({x0}..{x1} of {page_w}): {tag}"
            );
        }
    }
    assert!(words > 500, "pdftotext read {words} words");
    // Chinese names come out of the PDF as Chinese (the embedded font's
    // ToUnicode map), and everything an auditor needs is in it.
    let text = std::process::Command::new("pdftotext")
        .arg("-layout")
        .arg(dir.join("report.pdf"))
        .arg("-")
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).expect("pdftotext writes UTF-8");
    for wanted in [
        "第一座",
        "第二座",
        "Prepared by",
        "Reviewed by",
        "not signed as reviewer",
        "Version",
        "Key figures",
        "HKD",
        "7. Methodology",
        "IPMVP Option B",
        "CLP Power",
        "Water Supplies Department",
        "kWh/m² per year",
        "what each achieved",
    ] {
        assert!(text.contains(wanted), "the PDF lacks {wanted:?}");
    }
    assert!(!text.contains("CNY"), "the Hong Kong site is not in yuan");
    assert!(String::from_utf8_lossy(&pdf).matches("/Type /Page").count() >= 3);
    let csv = std::fs::read_to_string(dir.join("totals.csv")).unwrap();
    assert!(
        csv.starts_with("\u{FEFF}scope,name,id,utility,quantity,unit,coverage"),
        "a UTF-8 byte-order mark for Excel, then the header"
    );
    assert!(csv.contains(",plant_room,electricity,,kWh,0,"), "{csv}");
    // Local times say which zone and offset they are in.
    let demand = std::fs::read_to_string(dir.join("demand.csv")).unwrap();
    assert!(
        demand.contains("peak at (Asia/Hong_Kong)") && demand.contains(" +08:00"),
        "{demand}"
    );
    // People read names (the registry's, or words); the CSV gives the
    // name the HTML shows and, beside it, the id.
    assert!(csv.contains("building,Tower A 第一座,tower-a,"), "{csv}");
    assert!(
        html.contains("<td>Tower A 第一座</td>") && html.contains("<td>public lighting</td>"),
        "names in the HTML tables"
    );
    assert!(!html.contains("<td>tower-a</td>") && !html.contains("<td>public_lighting</td>"));
    // Stored files are the same as written.
    let stored = store::file(
        &client,
        "harbour-view",
        "2026Q2".parse().unwrap(),
        "report.pdf",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(stored.0, "application/pdf");
    assert_eq!(stored.1.len(), pdf.len());

    // A real browser draws the page: the charts' colours must be on screen.
    let chromium = chromium();
    // Kept after the test (in Cargo's scratch directory for integration
    // tests, overwritten by the next run) so that a person can look at it.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let profile = std::env::temp_dir().join(unique("chromium"));
    let status = headless_chromium(chromium, &profile)
        .args(["--hide-scrollbars", "--window-size=1200,2400"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", dir.join("report.html").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        status.success() && shot.exists(),
        "chromium took no screenshot"
    );
    println!("screenshot: {}", shot.display());
    // At 1,280 px no table is wider than the page: a copy of the page with
    // a script that measures every table, the DOM dumped after it ran.
    let probe = dir.join("report-measured.html");
    std::fs::write(
        &probe,
        html.replace(
            "</body>",
            "<script>let w = 0, n = ''; for (const t of document.querySelectorAll('table')) \
             { if (t.scrollWidth > w) { w = t.scrollWidth; n = t.className; } } \
             document.body.setAttribute('data-widest', w + ' ' + n + ' ' + \
             document.documentElement.clientWidth);</script></body>",
        ),
    )
    .unwrap();
    let profile = std::env::temp_dir().join(unique("chromium"));
    let dom = headless_chromium(chromium, &profile)
        .args(["--window-size=1280,800", "--dump-dom"])
        .arg(format!("file://{}", probe.display()))
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let at = dom
        .find("data-widest=\"")
        .expect("the measuring script ran")
        + 13;
    let measured: Vec<&str> = dom[at..at + dom[at..].find('"').unwrap()]
        .split(' ')
        .collect();
    let (widest, viewport): (u32, u32) =
        (measured[0].parse().unwrap(), measured[2].parse().unwrap());
    assert!(
        widest <= viewport && viewport <= 1280,
        "table {} is {widest} px wide in a {viewport} px page",
        measured[1]
    );
    // Stacked bars of the first chart: blue, orange, green, red segments.
    for (name, rgb) in [
        ("blue", (31, 119, 180)),
        ("orange", (255, 127, 14)),
        ("green", (44, 160, 44)),
        ("red", (214, 39, 40)),
    ] {
        let n = count_colour(&shot, rgb);
        assert!(n > 2000, "{name} chart pixels: {n}");
    }

    // Page control: every PDF page carries site, quarter, version and
    // "page n of N" (pdftotext's form feed separates pages).
    let pages: Vec<&str> = text
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .collect();
    let n = pages.len();
    assert!(n >= 3, "{n} pages");
    for (i, page) in pages.iter().enumerate() {
        let foot = format!("2026Q2 · version 2 · page {} of {n}", i + 1);
        assert!(page.contains(&foot), "page {} lacks {foot:?}", i + 1);
    }
    // The HTML's print layout does the same in a real browser's print.
    let printed = out_dir.join("printed.pdf");
    let profile = std::env::temp_dir().join(unique("chromium"));
    let status = headless_chromium(chromium, &profile)
        .arg("--no-pdf-header-footer")
        .arg(format!("--print-to-pdf={}", printed.display()))
        .arg(format!("file://{}", dir.join("report.html").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        status.success() && printed.exists(),
        "chromium printed no PDF"
    );
    let printed = pdftotext(&printed);
    let printed_pages = printed
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .count();
    assert!(printed_pages >= 3, "{printed_pages} printed pages");
    assert!(
        printed.contains("Harbour View Estate (harbour-view) · 2026Q2 · version 2 · page 1 of")
            && printed.contains(&format!("page {printed_pages} of {printed_pages}")),
        "the printed HTML's page footers"
    );

    // Sign-off is recorded per version. Signing a version that is not the
    // current one is refused (exit 2), nothing stored.
    let sign = |version: &str, role: &str, name: &str| {
        estatemon(&db)
            .args([
                "report",
                "sign",
                "--site",
                "harbour-view",
                "--quarter",
                "2026Q2",
            ])
            .args(["--version", version, "--as", role, "--name", name])
            .args(["--qualification", "Registered Energy Assessor (EMSD), CEng"])
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap()
    };
    let refused = sign("1", "reviewer", "陳大文 Chan Tai Man");
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("is at version 2, not 1"), "{err}");
    assert_eq!(db.count("SELECT count(*) FROM report_signatures").await, 0);
    let signed = sign("2", "reviewer", "陳大文 Chan Tai Man");
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    // The signed version is the same report: its data read back from the
    // stored JSON and rendered again, with the signature and nothing else
    // changed.
    let signed_json: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    let mut without = signed_json.clone();
    let sigs = without
        .as_object_mut()
        .unwrap()
        .remove("signatures")
        .unwrap();
    let mut before = json.clone();
    before.as_object_mut().unwrap().remove("signatures");
    assert_eq!(without, before, "signing changed the report's data");
    assert_eq!(sigs[0]["role"], "reviewer");
    assert_eq!(sigs[0]["name"], "陳大文 Chan Tai Man");
    assert_eq!(
        sigs[0]["recorded_by"]
            .as_str()
            .map(|s| s.starts_with("cli:")),
        Some(true)
    );
    let stored_pdf = store::file(
        &client,
        "harbour-view",
        "2026Q2".parse().unwrap(),
        "report.pdf",
    )
    .await
    .unwrap()
    .unwrap()
    .1;
    let signed_pdf = out_dir.join("signed.pdf");
    std::fs::write(&signed_pdf, &stored_pdf).unwrap();
    let signed_text = pdftotext(&signed_pdf);
    assert!(
        signed_text.contains("陳大文 Chan Tai Man")
            && signed_text.contains("Registered Energy Assessor")
            && signed_text.contains("not signed as preparer"),
        "the stored PDF shows the signature"
    );
    let audit: String = client
        .query_one("SELECT detail FROM audit_log WHERE method = 'SIGN'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(audit.contains("signed as reviewer by 陳大文"), "{audit}");
    // A role signs a version once.
    let again = sign("2", "reviewer", "Someone Else");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already signed as reviewer"));
    // Two days replayed: the next version says its alerts cover those two
    // days only, names the span not evaluated, and marks the replayed
    // alerts as never paged.
    run(estatemon(&db).args([
        "analytics",
        "replay",
        "--from",
        "2026-06-29T00:00:00+08:00",
        "--to",
        "2026-07-01T00:00:00+08:00",
        "--step",
        "5m",
    ]));
    // A regenerated report is the next version, unsigned.
    run(estatemon(&db)
        .args([
            "report",
            "--site",
            "harbour-view",
            "--quarter",
            "2026Q2",
            "--out",
        ])
        .arg(&out_dir));
    let v3: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(v3["version"], 3);
    let coverage = &v3["alert_coverage"];
    assert!(
        (f(coverage, "replayed") - 2.0 / 91.0).abs() < 0.002 && f(coverage, "live") == 0.0,
        "{coverage}"
    );
    assert_eq!(coverage["gaps"][0][0], "2026-03-31T16:00:00Z", "{coverage}");
    assert_eq!(coverage["gaps"][0][1], "2026-06-28T16:00:00Z", "{coverage}");
    let alert_rows = v3["alerts"].as_array().unwrap();
    assert!(
        alert_rows
            .iter()
            .all(|a| a["replayed"] == a["count"] && a["acknowledged"] == 0),
        "{alert_rows:?}"
    );
    let alerts_csv = std::fs::read_to_string(dir.join("alerts.csv")).unwrap();
    assert!(
        alerts_csv.contains("replayed (never paged)"),
        "{alerts_csv}"
    );
    let v3_html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        v3_html.contains("INCOMPLETE: rules evaluated over 2.2 % of the quarter only")
            && v3_html.contains("<td>n/a (replayed)</td>"),
        "the alert section says it is partial"
    );
    assert_eq!(v3["signatures"].as_array().map(Vec::len), Some(0));
    let listing = run(estatemon(&db).args(["report", "--list"]));
    assert!(
        listing.contains("version 3") && listing.contains("not signed as reviewer"),
        "{listing}"
    );
    assert_eq!(db.count("SELECT count(*) FROM report_signatures").await, 1);
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// The text of a PDF (poppler's pdftotext, which scripts/test.sh installs),
/// pages separated by form feeds.
fn pdftotext(path: &std::path::Path) -> String {
    let out = std::process::Command::new("pdftotext")
        .arg("-layout")
        .arg(path)
        .arg("-")
        .output()
        .expect("pdftotext (Debian poppler-utils)");
    String::from_utf8(out.stdout).expect("pdftotext writes UTF-8")
}

#[test]
fn bad_report_requests_say_what_is_wrong() {
    let db = TestDb::new(&admin_url());
    let out = estatemon(&db)
        .args(["report", "--site", "harbour-view", "--quarter", "2026Q5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("write it as 2026Q1"));
    let out = estatemon(&db)
        .args(["report", "--site", "nowhere", "--quarter", "2026Q1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("site `nowhere` is not in the registry"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// Checks that the HTML's elements nest: each closing tag closes the
/// innermost open element, and nothing is left open (void elements and
/// the SVG's self-closing ones aside).
fn balanced_tags(html: &str) -> Result<(), String> {
    const VOID: &[&str] = &[
        "meta", "br", "hr", "img", "input", "link", "col", "wbr", "!doctype",
    ];
    let mut open: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').ok_or("a tag is not closed with >")?;
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with("!--") || tag.starts_with('?') {
            continue;
        }
        let self_closing = tag.ends_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect::<String>()
            .to_ascii_lowercase();
        if let Some(closing) = tag.strip_prefix('/') {
            let closing = closing.trim().to_ascii_lowercase();
            match open.pop() {
                Some(top) if top == closing => {}
                Some(top) => return Err(format!("</{closing}> closes <{top}>")),
                None => return Err(format!("</{closing}> closes nothing")),
            }
        } else if !self_closing && !VOID.contains(&name.as_str()) {
            open.push(name);
        }
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(format!("left open: {open:?}"))
    }
}

/// Degree-days come from the registry's named weather sensor only: a
/// hot-water probe in the plant room (issue 17 saw one move a result from
/// 8.2 % to 12.8 %) is not the weather, and a site naming none gets none.
#[tokio::test]
async fn degree_days_come_from_the_named_weather_sensor_only() {
    use estatemon_analytics::energy;
    let db = TestDb::new(&admin_url());
    let site = site_file(
        "[[device]]\nid = \"hv-hot-water\"\nname = \"Hot water probe\"\nkind = \"sensor\"\n\
         site = \"harbour-view\"\nbuilding = \"podium\"\narea = \"plant_room\"\npurpose = \"general\"\n",
    );
    run(estatemon(&db).args(["registry", "load"]).arg(&site));
    let mut client = db.client().await;
    let days = estatemon_domain::schema::recorded_chunk_days(&client)
        .await
        .unwrap();
    let at = DateTime::parse_from_rfc3339("2026-06-01T00:00:00+08:00")
        .unwrap()
        .with_timezone(&Utc);
    let first = estatemon_domain::schema::partitions::chunk_index(at, days);
    // Plain PostgreSQL's partitions (TimescaleDB makes its chunks itself).
    let mode = estatemon_domain::schema::recorded_mode(&client)
        .await
        .unwrap();
    for index in first..=first + 1 {
        if mode == estatemon_domain::schema::StorageMode::Plain {
            estatemon_domain::schema::partitions::ensure_chunk(&client, index, days)
                .await
                .unwrap();
        }
    }
    client
        .execute(
            "INSERT INTO readings (device_id, metric, ts, value)
             SELECT d, 'temperature_c', t, CASE d WHEN 'hv-weather' THEN 25.0 ELSE 60.0 END
               FROM unnest(ARRAY['hv-weather', 'hv-hot-water']) d,
                    generate_series('2026-06-01T00:00:00+08:00'::timestamptz,
                                    '2026-06-02T23:00:00+08:00', '1 hour') t",
            &[],
        )
        .await
        .unwrap();
    // Written behind the writers' backs: mark the hours for the rollups.
    client
        .execute(
            "INSERT INTO rollup_dirty (bucket) SELECT generate_series(
                 '2026-06-01T00:00:00+08:00'::timestamptz, '2026-06-02T23:00:00+08:00', '1 hour')
             ON CONFLICT DO NOTHING",
            &[],
        )
        .await
        .unwrap();
    energy::refresh_rollups(&mut client).await.unwrap();
    let (mut info, _) = energy::load_site(&client, "harbour-view").await.unwrap();
    assert_eq!(info.weather_devices, ["hv-weather"]);
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 6, d).unwrap();
    let temps = energy::temperatures_by_day(&client, &info, day(1), day(3))
        .await
        .unwrap();
    assert_eq!(temps.len(), 2, "{temps:?}");
    assert!(
        temps
            .values()
            .all(|hours| hours.len() == 24 && hours.iter().all(|t| (*t - 25.0).abs() < 1e-9)),
        "{temps:?}"
    );
    info.weather_devices.clear();
    let none = energy::temperatures_by_day(&client, &info, day(1), day(3))
        .await
        .unwrap();
    assert!(none.is_empty(), "no weather named, none guessed: {none:?}");
    let _ = std::fs::remove_file(&site);
}
