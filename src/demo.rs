//! `estatemon demo`: the quick start. Broker (existing or embedded), database
//! (created and migrated), the default site's registry, the ingestor, the
//! analytics job (alert rules), the API (with a viewer token printed) and
//! the simulator, in one process, with a status line every few seconds.

use std::time::Duration;

use clap::Args;
use estatemon_domain::config::Config;
use estatemon_domain::schema;
use estatemon_ingest::Ingestor;

use crate::broker::{self, BrokerSource};

#[derive(Args)]
pub struct DemoArgs {
    /// Simulated seconds per real second (60: a simulated minute per second).
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Stop after this many seconds (runs until Ctrl-C otherwise).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<u64>,
    /// Do not run the simulator (ingest whatever devices publish).
    #[arg(long)]
    no_simulator: bool,
}

pub async fn run(mut config: Config, args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.speed > 0.0, "--speed must be positive");
    config.simulate.speed = args.speed;
    let source = broker::ensure(&config.mqtt).await?;
    let broker_note = match source {
        BrokerSource::Existing => "existing broker",
        #[cfg(feature = "embedded-broker")]
        BrokerSource::Embedded => "embedded broker",
    };

    let mut spec = estatemon_simulators::scenario::SiteSpec::load(
        config.simulate.site_file.as_deref(),
        None,
        false,
    )?;
    if !args.no_simulator {
        // Ingest reads the simulated devices in whatever format they speak.
        estatemon_simulators::formats::receive(
            config.simulate.format,
            &mut spec.registry,
            &mut config.ingest,
        );
    }
    let mut client = crate::prepare_database(&config).await?;
    schema::registry::upsert(&mut client, &spec.registry).await?;

    let ingestor = Ingestor::start(config.clone()).await?;
    // The analytics job evaluates the shipped rules and keeps the alerts in
    // the database (and delivers them to any receivers configured).
    let analytics = tokio::spawn({
        let config = config.clone();
        async move {
            if let Err(e) = estatemon_analytics::run(config).await {
                tracing::error!(error = %format!("{e:#}"), "analytics stopped");
            }
        }
    });
    // The API too, so the quick start shows every part: a viewer token
    // made for this run, printed once.
    let (api_stop_tx, mut api_stop_rx) = tokio::sync::watch::channel(false);
    let api = match tokio::net::TcpListener::bind(&config.api.listen).await {
        Ok(listener) => {
            let addr = listener.local_addr()?;
            let name = format!("demo-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"));
            let token = estatemon_api::create_token(
                &client,
                &name,
                estatemon_api::auth::Role::Viewer,
                "demo",
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo token: {e}"))?;
            let config = config.clone();
            let task = tokio::spawn(async move {
                let stop = async move {
                    let _ = api_stop_rx.wait_for(|s| *s).await;
                };
                if let Err(e) = estatemon_api::serve_on(listener, config, stop).await {
                    tracing::error!(error = %format!("{e:#}"), "API stopped");
                }
            });
            Some((addr, name, token, task))
        }
        Err(e) => {
            tracing::warn!(listen = %config.api.listen, error = %e,
                "the API is not started (set ESTATEMON_API_LISTEN to a free address)");
            None
        }
    };
    let metrics_url = format!("http://{}/metrics", ingestor.http_addr);
    println!(
        "estatemon demo\n  broker:   {} ({broker_note})\n  database: {} (storage mode: {} — {})\n  metrics:  {metrics_url}\n  health:   http://{}/health\n  alerts:   http://{}/health (analytics), `estatemon alerts list`\nPress Ctrl-C to stop.",
        estatemon_domain::config::redact_url(&config.mqtt.url),
        estatemon_domain::config::redact_url(&config.database.url),
        ingestor.migration.mode.as_str(),
        ingestor.migration.reason,
        ingestor.http_addr,
        config.alerts.listen,
    );
    if let Some((addr, name, token, _)) = &api {
        println!(
            "  api:      http://{addr}/api/v1/health (OpenAPI: http://{addr}/api/v1/openapi.json)\n  token:    {token} (viewer `{name}`, shown once; `estatemon token create` for more)\n  try:      curl -H \"Authorization: Bearer {token}\" \"http://{addr}/api/v1/alerts?limit=5\"\n            curl -H \"Authorization: Bearer {token}\" \"http://{addr}/api/v1/devices?site=harbour-view\""
        );
    }

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        estatemon_ingest::pipeline::wait_for_signal().await;
        let _ = signal_tx.send(true);
    });
    let simulator = (!args.no_simulator).then(|| {
        let model = estatemon_simulators::model::SiteModel::with_scenario(
            &spec.registry,
            Some(&spec.site),
            spec.scenario.clone(),
            config.simulate.seed,
            config.simulate.register_interval_s,
        );
        let config = config.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            match model {
                Ok(model) => {
                    let (_, truth) = estatemon_simulators::live::run(
                        model,
                        &config.mqtt,
                        &config.simulate,
                        None,
                        stop,
                    )
                    .await;
                    if let Err(e) = crate::simulate::write_truth(&config, &truth) {
                        tracing::warn!(error = %e, "ground truth not written");
                    }
                }
                Err(e) => tracing::error!(error = %e, "simulator could not start"),
            }
        })
    });

    let deadline = args.duration.map(Duration::from_secs);
    let started = std::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop_rx.changed() => break,
            _ = ticker.tick() => {
                if let Ok(row) = client
                    .query_one(
                        "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events),
                                (SELECT count(*) FROM dead_letters), (SELECT count(DISTINCT device_id) FROM devices),
                                (SELECT count(*) FROM alerts WHERE state <> 'resolved')",
                        &[],
                    )
                    .await
                {
                    let (r, e, d, n, a): (i64, i64, i64, i64, i64) =
                        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
                    println!("stored: {r} readings, {e} events, {d} dead letters; {n} devices; {a} open alerts");
                }
                if deadline.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    if let Some(s) = simulator {
        let _ = s.await;
    }
    analytics.abort();
    let _ = api_stop_tx.send(true);
    if let Some((_, _, _, task)) = api {
        let _ = task.await;
    }
    ingestor.shutdown().await;
    println!("stopped");
    Ok(())
}
