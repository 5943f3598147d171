//! `estatemon api` (serve the HTTP API) and `estatemon token` (API tokens).

use estatemon_api::auth::Role;
use estatemon_domain::config::Config;
use estatemon_domain::schema;

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once (only its hash is stored).
    Create {
        /// A name people recognise in the audit log (e.g. grafana, alice).
        #[arg(long)]
        name: String,
        /// viewer (read), operator (also acknowledge and silence), admin
        /// (also devices, rules, retrofits and tokens).
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// List tokens (names, roles, dates; never the tokens).
    List,
    /// Revoke a token by name (effective within seconds).
    Revoke { name: String },
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let (client, migration) = schema::prepare(&config.database, &config.storage).await?;
    drop(client);
    tracing::info!(
        mode = migration.mode.as_str(),
        "storage mode: {}",
        migration.reason
    );
    estatemon_api::serve(config, estatemon_analytics::job::shutdown_signal()).await
}

pub async fn token(config: Config, command: TokenCommand) -> anyhow::Result<()> {
    let (client, _) = schema::prepare(&config.database, &config.storage).await?;
    let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    match command {
        TokenCommand::Create { name, role } => {
            let role = Role::parse(&role).expect("clap checked the role");
            let token = estatemon_api::create_token(&client, &name, role, &format!("cli:{by}"))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!("token `{name}` ({}) created; it is shown only now:", role.as_str());
            println!("{token}");
        }
        TokenCommand::List => {
            for r in client
                .query(
                    "SELECT name, role, created_at, created_by, revoked_at FROM api_tokens ORDER BY name",
                    &[],
                )
                .await?
            {
                let revoked: Option<chrono::DateTime<chrono::Utc>> = r.get(4);
                println!(
                    "{:<24} {:<8} created {} by {}{}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, chrono::DateTime<chrono::Utc>>(2).format("%Y-%m-%d %H:%M UTC"),
                    r.get::<_, String>(3),
                    revoked
                        .map(|t| format!(", revoked {}", t.format("%Y-%m-%d %H:%M UTC")))
                        .unwrap_or_default()
                );
            }
        }
        TokenCommand::Revoke { name } => {
            let n = client
                .execute(
                    "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
                    &[&name],
                )
                .await?;
            anyhow::ensure!(n == 1, "no active token named `{name}`");
            println!("token `{name}` revoked");
        }
    }
    Ok(())
}
