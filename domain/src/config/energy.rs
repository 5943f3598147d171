//! Money and carbon: tariffs, emission factors and the electricity
//! suppliers they come from, the owners' savings targets, and the quarterly
//! report's settings (`[energy]`).

use serde::{Deserialize, Serialize};

/// What reports and savings turn kWh and m³ into: prices (flat or
/// time-of-use), CO₂ emission factors, the owners' savings targets, and when
/// the quarterly report is generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnergyConfig {
    /// Currency code printed next to costs.
    pub currency: String,
    /// One tariff per utility (and optionally per site); a site-specific
    /// tariff wins over a general one.
    pub tariffs: Vec<Tariff>,
    pub emission_factors: EmissionFactors,
    /// Savings targets for retrofits that do not set their own; the most
    /// specific match (purpose + area over purpose alone) wins.
    pub targets: Vec<SavingsTarget>,
    /// Night base load: the mean demand between these site-local hours.
    pub night_from_hour: u32,
    pub night_to_hour: u32,
    /// Generate each site's quarterly report when its quarter closes (site
    /// local time), from `estatemon analytics`.
    pub auto_report: bool,
    /// A site's own currency and emission factors (`[[energy.site]]`); its
    /// own tariffs are `[[energy.tariffs]]` with `site = "..."`.
    #[serde(rename = "site", skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteEnergy>,
    /// Electricity suppliers (`[[energy.supplier]]`): a site whose registry
    /// entry names one gets its currency, tariffs and factors, unless
    /// `[[energy.site]]` / a site's own tariff says otherwise.
    #[serde(rename = "supplier", skip_serializing_if = "Vec::is_empty")]
    pub suppliers: Vec<Supplier>,
    /// Who signs the quarterly report, and the font its PDF embeds.
    pub report: ReportSettings,
}

/// What the quarterly report's cover and PDF need beyond the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSettings {
    /// Printed on the cover as what produced the report. The people who
    /// prepare and review a version sign it with `estatemon report sign`:
    /// a signature belongs to one version, never to the installation.
    pub prepared_by: String,
    /// A TrueType/OpenType font (`.ttf`, `.otf`, `.ttc`: its first face)
    /// with Chinese glyphs, subset and embedded in the PDF. Empty: the
    /// first of the Debian fonts `fonts-wqy-microhei`, `fonts-wqy-zenhei`,
    /// `fonts-droid-fallback` found; none: Helvetica, with Chinese as `?`
    /// and a note saying so.
    pub pdf_font: String,
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            prepared_by: "estatemon (automatic)".into(),
            pdf_font: String::new(),
        }
    }
}

/// The money and carbon of one site: the currency its tariffs are in and
/// its grid's emission factors, where they differ from the general ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteEnergy {
    pub site: String,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emission_factors: Option<EmissionFactors>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tariff {
    pub utility: crate::device::Utility,
    /// Only for this site; all sites when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Price per kWh or m³ outside any period below.
    pub price: f64,
    /// Time-of-use periods, site local time.
    #[serde(default, rename = "period", skip_serializing_if = "Vec::is_empty")]
    pub periods: Vec<TouPeriod>,
    /// Where the prices come from (the report prints it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TouPeriod {
    pub name: String,
    /// `[from_hour, to_hour)` in site local time, 0..=24.
    pub from_hour: u32,
    pub to_hour: u32,
    pub price: f64,
    /// Applies Monday to Friday only.
    #[serde(default)]
    pub weekdays_only: bool,
}

impl Tariff {
    /// Price of one unit used in the hour starting at `local_hour` on a
    /// day (weekday: Monday..Friday).
    pub fn price_at(&self, local_hour: u32, weekday: bool) -> f64 {
        self.periods
            .iter()
            .find(|p| {
                (p.from_hour..p.to_hour).contains(&local_hour) && (weekday || !p.weekdays_only)
            })
            .map_or(self.price, |p| p.price)
    }
}

/// kg CO₂e per unit used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmissionFactors {
    pub electricity_kg_per_kwh: f64,
    pub water_kg_per_m3: f64,
    pub gas_kg_per_m3: f64,
    /// The year the electricity factor is for: a report flags a factor
    /// older than the latest its supplier would have published (the year
    /// before the report's), or one whose year is not stated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub year: Option<i32>,
    /// Where the factors come from (the report prints it).
    pub source: String,
}

impl EmissionFactors {
    pub fn of(&self, utility: crate::device::Utility) -> f64 {
        match utility {
            crate::device::Utility::Electricity => self.electricity_kg_per_kwh,
            crate::device::Utility::Water => self.water_kg_per_m3,
            crate::device::Utility::Gas => self.gas_kg_per_m3,
        }
    }
}

