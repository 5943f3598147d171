//! The peers `bench ingest` reads its figures against, measured in the
//! same run: PostgreSQL's own COPY through psql, and the broker relaying
//! QoS 1 between clients with nothing else in the way.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::Utc;
use estatemon_domain::config::Config;
use estatemon_domain::schema;
use rumqttc::{AsyncClient, MqttOptions, QoS};

use super::{bench_config, drop_database};

/// PostgreSQL alone: psql's COPY of the same rows into a table with the
/// same primary key, from a file.
pub(super) async fn psql_copy(config: &Config, rows: u64) -> anyhow::Result<()> {
    let tag = format!("{}_psql", std::process::id());
    let c = bench_config(config, &tag);
    drop_database(config, &c.database.url).await;
    schema::ensure_database(&c.database).await?;
    let client = schema::connect(&c.database).await?;
    client
        .batch_execute(
            "CREATE TABLE readings (device_id text NOT NULL, metric text NOT NULL,
                 ts timestamptz NOT NULL, value double precision NOT NULL,
                 PRIMARY KEY (device_id, metric, ts))",
        )
        .await?;
    let path = std::env::temp_dir().join(format!("estatemon-bench-{tag}.csv"));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let t0 = Utc::now();
        for i in 0..rows {
            let ts = t0 + chrono::Duration::microseconds(i as i64);
            writeln!(
                f,
                "dev-{},power_kw,{},{}.5",
                i % 500,
                ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                i % 1000
            )?;
        }
    }
    let started = Instant::now();
    let status = tokio::process::Command::new("psql")
        .arg(&c.database.url)
        .arg("-q")
        .arg("-c")
        .arg(format!(
            "\\copy readings (device_id, metric, ts, value) FROM '{}' WITH (FORMAT csv)",
            path.display()
        ))
        .status()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    drop(client);
    drop_database(config, &c.database.url).await;
    match status {
        Ok(s) if s.success() => println!(
            "\n## peer: psql \\copy into a table with the same primary key\n{:>10.0} rows/s ({} rows in {:.2} s)",
            rows as f64 / elapsed,
            rows,
            elapsed
        ),
        Ok(s) => println!("\n## peer: psql \\copy failed ({s})"),
        Err(e) => println!("\n## peer: psql not available ({e})"),
    }
    Ok(())
}

/// The broker alone: QoS 1 from publishers to one auto-acknowledging
/// subscriber.
pub(super) async fn broker_relay(
    config: &Config,
    messages: u64,
    publishers: usize,
) -> anyhow::Result<()> {
    let tag = format!("{}_relay", std::process::id());
    let c = bench_config(config, &tag);
    let ep = c.mqtt.endpoint().map_err(anyhow::Error::msg)?;
    let mut opts = MqttOptions::new(format!("estatemon-bench-sub-{tag}"), ep.host, ep.port);
    opts.set_inflight(1000);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (sub, mut eventloop) = AsyncClient::new(opts, 1000);
    let filter = c
        .mqtt
        .topics
        .telemetry
        .replace("{site}", "+")
        .replace("{device_id}", "+");
    sub.subscribe(filter, QoS::AtLeastOnce).await?;
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0u64);
    let counter = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))) => {
                    n += 1;
                    if n.is_multiple_of(1000) {
                        let _ = count_tx.send(n);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let publishing =
        estatemon_simulators::load::publish(&c.mqtt, &tag, publishers, messages, 1, None, 0);
    let target = messages - messages % 1000;
    let waiting = async {
        let _ = tokio::time::timeout(
            Duration::from_secs(120),
            count_rx.wait_for(|n| *n >= target),
        )
        .await;
        started.elapsed()
    };
    let (_, received_at) = tokio::join!(publishing, waiting);
    let received = *count_rx.borrow();
    counter.abort();
    println!(
        "\n## peer: broker relay, QoS 1, {publishers} rumqttc publishers → 1 rumqttc subscriber\n{:>10.0} messages/s ({} of {} received in {:.2} s)",
        received as f64 / received_at.as_secs_f64(),
        received,
        messages,
        received_at.as_secs_f64()
    );
    Ok(())
}
