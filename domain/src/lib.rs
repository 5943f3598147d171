//! # estatemon-domain
//!
//! The one place that says what a building's telemetry *is*, shared by every
//! estatemon crate:
//!
//! - [`metric`] and [`units`]: the catalogue of metrics (`energy_kwh`,
//!   `volume_m3`, …) with their canonical units, and the unit normalisation
//!   that turns `Wh`, `l` or `kPa` into them. Nothing else in estatemon
//!   spells a metric name as a string.
//! - [`event`]: discrete events (access, door forced, lift faults and states).
//! - [`device`]: sites, buildings, devices and the registry file that lists them.
//! - [`consumption`]: the single derivation of consumption from cumulative
//!   registers (resets, rollovers, replacements, gaps, spikes).
//! - [`retrofit`]: retrofits whose savings are measured (meters, date,
//!   baseline and reporting periods, drivers, target).
//! - [`sun`]: sunrise, sunset and hours of darkness at a site.
//! - [`pseudonym`]: the keyed hash applied to access credentials.
//! - [`rules`]: alert rules (the rules file, its validation, the shipped
//!   defaults) and the matching shared by ingest and analytics.
//! - [`config`]: the configuration tree (file + `ESTATEMON_*` environment).
//! - [`schema`]: versioned migrations, storage-mode detection (TimescaleDB or
//!   plain PostgreSQL) and partition maintenance.
//!
//! Everything except [`schema`] is pure: no sockets, no clocks read behind
//! the caller's back, so it is tested with tables of cases.

pub mod calendar;
pub mod config;
pub mod consumption;
pub mod device;
pub mod event;
pub mod inspection;
pub mod mapping;
pub mod metric;
pub mod pseudonym;
pub mod reading;
pub mod retrofit;
pub mod rules;
pub mod schema;
pub mod sparkplug;
pub mod sun;
pub mod units;

pub use metric::Metric;
pub use reading::Reading;

#[cfg(test)]
mod proptests;
