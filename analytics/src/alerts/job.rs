//! The analytics process: an evaluation loop that holds a lease, a notifier
//! that drains the outbox, and `/metrics` + `/health`.
//!
//! Several processes may run for availability. Evaluation is led by the one
//! holding a PostgreSQL session advisory lock (released by the server if
//! that process or its connection dies, so another takes over within a
//! cycle). Even two evaluators at once could not page twice: opening an
//! alert is an upsert on the one-open-alert-per-fault index, and only the
//! insert writes notifications. Every process runs a notifier; they share
//! the outbox through `SKIP LOCKED`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use estatemon_domain::config::Config;
use estatemon_domain::rules::RuleSet;
use estatemon_domain::schema::alerts::{self, Opened};
use estatemon_domain::schema::{self, rule_sets, MigrationReport};
use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, Client};

use crate::evaluate::{self, State};
use crate::lifecycle::{self, Action};
use crate::metrics::{Metrics, ModeLabel, RuleLabel};
use crate::notify::{self, Sender};
use crate::window;

/// Arbitrary constant: the evaluation lease.
const LEADER_LOCK: i64 = 0x6573_7461_7465_6c64;

/// What one evaluation cycle did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct CycleReport {
    /// Seconds spent reading the window, evaluating (polars) and applying
    /// the transitions.
    pub load_s: f64,
    pub evaluate_s: f64,
    pub apply_s: f64,
    pub findings: usize,
    pub firing: usize,
    pub opened: usize,
    pub silenced: usize,
    pub refreshed: usize,
    pub resolved: usize,
    pub escalated: usize,
    pub unsilenced: usize,
    pub open_after: usize,
    /// Lifts in inspection or maintenance (their ordinary alerts held).
    pub lifts_in_service_mode: usize,
}

/// Loads the window at `now` (through `cache` when given: only what is new
/// since the last cycle is read), evaluates every rule and applies the
/// transitions in one transaction, then escalates overdue alerts.
pub async fn cycle(
    client: &mut Client,
    rules: &RuleSet,
    receivers: &[String],
    now: DateTime<Utc>,
    metrics: Option<&Metrics>,
    cache: Option<&mut window::WindowCache>,
) -> anyhow::Result<CycleReport> {
    let started = Instant::now();
    // Lifts a technician is working on: their ordinary alerts are
    // recorded, not paged (a silence kept in step with the lift's mode).
    let modes = crate::lifts::service::sync(client, now).await?;
    let mut loaded = None;
    let window = match cache {
        Some(cache) => cache.load(client, rules, now).await?,
        None => &*loaded.insert(window::load(client, rules, now).await?),
    };
    let open = alerts::open_alerts(&*client).await?;
    let mut report = CycleReport {
        lifts_in_service_mode: modes.in_service_mode,
        load_s: started.elapsed().as_secs_f64(),
        ..CycleReport::default()
    };
    let started = Instant::now();
    let mut planned = Vec::new();
    for rule in &rules.rules {
        let findings = evaluate::evaluate(rule, window)?;
        report.findings += findings.len();
        report.firing += findings
            .iter()
            .filter(|f| matches!(f.state, State::Firing { .. }))
            .count();
        let mine: Vec<&alerts::OpenAlert> = open.iter().filter(|a| a.rule == rule.name).collect();
        for action in lifecycle::reconcile(rule, findings, &mine, now) {
            planned.push((rule, action));
        }
    }
    report.evaluate_s = started.elapsed().as_secs_f64();
    // Alerts of rules an admin removed (or renamed) have no one left to
    // resolve them: they end now, and say so.
    let names: std::collections::HashSet<&str> =
        rules.rules.iter().map(|r| r.name.as_str()).collect();
    let orphans: Vec<&alerts::OpenAlert> = open
        .iter()
        .filter(|a| !names.contains(a.rule.as_str()))
        .collect();
    let started = Instant::now();
    let tx = client.transaction().await?;
    for a in orphans {
        if alerts::resolve(&tx, a.id, now.max(a.started_at), receivers).await? {
            report.resolved += 1;
            tracing::info!(alert = a.id, rule = %a.rule, subject = %a.subject,
                "alert resolved: its rule is no longer in the rule set");
        }
    }
    for (rule, action) in planned {
        match action {
            Action::Open(f) => {
                let Some(alert) = f.alert(rule, now, "analytics") else {
                    continue;
                };
                let since = alert.started_at;
                match alerts::open(&tx, &alert, &rules.deadlines, receivers).await? {
                    Opened::New { id, silenced } => {
                        report.opened += 1;
                        if silenced {
                            report.silenced += 1;
                        }
                        tracing::info!(alert = id, rule = %rule.name, subject = %alert.subject,
                            severity = rule.severity.as_str(), silenced, started_at = %since, "alert opened");
                        if let Some(m) = metrics {
                            m.alerts_opened
                                .get_or_create(&RuleLabel {
                                    rule: rule.name.clone(),
                                })
                                .inc();
                        }
                    }
                    Opened::Existing { .. } => report.refreshed += 1,
                }
            }
            Action::Resolve { id, at } => {
                if alerts::resolve(&tx, id, at, receivers).await? {
                    report.resolved += 1;
                    tracing::info!(alert = id, rule = %rule.name, cleared_at = %at, "alert resolved");
                    if let Some(m) = metrics {
                        m.alerts_resolved
                            .get_or_create(&RuleLabel {
                                rule: rule.name.clone(),
                            })
                            .inc();
                    }
                }
            }
        }
    }
    let escalated = alerts::escalate_overdue(&tx, receivers).await?;
    for id in &escalated {
        tracing::warn!(
            alert = id,
            "alert not acknowledged before its deadline: escalated"
        );
    }
    report.escalated = escalated.len();
    let released = alerts::release_ended_silences(&tx, receivers).await?;
    for id in &released {
        tracing::info!(alert = id, "silence over, alert still open: paging");
    }
    report.unsilenced = released.len();
    // The rules were evaluated at `now`: the span a report's alerts cover.
    estatemon_domain::schema::coverage::live(&tx, now).await?;
    tx.commit().await?;
    report.open_after = alerts::open_alerts(&*client).await?.len();
    report.apply_s = started.elapsed().as_secs_f64();
    if let Some(m) = metrics {
        m.alerts_escalated.inc_by(escalated.len() as u64);
        m.alerts_open.set(report.open_after as i64);
    }
    Ok(report)
}

