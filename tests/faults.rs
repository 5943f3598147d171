//! No loss under faults: the ingestor killed with SIGKILL mid-stream,
//! PostgreSQL restarted mid-stream, the broker stopped and restarted. Each
//! test uses private PostgreSQL / Mosquitto instances where it breaks them,
//! so the other tests keep their services.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use estatemon_ingest::Ingestor;

fn spawn_ingestor(c: &estatemon_domain::config::Config) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(estatemon_bin());
    cmd.arg("ingest")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in ingest_env(c) {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn estatemon ingest")
}

/// Publishes `n` readings in `chunks` paced chunks (every reading unique).
async fn publish_stream(
    c: &estatemon_domain::config::Config,
    t: i64,
    range: std::ops::Range<i64>,
    chunks: i64,
) {
    let per = (range.end - range.start) / chunks;
    for k in 0..chunks {
        let lo = range.start + k * per;
        let hi = if k == chunks - 1 { range.end } else { lo + per };
        let messages = (lo..hi)
            .map(|i| {
                (
                    topic(c, "telemetry", "hv", &format!("m-{}", i % 20)),
                    energy(t + i, i as f64),
                )
            })
            .collect();
        publish_all(&c.mqtt.url, messages).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_ingestor_mid_stream_loses_nothing_and_stores_nothing_twice() {
    let broker = PrivateMosquitto::start();
    let db = TestDb::new(&admin_url());
    let c = config(&db, &broker.url());
    // Create the schema first so the child's start-up time is short.
    let first = Ingestor::start(c.clone()).await.unwrap();
    // The session's subscriptions must exist before anything is published.
    assert!(first.subscribed(Duration::from_secs(10)).await);
    first.shutdown().await;

    let mut child = spawn_ingestor(&c);
    let t = base_ms();
    let n: i64 = 6000;
    let publisher = {
        let c = c.clone();
        tokio::spawn(async move { publish_stream(&c, t, 0..n, 20).await })
    };
    // Kill it twice while the stream runs.
    for _ in 0..2 {
        assert!(
            eventually(Duration::from_secs(20), || async {
                db.count("SELECT count(*) FROM readings").await > 0
            })
            .await
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        child.kill().await.unwrap(); // SIGKILL
        let at_kill = db.count("SELECT count(*) FROM readings").await;
        println!("killed the ingestor with {at_kill} readings stored");
        tokio::time::sleep(Duration::from_millis(500)).await;
        child = spawn_ingestor(&c);
    }
    publisher.await.unwrap();
    let complete = eventually(Duration::from_secs(30), || async {
        db.count("SELECT count(*) FROM readings").await >= n
    })
    .await;
    if !complete {
        let t0 = chrono::DateTime::from_timestamp_millis(t).unwrap();
        let missing = db
            .client()
            .await
            .query(
                "SELECT min(i), max(i), count(*) FROM generate_series(0, $1::bigint - 1) i
                  WHERE NOT EXISTS (SELECT 1 FROM readings r
                                     WHERE r.ts = $2::timestamptz + i * interval '1 millisecond')",
                &[&n, &t0],
            )
            .await
            .unwrap();
        let r = &missing[0];
        panic!(
            "stored {} of {n}; missing i from {:?} to {:?} ({} readings)",
            db.count("SELECT count(*) FROM readings").await,
            r.get::<_, Option<i64>>(0),
            r.get::<_, Option<i64>>(1),
            r.get::<_, i64>(2)
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Every reading, once (the key forbids twice; the count proves all).
    assert_eq!(db.count("SELECT count(*) FROM readings").await, n);
    assert_eq!(
        db.count("SELECT count(*) FROM (SELECT DISTINCT device_id, ts FROM readings) d")
            .await,
        n
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restart_mid_stream_loses_nothing() {
    let pg = PrivatePostgres::start();
    let db = TestDb::new(&pg.admin_url());
    let c = config(&db, &broker_url());
    let ingestor = Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let t = base_ms();
    let n: i64 = 4000;
    let publisher = {
        let c = c.clone();
        tokio::spawn(async move { publish_stream(&c, t, 0..n, 20).await })
    };
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM readings").await > 0
        })
        .await
    );
    pg.ctl("stop");
    println!("PostgreSQL stopped mid-stream");
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.ctl("start");
    println!("PostgreSQL started again");
    publisher.await.unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.count("SELECT count(*) FROM readings").await >= n
        })
        .await,
        "stored {} of {n}",
        db.count("SELECT count(*) FROM readings").await
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await, n);
    let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    assert!(
        metric(&m, "estatemon_ingest_db_errors_total") >= 1.0,
        "the outage was noticed"
    );
    ingestor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing() {
    let mut broker = PrivateMosquitto::start();
    let db = TestDb::new(&admin_url());
    let c = config(&db, &broker.url());
    let ingestor = Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let t = base_ms();
    publish_stream(&c, t, 0..1000, 2).await;
    broker.stop();
    println!("broker stopped");
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.resume();
    println!("broker started again");
    publish_stream(&c, t, 1000..2000, 2).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.count("SELECT count(*) FROM readings").await >= 2000
        })
        .await,
        "stored {} of 2000",
        db.count("SELECT count(*) FROM readings").await
    );
    assert_eq!(db.count("SELECT count(*) FROM readings").await, 2000);
    let m = http_get(&ingestor.http_addr.to_string(), "/metrics").await;
    assert!(metric(&m, "estatemon_ingest_mqtt_reconnects_total") >= 1.0);
    assert_eq!(metric(&m, "estatemon_ingest_mqtt_connected"), 1.0);
    ingestor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_the_database_is_down_is_prompt_and_loses_nothing() {
    let pg = PrivatePostgres::start();
    let broker = PrivateMosquitto::start();
    let db = TestDb::new(&pg.admin_url());
    let c = config(&db, &broker.url());
    let ingestor = Ingestor::start(c.clone()).await.unwrap();
    assert!(ingestor.subscribed(Duration::from_secs(10)).await);
    let t = base_ms();
    publish_stream(&c, t, 0..500, 1).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            db.count("SELECT count(*) FROM readings").await == 500
        })
        .await
    );
    pg.ctl("stop");
    publish_stream(&c, t, 500..1000, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(15), ingestor.shutdown())
        .await
        .expect("shutdown must not wait for the database");
    println!(
        "shut down in {:?} with the database down",
        started.elapsed()
    );
    pg.ctl("start");
    let again = Ingestor::start(c.clone()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            db.count("SELECT count(*) FROM readings").await == 1000
        })
        .await,
        "stored {} of 1000 after restart",
        db.count("SELECT count(*) FROM readings").await
    );
    again.shutdown().await;
}

