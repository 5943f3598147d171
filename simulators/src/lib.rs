//! # estatemon-simulators
//!
//! A simulated site that engineers would recognise, and that tells the
//! tests exactly what it did: lighting that follows the dark hours at the
//! site's latitude, water, lift and gate traffic that follow occupancy
//! (weekday peaks, quiet nights, weekends and holidays), HVAC that follows
//! the weather; retrofits and faults on given dates; a ground-truth file.
//!
//! - [`sun`]: sunrise and sunset (NOAA approximation), pure.
//! - [`scenario`]: retrofits, faults, background incident rates, delivery
//!   faults and holidays, from the `[scenario]` table of a site file.
//! - [`model`]: the site model, a pure function of (seed, scenario, time)
//!   to reports; splittable across threads with identical output.
//! - [`delivery`]: duplicates, late and malformed messages on the way to
//!   the broker.
//! - [`formats`]: the site as Tasmota, Shelly, Zigbee2MQTT or Sparkplug B
//!   devices would publish it.
//! - [`truth`]: the ground truth of a run, as JSON.
//! - [`live`]: publishes the model to MQTT at QoS 1, in real or accelerated
//!   time, or backfills history as fast as the broker takes it.
//! - [`load`]: synthetic load at a given rate and batch size.
//! - [`site`]: synthetic estates of any size (load tests, large backfills).
//! - [`oncall`]: on-call people who answer after a delay or never, their
//!   duty shifts and ladder, and the truth of who should be paged when.
//!
//! **Writes**: MQTT topics rendered from `mqtt.topics`, and the ground-truth
//! file. **Never** touches the database itself: the binary's direct
//! backfill stores reports through the ingest crate's writer.

pub mod delivery;
pub mod formats;
pub mod live;
pub mod load;
pub mod model;
pub mod nats_cluster;
pub mod oncall;
pub mod pg_cluster;
pub mod scenario;
pub mod site;
pub use estatemon_domain::sun;
pub mod truth;

/// The default site shipped with estatemon (also a registry file).
pub const DEFAULT_SITE: &str = include_str!("../sites/harbour-view.toml");
pub const DEFAULT_SITE_NAME: &str = "simulators/sites/harbour-view.toml";