/// Runs until SIGINT/SIGTERM; SIGHUP reloads the rules file.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (mut client, migration) = schema::prepare(&config.database, &config.storage).await?;
    let rules_file = config.alerts.rules_file.as_deref();
    let (loaded, mut rules_origin) = rule_sets::active(&client, rules_file).await?;
    let mut rules = Arc::new(loaded);
    tracing::info!(
        mode = migration.mode.as_str(),
        detail = %migration.reason,
        rules = rules.rules.len(),
        rules_from = %rules_origin,
        receivers = ?config.alerts.receivers(),
        "analytics starting"
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry);
    metrics
        .storage_mode
        .get_or_create(&ModeLabel {
            mode: migration.mode.as_str(),
        })
        .set(1);
    metrics.db_connected.set(1);
    let state = Arc::new(crate::http::HealthState {
        registry,
        metrics: metrics.clone(),
        migration: migration.clone(),
        rules: std::sync::Mutex::new((rules.rules.len(), rules_origin.to_string())),
        stopping: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind(&config.alerts.listen)
        .await
        .map_err(|e| anyhow::anyhow!("alerts.listen {}: {e}", config.alerts.listen))?;
    tracing::info!(listen = %config.alerts.listen, "serving /metrics and /health");
    let (stop_tx, stop) = watch::channel(false);
    let http = tokio::spawn({
        let state = state.clone();
        let mut stop = stop.clone();
        async move {
            let _ = axum::serve(listener, crate::http::router(state))
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        }
    });
    let notifier = tokio::spawn(notifier(config.clone(), metrics.clone(), stop.clone()));

    let receivers = config.alerts.receivers();
    let interval = Duration::from_secs(config.alerts.evaluate_interval_s);
    // A report counts the time between two cycles as evaluated.
    estatemon_domain::schema::coverage::set_evaluate_interval(interval);
    let resend = Duration::from_secs(config.alerts.resend_interval_s.max(1));
    let sender = Sender::new(config.alerts.clone());
    let mut leader = false;
    // The window between cycles; dropped with the connection (and with it
    // the lease: another process may have led meanwhile).
    let mut cache = window::WindowCache::default();
    let mut last_resend: Option<Instant> = None;
    // Stored savings (each site's day that closed) and quarterly reports:
    // checked at start and every 10 minutes, on a connection of their own
    // so evaluation does not wait for them.
    let mut last_report_check: Option<Instant> = None;
    let mut report_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut rules_seen = rule_sets::latest_id(&client).await?;
    let mut reload_rules = false;
    let mut stop_eval = stop.clone();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("SIGHUP handler: {e}"))?;
    loop {
        if client.is_closed() {
            leader = false;
            cache = window::WindowCache::default();
            metrics.leader.set(0);
            metrics.db_connected.set(0);
            match schema::connect(&config.database).await {
                Ok(c) => {
                    client = c;
                    metrics.db_connected.set(1);
                }
                Err(e) => tracing::warn!(error = %e, "database unreachable; retrying"),
            }
        }
        if !client.is_closed() && !leader {
            match client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                .await
            {
                Ok(row) if row.get::<_, bool>(0) => {
                    leader = true;
                    metrics.leader.set(1);
                    tracing::info!("holding the evaluation lease: evaluating rules");
                }
                Ok(_) => tracing::debug!("another process evaluates; standing by"),
                Err(e) => tracing::warn!(error = %e, "cannot take the evaluation lease"),
            }
        }
        // Rules changed through the API (or a SIGHUP, below) apply from the
        // next cycle; a set that does not load keeps the running rules.
        if !client.is_closed() {
            let changed = match rule_sets::latest_id(&client).await {
                Ok(id) => id != rules_seen,
                Err(_) => false,
            };
            if changed || reload_rules {
                reload_rules = false;
                match rule_sets::active(&client, rules_file).await {
                    Ok((new, origin)) => {
                        tracing::info!(rules = new.rules.len(), from = %origin, "rules loaded");
                        rules_seen = rule_sets::latest_id(&client).await.unwrap_or(rules_seen);
                        *state.rules.lock().expect("rules lock") =
                            (new.rules.len(), origin.to_string());
                        rules = Arc::new(new);
                        rules_origin = origin;
                    }
                    Err(e) => {
                        rules_seen = rule_sets::latest_id(&client).await.unwrap_or(rules_seen);
                        tracing::error!(error = %e, running = %rules_origin,
                            "rules not reloaded; keeping the running ones")
                    }
                }
            }
        }
        if leader {
            let started = Instant::now();
            match cycle(
                &mut client,
                &rules,
                &receivers,
                Utc::now(),
                Some(&metrics),
                Some(&mut cache),
            )
            .await
            {
                Ok(report) => {
                    metrics.cycles.inc();
                    metrics
                        .cycle_seconds
                        .observe(started.elapsed().as_secs_f64());
                    metrics.last_cycle_timestamp.set(Utc::now().timestamp());
                    tracing::debug!(
                        ?report,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "evaluation cycle"
                    );
                }
                Err(e) => {
                    metrics.cycle_errors.inc();
                    tracing::warn!(error = %format!("{e:#}"), "evaluation cycle failed");
                }
            }
            if last_resend.is_none_or(|t| t.elapsed() >= resend) {
                last_resend = Some(Instant::now());
                if let Err(e) = sender.resend_open(&client, &metrics).await {
                    tracing::warn!(error = %e, "listing open alerts for re-sending failed");
                }
            }
        }
        let reports_idle = report_task.as_ref().is_none_or(|t| t.is_finished());
        if reports_idle && last_report_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(600))
        {
            last_report_check = Some(Instant::now());
            let config = config.clone();
            report_task = Some(tokio::spawn(async move {
                let result = async {
                    let mut client = schema::connect(&config.database).await?;
                    // Savings of the day that closed, for the dashboards.
                    match crate::savings::store::refresh_due(&mut client, &config.energy).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(sites = n, "savings measured and stored"),
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "measuring savings failed")
                        }
                    }
                    if !config.energy.auto_report {
                        return Ok(Vec::new());
                    }
                    crate::report::store::generate_due_reports(
                        &mut client,
                        &config.energy,
                        &config.lifts,
                        Utc::now(),
                    )
                    .await
                }
                .await;
                if let Err(e) = result {
                    tracing::warn!(error = %format!("{e:#}"), "checking for due quarterly reports failed");
                }
            }));
        }
        #[cfg(unix)]
        let reload = hangup.recv();
        #[cfg(not(unix))]
        let reload = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut shutdown => break,
            _ = stop_eval.wait_for(|s| *s) => break,
            _ = reload => {
                // SIGHUP: reload the rules (file or database) before the
                // next cycle; a bad file keeps the running ones.
                reload_rules = true;
                continue;
            }
        }
    }
    tracing::info!("analytics stopping");
    state.stopping.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = notifier.await;
    let _ = http.await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Drains the outbox: woken by `NOTIFY estatemon_alerts` (so an alert
/// opened by the ingest fast path leaves within milliseconds), and every
/// second for retries.
async fn notifier(config: Config, metrics: Metrics, mut stop: watch::Receiver<bool>) {
    let sender = Sender::new(config.alerts.clone());
    // The on-call roster: pages planned and sent by every notifier (one
    // page per step across replicas: `oncall_pages`' unique index).
    let mut paging = crate::oncall::watch::Paging::new(&config);
    let mut last_plan: Option<Instant> = None;
    let mut woken = true;
    let wake = Arc::new(Notify::new());
    let mut backoff = Duration::from_millis(200);
    while !*stop.borrow() {
        let mut client = match listen(&config, wake.clone()).await {
            Ok(c) => {
                backoff = Duration::from_millis(200);
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, "notifier cannot reach the database; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        while !client.is_closed() {
            // Drain everything due before sleeping.
            loop {
                match notify::deliver_due(&mut client, &sender, &metrics).await {
                    Ok(p) if p.delivered + p.failed >= notify::PASS_LIMIT => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox pass failed");
                        break;
                    }
                }
            }
            let plan_due = woken || last_plan.is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
            if last_plan.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                // The analytics job checks in (`estatemon api` watches it).
                if let Err(e) = crate::oncall::intake::beat(
                    &client,
                    crate::oncall::intake::ANALYTICS_HEARTBEAT,
                    &config.alerts.receivers(),
                )
                .await
                {
                    tracing::warn!(error = %e, "the analytics heartbeat was not written");
                }
            }
            if plan_due {
                // Plan on every wake-up (an alert opened) and every 5 s.
                last_plan = Some(Instant::now());
                match paging.pass(&mut client, &config).await {
                    Ok(Some(r)) => {
                        metrics.pages_planned.inc_by(r.planned.paged as u64);
                        metrics.pages_sent.inc_by(r.delivered.sent as u64);
                        metrics.pages_failed.inc_by(r.delivered.failed as u64);
                        metrics
                            .pages_fell_through
                            .inc_by(r.delivered.fell_through as u64);
                        if r.planned.paged > 0 {
                            tracing::info!(planned = ?r.planned, delivered = ?r.delivered, "on-call pages due");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "on-call paging pass failed")
                    }
                }
            }
            woken = false;
            tokio::select! {
                _ = wake.notified() => woken = true,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// A connection that `LISTEN`s on the alerts channel and pokes `wake` on
/// every notification.
async fn listen(config: &Config, wake: Arc<Notify>) -> anyhow::Result<Client> {
    let pg: tokio_postgres::Config = config.database.url.parse()?;
    let (client, mut connection) = tokio::time::timeout(
        Duration::from_secs(config.database.connect_timeout_s),
        pg.connect(tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connecting timed out"))??;
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "notifier connection lost");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", alerts::CHANNEL))
        .await?;
    Ok(client)
}

/// For `estatemon analytics evaluate`: one cycle at a given time.
pub async fn evaluate_once(
    config: &Config,
    at: DateTime<Utc>,
) -> anyhow::Result<(CycleReport, MigrationReport)> {
    let (mut client, migration) = schema::prepare(&config.database, &config.storage).await?;
    let (rules, _) = rule_sets::active(&client, config.alerts.rules_file.as_deref()).await?;
    let report = cycle(
        &mut client,
        &rules,
        &config.alerts.receivers(),
        at,
        None,
        None,
    )
    .await?;
    Ok((report, migration))
}
