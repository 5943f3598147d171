//! `estatemon bench oncall`: one escalation pass (planning) over N open
//! alerts with active escalations across S schedules, in-process against
//! a fresh database: the first pass (every alert's first step written),
//! steady passes (nothing new due: what every analytics process does every
//! 5 s), and a pass in which every alert's second step comes due; with the
//! delivery of pages to a local receiver (one SMS gateway) timed apart.
//! The publish → first page latency is part of `estatemon bench alerts`.

use std::time::Instant;

use chrono::{Duration, Utc};
use clap::Args;
use estatemon_analytics::oncall::{deliver, plan, roster::Roster};
use estatemon_domain::config::Config;

use super::{bench_config, drop_database, self_peak_rss_mb};

#[derive(Args, Clone)]
pub struct OncallBenchArgs {
    /// Open alerts with active escalations.
    #[arg(long, default_value_t = 10_000)]
    alerts: usize,
    /// Schedules (teams, each with a weekly rotation of three people and
    /// a daytime override layer), over sites of five teams each.
    #[arg(long, default_value_t = 50)]
    schedules: usize,
    /// Steady passes to time.
    #[arg(long, default_value_t = 10)]
    passes: usize,
    /// Pages to deliver to a local SMS receiver (0: skip).
    #[arg(long, default_value_t = 2000)]
    deliver: usize,
    /// Keep the bench database afterwards.
    #[arg(long)]
    keep: bool,
}

/// A roster of `schedules` teams, five a site, each site with a policy
/// for every severity: the team's on-call, then the site's duty manager
/// after 5 minutes.
fn roster(schedules: usize) -> String {
    let mut t = String::new();
    let sites = schedules.div_ceil(5);
    for s in 0..sites {
        t.push_str(&format!(
            "[[person]]\nid = \"mgr-{s}\"\nname = \"Duty manager {s}\"\ncontacts = {{ phone = \"+8525000{s:04}\" }}\n"
        ));
    }
    for k in 0..schedules {
        for p in 0..3 {
            t.push_str(&format!(
                "[[person]]\nid = \"p-{k}-{p}\"\nname = \"Engineer {k}-{p}\"\nworking_hours = \"09:00-18:00\"\n\
                 contacts = {{ phone = \"+8526{k:03}{p:04}\" }}\n"
            ));
        }
    }
    let trades = [
        "lifts",
        "electrical",
        "plumbing",
        "security",
        "lift_contractor",
    ];
    for k in 0..schedules {
        let site = k / 5;
        t.push_str(&format!(
            "[[team]]\nid = \"t-{k}\"\nsite = \"site-{site}\"\ntrade = \"{}\"\ntime_zone = \"Asia/Hong_Kong\"\n\
             [[team.layer]]\nname = \"weekly\"\nmembers = [\"p-{k}-0\", \"p-{k}-1\", \"p-{k}-2\"]\n\
             start = 2026-01-05T08:00:00\nevery = \"1w\"\n\
             [[team.layer]]\nname = \"days\"\nmembers = [\"p-{k}-1\"]\nstart = 2026-01-05T08:00:00\n\
             every = \"1d\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\n",
            trades[k % 5]
        ));
    }
    for s in 0..sites {
        for (i, trade) in trades.iter().enumerate() {
            let k = s * 5 + i;
            if k >= schedules {
                break;
            }
            t.push_str(&format!(
                "[[policy]]\nid = \"pol-{k}\"\nseverities = [\"emergency\", \"ordinary\", \"routine\"]\n\
                 site = \"site-{s}\"\nbuilding = \"b-{i}\"\nfallback = \"mgr-{s}\"\n\
                 [[policy.step]]\nafter = \"0m\"\nnotify = \"team:t-{k}\"\n\
                 [[policy.step]]\nafter = \"5m\"\nnotify = \"person:mgr-{s}\"\n\
                 # {trade}\n"
            ));
        }
    }
    t
}

