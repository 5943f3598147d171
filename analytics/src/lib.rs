//! # estatemon-analytics
//!
//! The analytics job. It owns alert evaluation, the alert lifecycle and the
//! delivery of alerts, measured savings and the quarterly energy report.
//!
//! - [`alerts`]: the alert job, one folder: [`window`] reads the recent
//!   window (ledger, readings, registers, events) into polars frames,
//!   [`evaluate`] is pure rule evaluation over a window → findings,
//!   [`lifecycle`] pure reconciliation of findings with open alerts,
//!   [`notify`] the outbox, [`job`] the loop, [`replay`] the rules over
//!   stored history (read once, evaluated step by step in memory).
//! - [`access_report`]: the weekly access report (denied bursts, forced
//!   and held-open doors, expired cards, unusual hours), pseudonyms only.
//! - [`energy`]: a site's meters and their consumption per interval (from
//!   raw or hourly registers), gate entries and temperatures per local day.
//! - [`savings`]: measured savings of retrofits (ASHRAE 14 baseline models,
//!   adjusted baseline, uncertainty, money, CO₂, targets).
//! - [`report`]: the quarterly energy report (HTML with charts, PDF, CSV,
//!   JSON), stored in `reports`.
//! - [`http`]: the process's `/metrics` and `/health` ([`metrics`]).
//!
//! It reads `devices`, `sites`, `readings`, `events` and `alerts`; it writes
//! `alerts` and `alert_notifications` (through
//! `estatemon_domain::schema::alerts`). It never reads MQTT.

pub mod access_report;
pub mod alerts;
pub mod energy;
pub mod http;
pub mod lifts;
pub mod maintenance;
pub mod metrics;
pub mod oncall;
pub mod report;
pub mod savings;
pub mod static_str;

pub use alerts::{evaluate, job, lifecycle, notify, replay, window};

pub use job::run;
