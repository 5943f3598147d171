//! Alert rule sets stored in the database (`rule_sets`), written by admins
//! through the API and read by ingest and analytics.
//!
//! Which rules a process runs: the newest stored set, unless that row is a
//! reset or there is none; then the process's `alerts.rules_file`, else the
//! shipped rules. Running processes ask for the newest id (a primary-key
//! lookup) every few seconds (ingest) or before each evaluation (analytics)
//! and load a set when it changed; a set that fails to load leaves the
//! running rules in place.

use std::fmt;
use std::path::Path;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use crate::config::ConfigError;
use crate::rules::RuleSet;

/// A stored rule set.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: i64,
    pub source: String,
    pub rules: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub reset: bool,
    /// Emergencies the admin who stored this set chose to leave without a
    /// rule (see [`crate::rules::Emergency`]); empty normally.
    pub waived_emergencies: Vec<String>,
}

/// Where the running rules came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Rule set `id` from the API.
    Database { id: i64, by: String },
    /// The process's `alerts.rules_file`.
    File(std::path::PathBuf),
    /// The rules shipped with estatemon.
    Shipped,
}

impl Origin {
    /// The stored set's id, if the rules came from the database.
    pub fn id(&self) -> Option<i64> {
        match self {
            Origin::Database { id, .. } => Some(*id),
            _ => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Database { id, by } => write!(f, "rule set {id} in the database (by {by})"),
            Origin::File(p) => write!(f, "rules file {}", p.display()),
            Origin::Shipped => write!(f, "the shipped rules"),
        }
    }
}

/// The newest stored set (a reset included), if any.
pub async fn latest(client: &impl GenericClient) -> Result<Option<Stored>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT id, source, rules, created_at, created_by, reset, waived_emergencies
               FROM rule_sets ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| Stored {
            id: r.get(0),
            source: r.get(1),
            rules: r.get(2),
            created_at: r.get(3),
            created_by: r.get(4),
            reset: r.get(5),
            waived_emergencies: r.get(6),
        }))
}

/// The newest stored set's id (0 when none): a cheap "did it change?".
pub async fn latest_id(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT coalesce(max(id), 0) FROM rule_sets", &[])
        .await?
        .get(0))
}

/// Why a rule set was not stored.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not a valid rules file: the line and the field.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Valid, but it would stop paging for an emergency and no waiver was
    /// given.
    #[error("{0}")]
    EmergenciesMissing(String),
}

/// Validates `source` and stores it as the active set; returns its id and
/// the parsed rules. An invalid set is refused with the line and field; a
/// set without a rule for one of the emergencies (entrapment, forced door,
/// fire-main pressure) is refused unless `waive_emergencies` is true, and
/// then the waived ones are stored with it.
pub async fn put(
    client: &impl GenericClient,
    source: &str,
    by: &str,
    waive_emergencies: bool,
) -> Result<Result<(i64, RuleSet), Refused>, tokio_postgres::Error> {
    let set = match RuleSet::parse(source, Path::new("rules")) {
        Ok(set) => set,
        Err(e) => return Ok(Err(e.into())),
    };
    let missing: Vec<String> = set
        .missing_emergencies()
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect();
    if !missing.is_empty() && !waive_emergencies {
        let message = set.missing_emergencies_message().unwrap_or_default();
        return Ok(Err(Refused::EmergenciesMissing(message)));
    }
    let n = set.rules.len() as i32;
    let id: i64 = client
        .query_one(
            "INSERT INTO rule_sets (source, rules, created_by, waived_emergencies)
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&source, &n, &by, &missing],
        )
        .await?
        .get(0);
    Ok(Ok((id, set)))
}

/// Stores a reset: processes go back to their rules file or the shipped
/// rules.
pub async fn reset(client: &impl GenericClient, by: &str) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "INSERT INTO rule_sets (source, rules, created_by, reset) VALUES ('', 0, $1, true)
             RETURNING id",
            &[&by],
        )
        .await?
        .get(0))
}

/// Why the active rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading rule sets: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// The rules this process should run, and where they came from.
pub async fn active(
    client: &impl GenericClient,
    file: Option<&Path>,
) -> Result<(RuleSet, Origin), LoadError> {
    if let Some(stored) = latest(client).await?.filter(|s| !s.reset) {
        let set = RuleSet::parse(
            &stored.source,
            Path::new(&format!("rule set {}", stored.id)),
        )?;
        return Ok((
            set,
            Origin::Database {
                id: stored.id,
                by: stored.created_by,
            },
        ));
    }
    let set = RuleSet::load(file)?;
    let origin = match file {
        Some(p) => Origin::File(p.to_owned()),
        None => Origin::Shipped,
    };
    Ok((set, origin))
}
