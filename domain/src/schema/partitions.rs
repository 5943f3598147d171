//! Plain-PostgreSQL partitions for `readings` and `events`.
//!
//! Partitions are fixed-width ranges of `chunk_days`, aligned to a Monday so
//! that weekly partitions are calendar weeks. They are created on demand
//! before a batch lands in them (a backfill of last year creates last year's
//! partitions) and ahead of time by the maintenance task; retention drops
//! whole partitions, which is instant and leaves no bloat.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use tokio_postgres::Client;

use super::SchemaError;

/// Tables partitioned by `ts`.
pub const PARTITIONED: &[&str] = &["readings", "events"];

fn origin() -> DateTime<Utc> {
    // 2000-01-03 was a Monday.
    Utc.with_ymd_and_hms(2000, 1, 3, 0, 0, 0).unwrap()
}

/// Index of the partition holding `ts`.
pub fn chunk_index(ts: DateTime<Utc>, chunk_days: u32) -> i64 {
    let width = Duration::days(chunk_days as i64).num_seconds();
    (ts - origin()).num_seconds().div_euclid(width)
}

/// `[start, end)` of partition `index`.
pub fn chunk_range(index: i64, chunk_days: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = origin() + Duration::days(index * chunk_days as i64);
    (start, start + Duration::days(chunk_days as i64))
}

pub fn partition_name(table: &str, index: i64, chunk_days: u32) -> String {
    let (start, _) = chunk_range(index, chunk_days);
    format!("{table}_p{}", start.format("%Y%m%d"))
}

/// Creates the partitions of every partitioned table for chunk `index`.
pub async fn ensure_chunk(client: &Client, index: i64, chunk_days: u32) -> Result<(), SchemaError> {
    let (start, end) = chunk_range(index, chunk_days);
    let mut sql = String::from("BEGIN; SELECT pg_advisory_xact_lock(7365627, 0);\n");
    for table in PARTITIONED {
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ('{start}') TO ('{end}');\n",
            name = partition_name(table, index, chunk_days),
            start = start.format("%Y-%m-%d %H:%M:%S+00"),
            end = end.format("%Y-%m-%d %H:%M:%S+00"),
        ));
    }
    sql.push_str("COMMIT;");
    if let Err(e) = client.batch_execute(&sql).await {
        // Leave the session usable for the caller's retry.
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e.into());
    }
    Ok(())
}

/// Partition start dates currently attached to `table`.
pub async fn list(client: &Client, table: &str) -> Result<Vec<(String, NaiveDate)>, SchemaError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
              WHERE p.relname = $1",
            &[&table],
        )
        .await?;
    let prefix = format!("{table}_p");
    let mut out: Vec<(String, NaiveDate)> = rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let date = NaiveDate::parse_from_str(name.strip_prefix(&prefix)?, "%Y%m%d").ok()?;
            Some((name, date))
        })
        .collect();
    out.sort_by_key(|(_, d)| *d);
    Ok(out)
}

/// Drops partitions whose whole range is older than `retention_days`.
pub async fn drop_expired(
    client: &Client,
    now: DateTime<Utc>,
    retention_days: u32,
    chunk_days: u32,
) -> Result<Vec<String>, SchemaError> {
    if retention_days == 0 {
        return Ok(Vec::new());
    }
    let cutoff = now - Duration::days(retention_days as i64);
    let mut dropped = Vec::new();
    for table in PARTITIONED {
        for (name, start) in list(client, table).await? {
            let end =
                start.and_hms_opt(0, 0, 0).unwrap().and_utc() + Duration::days(chunk_days as i64);
            if end <= cutoff {
                client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                    .await?;
                tracing::info!(partition = %name, "dropped partition past retention");
                dropped.push(name);
            }
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_weeks() {
        let ts = Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 0).unwrap(); // a Sunday
        let i = chunk_index(ts, 7);
        let (start, end) = chunk_range(i, 7);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 11, 16, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap());
        assert_eq!(partition_name("readings", i, 7), "readings_p20261116");
        // Before the origin too.
        let old = Utc.with_ymd_and_hms(1999, 12, 31, 0, 0, 0).unwrap();
        let (s, e) = chunk_range(chunk_index(old, 7), 7);
        assert!(s <= old && old < e);
    }
}
