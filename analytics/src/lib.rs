//! # estatemon-analytics
//!
//! The analytics job. It owns alert evaluation, the alert lifecycle and the
//! delivery of alerts; savings and reports join it later.
//!
//! - [`window`]: reads the recent window (ledger, readings, registers,
//!   events) from the database into polars frames.
//! - [`evaluate`]: pure rule evaluation over a window → findings.
//! - [`lifecycle`]: pure reconciliation of findings with open alerts.
//! - [`access_report`]: the weekly access report (denied bursts, forced
//!   and held-open doors, expired cards, unusual hours), pseudonyms only.
//! - [`notify`]: the outbox to Alertmanager (API v2) and webhooks, with
//!   retries and backoff.
//! - [`job`]: the process: evaluation under a lease, the notifier, and
//!   [`http`]'s `/metrics` and `/health` ([`metrics`]).
//!
//! It reads `devices`, `sites`, `readings`, `events` and `alerts`; it writes
//! `alerts` and `alert_notifications` (through
//! `estatemon_domain::schema::alerts`). It never reads MQTT.

pub mod access_report;
pub mod evaluate;
pub mod http;
pub mod job;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod window;

pub use job::run;
