//! A PostgreSQL primary and a streaming standby (issue 32, the database
//! part): the API reads its panels from the standby (`database.read_url`);
//! ingest writes through a URL that names both hosts with
//! `target_session_attrs=read-write`; the primary crashes mid-ingest, the
//! standby is promoted, and ingest carries on into it by itself. With
//! synchronous replication nothing ingest acknowledged is lost: every
//! reading published is stored exactly once. The gap in commits is
//! measured and printed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use estatemon_ingest::Ingestor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_takes_the_writes_and_the_panels_read_a_standby() {
    let primary = PrivatePostgres::start();
    let standby = PrivatePostgres::standby_of(&primary);
    let admin = estatemon_domain::schema::connect_url(&primary.admin_url(), Duration::from_secs(5))
        .await
        .unwrap();
    // Synchronous: a commit returns once the standby has it.
    for sql in [
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        "SELECT pg_reload_conf()",
    ] {
        admin.execute(sql, &[]).await.unwrap();
    }
    let name = unique("estatemon_failover");
    let both = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{name}?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let mut c = estatemon_domain::config::Config::default();
    c.database.url = both.clone();
    c.database.connect_timeout_s = 2;
    c.mqtt.url = broker_url();
    let prefix = unique("fo");
    c.mqtt.topics.telemetry = format!("{prefix}/{{site}}/{{device_id}}/telemetry");
    c.mqtt.topics.events = format!("{prefix}/{{site}}/{{device_id}}/events");
    c.mqtt.topics.senml = format!("{prefix}/{{site}}/{{device_id}}/senml");
    c.mqtt.client_id = format!("{prefix}-ingest");
    c.ingest.listen = "127.0.0.1:0".into();
    c.ingest.batch_linger_ms = 20;
    c.ingest.db_retry_max_backoff_s = 1;
    c.storage.maintenance_interval_s = 3600;
    // Alerts go to a webhook (ingest queues them, analytics delivers).
    let hook_port = free_port();
    let got: Received = Default::default();
    let _hook = receiver(hook_port, got.clone()).await;
    c.alerts.listen = "127.0.0.1:0".into();
    c.alerts.webhooks = vec![toml::from_str(&format!(
        "name = \"hook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n"
    ))
    .unwrap()];
    let ingestor = Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let on = |port: u16| format!("postgres://postgres@127.0.0.1:{port}/{name}");
    let count = |url: String| async move {
        match estatemon_domain::schema::connect_url(&url, Duration::from_secs(2)).await {
            Ok(client) => client
                .query_one("SELECT count(*) FROM readings", &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(-1),
            Err(_) => -1,
        }
    };

    // The API: writes (tokens, audit) to the primary, panels from the standby.
    let primary_client =
        estatemon_domain::schema::connect_url(&on(primary.port), Duration::from_secs(5))
            .await
            .unwrap();
    let token = estatemon_api::create_token(
        &primary_client,
        "panel",
        estatemon_api::auth::Role::Viewer,
        "t",
    )
    .await
    .unwrap();
    let mut api_config = c.clone();
    api_config.database.url = on(primary.port);
    api_config.database.read_url = Some(on(standby.port));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(estatemon_api::serve_on(listener, api_config, async {
        let _ = stopped.await;
    }));

    // The alert job, on the same two-host URL.
    let analytics = tokio::spawn(estatemon_analytics::alerts::job::run(c.clone()));

    // First half, on the primary.
    let t = base_ms();
    let n = 3000i64;
    let half: Vec<(String, Vec<u8>)> = (0..n / 2)
        .map(|i| {
            (
                topic(&c, "telemetry", "hv", &format!("m-{}", i % 20)),
                energy(t + i * 1000, i as f64),
            )
        })
        .collect();
    publish_all(&c.mqtt.url, half).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(on(primary.port)).await == n / 2
        })
        .await,
        "first half stored on the primary"
    );
    // The panel reads come from the standby: its only client backend on
    // this database is the API's.
    let r = reqwest::Client::new()
        .get(format!(
            "http://{api}/api/v1/series?device=m-1&metric=energy_kwh&from={}&to={}",
            t - 1000,
            t + n * 1000
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let standby_admin =
        estatemon_domain::schema::connect_url(&standby.admin_url(), Duration::from_secs(5))
            .await
            .unwrap();
    let readers: i64 = standby_admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(readers >= 1, "the API's panel read went to the standby");
    let _ = stop.send(());
    let _ = server.await;

    // The second half is published in a paced stream; the primary crashes
    // while ingest is committing it; a second later (a failover manager's
    // detection time) the standby is promoted, and ingest carries on into
    // whichever host takes writes.
    let publisher = tokio::spawn({
        let c = c.clone();
        async move {
            for chunk in (n / 2..n).collect::<Vec<i64>>().chunks(100) {
                let msgs: Vec<(String, Vec<u8>)> = chunk
                    .iter()
                    .map(|&i| {
                        (
                            topic(&c, "telemetry", "hv", &format!("m-{}", i % 20)),
                            energy(t + i * 1000, i as f64),
                        )
                    })
                    .collect();
                publish_all(&c.mqtt.url, msgs).await;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    });
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(on(primary.port)).await > n / 2 + 300
        })
        .await,
        "the stream is being committed"
    );
    primary.crash();
    let crashed = Instant::now();
    // What the standby has at the crash: with synchronous replication,
    // every commit the primary acknowledged.
    let at_crash = count(on(standby.port)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    standby.ctl("promote");
    println!("primary crashed with {at_crash} readings on the standby; standby promoted 1 s later");
    let mut first_commit = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = count(on(standby.port)).await;
        if stored > at_crash && first_commit.is_none() {
            first_commit = Some(crashed.elapsed());
        }
        if stored == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = stored == n;
    publisher.await.unwrap();
    assert!(
        done,
        "every reading stored on the promoted standby: {}",
        count(on(standby.port)).await
    );
    println!(
        "no commits for {:.1} s between the primary's crash and the first commit on the promoted standby",
        first_commit.unwrap().as_secs_f64()
    );
    // Exactly once: the readings are all there and none twice (the
    // primary key would refuse a second copy; the count says none is missing).
    let promoted = estatemon_domain::schema::connect_url(&on(standby.port), Duration::from_secs(5))
        .await
        .unwrap();
    let distinct: i64 = promoted
        .query_one(
            "SELECT count(DISTINCT (device_id, metric, ts)) FROM readings",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, n);
    // The alert job keeps paging after the promotion: an entrapment
    // published now is opened by ingest on the new primary and delivered
    // by the analytics notifier, reconnected there by itself.
    let ms = chrono::Utc::now().timestamp_millis();
    publish_all(
        &c.mqtt.url,
        vec![(
            topic(&c, "events", "hv", "lift-after-failover"),
            format!(r#"{{"ts":{ms},"type":"fault","code":"entrapment"}}"#).into_bytes(),
        )],
    )
    .await;
    let paged = eventually(Duration::from_secs(30), || async {
        got.lock().unwrap().iter().any(|(_, b)| {
            b["kind"] == "firing"
                && b["alert"]["rule"] == "lift_entrapment"
                && b["alert"]["labels"]["device"] == "lift-after-failover"
        })
    })
    .await;
    assert!(
        paged,
        "the entrapment paged after the promotion: {:?}",
        got.lock().unwrap()
    );
    analytics.abort();
    ingestor.shutdown().await;
}