pub async fn run(config: Config, args: OncallBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.schedules >= 5, "--schedules must be at least 5");
    let c = bench_config(&config, &format!("oncall_{}", args.alerts));
    let mut client = super::fresh_run(&config, &c, "oncall").await?;
    let text = roster(args.schedules);
    let roster = Roster::parse(&text, std::path::Path::new("bench-roster.toml"))?;
    let sites = args.schedules.div_ceil(5);
    // Alerts fired 1 to 4 minutes ago, across sites and buildings (one
    // policy each) and severities: each has its first step due.
    let now = Utc::now();
    client
        .execute(
            "INSERT INTO alerts (rule, subject, fingerprint, severity, summary, labels, site_id,
                                 source, started_at, last_seen_at, fired_at, response_deadline)
             SELECT 'bench', 'd-' || g, 'bench|d-' || g,
                    (ARRAY['emergency','ordinary','routine'])[1 + g % 3], 'Bench alert',
                    jsonb_build_object('site', 'site-' || (g % $2), 'building', 'b-' || (g / $2) % 5,
                                       'device', 'd-' || g),
                    'site-' || (g % $2), 'analytics', $3::timestamptz, $3::timestamptz,
                    $3::timestamptz - make_interval(secs => 60 + g % 180),
                    $3::timestamptz + interval '15 minutes'
               FROM generate_series(1, $1::int) g",
            &[&(args.alerts as i32), &(sites as i32), &now],
        )
        .await?;
    println!(
        "{} open alerts over {} schedules ({} sites, {} people, {} policies)",
        args.alerts,
        args.schedules,
        sites,
        roster.people.len(),
        roster.policies.len()
    );
    let time = |label: &str, secs: f64, planned: plan::Planned| {
        println!(
            "{label}: {:.0} ms ({} alerts, {} pages written, {} flagged, {} hand-overs)",
            secs * 1e3,
            planned.alerts,
            planned.paged,
            planned.flagged,
            planned.handovers
        );
    };
    let t = Instant::now();
    let first = plan::plan(&client, &roster, now).await?;
    time(
        "first pass (every first step due)",
        t.elapsed().as_secs_f64(),
        first,
    );
    let mut steady = Vec::new();
    for _ in 0..args.passes {
        let t = Instant::now();
        let p = plan::plan(&client, &roster, now + Duration::seconds(5)).await?;
        anyhow::ensure!(p.paged == 0, "a steady pass paged again");
        steady.push(t.elapsed().as_secs_f64());
    }
    steady.sort_by(f64::total_cmp);
    let pct =
        |v: &[f64], p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] * 1e3;
    println!(
        "steady passes (nothing new due), {}: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        steady.len(),
        pct(&steady, 0.5),
        pct(&steady, 0.95),
        pct(&steady, 1.0)
    );
    let t = Instant::now();
    let second = plan::plan(&client, &roster, now + Duration::minutes(6)).await?;
    time("second steps due", t.elapsed().as_secs_f64(), second);
    println!("bench process peak RSS {:.0} MB", self_peak_rss_mb());

    if args.deliver > 0 {
        // Delivery: the pages of the first `deliver` alerts to a local
        // Twilio-shaped receiver; the rest cancelled first.
        let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let app = axum::Router::new().fallback({
            let got = got.clone();
            move || {
                let got = got.clone();
                async move {
                    got.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    r#"{"sid":"SM1"}"#
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/sms", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        client
            .execute(
                "UPDATE oncall_pages SET cancelled_at = now()
                  WHERE id NOT IN (SELECT id FROM oncall_pages ORDER BY id LIMIT $1)",
                &[&(args.deliver as i64)],
            )
            .await?;
        let mut dc = c.clone();
        dc.oncall.channels = vec![toml::from_str(&format!(
            "name = \"sms\"\nformat = \"sms\"\nurl = \"{url}\"\naccount = \"AC1\"\nsecret = \"t\"\n\
             from = \"+85230000000\"\nrate_per_minute = 1000000\n"
        ))?];
        let pager = deliver::Pager::new(&dc, std::sync::Arc::new(roster));
        let t = Instant::now();
        let mut sent = 0;
        loop {
            let pass = deliver::deliver_due(&mut client, &pager).await?;
            sent += pass.sent;
            if pass.sent + pass.failed + pass.cancelled + pass.held == 0 {
                break;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "delivery: {sent} pages in {:.2} s ({:.0} pages/s, one transaction and one HTTP request each; receiver got {})",
            secs,
            sent as f64 / secs,
            got.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    if !args.keep {
        drop(client);
        drop_database(&config, &c.database.url).await;
    }
    Ok(())
}
