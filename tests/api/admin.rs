//! Admins manage tokens, rules and retrofits through the API.

use super::*;

/// Admins manage tokens, alert rules and retrofits through the API; rules
/// put there reach a running ingestor (its immediate rules) without a
/// restart; lift states come back as a timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_tokens_rules_and_retrofits() {
    let db = TestDb::new(&admin_url());
    let (api, client) = week_of_the_site(&db).await;
    let admin = estatemon_api::create_token(&client, "root", Role::Admin, "test")
        .await
        .unwrap();
    let viewer = estatemon_api::create_token(&client, "grafana", Role::Viewer, "test")
        .await
        .unwrap();

    // Tokens: created (shown once, hash stored), listed without secrets,
    // usable at once, revoked at once; the last admin cannot be revoked.
    let (s, e, _) = api
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&viewer),
            Some(r#"{"name": "bob", "role": "operator"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let (s, created, _) = api
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&admin),
            Some(r#"{"name": "bob", "role": "operator"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let bob = created["token"].as_str().unwrap().to_owned();
    assert!(bob.starts_with("emt_"));
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM api_tokens WHERE name = 'bob' AND role = 'operator' \
             AND token_sha256 = '\\x{}'::bytea AND created_by = 'api:root'",
            hex(&estatemon_api::auth::hash(&bob))
        ))
        .await,
        1
    );
    let (s, _) = api.get("/api/v1/sites", &bob).await;
    assert_eq!(s, StatusCode::OK, "a new token works at once");
    let (_, listed) = api.get("/api/v1/tokens", &admin).await;
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(!listed.to_string().contains(&bob), "no secrets listed");
    for (body, status) in [
        (r#"{"name": "bob", "role": "viewer"}"#, StatusCode::CONFLICT),
        (
            r#"{"name": "eve", "role": "root"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (r#"{"name": "", "role": "viewer"}"#, StatusCode::BAD_REQUEST),
        (r#"{"name": "x"}"#, StatusCode::BAD_REQUEST),
    ] {
        let (s, e, _) = api
            .call("POST", "/api/v1/tokens", Some(&admin), Some(body))
            .await;
        assert_eq!(s, status, "{body}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    let (s, _, _) = api
        .call("DELETE", "/api/v1/tokens/bob", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api.get("/api/v1/sites", &bob).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked at once");
    let (s, _, _) = api
        .call("DELETE", "/api/v1/tokens/bob", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e, _) = api
        .call("DELETE", "/api/v1/tokens/root", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("last admin"));

    // Retrofits: listed, put (validated), removed.
    let (_, retrofits) = api
        .get("/api/v1/retrofits?site=harbour-view", &viewer)
        .await;
    assert_eq!(retrofits.as_array().unwrap().len(), 5);
    let spec = r#"{"id": "podium-hvac", "name": "Podium chiller upgrade", "site": "harbour-view",
                   "purpose": "hvac", "building": "podium", "date": "2026-05-01", "target": 0.2}"#;
    let (s, _, _) = api
        .call(
            "PUT",
            "/api/v1/retrofits/harbour-view/podium-hvac",
            Some(&viewer),
            Some(spec),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e, _) = api
        .call(
            "PUT",
            "/api/v1/retrofits/harbour-view/podium-hvac",
            Some(&admin),
            Some(spec),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, retrofits) = api
        .get("/api/v1/retrofits?site=harbour-view", &viewer)
        .await;
    assert!(retrofits
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "podium-hvac" && r["target"] == 0.2));
    for (path, body, needle) in [
        (
            "harbour-view/podium-hvac",
            spec.replace("0.2}", "35}"),
            "target",
        ),
        (
            "harbour-view/podium-hvac",
            spec.replace("2026-05-01", "May 2026"),
            "YYYY-MM-DD",
        ),
        ("harbour-view/other", spec.to_owned(), "path names"),
        (
            "atlantis/podium-hvac",
            spec.replace("harbour-view", "atlantis"),
            "atlantis",
        ),
    ] {
        let (s, e, _) = api
            .call(
                "PUT",
                &format!("/api/v1/retrofits/{path}"),
                Some(&admin),
                Some(&body),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {e}");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");
    }
    let (s, _, _) = api
        .call(
            "DELETE",
            "/api/v1/retrofits/harbour-view/podium-hvac",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = api
        .call(
            "DELETE",
            "/api/v1/retrofits/harbour-view/podium-hvac",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Lift states: a timeline per lift, starting where the range starts.
    let (from, to) = (
        ms("2026-06-02T00:00:00+08:00"),
        ms("2026-06-03T00:00:00+08:00"),
    );
    // Event counts are on the calendar too (issue 29): Grafana's
    // millisecond `from` gives steps on whole local hours, every one of
    // the day there, empty ones as 0, not holes.
    for (kind, interval, n, first) in [
        ("access_gate", "1h", 24, "2026-06-01T16:00:00Z"),
        ("lift", "15m", 93, "2026-06-01T16:45:00Z"),
    ] {
        let (s, counts) = api
            .get(
                &format!(
                    "/api/v1/events?site=harbour-view&kind={kind}&from={}&to={to}&interval={interval}",
                    from + 3_196_090
                ),
                &viewer,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{counts}");
        let counts = counts.as_array().unwrap();
        assert_eq!(counts.len(), n, "{kind}: {counts:?}");
        assert_eq!(counts[0]["time"], first, "{kind}");
        let step = if n == 24 { 3_600 } else { 900 };
        for w in counts.windows(2) {
            let t = |v: &Value| {
                chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap())
                    .unwrap()
                    .timestamp()
            };
            assert_eq!(t(&w[1]) - t(&w[0]), step, "{kind}: a hole in {counts:?}");
        }
    }
    let (s, states) = api
        .get(
            &format!("/api/v1/lifts/states?site=harbour-view&from={from}&to={to}&interval=15m"),
            &viewer,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{states}");
    let states = states.as_array().unwrap();
    for lift in ["hv-a-lift-1", "hv-b-lift-1"] {
        let mine: Vec<&Value> = states.iter().filter(|c| c["lift"] == lift).collect();
        assert!(mine.len() >= 3, "{lift}: {mine:?}");
        assert_eq!(
            mine[0]["time"], "2026-06-01T16:00:00Z",
            "{lift} starts at from"
        );
        assert!(
            mine.iter().any(|c| c["state"] == "moving"),
            "{lift}: {mine:?}"
        );
        assert!(
            mine.windows(2).all(|w| w[0]["state"] != w[1]["state"]),
            "only changes: {mine:?}"
        );
    }

    // A meter that published before anyone registered it: once an admin
    // assigns it to the site, its daily registers (local midnights) exist
    // and daily consumption on the site (read from them) counts it like any
    // other meter.
    let mut client = client;
    client
        .batch_execute(
            "INSERT INTO devices (device_id, kind, assigned) VALUES ('hv-late-meter', 'unknown', false);
             INSERT INTO readings (device_id, metric, ts, value)
                  SELECT 'hv-late-meter', metric, ts, value FROM readings
                   WHERE device_id = 'hv-a-lobby-light' AND metric = 'energy_kwh';
             INSERT INTO rollup_dirty (bucket)
                  SELECT DISTINCT date_trunc('hour', ts) FROM readings WHERE device_id = 'hv-late-meter'
             ON CONFLICT DO NOTHING;",
        )
        .await
        .unwrap();
    estatemon_analytics::energy::refresh_rollups(&mut client)
        .await
        .unwrap();
    let daily_rows = "SELECT count(*) FROM registers_daily WHERE device_id = 'hv-late-meter'";
    assert_eq!(db.count(daily_rows).await, 0, "no site, no local days yet");
    let late = r#"{"id": "hv-late-meter", "kind": "electricity_meter", "site": "harbour-view",
                   "building": "tower-a", "area": "lobby", "purpose": "public_lighting"}"#;
    let (s, e, _) = api
        .call(
            "PUT",
            "/api/v1/devices/hv-late-meter",
            Some(&admin),
            Some(late),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert!(db.count(daily_rows).await >= 7);
    let week = format!(
        "from={}&to={}&interval=1d",
        ms("2026-06-01T00:00:00+08:00"),
        ms("2026-06-08T00:00:00+08:00")
    );
    let sum = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["value"].as_f64())
            .sum::<f64>()
    };
    let (_, late_use) = api
        .get(
            &format!("/api/v1/consumption?site=harbour-view&device=hv-late-meter&{week}"),
            &viewer,
        )
        .await;
    let (_, original) = api
        .get(
            &format!("/api/v1/consumption?site=harbour-view&device=hv-a-lobby-light&{week}"),
            &viewer,
        )
        .await;
    let (a, b) = (sum(late_use), sum(original));
    assert!(
        b > 10.0 && (a - b).abs() < 1e-6,
        "late meter {a} kWh vs its twin {b} kWh"
    );

    // The lobby meter's twin again, with its register reset to near zero
    // at 10:00 on 2 June (it restarts from the last interval's use, so the
    // true use is unchanged) and silent from 10:00 to 16:00 on 3 June (the
    // register kept counting). Every zoom must give the twin's days exactly
    // as the original's: a reset day is not lost, and the outage's use is
    // in its hours as in its day.
    let twin = r#"{"id": "hv-reset-meter", "kind": "electricity_meter", "site": "harbour-view",
                   "building": "tower-a", "area": "lobby", "purpose": "public_lighting"}"#;
    let (s, e, _) = api
        .call(
            "PUT",
            "/api/v1/devices/hv-reset-meter",
            Some(&admin),
            Some(twin),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    client
        .batch_execute(
            "INSERT INTO readings (device_id, metric, ts, value)
                  SELECT 'hv-reset-meter', metric, ts,
                         CASE WHEN ts < '2026-06-02T10:00:00+08:00' THEN value
                              ELSE value - (SELECT value FROM readings
                                             WHERE device_id = 'hv-a-lobby-light' AND metric = 'energy_kwh'
                                               AND ts < '2026-06-02T10:00:00+08:00' ORDER BY ts DESC LIMIT 1) END
                    FROM readings
                   WHERE device_id = 'hv-a-lobby-light' AND metric = 'energy_kwh'
                     AND NOT (ts > '2026-06-03T10:00:00+08:00' AND ts < '2026-06-03T16:00:00+08:00');
             INSERT INTO rollup_dirty (bucket)
                  SELECT DISTINCT date_trunc('hour', ts) FROM readings WHERE device_id = 'hv-reset-meter'
             ON CONFLICT DO NOTHING;",
        )
        .await
        .unwrap();
    estatemon_analytics::energy::refresh_rollups(&mut client)
        .await
        .unwrap();
    let series = |device: &'static str, interval: &'static str| {
        let api = &api;
        let viewer = &viewer;
        async move {
            let q = format!(
                "/api/v1/consumption?site=harbour-view&device={device}&from={}&to={}&interval={interval}",
                // From the first whole day of the data.
                ms("2026-06-02T00:00:00+08:00"),
                ms("2026-06-08T00:00:00+08:00")
            );
            let (s, v) = api.get(&q, viewer).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| (p["time"].as_str().unwrap().to_owned(), p["value"].as_f64()))
                .collect::<Vec<_>>()
        }
    };
    let (twin_days, original_days) = (
        series("hv-reset-meter", "1d").await,
        series("hv-a-lobby-light", "1d").await,
    );
    assert_eq!(twin_days.len(), 6);
    for (t, o) in twin_days.iter().zip(&original_days) {
        let (t_v, o_v) = (
            t.1.unwrap_or_else(|| {
                panic!(
                    "twin day {} unknown: {twin_days:?} vs {original_days:?}",
                    t.0
                )
            }),
            o.1.unwrap(),
        );
        assert!(
            (t_v - o_v).abs() < 1e-6,
            "day {}: twin {t_v} kWh, original {o_v} kWh",
            t.0
        );
    }
    // Hours and 3-hour steps add up to the days.
    let hours = series("hv-reset-meter", "1h").await;
    assert!(
        hours.iter().all(|h| h.1.is_some()),
        "every hour known: {hours:?}"
    );
    let hourly_total: f64 = hours.iter().filter_map(|h| h.1).sum();
    let three: f64 = series("hv-reset-meter", "3h")
        .await
        .iter()
        .filter_map(|h| h.1)
        .sum();
    let daily_total: f64 = twin_days.iter().filter_map(|d| d.1).sum();
    assert!(
        (hourly_total - daily_total).abs() < 1e-6 && (three - daily_total).abs() < 1e-6,
        "hours {hourly_total}, 3 h steps {three}, days {daily_total}"
    );
    assert!(
        db.count(
            "SELECT count(*) FROM consumption_hourly WHERE device_id = 'hv-reset-meter' AND estimated"
        )
        .await
            >= 6,
        "the outage's hours are marked estimated"
    );

    // Rules: the running set is visible; a bad set is refused with its
    // line and field; a good one reaches a running ingestor.
    let c = config(&db, &broker_url());
    let ingestor = estatemon_ingest::Ingestor::start(c.clone()).await.unwrap();
    assert!(
        ingestor
            .subscribed(std::time::Duration::from_secs(10))
            .await
    );
    let (_, rules) = api.get("/api/v1/rules", &viewer).await;
    assert_eq!(rules["origin"], "shipped");
    assert!(rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "fire_main_pressure_low" && r["immediate"] == true));
    let shipped = estatemon_domain::rules::DEFAULT_RULES;
    let put = |body: String, token: String| {
        let api = &api;
        async move {
            api.call("PUT", "/api/v1/rules", Some(&token), Some(&body))
                .await
        }
    };
    let (s, _, _) = put(shipped.to_owned(), viewer.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let broken = shipped.replace("below = 0.5, clear = 0.52", "below = 0.5, clear = 0.45");
    let (s, e, _) = put(broken, admin.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("rule[fire_main_pressure_low].threshold.clear") && message.contains(":43"),
        "{message}"
    );
    // An empty body, or a file holding only a comment, would turn every
    // emergency off: refused, naming what would stop paging (issue 16).
    for empty in ["", "# only a comment\n"] {
        let (s, e, _) = put(empty.to_owned(), admin.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains("entrapment")
                && message.contains("door_forced")
                && message.contains("fire_main_pressure_low"),
            "{message}"
        );
    }
    let (_, rules) = api.get("/api/v1/rules", &viewer).await;
    assert_eq!(rules["origin"], "shipped", "nothing was stored");
    let (_, health) = api.get("/api/v1/health", &viewer).await;
    assert_eq!(health["emergencies_waived"], serde_json::json!([]));
    // Waived explicitly: stored, with the waiver visible in the rules, in
    // /health and in the history.
    let without_doors = shipped.replace(
        "name = \"door_forced\"",
        "name = \"door_forced\"\nenabled = false",
    );
    let (s, e, _) = put(without_doors.clone(), admin.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, waived, _) = api
        .call(
            "PUT",
            "/api/v1/rules?waive_emergencies=true",
            Some(&admin),
            Some(&without_doors),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{waived}");
    assert_eq!(
        waived["missing_emergencies"],
        serde_json::json!(["door_forced"])
    );
    let (_, health) = api.get("/api/v1/health", &viewer).await;
    assert_eq!(
        health["emergencies_waived"],
        serde_json::json!(["door_forced"])
    );
    assert_eq!(health["emergencies_waived_by"], "root");
    assert_eq!(
        db.count("SELECT count(*) FROM rule_sets WHERE waived_emergencies = '{door_forced}'")
            .await,
        1
    );
    // 0.55 MPa is fine under the shipped rules; the new set pages below 0.6.
    let stricter = shipped.replace("below = 0.5, clear = 0.52", "below = 0.6, clear = 0.62");
    let (s, put_back, _) = put(stricter, admin.clone()).await;
    assert_eq!(s, StatusCode::OK, "{put_back}");
    assert_eq!(put_back["origin"], "database");
    assert_eq!(put_back["changed_by"], "root");
    let (_, rules) = api.get("/api/v1/rules", &viewer).await;
    assert_eq!(rules["origin"], "database");
    assert!(rules["source"].as_str().unwrap().contains("below = 0.6"));
    // Ingest polls every 2 s: publish until the new level pages.
    let opened = eventually(std::time::Duration::from_secs(20), || async {
        let ms = chrono::Utc::now().timestamp_millis();
        publish_all(
            &c.mqtt.url,
            vec![(
                topic(&c, "telemetry", "harbour-view", "hv-fire-main-pressure"),
                format!(r#"{{"ts":{ms},"metrics":{{"pressure_mpa":0.55}}}}"#).into_bytes(),
            )],
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        db.count(
            "SELECT count(*) FROM alerts WHERE rule = 'fire_main_pressure_low' AND source = 'ingest'",
        )
        .await
            == 1
    })
    .await;
    assert!(opened, "the ingestor did not take up the new rules");
    ingestor.shutdown().await;
    // Renaming the rule leaves its alert without a rule: the next
    // evaluation resolves it.
    let renamed = shipped.replace(
        "name = \"fire_main_pressure_low\"",
        "name = \"fire_main_low\"",
    );
    let (s, _, _) = put(renamed, admin.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let (rules_now, origin) = estatemon_domain::schema::rule_sets::active(&client, None)
        .await
        .unwrap();
    assert!(matches!(
        origin,
        estatemon_domain::schema::rule_sets::Origin::Database { .. }
    ));
    estatemon_analytics::job::cycle(&mut client, &rules_now, &[], chrono::Utc::now(), None, None)
        .await
        .unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM alerts WHERE rule = 'fire_main_pressure_low' AND state = 'resolved'")
            .await,
        1,
        "the renamed rule's alert is resolved"
    );
    let (s, _, _) = api
        .call("DELETE", "/api/v1/rules", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, rules) = api.get("/api/v1/rules", &viewer).await;
    assert_eq!(rules["origin"], "shipped");
    assert_eq!(
        db.count("SELECT count(*) FROM rule_sets WHERE created_by = 'root'")
            .await,
        4,
        "the history of changes stays"
    );
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            db.count("SELECT count(*) FROM audit_log WHERE actor = 'root' AND method = 'PUT' AND path LIKE '/api/v1/rules%'").await == 7
        })
        .await,
        "rule changes (refused and accepted) are audited"
    );
}
