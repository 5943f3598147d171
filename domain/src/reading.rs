//! A numeric reading as it is stored.

use chrono::{DateTime, Utc};

use crate::Metric;

/// One value of one metric of one device at one instant, in the metric's
/// canonical unit. `(device_id, metric, ts)` is its identity: the same
/// reading arriving twice is stored once.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device_id: String,
    pub metric: Metric,
    pub ts: DateTime<Utc>,
    pub value: f64,
}
