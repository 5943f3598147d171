//! # estatemon-simulators
//!
//! A simulated site that engineers would recognise: lighting that follows
//! the dark hours at the site's latitude, water and lift traffic that follow
//! occupancy (weekday peaks, quiet nights), gates with granted and denied
//! swipes.
//!
//! - [`sun`]: sunrise and sunset (NOAA approximation), pure.
//! - [`model`]: the site model, a pure function of (seed, time) to messages.
//! - [`live`]: publishes the model to MQTT at QoS 1, in real or accelerated
//!   time, or backfills history as fast as the broker takes it.
//! - [`site`]: synthetic estates of any size (load tests, large backfills).
//!
//! **Writes**: MQTT topics rendered from `mqtt.topics`. **Never** touches the
//! database: what the simulator does reaches estatemon only through the broker.

pub mod live;
pub mod model;
pub mod site;
pub mod sun;

/// The default site shipped with estatemon (also a registry file).
pub const DEFAULT_SITE: &str = include_str!("../sites/harbour-view.toml");
pub const DEFAULT_SITE_NAME: &str = "simulators/sites/harbour-view.toml";
