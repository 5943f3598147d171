//! The watcher `estatemon api` runs beside its routes: every 5 s it opens
//! an alert for each heartbeat monitor silent past its interval (the
//! analytics job's own included) and runs the pager (plan and deliver, as
//! every analytics process does). So when the analytics job is dead, its
//! missed heartbeat is still an alert, and that alert still pages: the
//! API process watches the analytics process. (Alertmanager and webhook
//! copies wait for analytics' outbox; the pages do not.)

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use estatemon_domain::config::Config;

use super::{deliver, intake, plan, roster::Roster};

/// Runs until `stop` resolves.
pub async fn run(config: Config, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let receivers = config.alerts.receivers();
    let mut pager: Option<(deliver::Pager, Option<std::time::SystemTime>)> = None;
    let mut client: Option<tokio_postgres::Client> = None;
    let mut declared = false;
    loop {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            declared = false;
            client = estatemon_domain::schema::connect(&config.database)
                .await
                .ok();
        }
        if let Some(c) = client.as_mut() {
            if !declared {
                match intake::declare(&*c, &config.oncall.heartbeats).await {
                    Ok(()) => declared = true,
                    Err(e) => tracing::warn!(error = %e, "declaring heartbeat monitors failed"),
                }
            }
            if let Err(e) = pass(c, &receivers, &config, &mut pager).await {
                tracing::warn!(error = %format!("{e:#}"), "on-call watch pass failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = &mut stop => return,
        }
    }
}

async fn pass(
    client: &mut tokio_postgres::Client,
    receivers: &[String],
    config: &Config,
    pager: &mut Option<(deliver::Pager, Option<std::time::SystemTime>)>,
) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    let opened = intake::check_heartbeats(&tx, Utc::now(), receivers).await?;
    tx.commit().await?;
    if opened > 0 {
        tracing::warn!(opened, "heartbeat monitors went quiet: alerts opened");
    }
    let Some(path) = config.oncall.roster.as_ref() else {
        return Ok(());
    };
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if pager.as_ref().is_none_or(|(_, seen)| *seen != modified) {
        match Roster::load(path) {
            Ok(r) => *pager = Some((deliver::Pager::new(config, Arc::new(r)), modified)),
            Err(e) => {
                tracing::error!(error = %e, "the on-call roster does not load; keeping the previous one")
            }
        }
    }
    if let Some((p, _)) = pager.as_ref() {
        plan::plan(&*client, &p.roster, Utc::now()).await?;
        while deliver::deliver_due(client, p).await?.sent > 0 {}
    }
    Ok(())
}
