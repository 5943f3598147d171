//! Delivery: the outbox (`alert_notifications`) to Prometheus Alertmanager
//! (API v2) and to webhooks, with retries and exponential backoff.
//!
//! Any number of notifiers may run: each claims due rows with
//! `FOR UPDATE SKIP LOCKED`, so a row is sent by one of them. A failed send
//! stays in the outbox with its error and a later `next_attempt_at`; nothing
//! is dropped, and failures are counted in `/metrics`. A notifier that dies
//! between sending and committing sends again (at least once): Alertmanager
//! deduplicates identical alerts, and webhooks get `notification_id` to do
//! the same.
//!
//! What goes to Alertmanager is built from the alert's *current* state (a
//! resolved alert always carries `endsAt`), so a late retry of a `firing`
//! notification cannot re-open an alert that has since resolved.

use std::time::Duration;

use chrono::{DateTime, Utc};
use estatemon_domain::config::AlertsConfig;
use serde_json::{json, Value};
use tokio_postgres::{Client, Row};

use crate::metrics::{DeliveryLabel, Metrics};
use crate::oncall::channels::Request;

/// An alert as receivers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    pub id: i64,
    pub rule: String,
    pub subject: String,
    pub severity: String,
    pub summary: String,
    pub labels: serde_json::Map<String, Value>,
    pub value: Option<f64>,
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub fired_at: DateTime<Utc>,
    pub response_deadline: DateTime<Utc>,
    pub escalated_at: Option<DateTime<Utc>>,
}

pub const ALERT_COLUMNS: &str =
    "a.id, a.rule, a.subject, a.severity, a.summary, a.labels, a.value, \
     a.state, a.started_at, a.resolved_at, a.fired_at, a.response_deadline, a.escalated_at";

impl AlertView {
    pub fn from_row(r: &Row, at: usize) -> AlertView {
        let labels: Value = r.get(at + 5);
        AlertView {
            id: r.get(at),
            rule: r.get(at + 1),
            subject: r.get(at + 2),
            severity: r.get(at + 3),
            summary: r.get(at + 4),
            labels: labels.as_object().cloned().unwrap_or_default(),
            value: r.get(at + 6),
            state: r.get(at + 7),
            started_at: r.get(at + 8),
            resolved_at: r.get(at + 9),
            fired_at: r.get(at + 10),
            response_deadline: r.get(at + 11),
            escalated_at: r.get(at + 12),
        }
    }

    /// The Alertmanager API v2 alerts for this one: the alert itself and,
    /// once escalated, a copy labelled `escalated="true"` that the shipped
    /// route sends to the second line.
    pub fn alertmanager(&self) -> Vec<Value> {
        let mut annotations = json!({
            "summary": self.summary,
            "response_deadline": self.response_deadline.to_rfc3339(),
            "estatemon_alert_id": self.id.to_string(),
        });
        if let Some(v) = self.value {
            annotations["value"] = json!(format!("{v}"));
        }
        let mut base = json!({
            "labels": self.labels,
            "annotations": annotations,
            "startsAt": self.started_at.to_rfc3339(),
        });
        if self.state == "resolved" {
            let ends = self
                .resolved_at
                .unwrap_or_else(Utc::now)
                .max(self.started_at);
            base["endsAt"] = json!(ends.to_rfc3339());
        }
        let mut out = vec![base.clone()];
        if self.escalated_at.is_some() {
            let mut escalated = base;
            escalated["labels"]["escalated"] = json!("true");
            out.push(escalated);
        }
        out
    }

    /// The webhook body for one transition.
    pub fn webhook(&self, notification_id: i64, kind: &str) -> Value {
        json!({
            "notification_id": notification_id,
            "kind": kind,
            "alert": {
                "id": self.id,
                "rule": self.rule,
                "subject": self.subject,
                "severity": self.severity,
                "summary": self.summary,
                "labels": self.labels,
                "value": self.value,
                "state": self.state,
                "started_at": self.started_at,
                "resolved_at": self.resolved_at,
                "fired_at": self.fired_at,
                "response_deadline": self.response_deadline,
                "escalated_at": self.escalated_at,
            }
        })
    }
}

/// Sends to the configured receivers.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    config: AlertsConfig,
    /// Per webhook, the times of its sends in the last minute (its
    /// channel's rate limit: DingTalk and WeCom robots take 20 a minute).
    sent: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, Vec<std::time::Instant>>>,
    >,
}

impl Sender {
    pub fn new(config: AlertsConfig) -> Sender {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        Sender {
            http,
            config,
            sent: Default::default(),
        }
    }

    async fn post(&self, url: &str, body: &Value) -> Result<(), String> {
        self.deliver(&Request::json(url.to_owned(), Vec::new(), body.clone()))
            .await
    }

