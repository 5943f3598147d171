//! Synthetic estates of any size, for load tests and backfills: towers that
//! each carry the equipment of a real residential tower, plus a podium with
//! the garage, pump room and landscape. Deterministic: the same size gives
//! the same registry.

use estatemon_domain::device::{
    Building, Device, DeviceKind, MaintenanceCycle, Purpose, Registry, Site,
};

/// What each equipment slot is: id suffix, kind, area, purpose, inspection cycle.
type Slot = (
    &'static str,
    DeviceKind,
    &'static str,
    Purpose,
    MaintenanceCycle,
);

/// The podium: garage lighting, pump power, water main, irrigation, gas,
/// fire-main pressure.
const PODIUM: &[Slot] = &[
    (
        "garage-light",
        DeviceKind::ElectricityMeter,
        "garage",
        Purpose::PublicLighting,
        MaintenanceCycle::Monthly,
    ),
    (
        "pump-power",
        DeviceKind::ElectricityMeter,
        "pump_room",
        Purpose::Pumps,
        MaintenanceCycle::Weekly,
    ),
    (
        "water-main",
        DeviceKind::WaterMeter,
        "pump_room",
        Purpose::DomesticWater,
        MaintenanceCycle::Weekly,
    ),
    (
        "irrigation",
        DeviceKind::WaterMeter,
        "landscape",
        Purpose::Irrigation,
        MaintenanceCycle::Monthly,
    ),
    (
        "gas",
        DeviceKind::GasMeter,
        "clubhouse",
        Purpose::General,
        MaintenanceCycle::Quarterly,
    ),
    (
        "fire-main-pressure",
        DeviceKind::Sensor,
        "pump_room",
        Purpose::FireProtection,
        MaintenanceCycle::Daily,
    ),
];

/// Every tower: lobby and corridor lighting, lift power, two lifts, the
/// entrance gate, the tower's water meter.
const TOWER: &[Slot] = &[
    (
        "lobby-light",
        DeviceKind::ElectricityMeter,
        "lobby",
        Purpose::PublicLighting,
        MaintenanceCycle::Monthly,
    ),
    (
        "corridor-light",
        DeviceKind::ElectricityMeter,
        "corridor",
        Purpose::PublicLighting,
        MaintenanceCycle::Monthly,
    ),
    (
        "lift-power",
        DeviceKind::ElectricityMeter,
        "machine_room",
        Purpose::Lifts,
        MaintenanceCycle::Monthly,
    ),
    (
        "lift-1",
        DeviceKind::Lift,
        "lift_shaft",
        Purpose::Lifts,
        MaintenanceCycle::Fortnightly,
    ),
    (
        "lift-2",
        DeviceKind::Lift,
        "lift_shaft",
        Purpose::Lifts,
        MaintenanceCycle::Fortnightly,
    ),
    (
        "gate-main",
        DeviceKind::AccessGate,
        "lobby",
        Purpose::Security,
        MaintenanceCycle::Monthly,
    ),
    (
        "water",
        DeviceKind::WaterMeter,
        "riser",
        Purpose::DomesticWater,
        MaintenanceCycle::Weekly,
    ),
];

fn devices_of(building: &str, slots: &'static [Slot], site: &str) -> impl Iterator<Item = Device> {
    let (building, site) = (building.to_owned(), site.to_owned());
    slots
        .iter()
        .map(move |&(suffix, kind, area, purpose, cycle)| {
            let id = format!("{building}-{suffix}");
            Device {
                name: Some(id.replace('-', " ")),
                id,
                kind,
                site: site.clone(),
                building: Some(building.clone()),
                area: area.to_owned(),
                purpose,
                model: None,
                install_date: None,
                maintenance_cycle: Some(cycle),
                responsible: None,
                source_id: None,
                class: None,
                inspection_cycle: None,
                checklist: Vec::new(),
            }
        })
}

/// An estate of exactly `devices` devices (at least the podium's six).
pub fn synthetic_estate(devices: usize) -> Registry {
    let devices = devices.max(PODIUM.len());
    let site_id = format!("estate-{devices}");
    let towers = (devices - PODIUM.len()).div_ceil(TOWER.len());
    let mut buildings = vec![Building {
        id: "podium".into(),
        name: "Podium, garage and pump room".into(),
        floor_area_m2: Some(8000.0),
    }];
    let mut list: Vec<Device> = devices_of("podium", PODIUM, &site_id).collect();
    for t in 1..=towers {
        let b = format!("tower-{t:03}");
        list.extend(devices_of(&b, TOWER, &site_id));
        buildings.push(Building {
            id: b,
            name: format!("Tower {t}"),
            floor_area_m2: Some(15000.0),
        });
    }
    list.truncate(devices);
    Registry {
        sites: vec![Site {
            id: site_id,
            name: format!("Synthetic estate ({devices} devices)"),
            time_zone: "Asia/Hong_Kong".into(),
            latitude: 22.28,
            longitude: 114.16,
            floor_area_m2: Some(8000.0 + 15000.0 * towers as f64),
            weather: Vec::new(),
            electricity_supplier: Some("clp".into()),
            buildings,
        }],
        devices: list,
        retrofits: Vec::new(),
        scenario: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sizes_and_a_valid_registry() {
        for n in [10, 1000, 10_000] {
            let r = synthetic_estate(n);
            assert_eq!(r.devices.len(), n);
            let ids: std::collections::HashSet<_> =
                r.devices.iter().map(|d| d.id.as_str()).collect();
            assert_eq!(ids.len(), n, "ids are unique");
            // The registry's own checks (buildings exist, zone valid) pass.
            let text = toml::to_string(&r).unwrap();
            Registry::parse(&text, std::path::Path::new("synthetic")).unwrap();
        }
    }
}
