//! Which spans of time the alert rules were evaluated over, live or
//! replayed (`rule_coverage`). Alerts exist only where rules ran: a report
//! reads these spans to say which part of its quarter its alerts cover,
//! and flags the rest as not evaluated instead of showing it as quiet.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

/// A live cycle extends the latest live span when it runs at most this
/// long after that span's end; a longer pause starts a new span, and the
/// time between is not covered. Gaps this short are also not reported:
/// every rule's lookback reaches across them.
pub const MAX_GAP: Duration = Duration::minutes(15);

/// The pause a live cycle may follow and still extend its span: the larger
/// of [`MAX_GAP`] and twice `alerts.evaluate_interval_s` (set by the
/// analytics process at start, [`set_evaluate_interval`]).
static LIVE_GAP_S: std::sync::atomic::AtomicI64 =
    std::sync::atomic::AtomicI64::new(MAX_GAP.num_seconds());

/// The evaluation interval the live cycles run at: a process evaluating
/// every 30 minutes covers its time, not 30-minute points.
pub fn set_evaluate_interval(every: std::time::Duration) {
    let gap = (2 * every.as_secs() as i64).max(MAX_GAP.num_seconds());
    LIVE_GAP_S.store(gap, std::sync::atomic::Ordering::Relaxed);
}

/// Records that the live cycle evaluated the rules at `at`.
pub async fn live(
    client: &impl GenericClient,
    at: DateTime<Utc>,
) -> Result<(), tokio_postgres::Error> {
    let gap = LIVE_GAP_S.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let extended = client
        .execute(
            "UPDATE rule_coverage SET to_ts = $1
              WHERE id = (SELECT id FROM rule_coverage
                           WHERE mode = 'live' AND to_ts <= $1 AND to_ts >= $1 - make_interval(secs => $2)
                           ORDER BY to_ts DESC LIMIT 1)",
            &[&at, &gap],
        )
        .await?;
    if extended == 0 {
        // Inside an existing span (a past time evaluated again) or a new one.
        client
            .execute(
                "INSERT INTO rule_coverage (mode, from_ts, to_ts)
                 SELECT 'live', $1, $1
                  WHERE NOT EXISTS (SELECT 1 FROM rule_coverage
                                     WHERE mode = 'live' AND from_ts <= $1 AND to_ts >= $1)",
                &[&at],
            )
            .await?;
    }
    Ok(())
}

/// Starts a replay's span at `from`; [`extend`] moves its end as chunks
/// finish, so an interrupted replay covers what it evaluated.
pub async fn start_replay(
    client: &impl GenericClient,
    from: DateTime<Utc>,
) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "INSERT INTO rule_coverage (mode, from_ts, to_ts) VALUES ('replay', $1, $1) RETURNING id",
            &[&from],
        )
        .await?
        .get(0))
}

pub async fn extend(
    client: &impl GenericClient,
    id: i64,
    to: DateTime<Utc>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE rule_coverage SET to_ts = greatest(to_ts, $2) WHERE id = $1",
            &[&id, &to],
        )
        .await?;
    Ok(())
}

/// One evaluated span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub replay: bool,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The spans that touch `[from, to)`.
pub async fn spans(
    client: &impl GenericClient,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Span>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT mode = 'replay', from_ts, to_ts FROM rule_coverage
              WHERE to_ts >= $1 AND from_ts < $2 ORDER BY from_ts",
            &[&from, &to],
        )
        .await?
        .iter()
        .map(|r| Span {
            replay: r.get(0),
            from: r.get(1),
            to: r.get(2),
        })
        .collect())
}

/// Which part of a period the rules were evaluated over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Share of the period evaluated, live or replayed.
    pub evaluated: f64,
    /// Share evaluated live, and share replayed (they may overlap).
    pub live: f64,
    pub replayed: f64,
    /// The spans not evaluated, longer than [`MAX_GAP`].
    pub gaps: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Coverage {
    /// Every part of the period was evaluated (no gap over [`MAX_GAP`]).
    pub fn complete(&self) -> bool {
        self.gaps.is_empty()
    }
}

/// Merged spans, each widened by [`MAX_GAP`] on both sides where it
/// meets another or a period edge within it, clipped to `[from, to)`.
fn union(
    mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    spans.sort();
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (a, b) in spans {
        let (a, b) = (a.max(from), b.min(to));
        if b < a {
            continue;
        }
        match out.last_mut() {
            Some(last) if a <= last.1 + MAX_GAP => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    // A short stretch at either edge is within the rules' lookback.
    if let Some(first) = out.first_mut() {
        if first.0 - from <= MAX_GAP {
            first.0 = from;
        }
    }
    if let Some(last) = out.last_mut() {
        if to - last.1 <= MAX_GAP {
            last.1 = to;
        }
    }
    out
}

fn share(spans: &[(DateTime<Utc>, DateTime<Utc>)], from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let total = (to - from).num_seconds();
    if total <= 0 {
        return 0.0;
    }
    let covered: i64 = spans.iter().map(|(a, b)| (*b - *a).num_seconds()).sum();
    (covered as f64 / total as f64).clamp(0.0, 1.0)
}

/// Summarises `spans` over `[from, to)`.
pub fn summarise(spans: &[Span], from: DateTime<Utc>, to: DateTime<Utc>) -> Coverage {
    let pick = |replay: Option<bool>| {
        union(
            spans
                .iter()
                .filter(|s| replay.is_none_or(|r| s.replay == r))
                .map(|s| (s.from, s.to))
                .collect(),
            from,
            to,
        )
    };
    let all = pick(None);
    let mut gaps = Vec::new();
    let mut at = from;
    for (a, b) in &all {
        if *a > at {
            gaps.push((at, *a));
        }
        at = at.max(*b);
    }
    if at < to {
        gaps.push((at, to));
    }
    Coverage {
        evaluated: share(&all, from, to),
        live: share(&pick(Some(false)), from, to),
        replayed: share(&pick(Some(true)), from, to),
        gaps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn span(replay: bool, a: &str, b: &str) -> Span {
        Span {
            replay,
            from: t(a),
            to: t(b),
        }
    }

    #[test]
    fn a_quarter_live_then_replayed_is_complete() {
        let (from, to) = (t("2026-04-01T00:00:00Z"), t("2026-07-01T00:00:00Z"));
        let c = summarise(
            &[
                span(true, "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"),
                // Live from a minute after the replay ended, to a minute
                // before the quarter's end: both within the rules' reach.
                span(false, "2026-05-01T00:01:00Z", "2026-06-30T23:59:00Z"),
            ],
            from,
            to,
        );
        assert!(c.complete(), "{c:?}");
        assert!((c.evaluated - 1.0).abs() < 1e-9);
        assert!((c.replayed - 30.0 / 91.0).abs() < 1e-3, "{}", c.replayed);
    }

    #[test]
    fn a_gap_is_named_with_its_times() {
        let (from, to) = (t("2026-04-01T00:00:00Z"), t("2026-07-01T00:00:00Z"));
        let c = summarise(
            &[span(false, "2026-06-03T12:00:00Z", "2026-07-01T00:00:00Z")],
            from,
            to,
        );
        assert!(!c.complete());
        assert_eq!(c.gaps, vec![(from, t("2026-06-03T12:00:00Z"))]);
        assert!((c.evaluated - c.live).abs() < 1e-12 && c.replayed == 0.0);
        let none = summarise(&[], from, to);
        assert_eq!(none.evaluated, 0.0);
        assert_eq!(none.gaps, vec![(from, to)]);
    }
}