    /// One request: its JSON body (or form, for SMS gateways), headers and
    /// Basic authentication, or an e-mail over SMTP; any answer but 2xx
    /// (250 for SMTP) is an error to retry.
    pub async fn deliver(&self, request: &Request) -> Result<(), String> {
        if let Some(mail) = &request.mail {
            return send_mail(&request.url, mail).await;
        }
        let mut r = self.http.post(&request.url);
        r = match &request.form {
            Some(form) => r.form(form),
            None => r.json(&request.body),
        };
        for (k, v) in &request.headers {
            r = r.header(k.as_str(), v.as_str());
        }
        if let Some((user, password)) = &request.basic_auth {
            r = r.basic_auth(user, Some(password));
        }
        // A signed URL (DingTalk's) carries its signature: not in errors.
        let shown = request.url.split('?').next().unwrap_or(&request.url);
        let response = r
            .send()
            .await
            .map_err(|e| format!("POST {shown}: {}", e.without_url()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = response.text().await.unwrap_or_default();
            Err(format!(
                "POST {shown}: HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            ))
        }
    }

    /// One message's room under a channel's limit a minute. Over it: an
    /// error the caller retries with backoff (counted as a failed try),
    /// never a drop.
    pub fn take_rate(&self, channel: &str, limit: Option<u32>) -> Result<(), String> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let mut sent = self.sent.lock().expect("rate window");
        let mine = sent.entry(channel.to_owned()).or_default();
        let now = std::time::Instant::now();
        mine.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        if mine.len() >= limit as usize {
            return Err(format!(
                "{channel}: over the channel's limit of {limit} messages a minute; retried later"
            ));
        }
        mine.push(now);
        Ok(())
    }

    fn alertmanager_url(&self) -> Option<String> {
        self.config
            .alertmanager_url
            .as_ref()
            .map(|u| format!("{}/api/v2/alerts", u.trim_end_matches('/')))
    }

    /// One transition to one receiver.
    pub async fn send(
        &self,
        receiver: &str,
        notification_id: i64,
        kind: &str,
        alert: &AlertView,
    ) -> Result<(), String> {
        if receiver == "alertmanager" {
            let url = self
                .alertmanager_url()
                .ok_or("alerts.alertmanager_url is no longer set")?;
            return self.post(&url, &Value::Array(alert.alertmanager())).await;
        }
        let hook = self
            .config
            .webhooks
            .iter()
            .find(|w| w.name == receiver)
            .ok_or_else(|| format!("no webhook named `{receiver}` in alerts.webhooks"))?;
        self.take_rate(receiver, crate::oncall::channels::per_minute(hook))?;
        // In the channel's own format and signature (DingTalk, Feishu,
        // WeCom, Slack, or estatemon's JSON).
        let request = crate::oncall::channels::request(
            hook,
            alert.webhook(notification_id, kind),
            alert,
            kind,
            Utc::now(),
        );
        self.deliver(&request).await
    }

    /// Re-sends every open alert to Alertmanager, which forgets alerts not
    /// re-sent within its `resolve_timeout`.
    pub async fn resend_open(&self, client: &Client, metrics: &Metrics) -> anyhow::Result<usize> {
        let Some(url) = self.alertmanager_url() else {
            return Ok(0);
        };
        let rows = client
            .query(
                &format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts a
                      WHERE a.state <> 'resolved' AND a.silenced_by IS NULL ORDER BY a.id"
                ),
                &[],
            )
            .await?;
        let alerts: Vec<Value> = rows
            .iter()
            .flat_map(|r| AlertView::from_row(r, 0).alertmanager())
            .collect();
        for chunk in alerts.chunks(500) {
            let outcome = match self.post(&url, &Value::Array(chunk.to_vec())).await {
                Ok(()) => "delivered",
                Err(e) => {
                    tracing::warn!(error = %e, "re-sending open alerts to Alertmanager failed");
                    "failed"
                }
            };
            metrics
                .resends
                .get_or_create(&DeliveryLabel {
                    receiver: "alertmanager".into(),
                    outcome,
                })
                .inc();
        }
        Ok(alerts.len())
    }
}

/// An e-mail through the SMTP relay at `url` (`smtp://host:port`, no TLS:
/// a relay on the estate's own network), 10 s at most.
async fn send_mail(url: &str, mail: &crate::oncall::channels::Mail) -> Result<(), String> {
    use lettre::message::header::ContentType;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(25);
    let shown = format!("smtp://{host}:{port}");
    let address = |a: &str, what: &str| {
        a.parse::<lettre::message::Mailbox>()
            .map_err(|e| format!("{shown}: the {what} address does not parse: {e}"))
    };
    let message = Message::builder()
        .from(address(&mail.from, "from")?)
        .to(address(&mail.to, "to")?)
        .subject(mail.subject.clone())
        .message_id(Some(mail.message_id.clone()))
        .header(ContentType::TEXT_PLAIN)
        .body(mail.text.clone())
        .map_err(|e| format!("{shown}: {e}"))?;
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(Duration::from_secs(10)));
    if let Some((user, password)) = &mail.credentials {
        transport =
            transport.credentials(lettre::transport::smtp::authentication::Credentials::new(
                user.clone(),
                password.clone(),
            ));
    }
    transport
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("{shown}: {e}"))
}

/// Seconds before retry number `attempts` (1-based): 2, 4, 8 … up to `max`.
pub fn backoff(attempts: i32, max: u64) -> u64 {
    let exp = attempts.clamp(1, 20) as u32;
    2u64.saturating_pow(exp).min(max.max(1))
}

