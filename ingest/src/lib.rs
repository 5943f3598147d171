//! # estatemon-ingest
//!
//! Takes readings and events from MQTT and stores them, once each, in
//! TimescaleDB or plain PostgreSQL. The modules follow a message's path:
//!
//! 1. [`subscribe`]: the MQTT session (v5, QoS 1, persistent, manual acks,
//!    optional `$share/{group}/…` subscriptions); or [`nats`]: a durable
//!    JetStream consumer on a NATS cluster, shared by every ingestor.
//! 2. [`topic`]: which payload format and device a topic names.
//! 3. [`decode`]: JSON telemetry, SenML and events into domain types; credentials
//!    are pseudonymised here, before anything else sees them.
//! 4. [`validate`]: non-finite values, clocks in the future or the distant past.
//! 5. [`batch`]: readings gathered by size and time, duplicates folded.
//! 6. [`store`]: binary COPY in one transaction with dead letters, auto-registered
//!    devices and rollup marks; retried with backoff until it commits.
//!    [`immediate`] opens the alerts that cannot wait (entrapment, forced
//!    door, fire main) in the same transaction.
//! 7. [`dead_letter`]: what could not be used, with a reason a person can read.
//! 8. [`metrics`] and [`http`]: Prometheus `/metrics` and `/health`.
//! 9. [`maintenance`]: partitions ahead, retention, rollup refresh.
//! 10. [`reprocess`]: dead letters through the same pipeline again, once
//!     what refused them is fixed.
//!
//! **Reads**: MQTT topics from `mqtt.topics`. **Writes**: `readings`, `events`,
//! `dead_letters`, `devices` (unassigned ones), `rollup_dirty`, rollups, and
//! for immediate alert rules `alerts` and `alert_notifications`.
//! **Never**: acknowledges a message before its rows are committed, logs a
//! payload from the events topic, or stores a credential in clear.
//!
//! Why acknowledge only after commit: the broker then holds every message
//! we have not stored. Kill the ingestor, and the broker redelivers what
//! was in flight; the `(device, metric, ts)` key makes the second copy a no-op.

pub mod batch;
pub mod dead_letter;
pub mod decode;
pub mod http;
pub mod immediate;
pub mod import;
pub mod maintenance;
pub mod metrics;
pub mod nats;
pub mod pipeline;
pub mod reprocess;
pub mod store;
pub mod subscribe;
pub mod topic;
pub mod validate;

pub use pipeline::{run, Ingestor};
