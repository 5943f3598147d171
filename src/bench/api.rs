//! `estatemon bench api`: a year of the simulated site in a fresh database,
//! a real `estatemon api` process, then (1) the latency of the panel query
//! the issue names — one year of hourly data for a building — and (2) the
//! throughput of mixed panel queries under `wrk` (Debian package `wrk`), a
//! load generator outside our code. Before the API starts, (0) what the
//! rollup refresh costs when a late hour or day arrives with the year kept.

use std::process::Stdio;
use std::time::Instant;

use chrono::{DateTime, Utc};
use estatemon_domain::config::Config;
use estatemon_domain::schema;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{bench_config, drop_database, free_port, machine_description};

#[derive(clap::Args)]
pub struct ApiBenchArgs {
    /// Sequential requests per latency scenario.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// wrk duration in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Rollup refreshes timed per late-data scenario.
    #[arg(long, default_value_t = 20)]
    refreshes: usize,
    /// Reuse the history of an earlier run.
    #[arg(long)]
    keep: bool,
}

const FROM: &str = "2025-06-01T00:00:00+08:00";
const TO: &str = "2026-06-01T00:00:00+08:00";

fn ms(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .expect("constant")
        .with_timezone(&Utc)
        .timestamp_millis()
}

/// One GET with the token; (status, body bytes).
pub(super) async fn get(addr: &str, path: &str, token: &str) -> anyhow::Result<(u16, usize)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header"))?;
    let status = std::str::from_utf8(&buf[9..12])?.parse()?;
    Ok((status, buf.len() - head_end - 4))
}

