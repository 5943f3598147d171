//! `estatemon consumption`: consumption per interval of one register, as
//! derived by `domain::consumption` (the one place that does it), with the
//! corrections it applied. For checking a meter by hand; the analytics jobs
//! call the same function.

use chrono::{DateTime, Utc};
use clap::Args;
use estatemon_domain::config::Config;
use estatemon_domain::consumption::{derive, Correction, RegisterPolicy, RegisterSample};
use estatemon_domain::metric::MetricKind;
use estatemon_domain::{schema, Metric};

#[derive(Args)]
pub struct ConsumptionArgs {
    /// Device id.
    #[arg(long)]
    device: String,
    /// Cumulative metric (energy_kwh, volume_m3, trips, door_cycles).
    #[arg(long, default_value = "energy_kwh")]
    metric: String,
    /// Start (RFC 3339); default: 24 hours ago.
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// End (RFC 3339); default: now.
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// Register capacity, for rollover detection (e.g. 99999.9).
    #[arg(long)]
    rollover_at: Option<f64>,
    /// Physical maximum consumption per hour; faster rises are implausible.
    #[arg(long)]
    max_rate_per_hour: Option<f64>,
    /// Print each interval as CSV instead of a summary.
    #[arg(long)]
    csv: bool,
}

pub async fn run(config: Config, args: ConsumptionArgs) -> anyhow::Result<()> {
    let metric: Metric = args.metric.parse()?;
    anyhow::ensure!(
        metric.kind() == MetricKind::Cumulative,
        "{metric} is not a cumulative register (try energy_kwh, volume_m3, trips, door_cycles)"
    );
    let to = args.to.unwrap_or_else(Utc::now);
    let from = args.from.unwrap_or(to - chrono::Duration::hours(24));
    anyhow::ensure!(from < to, "--from must be before --to");
    let client = schema::connect(&config.database).await?;
    let samples: Vec<RegisterSample> = client
        .query(
            "SELECT ts, value FROM readings WHERE device_id = $1 AND metric = $2 AND ts >= $3 AND ts <= $4 ORDER BY ts",
            &[&args.device, &metric.as_str(), &from, &to],
        )
        .await?
        .iter()
        .map(|r| RegisterSample {
            ts: r.get(0),
            value: r.get(1),
        })
        .collect();
    let policy = RegisterPolicy {
        rollover_at: args.rollover_at,
        max_rate_per_hour: args.max_rate_per_hour,
        ..Default::default()
    };
    let intervals = derive(&samples, &policy);
    if args.csv {
        println!("start,end,consumption_{},correction", metric.unit());
        for i in &intervals {
            println!(
                "{},{},{},{}",
                i.start.to_rfc3339(),
                i.end.to_rfc3339(),
                i.consumption.map(|c| c.to_string()).unwrap_or_default(),
                i.correction.as_str()
            );
        }
        return Ok(());
    }
    let total: f64 = intervals.iter().filter_map(|i| i.consumption).sum();
    let missing = intervals.iter().filter(|i| i.consumption.is_none()).count();
    println!(
        "{} {}: {} readings, {} intervals from {} to {}",
        args.device,
        metric,
        samples.len(),
        intervals.len(),
        from.to_rfc3339(),
        to.to_rfc3339()
    );
    println!(
        "consumption: {total:.3} {} ({missing} intervals unknown)",
        metric.unit()
    );
    for correction in [
        Correction::Rollover,
        Correction::Replacement,
        Correction::Reset,
        Correction::Gap,
        Correction::Spike,
        Correction::Implausible,
    ] {
        let n = intervals
            .iter()
            .filter(|i| i.correction == correction)
            .count();
        if n > 0 {
            println!("  {}: {n} interval(s)", correction.as_str());
        }
    }
    Ok(())
}
