//! Publishing the site model to MQTT in real (or accelerated) time, or
//! backfilling history as fast as the broker takes it.
//!
//! QoS 1; while the broker is away, rumqttc keeps unacknowledged messages
//! and the publish queue fills, which pauses the simulation clock instead of
//! dropping readings. Delivery faults of the scenario (duplicates, late and
//! malformed messages) are applied on the way; both modes end with the
//! run's ground truth.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use estatemon_domain::config::{MqttConfig, SimulateConfig};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::watch;

use crate::delivery::Delivery;
use crate::formats::{Format, Renderer};
use crate::model::{Message, SiteModel};
use crate::truth::GroundTruth;

/// Totals of a live run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub messages: u64,
    pub items: u64,
    pub steps: u64,
}

pub fn client(mqtt: &MqttConfig, client_id: &str) -> (AsyncClient, rumqttc::v5::EventLoop) {
    let endpoint = mqtt.endpoint().expect("validated by config loading");
    let mut opts = MqttOptions::new(client_id, endpoint.host, endpoint.port);
    opts.set_keep_alive(Duration::from_secs(30));
    if let (Some(user), pass) = (endpoint.username, endpoint.password) {
        opts.set_credentials(user, pass.unwrap_or_default());
    }
    AsyncClient::new(opts, 1000)
}

/// A QoS 1 publishing session: the event loop runs in the background,
/// counting the broker's acknowledgements and warning once per outage.
struct Session {
    client: AsyncClient,
    poller: tokio::task::JoinHandle<()>,
    stopping: Arc<AtomicBool>,
    acked: watch::Receiver<u64>,
    /// The devices' payload format (and its session state: Sparkplug's
    /// births and sequence numbers).
    renderer: Renderer,
}

impl Session {
    fn open(mqtt: &MqttConfig, client_id: &str, format: Format) -> Session {
        let (client, mut eventloop) = client(mqtt, client_id);
        let stopping = Arc::new(AtomicBool::new(false));
        let (acked_tx, acked) = watch::channel(0u64);
        let poller_stopping = stopping.clone();
        let poller = tokio::spawn(async move {
            let mut warned = false;
            let mut count = 0u64;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        warned = false;
                        count += 1;
                        let _ = acked_tx.send(count);
                    }
                    Ok(_) => warned = false,
                    // Our own DISCONNECT closing the socket is not an outage.
                    Err(_) if poller_stopping.load(Ordering::Relaxed) => return,
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "simulator: broker unreachable; buffering and retrying");
                            warned = true;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Session {
            client,
            poller,
            stopping,
            acked,
            renderer: Renderer::new(format),
        }
    }

    /// Publishes the model's messages for the step ending at `t`, through
    /// the delivery faults; false when the event loop is gone.
    async fn publish_step(
        &mut self,
        model: &mut SiteModel,
        delivery: &mut Delivery,
        t: chrono::DateTime<Utc>,
        step: chrono::Duration,
        mqtt: &MqttConfig,
        total: &mut Published,
    ) -> bool {
        let reports = model.reports(t, step);
        let rendered = self.renderer.render(model, &reports, &mqtt.topics);
        let messages = delivery.apply(t, step, rendered);
        if !self.publish_all(messages, total).await {
            return false;
        }
        total.steps += 1;
        true
    }

    async fn publish_all(&self, messages: Vec<Message>, total: &mut Published) -> bool {
        for msg in messages {
            if self
                .client
                .publish(msg.topic, QoS::AtLeastOnce, false, msg.payload)
                .await
                .is_err()
            {
                return false;
            }
            total.messages += 1;
            total.items += msg.items as u64;
        }
        true
    }

    /// Waits up to `ack_timeout` for the broker to acknowledge all
    /// `published` messages, then disconnects.
    async fn close(mut self, published: u64, ack_timeout: Duration) {
        let _ = tokio::time::timeout(ack_timeout, self.acked.wait_for(|a| *a >= published)).await;
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.poller.abort();
    }
}