/// `wrk -t2 --latency` against `addr` for `seconds` with `connections`,
/// requesting `paths` in rotation with the bearer `token`; wrk's report.
pub(super) fn wrk(
    addr: &str,
    token: &str,
    paths: &[String],
    connections: usize,
    seconds: u64,
) -> anyhow::Result<String> {
    let script = std::env::temp_dir().join(format!(
        "estatemon-bench-wrk-{}-{}.lua",
        std::process::id(),
        addr.replace([':', '.'], "-")
    ));
    let lua_paths = paths
        .iter()
        .map(|p| format!("  \"{p}\""))
        .collect::<Vec<_>>()
        .join(",\n");
    std::fs::write(
        &script,
        format!(
            "local paths = {{\n{lua_paths}\n}}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"GET\", paths[(i % #paths) + 1], {{[\"Authorization\"] = \"Bearer {token}\"}})\nend\n"
        ),
    )?;
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://{addr}"))
        .output();
    let _ = std::fs::remove_file(&script);
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => anyhow::bail!("wrk failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => anyhow::bail!("wrk is needed for the throughput figure (apt install wrk): {e}"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The rollup refresh after late data, with a year of history kept: the
/// hours are marked dirty as a writer would mark them (their readings are
/// already there, so the refresh does the full work and changes nothing).
async fn refresh_latency(
    client: &mut tokio_postgres::Client,
    from_ms: i64,
    to_ms: i64,
    rounds: usize,
) -> anyhow::Result<()> {
    let mode = schema::recorded_mode(client).await?;
    let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).expect("bench range");
    let hour = 3_600_000;
    println!("\n## rollup refresh after late data, {rounds} refreshes each");
    println!("| late data | p50 | p95 | max |\n|---|---|---|---|");
    for (label, hours) in [("one hour", 1), ("one day (24 hours)", 24)] {
        let mut times = Vec::with_capacity(rounds);
        for round in 0..rounds as i64 {
            // Spread over the year, an hour-aligned start each round.
            let start = from_ms + (to_ms - from_ms) / 2 / hour * hour + round * 7 * 24 * hour
                - (rounds as i64 / 2) * 7 * 24 * hour;
            let marks: Vec<DateTime<Utc>> = (0..hours).map(|h| at(start + h * hour)).collect();
            client
                .execute(
                    "INSERT INTO rollup_dirty (bucket) SELECT unnest($1::timestamptz[]) ON CONFLICT DO NOTHING",
                    &[&marks],
                )
                .await?;
            let t = Instant::now();
            let n = schema::rollups::refresh_dirty(client, mode, 2000).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(n == hours as usize, "refreshed {n} hours, marked {hours}");
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {label} | {:.1} ms | **{:.1} ms** | {:.1} ms |",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times[times.len() - 1],
        );
    }
    Ok(())
}

pub async fn run(config: Config, args: ApiBenchArgs) -> anyhow::Result<()> {
    let mut c = bench_config(&config, "api");
    println!(
        "estatemon bench api — {}",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("machine: {}", machine_description());
    if !args.keep {
        drop_database(&config, &c.database.url).await;
    }
    let (mut client, migration) = schema::prepare(&c.database, &c.storage).await?;
    println!(
        "storage: {} ({})",
        migration.mode.as_str(),
        migration.reason
    );
    let have: i64 = client
        .query_one("SELECT count(*) FROM readings", &[])
        .await?
        .get(0);
    if have == 0 {
        let started = Instant::now();
        super::backfill_direct(
            &c.database.url,
            &["--from", FROM, "--to", TO, "--interval-s", "900"],
        )?;
        estatemon_analytics::energy::refresh_rollups(&mut client).await?;
        // Statistics, visibility and BRIN summaries as autovacuum would
        // leave them a minute later: a freshly loaded table has none, and
        // the plans then are not the ones a running system gets.
        client.batch_execute("VACUUM ANALYZE").await?;
        println!(
            "history: the simulated site {FROM} .. {TO} at 15 min, written in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    let readings: i64 = client
        .query_one("SELECT count(*) FROM readings", &[])
        .await?
        .get(0);
    let hourly: i64 = client
        .query_one("SELECT count(*) FROM readings_hourly", &[])
        .await?
        .get(0);
    println!("data: {readings} readings, {hourly} hourly rollup rows");
    refresh_latency(&mut client, ms(FROM), ms(TO), args.refreshes).await?;
    let name = format!("bench-{}", std::process::id());
    let token =
        estatemon_api::create_token(&client, &name, estatemon_api::auth::Role::Viewer, "bench")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    c.api.listen = addr.clone();
    // A year of hourly points is 8,760: let the panel have them all.
    c.api.max_points = 10_000;
    let mut api = tokio::process::Command::new(std::env::current_exe()?)
        .arg("api")
        .env("ESTATEMON_DATABASE_URL", &c.database.url)
        .env("ESTATEMON_API_LISTEN", &addr)
        .env("ESTATEMON_API_MAX_POINTS", "10000")
        // No response cache: every savings answer is read from the stored
        // measurement, as after each cache expiry on a dashboard refresh.
        .env("ESTATEMON_API_RESPONSE_CACHE_S", "0")
        .env("ESTATEMON_LOG_FILTER", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut ready = false;
    for _ in 0..100 {
        if get(&addr, "/api/v1/health", &token)
            .await
            .is_ok_and(|(s, _)| s == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::ensure!(ready, "estatemon api did not answer on {addr}");

    let (from, to) = (ms(FROM), ms(TO));
    let day = 86_400_000;
    let scenarios = [
        (
            "year of hourly consumption, building tower-a (8,760 points)",
            format!("/api/v1/consumption?site=harbour-view&building=tower-a&from={from}&to={to}&interval=1h&max_points=10000"),
        ),
        (
            "year of hourly mean power, building tower-a (8,760 points)",
            format!("/api/v1/series?metric=power_kw&building=tower-a&from={from}&to={to}&interval=1h&max_points=10000"),
        ),
        (
            "year as a 1,000-point panel, building tower-a consumption",
            format!("/api/v1/consumption?site=harbour-view&building=tower-a&from={from}&to={to}&interval=1h&max_points=1000"),
        ),
        (
            "a retrofit's daily baseline panel (savings/daily led-garage), response cache off",
            "/api/v1/savings/daily?site=harbour-view&retrofit=led-garage".to_owned(),
        ),
        (
            "savings summary (overview panel), response cache off",
            "/api/v1/savings?site=harbour-view&summary=true".to_owned(),
        ),
    ];
    println!(
        "\n## latency, {} sequential requests each (client on the same machine)",
        args.requests
    );
    println!("| query | p50 | p95 | p99 | max | body |\n|---|---|---|---|---|---|");
    for (label, path) in &scenarios {
        let mut times = Vec::with_capacity(args.requests);
        let mut bytes = 0;
        for _ in 0..5 {
            get(&addr, path, &token).await?;
        }
        for _ in 0..args.requests {
            let t = Instant::now();
            let (status, n) = get(&addr, path, &token).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(status == 200, "{path}: HTTP {status}");
            bytes = n;
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {label} | {:.1} ms | **{:.1} ms** | {:.1} ms | {:.1} ms | {} kB |",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            percentile(&times, 0.99),
            times[times.len() - 1],
            bytes / 1024
        );
    }

    // Mixed panel queries of a dashboard, rotated by wrk.
    let week = to - 7 * day;
    let mixed = [
        format!("/api/v1/series?metric=power_kw&building=tower-a&from={}&to={to}&interval=5m&max_points=1000", to - day),
        format!("/api/v1/consumption?site=harbour-view&purpose=public_lighting&from={week}&to={to}&interval=1h"),
        format!("/api/v1/series?metric=motor_temp_c&device=hv-a-lift-1&from={}&to={to}&interval=15m", to - day),
        "/api/v1/alerts?state=open".to_owned(),
        format!("/api/v1/consumption?site=harbour-view&building=tower-a&from={from}&to={to}&interval=1d"),
        "/api/v1/sites".to_owned(),
        format!("/api/v1/annotations?from={week}&to={to}&site=harbour-view"),
        format!("/api/v1/series?metric=flow_m3h&device=hv-domestic-water&from={week}&to={to}&interval=1h"),
        // The savings panels (overview and savings dashboards), from the
        // stored results.
        "/api/v1/savings?site=harbour-view&summary=true".to_owned(),
        "/api/v1/savings?site=harbour-view&summary=true&purpose=public_lighting".to_owned(),
        "/api/v1/savings/daily?site=harbour-view&retrofit=led-garage".to_owned(),
    ];
    for p in &mixed {
        let (status, _) = get(&addr, p, &token).await?;
        anyhow::ensure!(status == 200, "{p}: HTTP {status}");
    }
    let audit_before: i64 = client
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await?
        .get(0);
    println!(
        "\n## throughput: wrk -t2 -c{} -d{}s, {} mixed panel queries in rotation",
        args.connections,
        args.seconds,
        mixed.len()
    );
    let text = wrk(&addr, &token, &mixed, args.connections, args.seconds)?;
    for line in text.lines() {
        println!("    {line}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let audit_after: i64 = client
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await?
        .get(0);
    println!(
        "audit records written during the run: {}",
        audit_after - audit_before
    );
    let rss = api
        .id()
        .and_then(|pid| super::peak_rss_mb_of(&pid.to_string()))
        .unwrap_or(f64::NAN);
    println!("api process peak RSS: {rss:.0} MB");
    let _ = api.kill().await;
    client
        .execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(())
}
