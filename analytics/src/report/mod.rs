//! The quarterly energy report: built from the database ([`build`]),
//! rendered as a self-contained HTML page with charts drawn here
//! ([`charts`], [`html`]), the same as PDF ([`pdf`]), the tables as CSV
//! ([`csv`]) and the whole as JSON, and stored in `reports` and
//! `report_files` ([`store`]). Quarters are calendar quarters in the
//! site's time zone ([`quarter`]).

pub mod build;
pub mod charts;
pub mod figures;
pub mod font;
pub mod html;
pub mod model;
pub mod narrative;
pub mod pdf;
pub mod quarter;
pub mod signoff;
pub mod store;
pub mod tables;

pub use model::QuarterReport;
pub use quarter::Quarter;
