//! `estatemon mapping test`: what a payload gives through a mapping (a
//! file, a shipped profile, or the configured ones, and Home Assistant
//! discovery configs), without a broker or a database: the same routing
//! ingest does (`domain::mapping::route`).

use std::path::PathBuf;

use anyhow::Context;
use chrono::Utc;
use estatemon_domain::config::Config;
use estatemon_domain::mapping::{self, Mapping, MappingFile};

#[derive(clap::Subcommand)]
pub enum MappingCommand {
    /// Apply mappings to one message and print the readings it gives, or
    /// why it gives none (exit 1).
    Test(TestArgs),
    /// Print a shipped profile (tasmota, shelly, zigbee2mqtt) as
    /// `[[ingest.mapping]]` tables to paste into the configuration (or,
    /// with --file, as a mapping file for `mapping test --mapping`).
    Show {
        /// The profile's name.
        profile: String,
        /// A mapping file's form (`[[mapping]]`) instead of the
        /// configuration's (`[[ingest.mapping]]`).
        #[arg(long)]
        file: bool,
        /// The site of the profile's devices, written into each mapping.
        #[arg(long)]
        site: Option<String>,
        /// The zone of the devices' naive local times, written into each
        /// mapping that reads them.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
    },
}

#[derive(clap::Args)]
pub struct TestArgs {
    /// A mapping file (`[[mapping]]` tables); default: the configured
    /// `[[ingest.mapping]]` and `[[ingest.profile]]`.
    #[arg(long, value_name = "FILE", conflicts_with = "profile")]
    mapping: Option<PathBuf>,
    /// A shipped profile: tasmota, shelly, zigbee2mqtt.
    #[arg(long)]
    profile: Option<String>,
    /// The site for a profile's devices.
    #[arg(long)]
    site: Option<String>,
    /// The zone of naive local times (Tasmota).
    #[arg(long, default_value = "UTC")]
    time_zone: String,
    /// The MQTT topic the message came on.
    #[arg(long)]
    topic: String,
    /// The payload, or @FILE to read it from a file.
    #[arg(long)]
    payload: String,
    /// The message came from the broker's retained store (a state
    /// re-delivered at subscription).
    #[arg(long)]
    retained: bool,
    /// A Home Assistant discovery config seen before the message:
    /// TOPIC=PAYLOAD or TOPIC=@FILE (repeatable; the prefix is
    /// `ingest.homeassistant.prefix`).
    #[arg(long = "discovery", value_name = "TOPIC=PAYLOAD")]
    discovery: Vec<String>,
}

pub fn run(config: &Config, command: MappingCommand) -> anyhow::Result<()> {
    match command {
        MappingCommand::Show {
            profile,
            file,
            site,
            time_zone,
        } => {
            let (_, text) = mapping::PROFILES
                .iter()
                .find(|(n, _)| *n == profile)
                .ok_or_else(|| {
                    crate::import::ImportRefused(format!(
                        "`{profile}`: the shipped profiles are tasmota, shelly, zigbee2mqtt"
                    ))
                })?;
            let text = with_settings(text, site.as_deref(), &time_zone);
            if file {
                print!("{text}");
            } else {
                print!("{}", as_config(&text));
            }
            Ok(())
        }
        MappingCommand::Test(args) => test(config, args),
    }
}

fn test(config: &Config, args: TestArgs) -> anyhow::Result<()> {
    let mappings: Vec<Mapping> = if let Some(path) = &args.mapping {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: MappingFile = toml::from_str(&text)
            .map_err(|e| crate::import::ImportRefused(format!("{}: {e}", path.display())))?;
        for m in &file.mappings {
            m.check().map_err(|(field, message)| {
                crate::import::ImportRefused(format!(
                    "{}: mapping `{}`, field {field}: {message}",
                    path.display(),
                    m.name
                ))
            })?;
        }
        file.mappings
    } else if let Some(name) = &args.profile {
        mapping::default_profile(name, args.site.as_deref(), Some(&args.time_zone)).ok_or_else(
            || {
                crate::import::ImportRefused(format!(
                    "`{name}`: the shipped profiles are tasmota, shelly, zigbee2mqtt"
                ))
            },
        )?
    } else {
        config.ingest.all_mappings()
    };
    let read = |text: &str| -> anyhow::Result<Vec<u8>> {
        Ok(match text.strip_prefix('@') {
            Some(file) => std::fs::read(file).with_context(|| format!("reading {file}"))?,
            None => text.as_bytes().to_vec(),
        })
    };
    let mut set = mapping::MappingSet::new(mappings);
    let ha = &config.ingest.homeassistant;
    for d in &args.discovery {
        let (topic, payload) = d.split_once('=').ok_or_else(|| {
            crate::import::ImportRefused(format!("--discovery `{d}`: TOPIC=PAYLOAD or TOPIC=@FILE"))
        })?;
        use mapping::homeassistant::{discover, Discovery};
        match discover(&ha.prefix, topic, &read(payload)?, ha.site.as_deref()) {
            Ok(Discovery::Sensors {
                replaces,
                mappings: found,
                skipped,
            }) => {
                // As ingest does (`MappingSet::discovered`).
                let done = set.discovered(&replaces, found);
                for (entity, reader) in &done.read_elsewhere {
                    println!(
                        "discovery `{entity}`: not read, its state topic is read by mapping `{reader}`"
                    );
                }
                for (name, topic, _) in &done.added {
                    println!("discovery `{name}`: state topic {topic}");
                }
                for (component, why) in skipped {
                    println!("discovery `{replaces}`: component `{component}` skipped: {why}");
                }
            }
            Ok(Discovery::Removed(name)) => {
                set.removed(&name);
                println!("discovery `{name}`: removed");
            }
            Ok(Discovery::Ignored) => println!("discovery {topic}: not a reading, ignored"),
            Err(e) => {
                anyhow::bail!("discovery {topic}: {e} (ingest keeps an invalid_field dead letter)")
            }
        }
    }
    let payload = read(&args.payload)?;
    print_routed(
        set.route(&args.topic, &payload, Utc::now(), args.retained),
        &args.topic,
        set.mappings().len(),
    )
}

