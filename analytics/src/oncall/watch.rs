//! The watcher `estatemon api` runs beside its routes: every 5 s it opens
//! an alert for each heartbeat monitor silent past its interval (the
//! analytics job's own included) and runs the pager (plan and deliver, as
//! every analytics process does). So when the analytics job is dead, its
//! missed heartbeat is still an alert, and that alert still pages: the
//! API process watches the analytics process. (Alertmanager and webhook
//! copies wait for analytics' outbox; the pages do not.)

use std::time::Duration;

use chrono::Utc;
use estatemon_domain::config::Config;

use super::source::Source;
use super::{deliver, intake, plan};

/// The pager of one process: the roster's source and the pager built
/// from it, rebuilt when the roster changes.
pub struct Paging {
    source: Source,
    pager: Option<deliver::Pager>,
}

/// What one paging pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassReport {
    pub planned: plan::Planned,
    pub delivered: deliver::Pass,
}

impl Paging {
    pub fn new(config: &Config) -> Paging {
        Paging {
            source: Source::new(config.oncall.roster.clone()),
            pager: None,
        }
    }

    /// Plans what came due and sends it; None without a roster.
    pub async fn pass(
        &mut self,
        client: &mut tokio_postgres::Client,
        config: &Config,
    ) -> anyhow::Result<Option<PassReport>> {
        let (current, changed) = self.source.current(&*client).await?;
        if changed {
            self.pager = current.map(|(roster, _)| deliver::Pager::new(config, roster));
        }
        let Some(pager) = self.pager.as_ref() else {
            return Ok(None);
        };
        let mut report = PassReport {
            planned: plan::plan(&*client, &pager.roster, Utc::now()).await?,
            ..PassReport::default()
        };
        loop {
            let pass = deliver::deliver_due(client, pager).await?;
            report.delivered.sent += pass.sent;
            report.delivered.failed += pass.failed;
            report.delivered.cancelled += pass.cancelled;
            report.delivered.held += pass.held;
            report.delivered.fell_through += pass.fell_through;
            if pass.sent + pass.failed + pass.cancelled + pass.held < deliver::PASS_LIMIT {
                return Ok(Some(report));
            }
        }
    }
}

/// Runs until `stop` resolves.
pub async fn run(config: Config, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let receivers = config.alerts.receivers();
    let mut paging = Paging::new(&config);
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
                match intake::declare(&*c, &config.oncall.heartbeats, &receivers).await {
                    Ok(()) => declared = true,
                    Err(e) => tracing::warn!(error = %e, "declaring heartbeat monitors failed"),
                }
            }
            let result = async {
                let tx = c.transaction().await?;
                let opened = intake::check_heartbeats(&tx, Utc::now(), &receivers).await?;
                tx.commit().await?;
                if opened > 0 {
                    tracing::warn!(opened, "heartbeat monitors went quiet: alerts opened");
                }
                paging.pass(c, &config).await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %format!("{e:#}"), "on-call watch pass failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = &mut stop => return,
        }
    }
}
