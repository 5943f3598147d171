//! Hourly and daily rollups of `readings`, and what is derived from the
//! hourly one: each meter's register at local midnights
//! (`registers_daily`) and its consumption per hour (`consumption_hourly`).
//!
//! Writers record the hours they touched in `rollup_dirty`, inside the
//! transaction that stores the readings. This task recomputes exactly those
//! hours (and their days): a backfill of last March refreshes last March,
//! and a crash between commit and refresh loses nothing, because the dirty
//! mark was committed with the data.
//!
//! Plain mode recomputes into tables; TimescaleDB mode asks the continuous
//! aggregates to refresh the same windows (their policies cover recent data
//! anyway; this covers late and backfilled data).
//!
//! Everything downstream of the hourly rollup is reached device first: the
//! (device, metric) pairs the dirty hours hold are collected once, and each
//! later statement reads and writes only their rows through the primary
//! keys `(device_id, metric, time)`. The derived tables have no time index
//! on purpose (panels would prefer it and slow down), so a refresh by time
//! alone would read them whole, a cost that grows with every meter and
//! every hour kept.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, DurationRound, Utc};
use tokio_postgres::Client;

use super::{SchemaError, StorageMode};

/// Contiguous `[start, end)` ranges covering the given hour starts.
pub fn coalesce(hours: &BTreeSet<DateTime<Utc>>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for &h in hours {
        match out.last_mut() {
            Some((_, end)) if *end == h => *end = h + Duration::hours(1),
            _ => out.push((h, h + Duration::hours(1))),
        }
    }
    out
}

fn day_ranges(hours: &[(DateTime<Utc>, DateTime<Utc>)]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let days: BTreeSet<DateTime<Utc>> = hours
        .iter()
        .flat_map(|(s, e)| {
            let first = s.duration_trunc(Duration::days(1)).unwrap();
            let mut d = first;
            let mut v = Vec::new();
            while d < *e {
                v.push(d);
                d += Duration::days(1);
            }
            v
        })
        .collect();
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for d in days {
        match out.last_mut() {
            Some((_, end)) if *end == d => *end = d + Duration::days(1),
            _ => out.push((d, d + Duration::days(1))),
        }
    }
    out
}

/// Plain mode: recomputes `[$1, $2)` of the hourly rollup and returns the
/// (device, metric) pairs it holds.
const REFRESH_HOURLY: &str = "
WITH up AS (
INSERT INTO readings_hourly (device_id, metric, bucket, samples, avg, min, max, first, last)
SELECT device_id, metric, date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       count(*), avg(value), min(value), max(value),
       (array_agg(value ORDER BY ts))[1], (array_agg(value ORDER BY ts DESC))[1]
  FROM readings
 WHERE ts >= $1 AND ts < $2
 GROUP BY 1, 2, 3
ON CONFLICT (device_id, metric, bucket) DO UPDATE
   SET samples = EXCLUDED.samples, avg = EXCLUDED.avg, min = EXCLUDED.min,
       max = EXCLUDED.max, first = EXCLUDED.first, last = EXCLUDED.last
RETURNING device_id, metric)
SELECT DISTINCT device_id, metric FROM up";

/// TimescaleDB mode: the (device, metric) pairs `[$1, $2)` of the hourly
/// aggregate holds, once refreshed.
const HOURLY_PAIRS: &str = "
SELECT DISTINCT device_id, metric FROM readings_hourly WHERE bucket >= $1 AND bucket < $2";