impl Default for EmissionFactors {
    fn default() -> Self {
        EmissionFactors {
            electricity_kg_per_kwh: 0.5703,
            water_kg_per_m3: 0.168,
            gas_kg_per_m3: 2.162,
            year: Some(2022),
            source: "electricity: China's national grid average, 0.5703 kg CO2/kWh (Ministry of \
                     Ecology and Environment, 2022 figure); water: supply and treatment, 0.168 \
                     kg/m³; gas: natural gas burnt, 2.162 kg/m³. Set your own grid's."
                .into(),
        }
    }
}

/// An electricity supplier, as the registry names it on a site
/// (`electricity_supplier = "clp"`): the currency, tariffs and emission
/// factors of its customers. Tariffs and the grid factor follow the
/// supplier, never the site's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Supplier {
    pub id: String,
    pub name: String,
    pub currency: String,
    /// Its customers' tariffs (`site` unset): electricity, and the
    /// territory's water and gas where they are priced in its currency.
    #[serde(default, rename = "tariff")]
    pub tariffs: Vec<Tariff>,
    /// The grid factor (with `year`), and water and gas.
    pub emission_factors: EmissionFactors,
}

/// Hong Kong's two electricity suppliers; every figure is sourced in its
/// `source` text and in README "Money and carbon". Water (WSD, DSD) and
/// gas (Towngas) are the same across the territory; the water factor is
/// the energy to supply and treat a m³ times the supplier's grid factor.
fn hong_kong_suppliers() -> Vec<Supplier> {
    use crate::device::Utility;
    let water_gas = || {
        vec![
            Tariff {
                utility: Utility::Gas,
                site: None,
                price: 5.61,
                periods: Vec::new(),
                source:
                    "Towngas standard tariff 28.5 HK cents/MJ from 1 August 2024 plus a fuel \
                         cost adjustment of about 4.0 cents/MJ (it changes monthly), at 17.27 MJ/m³"
                        .into(),
            },
            Tariff {
                utility: Utility::Water,
                site: None,
                price: 7.50,
                periods: Vec::new(),
                source: "Water Supplies Department trade water HK$4.58/m³ (unchanged since \
                         February 1995) plus Drainage Services Department sewage charge \
                         HK$2.92/m³ (from 1 April 2017)"
                    .into(),
            },
        ]
    };
    let water_gas_source = "water: Water Supplies Department 0.621 kWh/m³ (Annual Report \
         2021/22) plus Drainage Services Department 0.2409 kWh/m³ of sewage, times the grid \
         factor, as the EPD/EMSD Guidelines for buildings (2010) do; gas (Towngas): 2.5529 kg \
         CO2e per unit of 48 MJ burnt (EPD/EMSD Guidelines, HKEX ESG guidance) plus 0.588 kg \
         per unit produced (Towngas Sustainability Report 2021), at 17.27 MJ/m³ (Towngas).";
    let factors = |grid: f64, year: i32, electricity: &str| EmissionFactors {
        electricity_kg_per_kwh: grid,
        water_kg_per_m3: ((0.621 + 0.2409) * grid * 1000.0_f64).round() / 1000.0,
        gas_kg_per_m3: 1.130,
        year: Some(year),
        source: format!("electricity: {electricity}; {water_gas_source}"),
    };
    let clp_tariff = Tariff {
        utility: Utility::Electricity,
        site: None,
        price: 1.406,
        periods: Vec::new(),
        source: "CLP Power average net tariff from 1 January 2026: basic 101.2 + fuel cost \
                 adjustment 39.4 HK cents/kWh (CLP tariff announcement, November 2025)"
            .into(),
    };
    let hke_tariff = Tariff {
        utility: Utility::Electricity,
        site: None,
        price: 1.633,
        periods: Vec::new(),
        source: "HK Electric average net tariff from 1 January 2026: 163.3 HK cents/kWh, basic \
                 127.9 cents (Environment and Ecology Bureau announcement, 18 November 2025)"
            .into(),
    };
    vec![
        Supplier {
            id: "clp".into(),
            name: "CLP Power Hong Kong".into(),
            currency: "HKD".into(),
            tariffs: [vec![clp_tariff], water_gas()].concat(),
            emission_factors: factors(
                0.39,
                2023,
                "CLP Power Hong Kong, carbon emissions intensity of electricity sold 2023, 0.39 \
                 kg CO2e/kWh (CLP Sustainability Report 2023)",
            ),
        },
        Supplier {
            id: "hk-electric".into(),
            name: "HK Electric".into(),
            currency: "HKD".into(),
            tariffs: [vec![hke_tariff], water_gas()].concat(),
            emission_factors: factors(
                0.81,
                2019,
                "HK Electric, CO2e per unit of electricity sold 2019, 0.81 kg/kWh (HK Electric \
                 Investments Sustainability Report 2019, p. 73); replace it with the latest \
                 report's",
            ),
        },
    ]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavingsTarget {
    pub purpose: crate::device::Purpose,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    /// Fraction saved (0.35 for 35 %).
    pub saving: f64,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        use crate::device::{Purpose, Utility};
        let target = |purpose, area: Option<&str>, saving| SavingsTarget {
            purpose,
            area: area.map(str::to_owned),
            saving,
        };
        let example = "illustrative mainland China commercial tariff (CNY); set your utility's";
        let tariffs = vec![
            Tariff {
                utility: Utility::Electricity,
                site: None,
                price: 0.62,
                periods: vec![TouPeriod {
                    name: "peak".into(),
                    from_hour: 8,
                    to_hour: 22,
                    price: 0.98,
                    weekdays_only: false,
                }],
                source: example.into(),
            },
            Tariff {
                utility: Utility::Water,
                site: None,
                price: 4.2,
                periods: Vec::new(),
                source: example.into(),
            },
            Tariff {
                utility: Utility::Gas,
                site: None,
                price: 3.5,
                periods: Vec::new(),
                source: example.into(),
            },
        ];
        EnergyConfig {
            currency: "CNY".into(),
            tariffs,
            emission_factors: EmissionFactors::default(),
            // The owners' figures (DOMAIN.md): lighting 35 % overall, garage
            // 45 %, corridors 30 %; water 25 %; lifts 30 %.
            targets: vec![
                target(Purpose::PublicLighting, None, 0.35),
                target(Purpose::PublicLighting, Some("garage"), 0.45),
                target(Purpose::PublicLighting, Some("corridor"), 0.30),
                target(Purpose::DomesticWater, None, 0.25),
                target(Purpose::Irrigation, None, 0.25),
                target(Purpose::Lifts, None, 0.30),
            ],
            night_from_hour: 1,
            night_to_hour: 5,
            auto_report: true,
            sites: Vec::new(),
            suppliers: hong_kong_suppliers(),
            report: ReportSettings::default(),
        }
    }
}

