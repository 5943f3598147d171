//! The ground truth of a run: what the simulator injected and sent, written
//! as JSON so tests (and people) can hold analytics against it.
//!
//! - every fault, configured or drawn in the background, with its device
//!   and interval (a rollover at the instant its register wrapped);
//! - every retrofit with the devices it changed, the energy or water they
//!   would have used after its date without it (the driver-adjusted
//!   counterfactual) and what they used, hence its true saving;
//! - per device: messages, readings and events sent, true consumption;
//! - delivery faults: duplicates, late messages, malformed messages by the
//!   dead-letter reason estatemon should give them.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use estatemon_domain::device::{Device, DeviceKind};
use serde::{Deserialize, Serialize};

use crate::model::SiteModel;
use crate::scenario::{Fault, Retrofit, RetrofitKind, Selector};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub site: String,
    pub seed: u64,
    /// `mqtt` (through the broker, delivery faults applied) or `direct`.
    pub path: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub step_s: i64,
    pub retrofits: Vec<RetrofitTruth>,
    /// Savings of all retrofits of one kind together (e.g. all lighting).
    pub retrofit_groups: BTreeMap<String, Saving>,
    pub faults: Vec<Fault>,
    pub devices: BTreeMap<String, DeviceTruth>,
    pub delivery: DeliveryTruth,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrofitTruth {
    pub name: String,
    pub kind: RetrofitKind,
    pub at: DateTime<Utc>,
    pub select: Selector,
    pub devices: Vec<String>,
    pub configured_saving: f64,
    pub target: Option<f64>,
    #[serde(flatten)]
    pub saving: Saving,
    /// Lift replacements: faults of the selected lifts before and after.
    pub lift_faults_before: u64,
    pub lift_faults_after: u64,
}

/// Use after a retrofit's date: what it would have been, and what it was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Saving {
    /// kWh or m³ the devices would have used without the retrofit.
    pub counterfactual: f64,
    pub actual: f64,
    /// 1 − actual / counterfactual; absent when nothing ran after the date.
    pub true_saving: Option<f64>,
}

impl Saving {
    fn new(counterfactual: f64, actual: f64) -> Saving {
        Saving {
            counterfactual,
            actual,
            true_saving: (counterfactual > 0.0).then(|| 1.0 - actual / counterfactual),
        }
    }

    fn add(self, other: Saving) -> Saving {
        Saving::new(
            self.counterfactual + other.counterfactual,
            self.actual + other.actual,
        )
    }
}

impl RetrofitTruth {
    pub(crate) fn new(r: &Retrofit, cf: f64, actual: f64, before: u64, after: u64) -> Self {
        RetrofitTruth {
            name: r.name.clone(),
            kind: r.kind,
            at: r.at,
            select: r.select.clone(),
            devices: r.devices.clone(),
            configured_saving: r.saving,
            target: r.target,
            saving: Saving::new(cf, actual),
            lift_faults_before: before,
            lift_faults_after: after,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceTruth {
    pub kind: DeviceKind,
    pub messages: u64,
    pub readings: u64,
    pub events: u64,
    /// True consumption over the run (kWh, m³, or lift trips), including
    /// what a stuck register did not count.
    pub consumption: f64,
    /// Consumption a stuck register did not count.
    pub lost: f64,
    pub first_register: Option<f64>,
    pub last_register: Option<f64>,
    /// A tracked device's inspection windows, each with its fate and the
    /// patrol app's inspection that served it (none when missed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inspections: Vec<InspectionTruth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InspectionFate {
    OnTime,
    Late,
    Missed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectionTruth {
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub fate: InspectionFate,
    pub at: Option<DateTime<Utc>>,
}

impl DeviceTruth {
    pub(crate) fn new(d: &Device) -> DeviceTruth {
        DeviceTruth {
            kind: d.kind,
            messages: 0,
            readings: 0,
            events: 0,
            consumption: 0.0,
            lost: 0.0,
            first_register: None,
            last_register: None,
            inspections: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryTruth {
    /// Whether delivery faults were applied (not in direct backfills).
    pub applied: bool,
    /// Messages published a second time.
    pub duplicates: u64,
    /// Messages held back and published after later ones.
    pub late: u64,
    /// Malformed messages, by the dead-letter reason they should get.
    pub malformed: BTreeMap<String, u64>,
}

impl GroundTruth {
    /// Gathers the truth from the parts of a (possibly split) model.
    pub fn collect(
        parts: &[&SiteModel],
        path: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_s: i64,
        delivery: DeliveryTruth,
    ) -> GroundTruth {
        let first = parts.first().expect("at least one model");
        let mut retrofits: Vec<RetrofitTruth> = Vec::new();
        let mut faults = Vec::new();
        let mut devices = BTreeMap::new();
        for part in parts {
            for (i, r) in part.retrofit_truth().into_iter().enumerate() {
                match retrofits.get_mut(i) {
                    None => retrofits.push(r),
                    Some(sum) => {
                        sum.saving = sum.saving.add(r.saving);
                        sum.lift_faults_before += r.lift_faults_before;
                        sum.lift_faults_after += r.lift_faults_after;
                    }
                }
            }
            faults.extend(part.faults());
            devices.extend(part.device_truth());
        }
        // Delivery faults configured for the run happened only on the broker path.
        if delivery.applied {
            faults.extend(
                first
                    .scenario()
                    .faults
                    .iter()
                    .filter(|f| {
                        crate::delivery::is_delivery(f.kind) && f.start <= to && f.start > from
                    })
                    .cloned(),
            );
        }
        faults.sort_by(|a, b| (a.start, &a.device).cmp(&(b.start, &b.device)));
        let mut retrofit_groups: BTreeMap<String, Saving> = BTreeMap::new();
        for r in &retrofits {
            let key = serde_json::to_value(r.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let g = retrofit_groups.entry(key).or_default();
            *g = g.add(r.saving);
        }
        GroundTruth {
            site: first.site().id.clone(),
            seed: first.seed(),
            path: path.to_owned(),
            from,
            to,
            step_s,
            retrofits,
            retrofit_groups,
            faults,
            devices,
            delivery,
        }
    }

    /// Writes the file whole: into a temporary file renamed over `path`, so
    /// a reader never sees half of it. A `path` that is not a regular file
    /// (`/dev/null`, a pipe) is written to directly: renaming over it would
    /// replace the device node with a file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return std::fs::write(path, text);
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    pub fn read(path: &Path) -> std::io::Result<GroundTruth> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}