/// Plain mode: the daily rollup of the pairs `($3, $4)` over `[$1, $2)`.
const REFRESH_DAILY: &str = "
INSERT INTO readings_daily (device_id, metric, bucket, samples, avg, min, max, first, last)
SELECT h.device_id, h.metric, date_trunc('day', h.bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       sum(h.samples)::bigint, sum(h.avg * h.samples) / sum(h.samples), min(h.min), max(h.max),
       (array_agg(h.first ORDER BY h.bucket))[1], (array_agg(h.last ORDER BY h.bucket DESC))[1]
  FROM unnest($3::text[], $4::text[]) AS p(device_id, metric)
  JOIN readings_hourly h ON h.device_id = p.device_id AND h.metric = p.metric
 WHERE h.bucket >= $1 AND h.bucket < $2
 GROUP BY 1, 2, 3
ON CONFLICT (device_id, metric, bucket) DO UPDATE
   SET samples = EXCLUDED.samples, avg = EXCLUDED.avg, min = EXCLUDED.min,
       max = EXCLUDED.max, first = EXCLUDED.first, last = EXCLUDED.last";

/// The register at the start of each local day (registers_daily) of the
/// meters `$3` for the days, in each site's time zone, that overlap
/// `[$1, $2)`; the scan reaches two days further each way so every such day
/// is seen whole.
const REFRESH_REGISTERS_DAILY: &str = "
INSERT INTO registers_daily (device_id, metric, day, first_at, first)
SELECT h.device_id, h.metric, (h.bucket AT TIME ZONE s.time_zone)::date,
       min(h.bucket), (array_agg(h.first ORDER BY h.bucket))[1]
  FROM readings_hourly h
  JOIN devices d ON d.device_id = h.device_id
  JOIN sites s ON s.site_id = d.site_id
 WHERE h.device_id = ANY($3) AND h.metric IN ('energy_kwh', 'volume_m3') AND h.first IS NOT NULL
   AND h.bucket >= $1::timestamptz - interval '2 days' AND h.bucket < $2::timestamptz + interval '2 days'
   AND (h.bucket AT TIME ZONE s.time_zone)::date
       BETWEEN ($1::timestamptz AT TIME ZONE s.time_zone)::date
           AND ($2::timestamptz AT TIME ZONE s.time_zone)::date
 GROUP BY 1, 2, 3
ON CONFLICT (device_id, metric, day) DO UPDATE
   SET first_at = EXCLUDED.first_at, first = EXCLUDED.first";

/// Each meter's use over each local day (`registers_daily.used`) for the
/// days of `$1` (device ids, or NULL for all) from `$2` to `$3` (or all
/// days): the sum of the day's hours in `consumption_hourly` when every
/// hour of the local day (23, 24 or 25) is known, else unknown. So a day
/// across a rollover, a reset or a replaced meter is the use before plus
/// the use after, a day with an outage counts the use spread over the gap,
/// and the day always equals its hours. Rows whose value stays are left
/// alone.
const REFRESH_DAILY_USE: &str = "
UPDATE registers_daily r SET used = x.used
  FROM (SELECT c.device_id, c.metric, c.day,
               (SELECT CASE WHEN count(*) = round(extract(epoch FROM (t.d1 - t.d0)) / 3600)
                            THEN sum(h.used) END
                  FROM consumption_hourly h
                 WHERE h.device_id = c.device_id AND h.metric = c.metric
                   AND h.bucket >= t.d0 AND h.bucket < t.d1) AS used
          FROM registers_daily c
          JOIN devices d ON d.device_id = c.device_id
          JOIN sites s ON s.site_id = d.site_id
          CROSS JOIN LATERAL (SELECT c.day::timestamp AT TIME ZONE s.time_zone AS d0,
                                     (c.day + 1)::timestamp AT TIME ZONE s.time_zone AS d1) t
         WHERE ($1::text[] IS NULL OR c.device_id = ANY($1))
           AND c.metric IN ('energy_kwh', 'volume_m3')
           AND ($2::date IS NULL OR c.day >= $2) AND ($3::date IS NULL OR c.day <= $3)) x
 WHERE r.device_id = x.device_id AND r.metric = x.metric AND r.day = x.day
   AND r.used IS DISTINCT FROM x.used";

/// The metrics whose hourly `first` is a meter register.
const REGISTERS: [&str; 2] = ["energy_kwh", "volume_m3"];

/// (device, metric) pairs with rows in the refreshed hours.
type Pairs = BTreeSet<(String, String)>;

fn collect_pairs(pairs: &mut Pairs, rows: &[tokio_postgres::Row]) {
    pairs.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
}

/// The tables derived from `readings_hourly` for the dirty `ranges`, for
/// the meters among `pairs` (no other row can have changed).
async fn refresh_derived(
    tx: &tokio_postgres::Transaction<'_>,
    ranges: &[(DateTime<Utc>, DateTime<Utc>)],
    pairs: &Pairs,
) -> Result<(), tokio_postgres::Error> {
    // Pairs are ordered by device: its metrics sit side by side.
    let mut meters: Vec<&str> = pairs
        .iter()
        .filter(|(_, m)| REGISTERS.contains(&m.as_str()))
        .map(|(d, _)| d.as_str())
        .collect();
    meters.dedup();
    if meters.is_empty() {
        return Ok(());
    }
    let registers: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(_, m)| REGISTERS.contains(&m.as_str()))
        .map(|(d, m)| (d.as_str(), m.as_str()))
        .collect();
    // The hours rewritten can reach past the dirty ranges (an interval
    // across an outage): the days whose use changes span all of them.
    let (mut earliest, mut latest) = match (ranges.first(), ranges.last()) {
        (Some(f), Some(l)) => (f.0, l.1),
        _ => return Ok(()),
    };
    for (s, e) in ranges {
        tx.execute(REFRESH_REGISTERS_DAILY, &[s, e, &meters])
            .await?;
        if let Some((lo, hi)) = refresh_consumption_hourly(tx, *s, *e, &registers).await? {
            earliest = earliest.min(lo);
            latest = latest.max(hi);
        }
    }
    // The registers refreshed are those of local days overlapping a range
    // (a UTC day either way at most), and the day before each changes its
    // use too: one pass over the whole span, not one per range (rows whose
    // use stays are not written).
    {
        let (s, e) = (earliest, latest);
        let first = s.date_naive() - Duration::days(2);
        let last = e.date_naive() + Duration::days(1);
        tx.execute(REFRESH_DAILY_USE, &[&meters, &Some(first), &Some(last)])
            .await?;
    }
    Ok(())
}

