//! Lifts as the estate runs them (issue 20): so far, service modes.
//!
//! Folder roles, as in `alerts/`: `service` reads the lifts' reported
//! modes and keeps the alert side in step with them.

pub mod service;
