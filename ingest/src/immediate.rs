//! The fast path for alerts that cannot wait for the analytics schedule: a
//! trapped passenger, a forced door, the fire main below 0.5 MPa (the
//! rules marked `immediate = true`).
//!
//! Inside the batch's transaction, before commit, each event or reading
//! that one of those rules matches opens its alert through
//! `estatemon_domain::schema::alerts::open`, which queues the notifications
//! and sends `NOTIFY`. The alert therefore commits with its evidence (never
//! one without the other), and the analytics notifiers, woken by the
//! notification, deliver it within milliseconds of the commit.
//!
//! The analytics job evaluates the same rules too: it resolves these alerts
//! and backs the fast path up. Both open through the one-open-alert-per-fault
//! index, so a fault raised here and there pages once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use estatemon_domain::rules::{Condition, DeviceLabels, Rule, RuleSet};
use estatemon_domain::schema::alerts::{self, NewAlert, Opened};
use tokio_postgres::Transaction;

use crate::batch::Batch;

/// How long a device's labels are trusted before they are read again (a
/// registry load may move a device).
const LABELS_TTL: Duration = Duration::from_secs(60);

/// Readings older than this do not raise an immediate alert: a redelivered
/// or backfilled breach from the past is the analytics job's business.
const READING_MAX_AGE: chrono::Duration = chrono::Duration::minutes(10);

/// Immediate rules and what they need; shared by the writers.
pub struct Immediate {
    /// Replaced when an admin changes the rules (see [`Immediate::replace`]).
    rules: std::sync::RwLock<Arc<RuleSet>>,
    receivers: Vec<String>,
    labels: Mutex<HashMap<String, (Option<DeviceLabels>, Instant)>>,
    /// How many emergencies the running rules do not page for (metric
    /// `estatemon_ingest_emergency_rules_missing`).
    missing_gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Immediate {
    pub fn new(
        rules: Arc<RuleSet>,
        receivers: Vec<String>,
        missing_gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> Arc<Immediate> {
        let immediate = Arc::new(Immediate {
            rules: std::sync::RwLock::new(rules.clone()),
            receivers,
            labels: Mutex::new(HashMap::new()),
            missing_gauge,
        });
        immediate.report_missing(&rules);
        immediate
    }

    /// The rules from the next batch on.
    pub fn replace(&self, rules: Arc<RuleSet>) {
        self.report_missing(&rules);
        *self.rules.write().expect("rules lock") = rules;
    }

    fn report_missing(&self, rules: &RuleSet) {
        let missing = rules.missing_emergencies();
        self.missing_gauge.set(missing.len() as i64);
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|e| e.as_str()).collect();
            tracing::error!(missing = ?names,
                "the running alert rules do not page for these emergencies");
        }
    }

    /// How many immediate rules run.
    pub fn count(&self) -> usize {
        self.rules().rules.iter().filter(|r| r.immediate).count()
    }

    fn rules(&self) -> Arc<RuleSet> {
        self.rules.read().expect("rules lock").clone()
    }

    /// Whether an event could set off an immediate rule, whatever device
    /// sent it (the cheap filter before labels are looked up).
    fn event_candidate(&self, rule: &Rule, detail: &estatemon_domain::event::EventDetail) -> bool {
        matches!(&rule.condition, Condition::Event(e) if e.matches(detail))
    }

