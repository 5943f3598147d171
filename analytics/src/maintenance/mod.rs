//! Maintenance as the estate runs it (issue 20): inspections against
//! their cycles. Folder roles: `compliance` assesses a period. The
//! overdue alerts are the `inspection` rule, evaluated in `alerts/`; the
//! cycles and windows are `domain::inspection`.

pub mod compliance;
