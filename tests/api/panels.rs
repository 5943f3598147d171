//! What the shipped dashboards ask and draw: units, calendar steps,
//! every query answered, the pages in a browser.

use super::*;

/// What a person reads on the shipped dashboards: a unit on every plotted
/// number (never Grafana's bare `short`), whole-number axes for counts, the
/// area variable multi-select with All like the building one, and savings
/// verdicts in words (issue 29: items 6, 7, 9, 12).
#[test]
fn dashboards_give_units_whole_counts_and_words() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut plotted = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap_or("?");
            let defaults = &p["fieldConfig"]["defaults"];
            if ["timeseries", "barchart", "stat"].contains(&p["type"].as_str().unwrap_or("")) {
                plotted += 1;
                let unit = defaults["unit"].as_str().unwrap_or("");
                assert!(
                    !unit.is_empty() && unit != "short" && unit != "none",
                    "{name}: {title:?} has no unit ({unit:?})"
                );
                let counts = unit.starts_with("suffix: ")
                    && [
                        "events",
                        "faults",
                        "alerts",
                        "connections",
                        "emergencies",
                        "trips/h",
                    ]
                    .iter()
                    .any(|c| unit.ends_with(c));
                if counts {
                    assert_eq!(
                        defaults["decimals"], 0,
                        "{name}: {title:?} counts in fractions"
                    );
                }
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                let url = t["url"].as_str().unwrap_or("");
                for c in t["columns"].as_array().into_iter().flatten() {
                    let sel = c["selector"].as_str().unwrap_or("");
                    assert!(
                        !(url.contains("/savings") && (sel == "verdict" || sel == "guideline")),
                        "{name}: {title:?} shows the raw status word `{sel}`"
                    );
                }
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["name"] == "area" || v["name"] == "building" {
                assert!(
                    v["multi"] == true && v["includeAll"] == true,
                    "{name}: variable {} is single-select or has no All",
                    v["name"]
                );
            }
        }
    }
    assert!(plotted >= 15, "{plotted} plotted panels");
}

