//! `estatemon report` (the quarterly energy report) and `estatemon savings`
//! (measured savings of a site's retrofits).

use std::path::PathBuf;

use anyhow::Context;
use estatemon_analytics::report::{self, build::Progress, Quarter};
use estatemon_analytics::savings;
use estatemon_domain::config::Config;
use estatemon_domain::schema;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: Option<ReportCommand>,
    /// Site id from the registry (required unless --list).
    #[arg(long, required_unless_present = "list")]
    site: Option<String>,
    /// Calendar quarter in the site's time zone, e.g. 2026Q1 (default: the
    /// last closed quarter).
    #[arg(long, value_parser = parse_quarter)]
    quarter: Option<Quarter>,
    /// Directory for report.html, report.pdf, report.json and the CSV tables
    /// (a subdirectory <site>-<quarter> is created).
    #[arg(long, value_name = "DIR", default_value = "reports")]
    out: PathBuf,
    /// Do not store the report in the database (files only).
    #[arg(long)]
    no_store: bool,
    /// List the stored reports (of --site, or all) instead.
    #[arg(long)]
    list: bool,
}

#[derive(clap::Subcommand)]
enum ReportCommand {
    /// Sign a stored version of a site's quarterly report, as its preparer
    /// or its reviewer. The version's files are re-rendered from its own
    /// data with the signature; the signature, a digest of what was signed
    /// and the audit log are stored. A regenerated report is the next
    /// version and is unsigned until signed again. Exit 2 when refused
    /// (another version is current, the role has signed, a field is empty).
    Sign(SignArgs),
}

#[derive(clap::Args)]
struct SignArgs {
    /// Site id from the registry.
    #[arg(long)]
    site: String,
    /// The report's quarter, e.g. 2026Q3.
    #[arg(long, value_parser = parse_quarter)]
    quarter: Quarter,
    /// The version read and signed (printed on its cover and every page;
    /// `estatemon report --list` shows the current one).
    #[arg(long)]
    version: i32,
    /// In which capacity: preparer or reviewer.
    #[arg(long = "as", value_parser = parse_role, value_name = "ROLE")]
    role: report::model::SignRole,
    /// The signer's name as it should print (Chinese names as themselves).
    #[arg(long)]
    name: String,
    /// The signer's qualification, e.g. "CEng MCIBSE, Registered Energy Assessor".
    #[arg(long)]
    qualification: String,
    /// Also write the signed files to DIR/<site>-<quarter>.
    #[arg(long, value_name = "DIR", default_value = "reports")]
    out: PathBuf,
}

