//! `estatemon mapping test`: what a payload gives through a mapping (a
//! file, a shipped profile, or the configured ones), without a broker or a
//! database.

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
    /// Print a shipped profile (tasmota, shelly, zigbee2mqtt) as a mapping
    /// file to start from.
    Show {
        /// The profile's name.
        profile: String,
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
}

pub fn run(config: &Config, command: MappingCommand) -> anyhow::Result<()> {
    match command {
        MappingCommand::Show { profile } => {
            let (_, text) = mapping::PROFILES
                .iter()
                .find(|(n, _)| *n == profile)
                .ok_or_else(|| {
                    crate::import::ImportRefused(format!(
                        "`{profile}`: the shipped profiles are tasmota, shelly, zigbee2mqtt"
                    ))
                })?;
            print!("{text}");
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
        mapping::profile(name, args.site.as_deref(), Some(&args.time_zone)).ok_or_else(|| {
            crate::import::ImportRefused(format!(
                "`{name}`: the shipped profiles are tasmota, shelly, zigbee2mqtt"
            ))
        })?
    } else {
        config.ingest.all_mappings()
    };
    let payload = match args.payload.strip_prefix('@') {
        Some(file) => std::fs::read(file).with_context(|| format!("reading {file}"))?,
        None => args.payload.clone().into_bytes(),
    };
    let now = Utc::now();
    for m in &mappings {
        match m.apply(&args.topic, &payload, now) {
            Ok(None) => continue,
            Ok(Some(out)) => {
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
                return Ok(());
            }
            Err(e) => anyhow::bail!("{e}"),
        }
    }
    anyhow::bail!(
        "no mapping fits topic `{}` and this payload ({} mapping(s) tried): ingest would keep \
         it as an unknown_topic dead letter",
        args.topic,
        mappings.len()
    )
}