/// A site names an electricity supplier the configuration does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "site `{site}` names electricity supplier `{supplier}`, which [[energy.supplier]] does not \
     define (defined: {defined})"
)]
pub struct UnknownSupplier {
    pub site: String,
    pub supplier: String,
    pub defined: String,
}

impl EnergyConfig {
    /// The configuration as it applies to one site: with the registry's
    /// electricity supplier (if any) resolved into the site's currency,
    /// emission factors and tariffs. What the configuration sets for the
    /// site itself (`[[energy.site]]`, a tariff with `site = ...`) wins.
    pub fn for_site(
        &self,
        site: &str,
        supplier: Option<&str>,
    ) -> Result<EnergyConfig, UnknownSupplier> {
        let mut out = self.clone();
        let Some(id) = supplier else { return Ok(out) };
        let Some(s) = self.suppliers.iter().find(|s| s.id == id) else {
            return Err(UnknownSupplier {
                site: site.to_owned(),
                supplier: id.to_owned(),
                defined: self
                    .suppliers
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if !out.sites.iter().any(|e| e.site == site) {
            out.sites.push(SiteEnergy {
                site: site.to_owned(),
                currency: s.currency.clone(),
                emission_factors: Some(s.emission_factors.clone()),
            });
        }
        for t in &s.tariffs {
            let own = out
                .tariffs
                .iter()
                .any(|o| o.utility == t.utility && o.site.as_deref() == Some(site));
            if !own {
                out.tariffs.push(Tariff {
                    site: Some(site.to_owned()),
                    ..t.clone()
                });
            }
        }
        Ok(out)
    }

    /// The currency a site's costs are in: its own, else the general one.
    pub fn currency_of(&self, site: &str) -> &str {
        self.sites
            .iter()
            .find(|s| s.site == site)
            .map_or(self.currency.as_str(), |s| s.currency.as_str())
    }

    /// A site's emission factors: its own, else the general ones.
    pub fn emission_factors_of(&self, site: &str) -> &EmissionFactors {
        self.sites
            .iter()
            .find(|s| s.site == site)
            .and_then(|s| s.emission_factors.as_ref())
            .unwrap_or(&self.emission_factors)
    }

    /// The tariff for a utility at a site: the site's own, else the general
    /// one, but only where the site's currency is the general currency (a
    /// Hong Kong site is never priced at a tariff in yuan).
    pub fn tariff(&self, utility: crate::device::Utility, site: &str) -> Option<&Tariff> {
        let general_applies = self.currency_of(site) == self.currency;
        self.tariffs
            .iter()
            .find(|t| t.utility == utility && t.site.as_deref() == Some(site))
            .or_else(|| {
                self.tariffs
                    .iter()
                    .find(|t| general_applies && t.utility == utility && t.site.is_none())
            })
    }

    /// The default target for a meter group of this purpose and area.
    pub fn target(&self, purpose: crate::device::Purpose, area: Option<&str>) -> Option<f64> {
        let specific = area.and_then(|a| {
            self.targets
                .iter()
                .find(|t| t.purpose == purpose && t.area.as_deref() == Some(a))
        });
        specific
            .or_else(|| {
                self.targets
                    .iter()
                    .find(|t| t.purpose == purpose && t.area.is_none())
            })
            .map(|t| t.saving)
    }
}
