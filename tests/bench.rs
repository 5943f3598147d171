//! `estatemon bench portfolio` at a small size, end to end: its own
//! primary and standby, the history, the rollups, the API under wrk read
//! from both, a quarterly report and an alert cycle. The figures are
//! checked for sense (counts exact, sizes within what a row can take), not
//! for speed: speed lives in BENCHMARKS.md.

mod common;

use common::*;

/// The number in the summary row `label` of the first storage column.
fn cell<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("no row `{label}` in:\n{text}"))
        .split('|')
        .nth(2)
        .expect("a cell")
        .trim()
}

fn number(s: &str) -> f64 {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|p| !p.is_empty())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no number in `{s}`"))
}

/// Runs a bench as CI does (no progress bars, warnings only); it must
/// succeed. Its stdout.
fn bench(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .env("CI", "true")
        .env("ESTATEMON_LOG_FILTER", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_small_portfolio_is_measured_on_a_primary_and_its_standby() {
    let text = bench(
        std::process::Command::new(estatemon_bin())
            .args([
                "bench",
                "portfolio",
                "--sites",
                "2",
                "--devices-per-site",
                "10",
            ])
            .args(["--days", "400", "--storage", "plain", "--requests", "5"])
            .args(["--seconds", "2", "--connections", "4", "--reports", "1"]),
    );
    // 20 meters, 400 days of 96 steps.
    assert_eq!(cell(&text, "readings"), "768000", "{text}");
    // A row of (device, metric, time, value) and its key take at least
    // 40 bytes and, on plain PostgreSQL, not 400.
    let per_reading = number(cell(&text, "bytes a reading, readings table"));
    assert!((40.0..400.0).contains(&per_reading), "{text}");
    let whole = number(cell(&text, "bytes a reading, whole database"));
    assert!(whole > per_reading, "rollups come on top: {text}");
    // Both read targets answered under wrk, without errors.
    assert!(
        number(cell(&text, "API mix from the primary")) > 0.0,
        "{text}"
    );
    assert!(
        number(cell(&text, "API mix from the standby")) > 0.0,
        "{text}"
    );
    assert!(
        cell(&text, "quarterly reports, all sites").starts_with("1 in"),
        "{text}"
    );
    assert!(
        number(cell(&text, "alert cycle, full window")) > 0.0,
        "{text}"
    );
    assert!(
        text.contains("storage: plain"),
        "the run says which storage it measured: {text}"
    );
}

/// `estatemon bench ingest --transport nats-fast` at a small size: a
/// three-node cluster (nats-server 2.15 from PyPI), publishers sending
/// fast-ingest batches (Synadia's jetstream-extra), every single-reading
/// message stored by ingest from the stream, and the figures printed.
#[test]
fn single_readings_in_fast_ingest_batches_reach_the_database() {
    let text = bench(
        std::process::Command::new(estatemon_bin())
            .args(["bench", "ingest", "--transport", "nats-fast"])
            .args(["--scenario", "single", "--messages", "6000"])
            .args(["--latency-seconds", "2", "--no-peers"])
            .arg("--nats-server")
            .arg(venv_bin("nats-server")),
    );
    assert!(
        text.contains("fast-ingest batches → JetStream, 3 replicas"),
        "{text}"
    );
    // wait_for_stored returned: all 6,000 readings were stored.
    let line = text
        .lines()
        .find(|l| l.starts_with("max rate:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(number(line.trim_start_matches("max rate:")) > 0.0, "{text}");
    assert!(text.contains("publish→commit p50"), "{text}");
}