/// The register metrics' hourly use (`consumption_hourly`) around the
/// dirty range `[s, e)`, from the raw readings, derived exactly as reports
/// derive them ([`crate::consumption::derive`]) and shared among the hours
/// ([`crate::consumption::hourly`]). Each meter's rewritten hours run from
/// the hour of its second-to-last reading before `s` (an interval that
/// reaches into the range may have started at the last one, and whether
/// that one is a spike depends on the readings after it, so the interval
/// before it can change too) through the hour of its first reading
/// at or after `e` (an interval from the range may end there); the reading
/// before the first of those hours and the one after the last are read
/// too, so every interval overlapping a rewritten hour is known. Readings
/// are looked for at most 7 days either side (every lookup prunes to a
/// partition or two): an outage longer than that is left unspread, its
/// hours and days unknown. Returns the span of hours rewritten (whose days'
/// use changes too).
async fn refresh_consumption_hourly(
    tx: &tokio_postgres::Transaction<'_>,
    s: DateTime<Utc>,
    e: DateTime<Utc>,
    registers: &[(&str, &str)],
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, tokio_postgres::Error> {
    use crate::consumption::{derive, hour_floor, hourly, RegisterPolicy, RegisterSample};
    if registers.is_empty() {
        return Ok(None);
    }
    let (devices, metrics): (Vec<&str>, Vec<&str>) = registers.iter().copied().unzip();
    let bounds = tx
        .query(
            "SELECT p.device_id, p.metric,
                    (SELECT ts FROM readings r WHERE r.device_id = p.device_id AND r.metric = p.metric
                        AND r.ts < $1 AND r.ts >= $1 - interval '7 days'
                      ORDER BY ts DESC OFFSET 1 LIMIT 1),
                    (SELECT ts FROM readings r WHERE r.device_id = p.device_id AND r.metric = p.metric
                        AND r.ts >= $2 AND r.ts < $2 + interval '7 days' ORDER BY ts LIMIT 1)
               FROM unnest($3::text[], $4::text[]) AS p(device_id, metric)",
            &[&s, &e, &devices, &metrics],
        )
        .await?;
    // Per pair: the first hour rewritten and the end of the rewrite.
    let mut first_hours = Vec::with_capacity(bounds.len());
    let mut ends = Vec::with_capacity(bounds.len());
    for row in &bounds {
        let prev: Option<DateTime<Utc>> = row.get(2);
        let next: Option<DateTime<Utc>> = row.get(3);
        first_hours.push(hour_floor(prev.unwrap_or(s)));
        ends.push(
            next.map_or(e, |n| hour_floor(n) + Duration::hours(1))
                .max(e),
        );
    }
    let (pair_devices, pair_metrics): (Vec<String>, Vec<String>) = bounds
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .unzip();
    // From the reading before each first hour to the first reading at or
    // after the end of the last (inclusive): those two looked up first, so
    // that the load below is a key range per pair (with the bounds as
    // expressions the planner read every reading of the meter).
    let edges = tx
        .query(
            "SELECT (SELECT ts FROM readings b WHERE b.device_id = p.device_id AND b.metric = p.metric
                        AND b.ts < p.lo AND b.ts >= p.lo - interval '7 days' ORDER BY ts DESC LIMIT 1),
                    (SELECT ts FROM readings a WHERE a.device_id = p.device_id AND a.metric = p.metric
                        AND a.ts >= p.hi AND a.ts < p.hi + interval '7 days' ORDER BY ts LIMIT 1)
               FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
                    WITH ORDINALITY AS p(device_id, metric, lo, hi, i)
              ORDER BY p.i",
            &[&pair_devices, &pair_metrics, &first_hours, &ends],
        )
        .await?;
    let load_from: Vec<DateTime<Utc>> = edges
        .iter()
        .zip(&first_hours)
        .map(|(r, lo)| r.get::<_, Option<DateTime<Utc>>>(0).unwrap_or(*lo))
        .collect();
    let load_to: Vec<DateTime<Utc>> = edges
        .iter()
        .zip(&ends)
        .map(|(r, hi)| r.get::<_, Option<DateTime<Utc>>>(1).unwrap_or(*hi))
        .collect();
    let rows = tx
        .query(
            "SELECT p.i, r.ts, r.value
               FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
                    WITH ORDINALITY AS p(device_id, metric, f, t, i)
               CROSS JOIN LATERAL (SELECT ts, value FROM readings r
                                    WHERE r.device_id = p.device_id AND r.metric = p.metric
                                      AND r.ts >= p.f AND r.ts <= p.t) r
              ORDER BY p.i, r.ts",
            &[&pair_devices, &pair_metrics, &load_from, &load_to],
        )
        .await?;
    let mut samples: Vec<Vec<RegisterSample>> = vec![Vec::new(); bounds.len()];
    for r in &rows {
        let i = r.get::<_, i64>(0) as usize - 1;
        samples[i].push(RegisterSample {
            ts: r.get(1),
            value: r.get(2),
        });
    }
    let policy = RegisterPolicy::default();
    let mut span: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    // Every pair's hours, written in one statement each way.
    let (mut devices, mut metrics, mut buckets, mut used, mut estimated) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, series) in samples.iter().enumerate() {
        let (lo, hi) = (first_hours[i], ends[i]);
        let intervals = derive(series, &policy);
        // An hour after the last reading is not covered whole: `hourly`
        // leaves it out, and it is cleared (never drawn as complete).
        for h in hourly(&intervals, lo, hi) {
            devices.push(pair_devices[i].as_str());
            metrics.push(pair_metrics[i].as_str());
            buckets.push(h.hour);
            used.push(h.used);
            estimated.push(h.estimated);
        }
        span = Some(span.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    }
    tx.execute(
        "DELETE FROM consumption_hourly c
          USING unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS p(device_id, metric, lo, hi)
          WHERE c.device_id = p.device_id AND c.metric = p.metric AND c.bucket >= p.lo AND c.bucket < p.hi",
        &[&pair_devices, &pair_metrics, &first_hours, &ends],
    )
    .await?;
    if !buckets.is_empty() {
        tx.execute(
            "INSERT INTO consumption_hourly (device_id, metric, bucket, used, estimated)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::bool[])",
            &[&devices, &metrics, &buckets, &used, &estimated],
        )
        .await?;
    }
    Ok(span)
}