/// What one pass over the outbox did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub delivered: usize,
    pub failed: usize,
}

/// Most notifications one pass sends before the caller sleeps again.
pub const PASS_LIMIT: usize = 100;

/// Sends the due notifications, oldest first, each in a transaction of its
/// own: the row is claimed (`FOR UPDATE SKIP LOCKED`, so concurrent
/// notifiers never send the same row), sent, and its outcome committed
/// before the next one is claimed. A notifier killed mid-pass can thus
/// repeat at most the one notification it was sending (receivers dedupe on
/// `notification_id`), not everything it had sent in the pass.
///
/// A transition is never sent to a receiver while an earlier transition of
/// the same alert to that receiver is undelivered (failing, or being sent
/// by another notifier): "resolved" never overtakes "firing".
pub async fn deliver_due(
    client: &mut Client,
    sender: &Sender,
    metrics: &Metrics,
) -> anyhow::Result<Pass> {
    let mut pass = Pass::default();
    while pass.delivered + pass.failed < PASS_LIMIT {
        let tx = client.transaction().await?;
        let Some(r) = tx
            .query_opt(
                &format!(
                    "SELECT n.id, n.kind, n.receiver, n.attempts, {ALERT_COLUMNS}
                       FROM alert_notifications n JOIN alerts a ON a.id = n.alert_id
                      WHERE n.delivered_at IS NULL AND n.next_attempt_at <= now()
                        AND NOT EXISTS (
                            SELECT 1 FROM alert_notifications e
                             WHERE e.delivered_at IS NULL AND e.alert_id = n.alert_id
                               AND e.receiver = n.receiver AND e.id < n.id)
                      ORDER BY n.id
                      LIMIT 1
                      FOR UPDATE OF n SKIP LOCKED"
                ),
                &[],
            )
            .await?
        else {
            break;
        };
        let (id, kind, receiver, attempts): (i64, String, String, i32) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let alert = AlertView::from_row(&r, 4);
        let result = sender.send(&receiver, id, &kind, &alert).await;
        let outcome = match &result {
            Ok(()) => {
                tx.execute(
                    "UPDATE alert_notifications
                        SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
                      WHERE id = $1",
                    &[&id],
                )
                .await?;
                tx.commit().await?;
                pass.delivered += 1;
                tracing::info!(notification = id, alert = alert.id, rule = %alert.rule,
                    subject = %alert.subject, %kind, %receiver, "alert delivered");
                "delivered"
            }
            Err(e) => {
                let wait = backoff(attempts + 1, sender.config.retry_max_backoff_s) as f64;
                tx.execute(
                    "UPDATE alert_notifications
                        SET attempts = attempts + 1, last_error = $2,
                            next_attempt_at = now() + make_interval(secs => $3)
                      WHERE id = $1",
                    &[&id, e, &wait],
                )
                .await?;
                tx.commit().await?;
                pass.failed += 1;
                tracing::warn!(notification = id, alert = alert.id, %kind, %receiver,
                    attempt = attempts + 1, retry_in_s = wait, error = %e, "alert delivery failed; will retry");
                "failed"
            }
        };
        metrics
            .deliveries
            .get_or_create(&DeliveryLabel {
                receiver: receiver.clone(),
                outcome,
            })
            .inc();
    }
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM alert_notifications WHERE delivered_at IS NULL",
            &[],
        )
        .await?
        .get(0);
    metrics.deliveries_pending.set(pending);
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: &str, escalated: bool) -> AlertView {
        let t = DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap();
        let mut labels = serde_json::Map::new();
        labels.insert("alertname".into(), json!("lift_entrapment"));
        labels.insert("device".into(), json!("lift-1"));
        AlertView {
            id: 9,
            rule: "lift_entrapment".into(),
            subject: "lift-1".into(),
            severity: "emergency".into(),
            summary: "Passenger trapped".into(),
            labels,
            value: None,
            state: state.into(),
            started_at: t,
            resolved_at: (state == "resolved").then(|| t + chrono::Duration::minutes(25)),
            fired_at: t,
            response_deadline: t + chrono::Duration::minutes(15),
            escalated_at: escalated.then_some(t + chrono::Duration::minutes(15)),
        }
    }

    #[test]
    fn alertmanager_payload_follows_the_alert_state() {
        let firing = view("firing", false).alertmanager();
        assert_eq!(firing.len(), 1);
        assert_eq!(firing[0]["labels"]["alertname"], "lift_entrapment");
        assert!(firing[0].get("endsAt").is_none());
        let resolved = view("resolved", true).alertmanager();
        assert_eq!(resolved.len(), 2, "the escalated copy resolves too");
        for a in &resolved {
            assert_eq!(a["endsAt"], "2026-05-28T20:51:40+00:00");
        }
        assert_eq!(resolved[1]["labels"]["escalated"], "true");
        assert!(resolved[0]["labels"].get("escalated").is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        assert_eq!(
            (1..=10).map(|a| backoff(a, 300)).collect::<Vec<_>>(),
            [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
        );
        assert_eq!(backoff(100, 300), 300);
    }
}