/// Writes a report's files to `out/<site>-<quarter>/`; returns that folder.
fn write_files(
    out: &std::path::Path,
    site: &str,
    quarter: Quarter,
    files: &[report::store::RenderedFile],
) -> anyhow::Result<PathBuf> {
    let dir = out.join(format!("{site}-{quarter}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in files {
        let path = dir.join(&f.name);
        std::fs::write(&path, &f.body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

fn parse_role(s: &str) -> Result<report::model::SignRole, String> {
    s.parse()
}

async fn sign(config: Config, args: SignArgs) -> anyhow::Result<()> {
    let (mut client, _) = schema::prepare(&config.database, &config.storage).await?;
    let user = ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown user".into());
    let req = report::signoff::SignRequest {
        site: args.site.clone(),
        quarter: args.quarter,
        version: args.version,
        role: args.role,
        name: args.name,
        qualification: args.qualification,
        recorded_by: format!("cli:{user}"),
    };
    let (signed, files) =
        report::signoff::sign(&mut client, &req, &config.energy.report.pdf_font).await?;
    let dir = write_files(&args.out, &args.site, args.quarter, &files)?;
    println!(
        "report {} {} version {}: signed as {} by {}; {} files re-rendered, stored and written to {}",
        args.site,
        args.quarter,
        signed.version,
        args.role.as_str(),
        req.name.trim(),
        files.len(),
        dir.display()
    );
    println!("  sign-off: {}", report::signoff::status(&signed));
    Ok(())
}

fn parse_quarter(s: &str) -> Result<Quarter, String> {
    s.parse()
}

/// The progress bar, and how long each step took (printed at the end).
struct Bar {
    bar: indicatif::ProgressBar,
    steps: std::sync::Mutex<Vec<(String, std::time::Instant)>>,
}

impl Progress for Bar {
    fn step(&self, what: &str) {
        self.bar.inc(1);
        self.bar.set_message(what.to_owned());
        self.steps
            .lock()
            .expect("steps lock")
            .push((what.to_owned(), std::time::Instant::now()));
    }
}

impl Bar {
    fn timings(&self) -> String {
        let steps = self.steps.lock().expect("steps lock");
        let now = std::time::Instant::now();
        steps
            .iter()
            .enumerate()
            .map(|(i, (what, at))| {
                let end = steps.get(i + 1).map_or(now, |n| n.1);
                format!("{what} {:.1} s", (end - *at).as_secs_f64())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub async fn run(config: Config, args: ReportArgs) -> anyhow::Result<()> {
    if let Some(ReportCommand::Sign(sign_args)) = args.command {
        return sign(config, sign_args).await;
    }
    let (mut client, _) = schema::prepare(&config.database, &config.storage).await?;
    if args.list {
        let reports = report::store::list(&client, args.site.as_deref()).await?;
        if reports.is_empty() {
            println!("no stored reports");
        }
        for r in reports {
            let files: Vec<String> = r
                .files
                .iter()
                .map(|(n, size)| format!("{n} ({} kB)", (size + 1023) / 1024))
                .collect();
            println!(
                "{}  {}  version {}  generated {} by {}  {}  {}",
                r.site_id,
                r.quarter,
                r.version,
                r.generated_at.format("%Y-%m-%d %H:%M UTC"),
                r.generated_by,
                r.summary
                    .get("signoff")
                    .and_then(|s| s.as_str())
                    .unwrap_or("unsigned"),
                files.join(", ")
            );
        }
        return Ok(());
    }
    let site = args.site.expect("clap requires --site without --list");
    let quarter = match args.quarter {
        Some(q) => q,
        None => {
            let (info, _) = estatemon_analytics::energy::load_site(&client, &site).await?;
            Quarter::containing(info.local_date(chrono::Utc::now())).previous()
        }
    };
    let bar = crate::progress::bar(
        7,
        "{spinner} report [{bar:30}] {pos}/{len} {msg} ({elapsed})",
    );
    let started = std::time::Instant::now();
    let progress = Bar {
        bar: bar.clone(),
        steps: Default::default(),
    };
    let (r, files) = if args.no_store {
        let r = report::build::build(
            &mut client,
            &config.energy,
            &config.lifts,
            &site,
            quarter,
            &progress,
        )
        .await?;
        progress.step("rendering HTML, PDF, CSV and JSON");
        let files = report::store::render_all(&r)?;
        (r, files)
    } else {
        let (r, files, id) = report::store::generate(
            &mut client,
            &config.energy,
            &config.lifts,
            &site,
            quarter,
            "cli",
            &progress,
        )
        .await?;
        tracing::info!(id, site = %site, quarter = %quarter, "report stored");
        (r, files)
    };
    bar.finish_and_clear();
    let dir = write_files(&args.out, &site, quarter, &files)?;
    println!(
        "report {site} {quarter}: {} files in {} ({:.1} s, peak memory {:.0} MB){}",
        files.len(),
        dir.display(),
        started.elapsed().as_secs_f64(),
        crate::bench::self_peak_rss_mb(),
        if args.no_store { "" } else { ", stored" }
    );
    println!("  steps: {}", progress.timings());
    for g in &r.savings_groups {
        println!(
            "  {} savings: {} (target {})",
            g.name,
            g.savings_fraction
                .map(|f| format!(
                    "{:.1} % ± {}",
                    f * 100.0,
                    g.uncertainty
                        .map(|u| format!("{u:.0} {}", g.unit))
                        .unwrap_or_else(|| "?".into())
                ))
                .unwrap_or_else(|| "missing".into()),
            g.target
                .map(|t| format!("{:.0} %", t * 100.0))
                .unwrap_or_else(|| "none".into())
        );
    }
    if !r.data_quality.meters_without_data.is_empty() {
        println!(
            "  {} meter(s) without readings this quarter: shown as missing",
            r.data_quality.meters_without_data.len()
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct SavingsArgs {
    /// Site id from the registry.
    #[arg(long)]
    site: String,
    /// End of the reporting periods (site-local date, exclusive; default today).
    #[arg(long)]
    until: Option<chrono::NaiveDate>,
    #[arg(long, value_enum, default_value = "table")]
    format: SavingsFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SavingsFormat {
    Table,
    Json,
}

pub async fn savings(config: Config, args: SavingsArgs) -> anyhow::Result<()> {
    let (mut client, _) = schema::prepare(&config.database, &config.storage).await?;
    let (info, _) = estatemon_analytics::energy::load_site(&client, &args.site).await?;
    let until = match args.until {
        Some(d) => info.midnight(d),
        None => chrono::Utc::now(),
    };
    let results = savings::measure_site(&mut client, &config.energy, &args.site, until).await?;
    match args.format {
        SavingsFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&results)?);
        }
        SavingsFormat::Table => {
            if results.is_empty() {
                println!(
                    "site {} declares no retrofits ([[retrofit]] in the registry file)",
                    args.site
                );
            }
            for s in &results {
                let pct = |v: Option<f64>| {
                    v.map(|v| format!("{:.1} %", v * 100.0))
                        .unwrap_or_else(|| "missing".into())
                };
                let m = s.daily_model.as_ref();
                println!(
                    "{} ({}, {} meters, {}): savings {} ± {} {} (90 %), target {}{}",
                    s.name,
                    s.date,
                    s.meters.len(),
                    s.drivers
                        .iter()
                        .map(|d| d.as_str())
                        .collect::<Vec<_>>()
                        .join("+"),
                    pct(s.savings_fraction),
                    s.uncertainty
                        .map(|u| format!("{u:.0}"))
                        .unwrap_or_else(|| "?".into()),
                    s.unit,
                    pct(s.target),
                    match s.verdict {
                        Some(estatemon_analytics::savings::Verdict::Met) => " — met",
                        Some(estatemon_analytics::savings::Verdict::NotMet) => " — not met",
                        Some(estatemon_analytics::savings::Verdict::Inconclusive) => {
                            " — inconclusive (the interval straddles the target)"
                        }
                        None => "",
                    }
                );
                println!(
                    "    baseline {}..{} ({} days), reporting {}..{} ({} days); R² {} CV(RMSE) {} NMBE (out of sample) {} — ASHRAE 14 {}",
                    s.baseline.from,
                    s.baseline.to,
                    s.baseline.days_used,
                    s.reporting.from,
                    s.reporting.to,
                    s.reporting.days_used,
                    m.map(|m| format!("{:.3}", m.r2)).unwrap_or_else(|| "-".into()),
                    pct(m.map(|m| m.cv_rmse)),
                    pct(m.map(|m| m.nmbe_out_of_sample.unwrap_or(m.nmbe))),
                    match (s.guideline, s.provisional) {
                        ("pass", false) => "pass",
                        ("pass", true) => "pass, provisional (short baseline)",
                        ("fail", _) => "FAIL",
                        _ => "not assessed",
                    }
                );
                for n in &s.notes {
                    println!("    note: {n}");
                }
            }
        }
    }
    Ok(())
}