/// Prints what ingest would do; `Err` (exit 1) when the message would
/// store nothing or leave a dead letter for a field it could not read.
fn print_routed(routed: mapping::Routed, topic: &str, tried: usize) -> anyhow::Result<()> {
    use mapping::Routed;
    match routed {
        Routed::NoMapping => anyhow::bail!(
            "no mapping fits topic `{topic}` ({tried} mapping(s) tried): ingest would keep \
             it as an unknown_topic dead letter"
        ),
        Routed::Availability(Ok((device, _, online))) => {
            println!(
                "availability: device {device} is {}",
                if online { "online" } else { "offline" }
            );
            Ok(())
        }
        Routed::Availability(Err(e)) => anyhow::bail!("{e} (an invalid_field dead letter)"),
        Routed::Ignored(m) => anyhow::bail!(
            "mapping `{m}` knows topic `{topic}` carries no readings: ingest counts it \
             (estatemon_ingest_mapping_outcomes_total{{outcome=\"ignored\"}})"
        ),
        Routed::Mapped {
            results,
            errors,
            unmet,
            retained_without_time,
        } => {
            let mut stored = 0;
            for out in &results {
                println!(
                    "mapping `{}`: device {}{} → {} reading(s)",
                    out.mapping,
                    out.device_id,
                    out.site
                        .as_deref()
                        .map(|s| format!(" (site {s})"))
                        .unwrap_or_default(),
                    out.readings.len()
                );
                for r in &out.readings {
                    println!(
                        "  {}  {}  {} = {} {}",
                        r.ts.to_rfc3339(),
                        r.device_id,
                        r.metric,
                        r.value,
                        r.metric.unit()
                    );
                }
                stored += out.readings.len();
                for p in &out.problems {
                    println!("  problem: {p} (a dead letter; the other fields are stored)");
                }
                if let Some(why) = &out.clock_unsynced {
                    println!("  clock: {why} (a clock_unsynced dead letter)");
                }
            }
            for m in &retained_without_time {
                println!(
                    "mapping `{m}`: a retained message without a time of its own is not \
                     stored again (counted as retained_without_time)"
                );
            }
            for e in &errors {
                println!("{e} (a dead letter)");
            }
            if results.is_empty() && errors.is_empty() {
                anyhow::bail!(
                    "the topic fits mapping(s) {} but the payload meets none's `when`: \
                     an unknown_topic dead letter",
                    unmet.join(", ")
                );
            }
            let problems: Vec<String> = results
                .iter()
                .flat_map(|r| r.problems.iter().map(|p| p.to_string()))
                .chain(errors.iter().map(|e| e.to_string()))
                .collect();
            if stored == 0 && problems.is_empty() {
                anyhow::bail!("no reading stored from this message");
            }
            if !problems.is_empty() {
                // Exit 1: ingest keeps dead letters for these.
                anyhow::bail!(
                    "{} reading(s) stored; not read (dead letters): {}",
                    stored,
                    problems.join("; ")
                );
            }
            Ok(())
        }
    }
}

/// A profile's text with the site and time zone written into each mapping
/// (after its name, and after a `local` or `auto` time format), as
/// `[[ingest.profile]]` would set them.
fn with_settings(text: &str, site: Option<&str>, time_zone: &str) -> String {
    let mut out = String::new();
    for l in text.lines() {
        out.push_str(l);
        out.push('\n');
        if l.starts_with("name = ") {
            if let Some(s) = site {
                out.push_str(&format!("site = {s:?}\n"));
            }
        }
        if l == "time_format = \"local\"" || l == "time_format = \"auto\"" {
            out.push_str(&format!("time_zone = {time_zone:?}\n"));
        }
    }
    out
}

/// A profile's mapping file as `[[ingest.mapping]]` tables for the
/// configuration file.
fn as_config(text: &str) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            if let Some(rest) = t.strip_prefix("[[mapping") {
                format!("{indent}[[ingest.mapping{rest}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
