//! Bad input, roles and the audit log: 4xx with JSON, never a panic;
//! every refusal audited.

use super::*;

/// Issue 16: values that used to panic a handler (and so dropped the
/// connection with no answer and no audit row) are 400s with a JSON
/// message naming the parameter; axum's own 413 and 405 have the same JSON
/// shape; 401 says `WWW-Authenticate: Bearer`; unknown fields in a silence
/// are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_parameters_are_json_4xx_never_a_panic() {
    let db = TestDb::new(&admin_url());
    let (api, client) = empty_api(&db, |_| {}).await;
    let admin = estatemon_api::create_token(&client, "root", Role::Admin, "test")
        .await
        .unwrap();
    let range = "from=1767225600000&to=1767830400000";
    let uris = [
        format!("/api/v1/series?site=harbour-view&metric=power_kw&{range}&interval=9223372036854775s"),
        format!("/api/v1/series?site=harbour-view&metric=power_kw&{range}&interval_ms=9223372036854775807"),
        format!("/api/v1/series?site=harbour-view&metric=power_kw&{range}&interval=153722867280912930m"),
        format!("/api/v1/consumption?site=harbour-view&{range}&interval=106751991167300d"),
        format!("/api/v1/consumption?site=harbour-view&{range}&interval=15250284452471w"),
        format!("/api/v1/events?site=harbour-view&{range}&interval=9223372036854775s"),
        format!("/api/v1/lifts/states?site=harbour-view&{range}&interval_ms=-9223372036854775808"),
        "/api/v1/consumption?site=harbour-view&from=1767225600000&to=262142-12-31T23:59:59Z&interval=1h".into(),
        "/api/v1/consumption?site=harbour-view&from=-9223372036854775808&to=9223372036854775807".into(),
        "/api/v1/savings?site=harbour-view&until=9223372036854775807".into(),
        "/api/v1/savings?site=harbour-view&until=+262142-12-31T23:59:59Z".into(),
        "/api/v1/alerts?from=-62135596800001".into(),
    ];
    for uri in &uris {
        let (s, body, raw) = api.call("GET", uri, Some(&admin), None).await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            String::from_utf8_lossy(&raw)
        );
        assert_eq!(body["error"], "bad_request", "{uri}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains('`'),
            "{uri}: {body}"
        );
    }
    // Every one of them is in the audit log with its 400.
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            db.count("SELECT count(*) FROM audit_log WHERE status = 400")
                .await
                == uris.len() as i64
        })
        .await,
        "400s audited: {}",
        db.count("SELECT count(*) FROM audit_log WHERE status = 400")
            .await
    );

    // A body over 2 MB: the same JSON shape as every other error.
    let big = "x".repeat(3 << 20);
    let (s, body, _) = api
        .call("PUT", "/api/v1/rules", Some(&admin), Some(&big))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "payload_too_large", "{body}");
    // A method the route lacks.
    let (s, body, _) = api
        .call("PATCH", "/api/v1/alerts", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    // A silence with a stray field is refused, not silently shortened.
    let (s, body, _) = api
        .call(
            "POST",
            "/api/v1/silences",
            Some(&admin),
            Some(r#"{"matchers":{"device":"hv-a-lift-1"},"minutes":60,"ends_at":"2030-01-01T00:00:00Z"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("ends_at"),
        "{body}"
    );
    // 401 says how to authenticate.
    let req = Request::builder()
        .uri("/api/v1/alerts")
        .body(Body::empty())
        .unwrap();
    let resp = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let www = resp
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(www.starts_with("Bearer"), "{www}");
    assert_eq!(
        resp.headers().get("x-content-type-options").unwrap(),
        "nosniff"
    );
}

/// Issue 16: the audit log cannot be turned against the database. Paths
/// are cut to 2 kB; unauthenticated callers beyond the per-address limit
/// get 429 and one audit row per burst; a wrong token is told apart from
/// no token; a request the client abandons is audited (499); while audit
/// writes stall, the backlog stays within its byte bound and new requests
/// get 503 instead of memory; nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_bounded_and_complete() {
    let db = TestDb::new(&admin_url());
    let (api, client) = empty_api(&db, |c| {
        c.api.unauthenticated_per_minute = 10;
        // The smallest bound (64 KiB) so that a stall reaches it quickly.
        c.api.audit_max_pending_mb = 0;
    })
    .await;
    let viewer = estatemon_api::create_token(&client, "grafana", Role::Viewer, "test")
        .await
        .unwrap();
    let long_query = "q=".to_owned() + &"a".repeat(30_000);
    // 40 unauthenticated requests with 30 kB query strings: 10 answered
    // 401 (audited, cut to 2 kB), the rest 429, one audit row for them.
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..40 {
        let token = (i % 2 == 0).then_some("emt_wrong");
        let (s, body, _) = api
            .call("GET", &format!("/api/v1/alerts?{long_query}"), token, None)
            .await;
        assert!(body["message"].is_string(), "{body}");
        *statuses.entry(s.as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&401), Some(&10), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&30), "{statuses:?}");
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            db.count("SELECT count(*) FROM audit_log WHERE role IS NULL")
                .await
                == 11
        })
        .await,
        "audited: {}",
        db.count("SELECT count(*) FROM audit_log WHERE role IS NULL")
            .await
    );
    let longest = db
        .count("SELECT max(length(path))::bigint FROM audit_log")
        .await;
    assert!(longest < 2100, "paths cut: {longest}");
    assert_eq!(
        db.count("SELECT count(*) FROM audit_log WHERE actor = 'unknown-token'")
            .await,
        6,
        "a wrong token is not `anonymous`"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_log WHERE actor = 'anonymous' AND detail LIKE 'no bearer token%'")
            .await,
        5
    );
    let metrics = api.state.metrics.encode();
    assert!(
        metrics.contains("estatemon_api_unauthenticated_refused_total 30"),
        "{metrics}"
    );

    // A request abandoned by its client (Grafana cancelling): the alerts
    // table is locked, the request waits, the client gives up.
    let mut locker = db.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE alerts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let req = Request::builder()
        .uri("/api/v1/alerts?limit=7")
        .header("authorization", format!("Bearer {viewer}"))
        .body(Body::empty())
        .unwrap();
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        api.router.clone().oneshot(req),
    )
    .await;
    assert!(abandoned.is_err(), "the request was still waiting");
    tx.rollback().await.unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            db.count("SELECT count(*) FROM audit_log WHERE status = 499 AND path = '/api/v1/alerts?limit=7' AND actor = 'grafana'")
                .await
                == 1
        })
        .await,
        "the abandoned request is audited"
    );

    // Audit writes stall (the table is locked): requests are answered
    // until the backlog reaches its bound, then refused with 503; when
    // the lock goes, everything answered is written.
    let before = db.count("SELECT count(*) FROM audit_log").await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut answered = 0;
    let mut refused = 0;
    let path = format!("/api/v1/sites?{}", "b".repeat(1500));
    for _ in 0..200 {
        let (s, body, _) = api.call("GET", &path, Some(&viewer), None).await;
        match s {
            StatusCode::OK => answered += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    body["message"].as_str().unwrap().contains("audit"),
                    "{body}"
                );
                refused += 1
            }
            other => panic!("{other}: {body}"),
        }
    }
    let metrics = api.state.metrics.encode();
    println!("audit stalled: {answered} answered, {refused} refused");
    assert!(answered > 10 && refused > 0, "{answered} / {refused}");
    let pending: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("estatemon_api_audit_records_pending "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(pending >= answered as f64, "pending {pending}: {metrics}");
    tx.rollback().await.unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            db.count("SELECT count(*) FROM audit_log").await == before + answered
        })
        .await,
        "every answered request written: {} of {}",
        db.count("SELECT count(*) FROM audit_log").await - before,
        answered
    );
}

