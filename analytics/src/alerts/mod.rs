//! The alert job, a folder of fixed roles (as Vector's components):
//!
//! - [`window`]: the source, reading the recent window (ledger, readings,
//!   registers, events) from the database into polars frames;
//! - [`evaluate`]: pure rule evaluation over a window → findings;
//! - [`lifecycle`]: pure reconciliation of findings with open alerts;
//! - [`notify`]: the sink, the outbox to Alertmanager (API v2) and
//!   webhooks, with retries and backoff;
//! - [`job`]: the driving loop, evaluation under a lease, the notifier;
//! - [`replay`]: the rules over stored history: read once per chunk, each
//!   step's window cut from memory, the same evaluation and lifecycle, only
//!   transitions written.
//!
//! The crate root re-exports each module under its old path
//! (`estatemon_analytics::job`, `::window`, …).

pub mod evaluate;
pub mod job;
pub mod lifecycle;
pub mod notify;
pub mod replay;
pub mod window;
