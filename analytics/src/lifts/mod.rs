//! Lifts as the estate runs them (issue 20): service modes, statistics,
//! entrapments as incidents.
//!
//! Folder roles, as in `alerts/`: `service` reads the lifts' reported
//! modes and keeps the alert side in step with them; `stats` measures a
//! period (availability, trips, faults per 1,000 trips, MTBF);
//! `incidents` follows each entrapment from alarm to back in service. The alert
//! rules for lifts left in maintenance (`mode`) and for silent alarm lines
//! (`expect`) are evaluated with the others, in `alerts/`.

pub mod incidents;
pub mod service;
pub mod stats;