/// Steps of `step` in `(from, to]`.
pub fn steps_between(
    from: chrono::DateTime<Utc>,
    to: chrono::DateTime<Utc>,
    step: chrono::Duration,
) -> u64 {
    ((to - from).num_seconds() / step.num_seconds().max(1)).max(0) as u64
}

/// Publishes one step every `interval_s / speed` real seconds until `stop`,
/// or for `max_steps` steps when given.
pub async fn run(
    mut model: SiteModel,
    mqtt: &MqttConfig,
    sim: &SimulateConfig,
    max_steps: Option<u64>,
    mut stop: watch::Receiver<bool>,
) -> (Published, GroundTruth) {
    let mut session = Session::open(mqtt, &sim.client_id, sim.format);
    let mut delivery = Delivery::new(&model, &mqtt.topics);
    let step = chrono::Duration::seconds(sim.interval_s as i64);
    let period = Duration::from_secs_f64(sim.interval_s as f64 / sim.speed);
    // Accelerated runs start in the past and catch up with the clock, so the
    // readings they publish are never stamped in the future.
    let now = Utc::now();
    let mut sim_time = if sim.speed > 1.0 {
        let lead = chrono::Duration::seconds((sim.speed * 600.0).min(7.0 * 86400.0) as i64);
        now - lead
    } else {
        now
    };
    let first = sim_time;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut total = Published::default();
    loop {
        // Once caught up with the clock, wait for real time to reach the step.
        let ahead = (sim_time - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = async { ticker.tick().await; tokio::time::sleep(ahead).await } => {}
            res = stop.changed() => if res.is_err() || *stop.borrow() { break },
        }
        if !session
            .publish_step(&mut model, &mut delivery, sim_time, step, mqtt, &mut total)
            .await
        {
            break;
        }
        if total.steps % 10 == 1 {
            tracing::info!(
                steps = total.steps,
                messages = total.messages,
                readings_and_events = total.items,
                simulated_time = %sim_time.format("%Y-%m-%d %H:%M"),
                "simulator publishing"
            );
        }
        sim_time += step;
        if max_steps.is_some_and(|m| total.steps >= m) {
            break;
        }
    }
    session.publish_all(delivery.flush(), &mut total).await;
    // Give in-flight QoS 1 publishes a moment to be acknowledged.
    session
        .close(total.messages, Duration::from_millis(300))
        .await;
    let last = first + step * (total.steps as i32 - 1).max(0);
    let truth = GroundTruth::collect(
        &[&model],
        "mqtt",
        first - step,
        last,
        step.num_seconds(),
        delivery.truth(),
    );
    (total, truth)
}

/// Publishes the model's readings for `[from, to)` as fast as the broker
/// takes them (QoS 1, so the broker's acknowledgements pace us), calling
/// `progress(done, total)` after each step. For history: a year of
/// 15-minute data for the default site is about 390,000 messages.
pub async fn backfill(
    mut model: SiteModel,
    mqtt: &MqttConfig,
    sim: &SimulateConfig,
    from: chrono::DateTime<Utc>,
    to: chrono::DateTime<Utc>,
    step: chrono::Duration,
    mut progress: impl FnMut(u64, u64),
) -> (Published, GroundTruth) {
    let mut session = Session::open(mqtt, &sim.client_id, sim.format);
    let mut delivery = Delivery::new(&model, &mqtt.topics);
    let total_steps = steps_between(from, to, step);
    let mut total = Published::default();
    let mut t = from + step;
    while t <= to {
        if !session
            .publish_step(&mut model, &mut delivery, t, step, mqtt, &mut total)
            .await
        {
            break;
        }
        progress(total.steps, total_steps);
        t += step;
    }
    session.publish_all(delivery.flush(), &mut total).await;
    // Done when the broker has acknowledged every message.
    session
        .close(total.messages, Duration::from_secs(120))
        .await;
    let truth = GroundTruth::collect(
        &[&model],
        "mqtt",
        from,
        (t - step).min(to),
        step.num_seconds(),
        delivery.truth(),
    );
    (total, truth)
}