/// Recomputes every daily register of `devices` from the hourly rollups
/// (after a device joined a site or its site changed time zone); returns
/// the number of rows written.
pub async fn rebuild_registers_daily(
    tx: &tokio_postgres::Transaction<'_>,
    devices: &[String],
) -> Result<u64, SchemaError> {
    tx.execute(
        "DELETE FROM registers_daily WHERE device_id = ANY($1)",
        &[&devices],
    )
    .await?;
    let n = tx
        .execute(
            "INSERT INTO registers_daily (device_id, metric, day, first_at, first)
             SELECT h.device_id, h.metric, (h.bucket AT TIME ZONE s.time_zone)::date,
                    min(h.bucket), (array_agg(h.first ORDER BY h.bucket))[1]
               FROM readings_hourly h
               JOIN devices d ON d.device_id = h.device_id
               JOIN sites s ON s.site_id = d.site_id
              WHERE h.device_id = ANY($1)
                AND h.metric IN ('energy_kwh', 'volume_m3') AND h.first IS NOT NULL
              GROUP BY 1, 2, 3",
            &[&devices],
        )
        .await?;
    tx.execute(
        REFRESH_DAILY_USE,
        &[
            &Some(devices),
            &None::<chrono::NaiveDate>,
            &None::<chrono::NaiveDate>,
        ],
    )
    .await?;
    Ok(n)
}

