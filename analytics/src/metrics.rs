//! Prometheus metrics of the analytics job, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    pub receiver: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: &'static str,
}

/// Every metric the analytics job exports. Cheap to clone (shared atomics).
#[derive(Clone)]
pub struct Metrics {
    pub cycles: Counter,
    pub cycle_errors: Counter,
    pub cycle_seconds: Histogram,
    pub last_cycle_timestamp: Gauge,
    pub alerts_opened: Family<RuleLabel, Counter>,
    pub alerts_resolved: Family<RuleLabel, Counter>,
    pub alerts_escalated: Counter,
    pub alerts_open: Gauge,
    pub deliveries: Family<DeliveryLabel, Counter>,
    pub deliveries_pending: Gauge,
    pub pages_planned: Counter,
    pub pages_sent: Counter,
    pub pages_failed: Counter,
    pub pages_fell_through: Counter,
    pub resends: Family<DeliveryLabel, Counter>,
    pub leader: Gauge,
    pub db_connected: Gauge,
    pub storage_mode: Family<ModeLabel, Gauge>,
}

const CYCLE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            cycles: Counter::default(),
            cycle_errors: Counter::default(),
            cycle_seconds: Histogram::new(CYCLE_BUCKETS.iter().copied()),
            last_cycle_timestamp: Gauge::default(),
            alerts_opened: Family::default(),
            alerts_resolved: Family::default(),
            alerts_escalated: Counter::default(),
            alerts_open: Gauge::default(),
            deliveries: Family::default(),
            deliveries_pending: Gauge::default(),
            pages_planned: Counter::default(),
            pages_sent: Counter::default(),
            pages_failed: Counter::default(),
            pages_fell_through: Counter::default(),
            resends: Family::default(),
            leader: Gauge::default(),
            db_connected: Gauge::default(),
            storage_mode: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("estatemon_analytics");
        r.register(
            "evaluation_cycles",
            "Rule evaluation cycles completed",
            m.cycles.clone(),
        );
        r.register(
            "evaluation_errors",
            "Rule evaluation cycles that failed",
            m.cycle_errors.clone(),
        );
        r.register(
            "evaluation_seconds",
            "Time to load the window and evaluate every rule",
            m.cycle_seconds.clone(),
        );
        r.register(
            "last_evaluation_timestamp_seconds",
            "Unix time of the last completed cycle",
            m.last_cycle_timestamp.clone(),
        );
        r.register(
            "alerts_opened",
            "Alerts opened by this process, by rule",
            m.alerts_opened.clone(),
        );
        r.register(
            "alerts_resolved",
            "Alerts resolved by this process, by rule",
            m.alerts_resolved.clone(),
        );
        r.register(
            "alerts_escalated",
            "Alerts escalated past their response deadline",
            m.alerts_escalated.clone(),
        );
        r.register(
            "alerts_open",
            "Alerts open (firing or acknowledged) at the last cycle",
            m.alerts_open.clone(),
        );
        r.register(
            "alert_deliveries",
            "Alert notifications sent, by receiver and outcome (delivered, failed)",
            m.deliveries.clone(),
        );
        r.register(
            "alert_deliveries_pending",
            "Notifications waiting for delivery or a retry",
            m.deliveries_pending.clone(),
        );
        r.register(
            "oncall_pages_planned",
            "On-call pages that came due (one per step of a ladder)",
            m.pages_planned.clone(),
        );
        r.register(
            "oncall_pages_sent",
            "On-call pages a channel accepted",
            m.pages_sent.clone(),
        );
        r.register(
            "oncall_page_tries_failed",
            "Tries of a page's contact method that failed (retried, then the next method)",
            m.pages_failed.clone(),
        );
        r.register(
            "oncall_pages_fell_through",
            "Pages whose every contact method failed, passed to the next step or the fallback",
            m.pages_fell_through.clone(),
        );
        r.register(
            "alertmanager_resends",
            "Periodic re-sends of open alerts to Alertmanager, by outcome",
            m.resends.clone(),
        );
        r.register(
            "leader",
            "1 while this process holds the evaluation lease",
            m.leader.clone(),
        );
        r.register(
            "database_connected",
            "1 while connected to the database",
            m.db_connected.clone(),
        );
        r.register(
            "storage_mode",
            "1 for the storage mode in use (timescaledb or plain)",
            m.storage_mode.clone(),
        );
        m
    }
}
