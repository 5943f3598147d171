//! Synthetic estates of any size, for load tests and backfills: towers that
//! each carry the equipment of a real residential tower, plus a podium with
//! the garage, pump room and landscape. Deterministic: the same size gives
//! the same registry.

use estatemon_domain::device::{
    Building, Device, DeviceKind, MaintenanceCycle, Purpose, Registry, Site,
};

/// Devices per tower: lobby and corridor lighting, lift power, two lifts,
/// the entrance gate, the tower's water meter.
const PER_TOWER: usize = 7;
/// Podium devices: garage lighting, pump power, water main, irrigation,
/// gas, fire-main pressure.
const PODIUM: usize = 6;

fn device(
    id: String,
    kind: DeviceKind,
    building: &str,
    area: &str,
    purpose: Purpose,
    cycle: MaintenanceCycle,
) -> Device {
    Device {
        name: Some(id.replace('-', " ")),
        id,
        kind,
        site: String::new(),
        building: Some(building.to_owned()),
        area: area.to_owned(),
        purpose,
        model: None,
        install_date: None,
        maintenance_cycle: Some(cycle),
        responsible: None,
    }
}

/// An estate of exactly `devices` devices (at least the podium's six).
pub fn synthetic_estate(devices: usize) -> Registry {
    let devices = devices.max(PODIUM);
    let site_id = format!("estate-{devices}");
    let towers = (devices - PODIUM).div_ceil(PER_TOWER);
    let mut buildings = vec![Building {
        id: "podium".into(),
        name: "Podium, garage and pump room".into(),
        floor_area_m2: Some(8000.0),
    }];
    use DeviceKind::*;
    use MaintenanceCycle::*;
    let mut list = vec![
        device(
            "podium-garage-light".into(),
            ElectricityMeter,
            "podium",
            "garage",
            Purpose::PublicLighting,
            Monthly,
        ),
        device(
            "podium-pump-power".into(),
            ElectricityMeter,
            "podium",
            "pump_room",
            Purpose::Pumps,
            Weekly,
        ),
        device(
            "podium-water-main".into(),
            WaterMeter,
            "podium",
            "pump_room",
            Purpose::DomesticWater,
            Weekly,
        ),
        device(
            "podium-irrigation".into(),
            WaterMeter,
            "podium",
            "landscape",
            Purpose::Irrigation,
            Monthly,
        ),
        device(
            "podium-gas".into(),
            GasMeter,
            "podium",
            "clubhouse",
            Purpose::General,
            Quarterly,
        ),
        device(
            "podium-fire-main-pressure".into(),
            Sensor,
            "podium",
            "pump_room",
            Purpose::FireProtection,
            Daily,
        ),
    ];
    for t in 1..=towers {
        let b = format!("tower-{t:03}");
        buildings.push(Building {
            id: b.clone(),
            name: format!("Tower {t}"),
            floor_area_m2: Some(15000.0),
        });
        let id = |what: &str| format!("{b}-{what}");
        list.extend([
            device(
                id("lobby-light"),
                ElectricityMeter,
                &b,
                "lobby",
                Purpose::PublicLighting,
                Monthly,
            ),
            device(
                id("corridor-light"),
                ElectricityMeter,
                &b,
                "corridor",
                Purpose::PublicLighting,
                Monthly,
            ),
            device(
                id("lift-power"),
                ElectricityMeter,
                &b,
                "machine_room",
                Purpose::Lifts,
                Monthly,
            ),
            device(
                id("lift-1"),
                Lift,
                &b,
                "lift_shaft",
                Purpose::Lifts,
                Fortnightly,
            ),
            device(
                id("lift-2"),
                Lift,
                &b,
                "lift_shaft",
                Purpose::Lifts,
                Fortnightly,
            ),
            device(
                id("gate-main"),
                AccessGate,
                &b,
                "lobby",
                Purpose::Security,
                Monthly,
            ),
            device(
                id("water"),
                WaterMeter,
                &b,
                "riser",
                Purpose::DomesticWater,
                Weekly,
            ),
        ]);
    }
    list.truncate(devices);
    for d in &mut list {
        d.site = site_id.clone();
    }
    Registry {
        sites: vec![Site {
            id: site_id,
            name: format!("Synthetic estate ({devices} devices)"),
            time_zone: "Asia/Hong_Kong".into(),
            latitude: 22.28,
            longitude: 114.16,
            floor_area_m2: Some(8000.0 + 15000.0 * towers as f64),
            buildings,
        }],
        devices: list,
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
