//! A read-only database role for Grafana's PostgreSQL datasource (raw SQL
//! panels over the time series), made by `estatemon db-reader`.
//!
//! The role reads the telemetry and what explains it ([`READABLE`]) and
//! nothing else: not the token hashes, the audit log, the alert outbox or the
//! dead letters (raw payloads, which may hold what pseudonymisation removes).
//! Every session of it is read-only and time-limited, whatever the client
//! asks for. Re-run after an upgrade to cover new relations; running it
//! twice changes nothing.

use tokio_postgres::GenericClient;

use super::SchemaError;

/// Relations the reader may select from.
pub const READABLE: &[&str] = &[
    "sites",
    "buildings",
    "devices",
    "readings",
    "events",
    "readings_hourly",
    "readings_daily",
    "registers_daily",
    "consumption_hourly",
    "alerts",
    "silences",
    "retrofits",
    "reports",
];

/// A valid unquoted PostgreSQL role name of ours: lower-case letters,
/// digits and `_`, not starting with a digit, at most 63 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// What [`grant`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub created: bool,
    pub relations: Vec<String>,
}

/// Creates `role` if needed (LOGIN, with `password` when given), makes its
/// sessions read-only with a statement timeout, and grants SELECT on the
/// [`READABLE`] relations that exist in this database (revoking it on every
/// other relation of the schema).
pub async fn grant(
    client: &impl GenericClient,
    role: &str,
    password: Option<&str>,
    statement_timeout_s: u32,
) -> Result<Granted, SchemaError> {
    if !valid_name(role) {
        return Err(SchemaError::Invalid(format!(
            "role name `{role}`: use lower-case letters, digits and _ (at most 63)"
        )));
    }
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
            .await?;
    }
    if let Some(p) = password {
        // Utility statements take no parameters: quote on the server.
        let sql: String = client
            .query_one(
                "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                &[&role, &p],
            )
            .await?
            .get(0);
        client.batch_execute(&sql).await?;
    }
    let database: String = client
        .query_one("SELECT current_database()", &[])
        .await?
        .get(0);
    client
        .batch_execute(&format!(
            "ALTER ROLE {role} SET default_transaction_read_only = on;
             ALTER ROLE {role} SET statement_timeout = '{statement_timeout_s}s';
             GRANT CONNECT ON DATABASE \"{}\" TO {role};
             GRANT USAGE ON SCHEMA public TO {role};
             REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role};",
            database.replace('"', "\"\"")
        ))
        .await?;
    let present: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relname = ANY($1) ORDER BY 1",
            &[&READABLE],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for relation in &present {
        client
            .batch_execute(&format!("GRANT SELECT ON {relation} TO {role}"))
            .await?;
    }
    Ok(Granted {
        created: !exists,
        relations: present,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        assert!(valid_name("grafana_reader"));
        assert!(!valid_name("Grafana"));
        assert!(!valid_name("1reader"));
        assert!(!valid_name("reader; DROP TABLE readings"));
        assert!(!valid_name(&"r".repeat(64)));
    }
}