/// Every query the shipped dashboards send (panels, template variables,
/// annotations), with Grafana's variables filled in, answered by the API
/// with panel-ready JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_is_answered_by_the_api() {
    let db = TestDb::new(&admin_url());
    let (api, client) = week_of_the_site(&db).await;
    let token = estatemon_api::create_token(&client, "grafana", Role::Viewer, "test")
        .await
        .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let provisioning =
        std::fs::read_to_string(root.join("provisioning/datasources/estatemon.yaml")).unwrap();
    let (from, to) = (
        ms("2026-06-01T00:00:00+08:00"),
        ms("2026-06-08T00:00:00+08:00"),
    );
    let fill = |v: &str| {
        v.replace("${__from}", &from.to_string())
            .replace("${__to}", &to.to_string())
            .replace("$__interval", "1h")
            .replace("$__maxDataPoints", "1000")
            .replace("$site", "harbour-view")
            // A multi-select of two buildings.
            .replace("${building:csv}", "tower-a,tower-b")
            .replace("$building", "tower-a")
            .replace("${area:csv}", "lobby,garage")
            .replace("$area", "lobby")
            .replace("$retrofit", "led-garage")
    };
    // Raw SQL panels run as the read-only role `estatemon db-reader` makes.
    let reader_role = unique("grafana_reader");
    let out = run(estatemon(&db)
        .args(["db-reader", "--role", &reader_role])
        .env("ESTATEMON_READER_PASSWORD", "reader-secret"));
    assert!(
        out.contains("created") && out.contains("password set"),
        "{out}"
    );
    let reader_url = {
        let mut u = url::Url::parse(&db.url).unwrap();
        u.set_username(&reader_role).unwrap();
        u.set_password(Some("reader-secret")).unwrap();
        u.to_string()
    };
    let reader =
        estatemon_domain::schema::connect_url(&reader_url, std::time::Duration::from_secs(5))
            .await
            .unwrap();
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    let mut sql_queries = 0;
    let mut uids = std::collections::HashSet::new();
    let mut queries = 0;
    let mut prom_queries = 0;
    // The metric families the three processes register (their /metrics).
    let exported: Vec<String> = {
        let mut v = Vec::new();
        for (file, prefix) in [
            ("ingest/src/metrics.rs", "estatemon_ingest_"),
            ("analytics/src/metrics.rs", "estatemon_analytics_"),
            ("api/src/metrics.rs", "estatemon_api_"),
        ] {
            let text = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file),
            )
            .unwrap();
            let mut lines = text.lines().peekable();
            while let Some(l) = lines.next() {
                if l.contains("register(") {
                    // The name is the first string literal of the call.
                    let rest: String = std::iter::once(l).chain(lines.clone().take(2)).collect();
                    if let Some(name) = rest.split('"').nth(1) {
                        v.push(format!("{prefix}{name}"));
                    }
                }
            }
        }
        v
    };
    assert!(exported.len() > 20, "{exported:?}");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let dash: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            uids.insert(dash["uid"].as_str().unwrap().to_owned()),
            "duplicate uid in {}",
            file.display()
        );
        assert!(dash["title"].is_string() && dash["schemaVersion"].as_i64().unwrap() >= 36);
        // Every target: panels, template variables, annotations.
        // Each with the unit of its panel (none for variables, annotations).
        let mut targets: Vec<(Value, &str)> = Vec::new();
        for p in dash["panels"].as_array().unwrap() {
            assert!(
                p["gridPos"]["w"].as_i64().unwrap() > 0,
                "{}: panel without size",
                file.display()
            );
            let unit = p["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or_default();
            targets.extend(
                p["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| (t.clone(), unit)),
            );
        }
        for v in dash["templating"]["list"].as_array().unwrap() {
            targets.push((v["query"].clone(), ""));
        }
        for a in dash["annotations"]["list"].as_array().unwrap() {
            targets.push((a["target"].clone(), ""));
        }
        for (t, unit) in targets {
            let uid = t["datasource"]["uid"].as_str().unwrap();
            assert!(
                provisioning.contains(&format!("uid: {uid}")),
                "{}: datasource {uid} is not provisioned",
                file.display()
            );
            if t["datasource"]["type"] == "prometheus" {
                // Every metric a PromQL panel names is one estatemon exports.
                let expr = t["expr"].as_str().unwrap();
                for name in expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("estatemon_"))
                {
                    assert!(
                        exported
                            .iter()
                            .any(|m| name == m || name.starts_with(&format!("{m}_"))),
                        "{}: `{name}` is not a metric estatemon exports",
                        file.display()
                    );
                }
                prom_queries += 1;
                continue;
            }
            if t["datasource"]["type"] == "grafana-postgresql-datasource" {
                // Grafana's macros as its PostgreSQL datasource expands them.
                let sql = grafana_sql_macros(t["rawSql"].as_str().unwrap(), &rfc(from), &rfc(to));
                let rows = reader
                    .query(&sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{}: {sql}: {e}", file.display()));
                assert!(!rows.is_empty(), "{}: no rows from {sql}", file.display());
                if t["format"] == "time_series" {
                    assert_eq!(rows[0].columns()[0].name(), "time", "{sql}");
                }
                sql_queries += 1;
                continue;
            }
            assert_eq!(
                t["parser"], "backend",
                "backend parser, so Grafana alerting and caching work"
            );
            let query: Vec<String> = t["url_options"]["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p["key"].as_str().unwrap(),
                        fill(p["value"].as_str().unwrap())
                    )
                })
                .collect();
            let uri = format!("{}?{}", t["url"].as_str().unwrap(), query.join("&"));
            let (status, body) = api.get(&uri, &token).await;
            assert_eq!(status, StatusCode::OK, "{}: {uri}: {body}", file.display());
            let rows = body
                .as_array()
                .unwrap_or_else(|| panic!("{uri}: not an array: {body}"));
            // Each column the panel reads is in the rows it gets.
            if let Some(first) = rows.first() {
                for c in t["columns"].as_array().unwrap() {
                    let sel = c["selector"].as_str().unwrap();
                    assert!(
                        first.get(sel).is_some(),
                        "{uri}: rows lack `{sel}`: {first}"
                    );
                }
            }
            queries += 1;
            // Time series over a day, a week, a quarter and two years, with
            // the interval Grafana would send and a `${__to}` off the
            // minute: steps from the ladder, on the site's calendar
            // (Hong Kong), inside the range, one point per step.
            let url = t["url"].as_str().unwrap();
            if t["format"] == "timeseries"
                && matches!(url, "/api/v1/series" | "/api/v1/consumption")
            {
                let per_hour = query.iter().any(|q| q == "per=hour");
                if url == "/api/v1/consumption" {
                    assert_eq!(
                        per_hour,
                        unit.ends_with("/h"),
                        "{}: a consumption panel's unit ({unit}) must say what a point is (per=hour ↔ …/h)",
                        file.display()
                    );
                }
                for (range_s, interval) in [
                    (86_400i64, "1m"),
                    (7 * 86_400, "10m"),
                    (90 * 86_400, "2h"),
                    (730 * 86_400, "12h"),
                ] {
                    let to2 = to + 1_234;
                    let from2 = to2 - range_s * 1000;
                    let params: Vec<String> = t["url_options"]["params"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| {
                            let v = p["value"]
                                .as_str()
                                .unwrap()
                                .replace("${__from}", &from2.to_string())
                                .replace("${__to}", &to2.to_string())
                                .replace("$__interval", interval);
                            format!("{}={}", p["key"].as_str().unwrap(), fill(&v))
                        })
                        .collect();
                    let uri = format!("{url}?{}", params.join("&"));
                    let (status, body) = api.get(&uri, &token).await;
                    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
                    let mut points = body.as_array().unwrap().clone();
                    if points.iter().any(|p| p.get("device").is_some()) {
                        continue;
                    }
                    // One series per building: each on the ladder.
                    if let Some(b) = points.first().and_then(|p| p.get("building")).cloned() {
                        points.retain(|p| p["building"] == b);
                    }
                    assert!(points.len() <= 1001, "{uri}: {} points", points.len());
                    let times: Vec<i64> = points
                        .iter()
                        .map(|p| {
                            chrono::DateTime::parse_from_rfc3339(p["time"].as_str().unwrap())
                                .unwrap()
                                .timestamp_millis()
                        })
                        .collect();
                    let Some(step) = times.windows(2).map(|w| w[1] - w[0]).next() else {
                        continue;
                    };
                    assert!(
                        times.windows(2).all(|w| w[1] - w[0] == step),
                        "{uri}: uneven steps"
                    );
                    assert!(
                        [60_000, 300_000, 900_000, 3_600_000, 86_400_000].contains(&step)
                            || step % 604_800_000 == 0,
                        "{uri}: a step of {step} ms is not on the ladder"
                    );
                    assert!(
                        times[0] > from2 - step
                            && times[0] <= from2
                            && *times.last().unwrap() < to2,
                        "{uri}: points outside the range"
                    );
                    // Hong Kong is UTC+8: local midnight is 16:00 UTC.
                    let local = (times[0] + 8 * 3_600_000).rem_euclid(step.min(86_400_000));
                    assert_eq!(local, 0, "{uri}: steps not on the local calendar");
                    // Every step is there: a gap is a null, not a missing point.
                    assert_eq!(
                        times.len() as i64,
                        (to2 - times[0] + step - 1) / step,
                        "{uri}: steps missing"
                    );
                }
            }
        }
    }
    assert!(queries >= 16, "only {queries} dashboard queries checked");

    // Issue 29, item 8: "Electricity by building" draws one series per
    // building, and the buildings add up to the site's one line, step by
    // step.
    let energy: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("energy-overview.json")).unwrap())
            .unwrap();
    let panel = energy["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["title"]
                .as_str()
                .unwrap()
                .starts_with("Electricity by building")
        })
        .unwrap();
    assert!(
        panel["targets"][0]["url_options"]["params"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["key"] == "by" && p["value"] == "building"),
        "{panel}"
    );
    let range =
        format!("site=harbour-view&utility=electricity&from={from}&to={to}&interval=1h&per=hour");
    let (_, total) = api
        .get(&format!("/api/v1/consumption?{range}"), &token)
        .await;
    let (s, split) = api
        .get(&format!("/api/v1/consumption?{range}&by=building"), &token)
        .await;
    assert_eq!(s, StatusCode::OK, "{split}");
    let split = split.as_array().unwrap();
    let buildings: std::collections::BTreeSet<&str> = split
        .iter()
        .map(|p| p["building"].as_str().unwrap())
        .collect();
    assert!(buildings.len() >= 2, "{buildings:?}");
    let total = total.as_array().unwrap();
    for p in total {
        let Some(want) = p["value"].as_f64() else {
            continue;
        };
        let got: f64 = split
            .iter()
            .filter(|q| q["time"] == p["time"])
            .filter_map(|q| q["value"].as_f64())
            .sum();
        assert!(
            (got - want).abs() < 1e-6 * want.max(1.0),
            "{}: {got} against {want}",
            p["time"]
        );
    }
    let (s, e) = api
        .get(&format!("/api/v1/consumption?{range}&by=floor"), &token)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

    // Issue 31: who is on call, by name, from the roster; never a contact.
    let (s, teams) = api
        .get(
            "/api/v1/oncall/now?site=harbour-view&at=2026-12-09T12:00:00Z",
            &token,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{teams}");
    let lifts = teams
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["team"] == "hv-lifts")
        .unwrap();
    assert_eq!(
        (
            &lifts["on_call"],
            &lifts["source"],
            &lifts["until"],
            &lifts["next"]
        ),
        (
            &Value::from("李嘉欣"),
            &Value::from("override"),
            &Value::from("2026-12-10T00:00:00Z"),
            &Value::from("陳大文")
        ),
        "{lifts}"
    );
    assert!(
        !teams.to_string().contains("+852"),
        "no phone numbers: {teams}"
    );
    let (s, e) = api.get("/api/v1/oncall/now?at=tomorrow", &token).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        prom_queries >= 8,
        "only {prom_queries} Prometheus queries checked"
    );
    assert!(sql_queries >= 2, "only {sql_queries} SQL queries checked");

    // The reader reads telemetry, not secrets, and writes nothing.
    for (sql, needle) in [
        ("SELECT count(*) FROM api_tokens", "permission denied"),
        ("SELECT count(*) FROM audit_log", "permission denied"),
        ("SELECT count(*) FROM dead_letters", "permission denied"),
        ("DELETE FROM readings", "read-only transaction"),
        ("CREATE TABLE mine (x int)", "read-only transaction"),
    ] {
        let e = reader.batch_execute(sql).await.unwrap_err();
        let text = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert!(text.contains(needle), "{sql}: {text}");
    }
    // A session that turns read-only off still may not write.
    reader
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    let e = reader
        .batch_execute("DELETE FROM readings")
        .await
        .unwrap_err();
    let text = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(text.contains("permission denied"), "{text}");
    drop(reader);
    // Roles belong to the cluster: leave none behind.
    let admin = estatemon_domain::schema::connect_url(&db.url, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "DROP OWNED BY {reader_role}; DROP ROLE {reader_role}"
        ))
        .await
        .unwrap();
}

