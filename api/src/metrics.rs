//! Prometheus metrics of the API itself: requests by route, method and
//! status, latency by route, and the audit writer's state.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub audit_written: Counter,
    pub audit_dropped: Counter,
    pub audit_pending: Gauge,
    pub audit_pending_bytes: Gauge,
    /// Requests refused with 503 because the audit backlog was full.
    pub audit_refused: Counter,
    /// Unauthenticated requests refused with 429 (rate limit per address).
    pub unauthenticated_refused: Counter,
    /// Requests whose handler panicked (answered 500, audited).
    pub panics: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("estatemon_api");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ])
        });
        let audit_written = Counter::default();
        let audit_dropped = Counter::default();
        let audit_pending = Gauge::default();
        let audit_pending_bytes = Gauge::default();
        let audit_refused = Counter::default();
        let unauthenticated_refused = Counter::default();
        let panics = Counter::default();
        registry.register(
            "audit_pending_bytes",
            "Bytes of audit records waiting to be written (bounded by api.audit_max_pending_mb)",
            audit_pending_bytes.clone(),
        );
        registry.register(
            "audit_refused_requests",
            "Requests refused with 503 because the audit backlog was at its bound",
            audit_refused.clone(),
        );
        registry.register(
            "unauthenticated_refused",
            "Requests without a valid token refused with 429 (per-address limit); one audit row per burst",
            unauthenticated_refused.clone(),
        );
        registry.register(
            "handler_panics",
            "Requests whose handler panicked (answered 500 and audited)",
            panics.clone(),
        );
        registry.register(
            "requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer, by route",
            latency.clone(),
        );
        registry.register(
            "audit_records_written",
            "Audit records stored",
            audit_written.clone(),
        );
        registry.register(
            "audit_records_dropped",
            "Audit records lost because the database was away at shutdown",
            audit_dropped.clone(),
        );
        registry.register(
            "audit_records_pending",
            "Audit records waiting to be written",
            audit_pending.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            requests,
            latency,
            audit_written,
            audit_dropped,
            audit_pending,
            audit_pending_bytes,
            audit_refused,
            unauthenticated_refused,
            panics,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