/// Refreshes up to `limit` dirty hours; returns how many were refreshed.
pub async fn refresh_dirty(
    client: &mut Client,
    mode: StorageMode,
    limit: i64,
) -> Result<usize, SchemaError> {
    let tx = client.transaction().await?;
    // One refresher at a time across ingest processes: two recomputing the
    // same day from different snapshots could leave the older result.
    tx.execute("SELECT pg_advisory_xact_lock(7365628)", &[])
        .await?;
    let hours: BTreeSet<DateTime<Utc>> = tx
        .query(
            "DELETE FROM rollup_dirty WHERE bucket IN (
                 SELECT bucket FROM rollup_dirty ORDER BY bucket LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING bucket",
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if hours.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let ranges = coalesce(&hours);
    let days = day_ranges(&ranges);
    match mode {
        StorageMode::Plain => {
            let mut pairs = Pairs::new();
            for (s, e) in &ranges {
                collect_pairs(&mut pairs, &tx.query(REFRESH_HOURLY, &[s, e]).await?);
            }
            if !pairs.is_empty() {
                let (devices, metrics): (Vec<&str>, Vec<&str>) =
                    pairs.iter().map(|(d, m)| (d.as_str(), m.as_str())).unzip();
                for (s, e) in &days {
                    tx.execute(REFRESH_DAILY, &[s, e, &devices, &metrics])
                        .await?;
                }
            }
            refresh_derived(&tx, &ranges, &pairs).await?;
            tx.commit().await?;
        }
        StorageMode::Timescaledb => {
            // refresh_continuous_aggregate cannot run inside a transaction:
            // commit the claim, refresh, and put the marks back on failure.
            tx.commit().await?;
            let result = async {
                for (s, e) in &ranges {
                    client
                        .execute(
                            "CALL refresh_continuous_aggregate('readings_hourly', $1::timestamptz, $2::timestamptz)",
                            &[s, e],
                        )
                        .await?;
                }
                for (s, e) in &days {
                    client
                        .execute(
                            "CALL refresh_continuous_aggregate('readings_daily', $1::timestamptz, $2::timestamptz)",
                            &[s, e],
                        )
                        .await?;
                }
                // Readers never see an hour cleared and not yet recomputed.
                let tx = client.transaction().await?;
                let mut pairs = Pairs::new();
                for (s, e) in &ranges {
                    collect_pairs(&mut pairs, &tx.query(HOURLY_PAIRS, &[s, e]).await?);
                }
                refresh_derived(&tx, &ranges, &pairs).await?;
                tx.commit().await
            }
            .await;
            if let Err(e) = result {
                let back: Vec<DateTime<Utc>> = hours.iter().copied().collect();
                let _ = client
                    .execute(
                        "INSERT INTO rollup_dirty (bucket) SELECT unnest($1::timestamptz[]) ON CONFLICT DO NOTHING",
                        &[&back],
                    )
                    .await;
                return Err(e.into());
            }
        }
    }
    Ok(hours.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn hours_coalesce_into_ranges_and_days() {
        let h = |d, hh| Utc.with_ymd_and_hms(2026, 3, d, hh, 0, 0).unwrap();
        let hours: BTreeSet<_> = [h(1, 22), h(1, 23), h(2, 0), h(2, 5)].into_iter().collect();
        let ranges = coalesce(&hours);
        assert_eq!(ranges, vec![(h(1, 22), h(2, 1)), (h(2, 5), h(2, 6))]);
        assert_eq!(day_ranges(&ranges), vec![(h(1, 0), h(3, 0))]);
    }
}
