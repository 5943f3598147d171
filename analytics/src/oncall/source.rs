//! Where the roster comes from: the newest one an admin stored through the
//! API (`oncall_rosters`), else the file `oncall.roster` names. Every
//! process asks [`Source::current`] before a pass; it reloads only when
//! the stored roster or the file changed, and a roster that stops loading
//! keeps the previous one (and says so).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_postgres::GenericClient;

use super::roster::Roster;

/// What the current roster was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `oncall_rosters` row `id`, stored by `by`.
    Stored {
        id: i64,
        by: String,
    },
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Stored { id, by } => write!(f, "stored roster #{id} (by {by})"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The newest stored roster's text: (id, text, by).
pub async fn stored(
    client: &impl GenericClient,
) -> Result<Option<(i64, String, String)>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT id, text, created_by FROM oncall_rosters ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// The roster a process pages with, reloaded on change.
#[derive(Default)]
pub struct Source {
    file: Option<PathBuf>,
    /// (stored id, file mtime) last loaded.
    seen: Option<(Option<i64>, Option<std::time::SystemTime>)>,
    current: Option<(Arc<Roster>, Origin)>,
}

impl Source {
    pub fn new(file: Option<PathBuf>) -> Source {
        Source {
            file,
            ..Source::default()
        }
    }

    /// The current roster (None: neither stored nor a file), and whether
    /// it changed since the last call.
    pub async fn current(
        &mut self,
        client: &impl GenericClient,
    ) -> Result<(Option<(Arc<Roster>, Origin)>, bool), tokio_postgres::Error> {
        let newest: Option<i64> = client
            .query_opt("SELECT max(id) FROM oncall_rosters", &[])
            .await?
            .and_then(|r| r.get(0));
        let modified = self
            .file
            .as_ref()
            .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let key = (newest, modified);
        if self.seen == Some(key) {
            return Ok((self.current.clone(), false));
        }
        // (Marked seen once read: a database error reading it is tried
        // again on the next pass.)
        let loaded = match newest {
            Some(_) => stored(client).await?.map(|(id, text, by)| {
                Roster::parse(&text, std::path::Path::new(&format!("stored roster #{id}")))
                    .map(|r| (r, Origin::Stored { id, by }))
            }),
            None => self
                .file
                .as_ref()
                .map(|p| Roster::load(p).map(|r| (r, Origin::File(p.clone())))),
        };
        self.seen = Some(key);
        match loaded {
            None => self.current = None,
            Some(Ok((roster, origin))) => {
                tracing::info!(from = %origin, people = roster.people.len(), teams = roster.teams.len(),
                    policies = roster.policies.len(), "on-call roster loaded");
                self.current = Some((Arc::new(roster), origin));
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "the on-call roster does not load; keeping the previous one")
            }
        }
        Ok((self.current.clone(), true))
    }
}