/// The write operations of the served OpenAPI document with the role
/// each declares (its `bearer` scopes): `(METHOD, path template, role)`.
fn documented_writes() -> Vec<(String, String, Role)> {
    let doc = estatemon_api::routes::document();
    let mut writes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let method = method.to_ascii_uppercase();
            let need = estatemon_api::routes::required_role(&method.parse().unwrap(), path);
            // The document says so too (what clients read).
            let scopes = op["security"].to_string();
            assert!(
                scopes.contains(&format!("\"{}\"", need.as_str())),
                "{method} {path}: {scopes}"
            );
            writes.push((method, path.clone(), need));
        }
    }
    writes
}

/// Issue 33: a caller below a write route's role is answered 403 before
/// anything reads the body: every write operation the document lists ×
/// every role below the one it needs × a valid body, an invalid one, one
/// over the size limit and (for the rules) an invalid query answers 403,
/// stores nothing, and leaves an audit row saying 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_routes_refuse_callers_below_their_role_before_reading_the_body() {
    let db = TestDb::new(&admin_url());
    let (api, client) = empty_api(&db, |_| {}).await;
    let viewer = estatemon_api::create_token(&client, "matrix-viewer", Role::Viewer, "test")
        .await
        .unwrap();
    let operator = estatemon_api::create_token(&client, "matrix-operator", Role::Operator, "test")
        .await
        .unwrap();
    // (Made before the first request: the API caches tokens for seconds.)
    let admin = estatemon_api::create_token(&client, "matrix-admin", Role::Admin, "test")
        .await
        .unwrap();
    let rules_before = db.count("SELECT count(*) FROM rule_sets").await;
    // A valid body per write operation; one the document lists that is
    // missing here fails the test (the matrix cannot forget a route).
    let valid = |method: &str, path: &str| -> Option<String> {
        Some(match (method, path) {
            ("POST", "/api/v1/tokens") => r#"{"name": "bob", "role": "admin"}"#.into(),
            ("PUT", "/api/v1/rules") => estatemon_domain::rules::DEFAULT_RULES.into(),
            ("PUT", "/api/v1/retrofits/{site}/{id}") => {
                r#"{"id": "r1", "name": "LED", "site": "s1", "purpose": "lighting",
                    "date": "2026-05-01", "target": 0.2}"#
                    .into()
            }
            ("PUT", "/api/v1/devices/{id}") => r#"{"id": "d1", "kind": "electricity_meter",
                  "site": "s1", "building": "b", "area": "a", "purpose": "hvac"}"#
                .into(),
            ("POST", "/api/v1/silences") => {
                r#"{"matchers": {"device": "d1"}, "minutes": 60, "comment": "x"}"#.into()
            }
            ("POST", "/api/v1/inspections") => {
                r#"{"device": "d1", "by": "x", "results": {}}"#.into()
            }
            ("POST", "/api/v1/work-items/{id}/close") => r#"{"note": "x"}"#.into(),
            ("POST", "/api/v1/intake/alertmanager") => {
                r#"{"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "X"},
                    "startsAt": "2026-12-06T00:00:00Z", "fingerprint": "f"}]}"#
                    .into()
            }
            ("POST", "/api/v1/intake/alerts") => {
                r#"{"source": "bms", "key": "k", "summary": "x"}"#.into()
            }
            ("POST", "/api/v1/intake/heartbeat/{name}") => String::new(),
            ("PUT", "/api/v1/oncall/roster") => "[[person]]\nid = \"p\"\nname = \"P\"\n".into(),
            ("DELETE", _) | ("POST", "/api/v1/alerts/{id}/ack") => String::new(),
            _ => return None,
        })
    };
    let writes = documented_writes();
    assert_eq!(writes.len(), 16, "{writes:?}");
    let oversized = "x".repeat(3 << 20);
    let mut cells = 0;
    for (method, template, need) in &writes {
        let body = valid(method, template)
            .unwrap_or_else(|| panic!("{method} {template}: no valid body in this matrix"));
        let uri = template
            .replace("{id}", "1")
            .replace("{site}", "s1")
            .replace("{name}", "matrix-operator");
        let mut uris = vec![uri.clone()];
        if template == "/api/v1/rules" {
            uris.push(format!("{uri}?waive_emergencies=maybe&unknown=1"));
        }
        let below: Vec<&str> = [(&viewer, Role::Viewer), (&operator, Role::Operator)]
            .into_iter()
            .filter(|(_, role)| role < need)
            .map(|(token, _)| token.as_str())
            .collect();
        assert!(!below.is_empty(), "{method} {template} needs {need:?}");
        for token in below {
            for uri in &uris {
                for body in [body.as_str(), "{not json [[rule]] =", oversized.as_str()] {
                    let (s, e, _) = api
                        .call(
                            method,
                            uri,
                            Some(token),
                            Some(body).filter(|b| !b.is_empty()),
                        )
                        .await;
                    assert_eq!(
                        s,
                        StatusCode::FORBIDDEN,
                        "{method} {uri} ({} bytes): {e}",
                        body.len()
                    );
                    assert_eq!(e["error"], "forbidden", "{e}");
                    let message = e["message"].as_str().unwrap();
                    assert!(
                        message.contains(&format!("needs `{}`", need.as_str()))
                            && !message.contains("TOML")
                            && !message.contains("expected"),
                        "{method} {uri}: the answer says nothing about the body: {message}"
                    );
                    cells += 1;
                }
            }
        }
    }
    println!("role matrix: {cells} cells, all 403");
    // 9 admin operations × 2 roles + 7 operator ones × 1, × 3 bodies, and
    // the rules' bad query (PUT and DELETE) × 2 roles × 3 bodies.
    assert_eq!(cells, (9 * 2 + 7) * 3 + 2 * 2 * 3);
    // Nothing changed, and every cell is audited as what it was answered.
    assert_eq!(
        db.count("SELECT count(*) FROM rule_sets").await,
        rules_before
    );
    assert_eq!(
        db.count("SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL OR name = 'bob'")
            .await,
        0
    );
    for table in [
        "devices",
        "retrofits",
        "silences",
        "inspections",
        "alerts",
        "oncall_rosters",
    ] {
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    let audited = "SELECT count(*) FROM audit_log WHERE actor LIKE 'matrix-%'";
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            db.count(audited).await == cells as i64
        })
        .await,
        "audited {} of {cells}",
        db.count(audited).await
    );
    assert_eq!(
        db.count("SELECT count(*) FROM audit_log WHERE actor LIKE 'matrix-%' AND status <> 403")
            .await,
        0
    );
    // The roles that may still get past the check to the handler.
    let (s, e, _) = api
        .call("PUT", "/api/v1/rules", Some(&operator), Some("[[rule]"))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let (s, e, _) = api
        .call("PUT", "/api/v1/rules", Some(&admin), Some("[[rule]"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "an admin is told: {e}");
    let (s, e, _) = api
        .call("GET", "/api/v1/tokens", Some(&operator), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let (s, _, _) = api.call("GET", "/api/v1/rules", Some(&viewer), None).await;
    assert_eq!(s, StatusCode::OK);
}

/// Issue 33: every audit row holds the status its client received, on
/// every refusal path, over a real connection: 413 (body over the limit),
/// 400 (a body or parameter that does not parse), 401, 403, 404, 405, the
/// audited 429 of an unauthenticated burst, and 503 (the server cannot
/// answer), beside a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audit_row_holds_the_status_the_client_received() {
    let db = TestDb::new(&admin_url());
    let (_in_process, client) = empty_api(&db, |_| {}).await;
    let mut config = estatemon_domain::config::Config::default();
    config.database.url = db.url.clone();
    config.api.audit_flush_ms = 20;
    config.api.unauthenticated_per_minute = 2;
    // A rules file that is not there: GET /rules cannot answer (503).
    config.alerts.rules_file = Some(std::env::temp_dir().join(unique("no-such-rules")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(estatemon_api::serve_on(listener, config, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    // One byte over the limit: the server reads all but that byte before
    // it answers, so the client is done sending and reads the answer (a
    // much larger body may still be in flight when the server closes).
    let big = "x".repeat((2 << 20) + 1);
    // (case: the token's name, or the path's marker for callers without
    // one; role; method; path; body)
    type Case<'a> = (&'a str, Option<Role>, &'a str, String, Option<String>);
    let cases: Vec<Case> = vec![
        (
            "ok",
            Some(Role::Viewer),
            "GET",
            "/api/v1/sites".into(),
            None,
        ),
        (
            "too-large",
            Some(Role::Admin),
            "PUT",
            "/api/v1/rules".into(),
            Some(big.clone()),
        ),
        (
            "too-large-silence",
            Some(Role::Operator),
            "POST",
            "/api/v1/silences".into(),
            Some(big.clone()),
        ),
        (
            "bad-toml",
            Some(Role::Admin),
            "PUT",
            "/api/v1/rules".into(),
            Some("[[rule]".into()),
        ),
        (
            "bad-query",
            Some(Role::Viewer),
            "GET",
            "/api/v1/series?interval=forever".into(),
            None,
        ),
        (
            "bad-json",
            Some(Role::Operator),
            "POST",
            "/api/v1/silences".into(),
            Some("{".into()),
        ),
        (
            "forbidden",
            Some(Role::Viewer),
            "PUT",
            "/api/v1/rules".into(),
            Some("[[rule]".into()),
        ),
        (
            "not-found",
            Some(Role::Viewer),
            "GET",
            "/api/v1/nothing-here".into(),
            None,
        ),
        (
            "no-method",
            Some(Role::Admin),
            "PATCH",
            "/api/v1/alerts".into(),
            None,
        ),
        (
            "unavailable",
            Some(Role::Viewer),
            "GET",
            "/api/v1/rules".into(),
            None,
        ),
        (
            "anon-1",
            None,
            "GET",
            "/api/v1/alerts?case=anon-1".into(),
            None,
        ),
        (
            "anon-2",
            None,
            "PUT",
            "/api/v1/rules?case=anon-2".into(),
            Some("[[rule]".into()),
        ),
        (
            "anon-429",
            None,
            "GET",
            "/api/v1/alerts?case=anon-429".into(),
            None,
        ),
    ];
    // Tokens first: the server caches the live ones for a few seconds.
    let mut tokens = std::collections::HashMap::new();
    for (case, role, ..) in &cases {
        if let Some(role) = role {
            let token = estatemon_api::create_token(&client, case, *role, "test")
                .await
                .unwrap();
            tokens.insert(*case, token);
        }
    }
    let mut answered = Vec::new();
    for (case, _, method, path, body) in &cases {
        let mut req = http.request(method.parse().unwrap(), format!("http://{addr}{path}"));
        if let Some(token) = tokens.get(case) {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{case}: no answer: {e}"));
        answered.push((case.to_string(), resp.status().as_u16()));
    }
    let want: Vec<u16> = vec![
        200, 413, 413, 400, 400, 400, 403, 404, 405, 503, 401, 401, 429,
    ];
    assert_eq!(
        answered.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        want,
        "{answered:?}"
    );
    let stored = || async {
        let mut out = Vec::new();
        for (case, role, _, path, _) in &cases {
            let rows = if role.is_some() {
                client
                    .query("SELECT status FROM audit_log WHERE actor = $1", &[case])
                    .await
                    .unwrap()
            } else {
                client
                    .query("SELECT status FROM audit_log WHERE path = $1", &[path])
                    .await
                    .unwrap()
            };
            let statuses: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
            out.push((case.to_string(), statuses));
        }
        out
    };
    let expected: Vec<(String, Vec<i32>)> = answered
        .iter()
        .map(|(case, s)| (case.clone(), vec![*s as i32]))
        .collect();
    let same = eventually(std::time::Duration::from_secs(5), || async {
        stored().await == expected
    })
    .await;
    assert!(same, "answered {answered:?}, audited {:?}", stored().await);
    // And the requests counted are the requests audited.
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM audit_log").await,
        cases.len() as i64
    );
}