    /// Opens the alerts this batch sets off; returns how many are new.
    pub async fn raise<A>(
        &self,
        tx: &Transaction<'_>,
        batch: &Batch<A>,
    ) -> Result<u64, tokio_postgres::Error> {
        let now = Utc::now();
        let rules = self.rules();
        let immediate: Vec<&Rule> = rules.rules.iter().filter(|r| r.immediate).collect();
        if immediate.is_empty() {
            return Ok(0);
        }
        let events: Vec<&estatemon_domain::event::Event> = batch
            .events
            .iter()
            .filter(|e| {
                immediate.iter().any(|r| {
                    self.event_candidate(r, &e.detail)
                        && matches!(&r.condition, Condition::Event(ev)
                            if now - e.ts < ev.resolve_after.chrono())
                })
            })
            .collect();
        let readings: Vec<&estatemon_domain::Reading> = batch
            .readings
            .iter()
            .filter(|r| {
                now - r.ts < READING_MAX_AGE
                    && immediate.iter().any(|rule| {
                        matches!(&rule.condition, Condition::Threshold(t)
                            if t.metric == r.metric && t.level().breached(r.value))
                    })
            })
            .collect();
        if events.is_empty() && readings.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = events
            .iter()
            .map(|e| e.device_id.as_str())
            .chain(readings.iter().map(|r| r.device_id.as_str()))
            .collect();
        let labels = self.labels_of(tx, &ids).await?;
        let mut opened = 0;
        for e in events {
            let Some(device) = labels.get(&e.device_id).and_then(Option::as_ref) else {
                continue;
            };
            for rule in rules.immediate_for_event(device, &e.detail) {
                let alert = NewAlert::new(
                    rule,
                    device.id.clone(),
                    Some(device),
                    e.ts,
                    e.ts,
                    None,
                    "ingest",
                );
                opened += self.open(tx, &rules, rule, &alert).await?;
            }
        }
        for r in readings {
            let Some(device) = labels.get(&r.device_id).and_then(Option::as_ref) else {
                continue;
            };
            for rule in rules.immediate_for_reading(device, r.metric, r.value) {
                let alert = NewAlert::new(
                    rule,
                    device.id.clone(),
                    Some(device),
                    r.ts,
                    r.ts,
                    Some(r.value),
                    "ingest",
                );
                opened += self.open(tx, &rules, rule, &alert).await?;
            }
        }
        Ok(opened)
    }

    async fn open(
        &self,
        tx: &Transaction<'_>,
        rules: &RuleSet,
        rule: &Rule,
        alert: &NewAlert,
    ) -> Result<u64, tokio_postgres::Error> {
        match alerts::open(tx, alert, &rules.deadlines, &self.receivers).await? {
            Opened::New { id, silenced } => {
                tracing::warn!(alert = id, rule = %rule.name, subject = %alert.subject,
                    severity = rule.severity.as_str(), silenced, "immediate alert raised");
                Ok(1)
            }
            Opened::Existing { .. } => Ok(0),
        }
    }

    /// Labels of these devices, from the cache or the ledger (read in the
    /// batch's transaction, so a device registered by this batch is seen).
    async fn labels_of(
        &self,
        tx: &Transaction<'_>,
        ids: &[&str],
    ) -> Result<HashMap<String, Option<DeviceLabels>>, tokio_postgres::Error> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.labels.lock().expect("labels cache");
            for id in ids {
                match cache.get(*id) {
                    Some((labels, at)) if at.elapsed() < LABELS_TTL => {
                        out.insert(id.to_string(), labels.clone());
                    }
                    _ => missing.push(*id),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        missing.sort_unstable();
        missing.dedup();
        use estatemon_domain::schema::registry::{labels, LABEL_COLUMNS};
        let rows = tx
            .query(
                &format!("SELECT {LABEL_COLUMNS} FROM devices WHERE device_id = ANY($1)"),
                &[&missing],
            )
            .await?;
        let mut found: HashMap<String, Option<DeviceLabels>> =
            missing.iter().map(|id| (id.to_string(), None)).collect();
        for r in &rows {
            let d = labels(r);
            found.insert(d.id.clone(), Some(d));
        }
        let mut cache = self.labels.lock().expect("labels cache");
        let now = Instant::now();
        for (id, labels) in found {
            cache.insert(id.clone(), (labels.clone(), now));
            out.insert(id, labels);
        }
        Ok(out)
    }
}

/// How often ingest asks whether an admin changed the rules.
pub const RULES_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Until shutdown: loads the rules into `immediate` whenever a newer rule
/// set is stored (or a reset sends it back to `file` / the shipped rules).
/// A set that does not load, or a database that does not answer, leaves the
/// running rules in place.
pub async fn watch_rules(
    immediate: Arc<Immediate>,
    database: estatemon_domain::config::DatabaseConfig,
    file: Option<std::path::PathBuf>,
    mut seen: i64,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use estatemon_domain::schema::{self, rule_sets};
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RULES_POLL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = schema::connect(&database).await.ok();
        }
        let Some(c) = client.as_ref() else { continue };
        let Ok(latest) = rule_sets::latest_id(c).await else {
            continue;
        };
        if latest == seen {
            continue;
        }
        seen = latest;
        match rule_sets::active(c, file.as_deref()).await {
            Ok((rules, origin)) => {
                immediate.replace(Arc::new(rules));
                tracing::info!(immediate = immediate.count(), from = %origin, "alert rules changed");
            }
            Err(e) => {
                tracing::error!(error = %e, "new alert rules not loaded; keeping the running ones")
            }
        }
    }
}