/// `$__timeFilter(col)` and `$__timeGroupAlias(col, 'step')` as Grafana's
/// PostgreSQL datasource writes them.
fn grafana_sql_macros(sql: &str, from: &str, to: &str) -> String {
    let mut out = sql.to_owned();
    while let Some(at) = out.find("$__timeFilter(") {
        let open = at + "$__timeFilter(".len();
        let close = open + out[open..].find(')').unwrap();
        let col = out[open..close].trim().to_owned();
        out.replace_range(at..=close, &format!("{col} BETWEEN '{from}' AND '{to}'"));
    }
    while let Some(at) = out.find("$__timeGroupAlias(") {
        let open = at + "$__timeGroupAlias(".len();
        let close = open + out[open..].find(')').unwrap();
        let args: Vec<String> = out[open..close]
            .split(',')
            .map(|a| a.trim().to_owned())
            .collect();
        let step = match args[1].trim_matches('\'') {
            "1h" => 3600,
            "1d" => 86_400,
            "1m" => 60,
            other => panic!("step {other}"),
        };
        out.replace_range(
            at..=close,
            &format!(
                "floor(extract(epoch from {})/{step})*{step} AS \"time\"",
                args[0]
            ),
        );
    }
    out
}

/// The dashboards' own pages (`/dashboards/{uid}`), opened in headless
/// Chromium over a week of the shipped site: every panel an API query
/// fills draws from data (none empty, none failing), in the unit it
/// declares, with the alert annotations of its own scope; screenshots are
/// kept for a person to look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_draw_in_a_browser() {
    let db = TestDb::new(&admin_url());
    let (_api, client) = week_of_the_site(&db).await;
    // The week's alerts, as the analytics job would have raised them.
    run(estatemon(&db).args([
        "analytics",
        "replay",
        "--from",
        "2026-06-01T01:00:00+08:00",
        "--to",
        "2026-06-08T00:00:00+08:00",
        "--step",
        "1h",
    ]));
    // Issue 29, item 11: a replay of the past leaves nothing open to be
    // drawn from its start to now.
    assert_eq!(
        db.count("SELECT count(*) FROM alerts WHERE resolved_at IS NULL")
            .await,
        0
    );
    // A leak on the domestic water meter and a public-area limit of each
    // utility (no device): each drawn on its own utility's panels only.
    client
        .batch_execute(
            "INSERT INTO alerts (rule, subject, fingerprint, severity, summary, labels, site_id, device_id,
                                 source, started_at, resolved_at, last_seen_at, response_deadline, state)
             VALUES ('night_water_flow', 'hv-domestic-water', 'x1', 'ordinary', 'Water flowing at night',
                     '{}', 'harbour-view', 'hv-domestic-water', 'analytics',
                     '2026-06-03T02:00:00+08', '2026-06-03T05:00:00+08', '2026-06-03T05:00:00+08',
                     '2026-06-03T04:00:00+08', 'resolved'),
                    ('daily_public_water', 'lobby', 'x2', 'routine', 'Public-area water over its limit',
                     '{\"metric\": \"volume_m3\"}', 'harbour-view', NULL, 'analytics',
                     '2026-06-04T20:00:00+08', '2026-06-05T00:00:00+08', '2026-06-05T00:00:00+08',
                     '2026-06-05T20:00:00+08', 'resolved'),
                    ('daily_public_lighting', 'garage', 'x3', 'routine', 'Public lighting over its limit',
                     '{\"metric\": \"energy_kwh\"}', 'harbour-view', NULL, 'analytics',
                     '2026-06-05T20:00:00+08', '2026-06-06T00:00:00+08', '2026-06-06T00:00:00+08',
                     '2026-06-06T20:00:00+08', 'resolved')",
        )
        .await
        .unwrap();
    // Issue 31: an entrapment at 03:00 on a Thursday, paged by the real
    // planner through the shipped roster's lift policy, then resolved: the
    // on-call pages panel lists its pages.
    let trapped: i64 = client
        .query_one(
            "INSERT INTO alerts (rule, subject, fingerprint, severity, summary, labels, site_id, device_id,
                                 source, started_at, last_seen_at, fired_at, response_deadline)
             VALUES ('lift_entrapment', 'hv-a-lift-1', 'x4', 'emergency', 'Passenger trapped',
                     '{\"site\": \"harbour-view\", \"device\": \"hv-a-lift-1\"}', 'harbour-view',
                     'hv-a-lift-1', 'ingest', '2026-06-04T03:00:00+08', '2026-06-04T03:00:00+08',
                     '2026-06-04T03:00:00+08', '2026-06-04T03:15:00+08')
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let roster = estatemon_analytics::oncall::roster::Roster::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/oncall/roster.example.toml"),
    )
    .unwrap();
    let planned = estatemon_analytics::oncall::plan::plan(
        &client,
        &roster,
        chrono::DateTime::parse_from_rfc3339("2026-06-04T03:10:00+08:00")
            .unwrap()
            .with_timezone(&chrono::Utc),
    )
    .await
    .unwrap();
    assert!(planned.paged >= 1, "{planned:?}");
    client
        .execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = '2026-06-04T03:20:00+08',
                    closed_at = '2026-06-04T03:20:00+08' WHERE id = $1",
            &[&trapped],
        )
        .await
        .unwrap();
    let open_alerts = db
        .count("SELECT count(*) FROM alerts WHERE resolved_at IS NULL")
        .await;
    let token = estatemon_api::create_token(&client, "browser", Role::Viewer, "test")
        .await
        .unwrap();
    let mut config = estatemon_domain::config::Config::default();
    config.database.url = db.url.clone();
    // The shipped example roster: the alerts dashboard's on-call panel.
    config.oncall.roster = Some(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/oncall/roster.example.toml"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(estatemon_api::serve_on(listener, config, async {
        let _ = stopped.await;
    }));
    let (from, to) = (
        ms("2026-06-01T00:00:00+08:00"),
        ms("2026-06-08T00:00:00+08:00"),
    );
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut drawn = 0;
    let mut annotated = Vec::new();
    for uid in [
        "estatemon-energy",
        "estatemon-savings",
        "estatemon-lifts",
        "estatemon-gates",
        "estatemon-alerts",
    ] {
        let url = format!(
            "http://{addr}/dashboards/{uid}?from={from}&to={to}&var-site=harbour-view#token={token}"
        );
        let dom = tokio::task::block_in_place(|| {
            let profile = std::env::temp_dir().join(unique("chromium"));
            let out = headless_chromium(chromium(), &profile)
                .args([
                    "--window-size=1400,1600",
                    "--virtual-time-budget=60000",
                    "--dump-dom",
                ])
                .arg(&url)
                .stderr(std::process::Stdio::null())
                .output()
                .unwrap();
            let shot = shots.join(format!("dashboard-{uid}.png"));
            let _ = headless_chromium(chromium(), &profile)
                .args([
                    "--window-size=1400,1600",
                    "--virtual-time-budget=60000",
                    "--hide-scrollbars",
                ])
                .arg(format!("--screenshot={}", shot.display()))
                .arg(&url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&profile);
            println!("screenshot: {}", shot.display());
            String::from_utf8_lossy(&out.stdout).into_owned()
        });
        assert!(
            dom.contains("data-done=\"1\""),
            "{uid}: the page did not finish: {dom:.3000}"
        );
        let annotations: usize = dom
            .split("data-annotations=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        annotated.push((uid, annotations));
        let panels: Vec<&str> = dom.split("<section class=\"panel\"").skip(1).collect();
        if uid == "estatemon-alerts" {
            // Issue 31: who is on call now, from the roster, by name.
            assert!(
                dom.contains("Harbour View lifts")
                    && ["陳大文", "Wong Siu Ming", "李嘉欣"]
                        .iter()
                        .any(|n| dom.contains(n)),
                "no one on call on the alerts dashboard: {dom:.3000}"
            );
        }
        if uid == "estatemon-energy" {
            // Alerts on the panels of their own utility: the water panel
            // draws the leak and the water limit and nothing else, the
            // electricity panels the lighting limit and no water alert.
            let on = |title: &str| -> usize {
                let p = panels
                    .iter()
                    .find(|p| p.contains(&format!("<h2>{title}")))
                    .unwrap_or_else(|| panic!("no panel {title}"));
                let key = "data-annotations=\"";
                p.find(key)
                    .and_then(|i| p[i + key.len()..].split('"').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{title}: no annotation count: {p:.600}"))
            };
            let water = on("Water");
            let electricity = on("Electricity by building");
            assert!(
                water >= 2 && electricity >= 1,
                "water {water}, electricity {electricity}"
            );
            assert_eq!(
                water + electricity,
                annotations,
                "each alert on one utility's panels"
            );
            assert_eq!(on("Public lighting"), electricity);
        }
        assert!(!panels.is_empty(), "{uid}: no panels");
        for p in panels {
            let attr = |name: &str| {
                let key = format!("{name}=\"");
                p.find(&key)
                    .map(|i| &p[i + key.len()..])
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or("")
            };
            let title = p
                .split("<h2>")
                .nth(1)
                .and_then(|t| t.split("</h2>").next())
                .unwrap_or("?");
            // Every panel draws from data; the open-alerts table is empty
            // exactly when no alert is open.
            let want = if title == "Open alerts" && open_alerts == 0 {
                "empty"
            } else {
                "ok"
            };
            assert_eq!(
                attr("data-status"),
                want,
                "{uid}: panel `{title}`: {}",
                &p[..p.len().min(600)]
            );
            assert!(
                !title.contains('$'),
                "{uid}: `{title}` has a variable left in it"
            );
            if !matches!(attr("data-type"), "table" | "state-timeline") {
                assert!(
                    !attr("data-unit").is_empty(),
                    "{uid}: panel `{title}` declares no unit"
                );
            }
            drawn += 1;
        }
    }
    assert!(drawn >= 14, "only {drawn} panels drawn");
    assert!(
        annotated.iter().any(|(_, n)| *n > 0),
        "no dashboard drew an alert annotation: {annotated:?}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Issue 29, item 3: a year in 12 bars (Grafana sends `interval=30d`) is
/// calendar months on the site's calendar, each starting on the 1st at
/// local midnight, not 35-day steps starting on Mondays: consumption (from
/// the local days on a site, from the UTC hours without one), gate counts
/// and gauges; a month's total is its days' (or hours') sum, its mean the
/// samples' mean, and the last, partial month is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn month_steps_are_calendar_months() {
    let db = TestDb::new(&admin_url());
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("simulators/sites/harbour-view.toml");
    backfill_site_every(
        &db,
        &shipped,
        "2026-01-20T00:00:00+08:00",
        "2026-04-10T00:00:00+08:00",
        "3600",
    );
    let mut client = db.client().await;
    estatemon_analytics::energy::refresh_rollups(&mut client)
        .await
        .unwrap();
    let api = api_over(&db, |_| {}).await;
    let viewer = estatemon_api::create_token(&client, "months", Role::Viewer, "test")
        .await
        .unwrap();
    let get = |path: String| {
        let api = &api;
        let viewer = &viewer;
        async move {
            let (s, v) = api.get(&path, viewer).await;
            assert_eq!(s, StatusCode::OK, "{path}: {v}");
            v.as_array().unwrap().clone()
        }
    };
    let times = |points: &[Value]| -> Vec<String> {
        points
            .iter()
            .map(|p| p["time"].as_str().unwrap().to_owned())
            .collect()
    };
    let sum_between = |points: &[Value], key: &str, from: &str, to: &str| -> f64 {
        points
            .iter()
            .filter(|p| {
                let t = p["time"].as_str().unwrap();
                t >= from && t < to
            })
            .filter_map(|p| p[key].as_f64())
            .sum()
    };
    // Grafana's `${__from}` in milliseconds, a little after the 1st.
    let (from, to) = (
        ms("2026-01-01T00:00:00+08:00") + 3_196_090,
        ms("2026-05-01T00:00:00+08:00"),
    );
    let local_months = [
        "2025-12-31T16:00:00Z",
        "2026-01-31T16:00:00Z",
        "2026-02-28T16:00:00Z",
        "2026-03-31T16:00:00Z",
    ];
    let site = "site=harbour-view";
    let months = get(format!(
        "/api/v1/consumption?{site}&utility=electricity&from={from}&to={to}&interval=30d&max_points=12"
    ))
    .await;
    assert_eq!(times(&months), local_months, "{months:?}");
    let days = get(format!(
        "/api/v1/consumption?{site}&utility=electricity&from={from}&to={to}&interval=1d"
    ))
    .await;
    for (i, m) in months.iter().enumerate().take(3).skip(1) {
        let want = sum_between(&days, "value", local_months[i], local_months[i + 1]);
        let got = m["value"].as_f64().unwrap();
        assert!(
            want > 0.0 && (got - want).abs() < 1e-6 * want,
            "month {i}: {got} against its days' {want}"
        );
    }
    // Ending mid-March: March is partial and left out, not drawn as a dip.
    let mid = ms("2026-03-15T00:00:00+08:00");
    let partial = get(format!(
        "/api/v1/consumption?{site}&utility=electricity&from={from}&to={mid}&interval=30d"
    ))
    .await;
    assert_eq!(times(&partial), local_months[..3], "{partial:?}");
    assert!(partial[1]["value"].is_f64(), "{partial:?}");
    assert!(partial[2]["value"].is_null(), "{partial:?}");

    // Without a site: UTC months, each the sum of its UTC hours.
    let utc = get(format!(
        "/api/v1/consumption?building=tower-a&utility=electricity&from={from}&to={to}&interval=30d"
    ))
    .await;
    // (`from` is 31 December in UTC: December starts the answer.)
    assert_eq!(
        times(&utc),
        [
            "2025-12-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
            "2026-02-01T00:00:00Z",
            "2026-03-01T00:00:00Z",
            "2026-04-01T00:00:00Z"
        ],
        "{utc:?}"
    );
    let (feb, mar) = (ms("2026-02-01T00:00:00Z"), ms("2026-03-01T00:00:00Z"));
    let hours = get(format!(
        "/api/v1/consumption?building=tower-a&utility=electricity&from={feb}&to={mar}&interval=1h"
    ))
    .await;
    assert_eq!(hours.len(), 28 * 24);
    let want = sum_between(&hours, "value", "2026-02", "2026-03");
    let got = utc[2]["value"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-6 * want, "{got} against {want}");

    // Gate traffic: months, each the sum of its days.
    let gates = get(format!(
        "/api/v1/events?{site}&kind=access_gate&from={from}&to={to}&interval=30d"
    ))
    .await;
    assert_eq!(times(&gates), local_months, "{gates:?}");
    let gate_days = get(format!(
        "/api/v1/events?{site}&kind=access_gate&from={from}&to={to}&interval=1d"
    ))
    .await;
    let want = sum_between(&gate_days, "granted", local_months[1], local_months[2]);
    assert!(want > 0.0);
    assert_eq!(gates[1]["granted"].as_f64().unwrap(), want);

    // A gauge: the month's mean is the mean of its samples.
    let temps = get(format!(
        "/api/v1/series?{site}&metric=motor_temp_c&from={from}&to={to}&interval=30d"
    ))
    .await;
    assert_eq!(times(&temps), local_months, "{temps:?}");
    let rows = client
        .query(
            "SELECT avg(r.value) FROM readings r JOIN devices d USING (device_id)
              WHERE d.site_id = 'harbour-view' AND r.metric = 'motor_temp_c'
                AND r.ts >= '2026-03-01T00:00:00+08:00' AND r.ts < '2026-04-01T00:00:00+08:00'",
            &[],
        )
        .await
        .unwrap();
    let want: f64 = rows[0].get(0);
    let got = temps[2]["value"].as_f64().unwrap();
    assert!(
        (got - want).abs() < 1e-9 * want.abs(),
        "{got} against {want}"
    );
}