/// Dead letters are stored once, like readings: a batch redelivered after
/// a SIGKILL (committed, never acknowledged) does not add its dead letters
/// a second time (issue 16: 5,000 malformed messages gave 8,859 rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_stores_each_dead_letter_once() {
    let broker = PrivateMosquitto::start();
    let db = TestDb::new(&admin_url());
    let c = config(&db, &broker.url());
    let first = Ingestor::start(c.clone()).await.unwrap();
    assert!(first.subscribed(Duration::from_secs(10)).await);
    first.shutdown().await;

    let mut child = spawn_ingestor(&c);
    let t = base_ms();
    let n: i64 = 4000;
    let publisher = {
        let c = c.clone();
        tokio::spawn(async move {
            // Two bursts: many messages in flight when the ingestor dies.
            let chunks = 2;
            let per = n / chunks;
            for k in 0..chunks {
                let messages = (k * per..(k + 1) * per)
                    .map(|i| {
                        (
                            topic(&c, "telemetry", "hv", &format!("m-{}", i % 20)),
                            // Each one different: invalid_field, once each.
                            format!(r#"{{"ts":{},"metrics":{{"energy_kwh":"bad-{i}"}}}}"#, t + i)
                                .into_bytes(),
                        )
                    })
                    .collect();
                publish_all(&c.mqtt.url, messages).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut seen = 0;
    for _ in 0..2 {
        if seen >= n {
            // Everything was committed before the first kill (a fast
            // machine): the kill still came right after commits whose
            // acknowledgements may not have left, which is what is tested.
            break;
        }
        // Kill once the (re)started ingestor has committed something new.
        assert!(
            eventually(Duration::from_secs(20), || async {
                db.count("SELECT count(*) FROM dead_letters").await > seen
            })
            .await
        );
        seen = db.count("SELECT count(*) FROM dead_letters").await;
        // Right after a commit: its acknowledgements may not have left.
        child.kill().await.unwrap(); // SIGKILL
        println!(
            "killed the ingestor with {} dead letters stored",
            db.count("SELECT count(*) FROM dead_letters").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        child = spawn_ingestor(&c);
    }
    publisher.await.unwrap();
    let complete = eventually(Duration::from_secs(30), || async {
        db.count("SELECT count(DISTINCT payload) FROM dead_letters")
            .await
            >= n
    })
    .await;
    assert!(
        complete,
        "{} distinct of {n}",
        db.count("SELECT count(DISTINCT payload) FROM dead_letters")
            .await
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM dead_letters").await,
        n,
        "every malformed message once"
    );
    child.kill().await.unwrap();
}
