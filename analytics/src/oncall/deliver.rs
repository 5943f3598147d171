//! Delivery of pages: each due page is claimed by one notifier (`FOR
//! UPDATE SKIP LOCKED`), sent on the person's contact methods in order
//! (emergencies: a voice call, then SMS, then the chat robots, Telegram
//! and e-mail; otherwise the chat robots first and no call), each tried
//! `tries_per_method` times with backoff, and the outcome committed before
//! the next page is claimed. A page whose every method failed falls
//! through at once to the policy's next step, or its fallback after the
//! last; nothing is dropped, and every try is in the alert's timeline
//! (`oncall_events`). A page whose alert was acknowledged, resolved or
//! snoozed before it went out is cancelled, and says so.
//!
//! A notifier killed between sending and committing leaves the row to be
//! claimed again: at most that one message repeats, with the same
//! reference (`P{id}`, the e-mail's Message-ID), so a receiver can tell.

use chrono::{DateTime, Utc};
use estatemon_domain::config::{Config, WebhookConfig, WebhookFormat};
use tokio_postgres::Client;

use super::channels::{page_message, page_request};
use super::escalation;
use super::links;
use super::roster::{Language, Person, Roster};
use crate::alerts::notify::{backoff, AlertView, Sender, ALERT_COLUMNS};

/// What a notifier needs to page.
#[derive(Clone)]
pub struct Pager {
    pub sender: Sender,
    pub roster: std::sync::Arc<Roster>,
    pub channels: Vec<WebhookConfig>,
    /// Where the links point (the API's public address).
    pub public_url: String,
    pub link_valid: chrono::Duration,
    pub tries_per_method: i32,
    pub snooze_minutes: u32,
    pub max_backoff_s: u64,
}

impl Pager {
    pub fn new(config: &Config, roster: std::sync::Arc<Roster>) -> Pager {
        Pager {
            sender: Sender::new(config.alerts.clone()),
            roster,
            channels: config.oncall.channels.clone(),
            public_url: config
                .oncall
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.api.listen)),
            link_valid: chrono::Duration::hours(config.oncall.link_valid_h as i64),
            tries_per_method: config.oncall.tries_per_method as i32,
            snooze_minutes: config.oncall.snooze_minutes,
            max_backoff_s: config.alerts.retry_max_backoff_s,
        }
    }
}

/// One way to reach a person: the channel, the kind of contact (`phone`,
/// `wecom` …) and its value.
pub struct Method<'a> {
    pub channel: &'a WebhookConfig,
    pub kind: &'static str,
    pub value: &'a str,
}

/// A person's contact methods that have a channel, in the order they are
/// tried for an alert of `severity`; and the kinds they gave that have
/// none (said in the timeline).
pub fn methods<'a>(
    person: &'a Person,
    severity: &str,
    channels: &'a [WebhookConfig],
) -> (Vec<Method<'a>>, Vec<&'static str>) {
    use WebhookFormat as F;
    let c = &person.contacts;
    let emergency: [(F, &'static str, &Option<String>); 7] = [
        (F::Voice, "phone", &c.phone),
        (F::Sms, "phone", &c.phone),
        (F::Wecom, "wecom", &c.wecom),
        (F::Dingtalk, "dingtalk", &c.dingtalk),
        (F::Feishu, "feishu", &c.feishu),
        (F::Telegram, "telegram", &c.telegram),
        (F::Email, "email", &c.email),
    ];
    let order: Vec<(F, &'static str, &Option<String>)> = if severity == "emergency" {
        emergency.to_vec()
    } else {
        // No calls for what can wait; chat first.
        let mut o: Vec<_> = emergency[2..6].to_vec();
        o.extend([emergency[1], emergency[6]]);
        o
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for (format, kind, value) in order {
        let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        match channels.iter().find(|ch| ch.format == format) {
            Some(channel) => found.push(Method {
                channel,
                kind,
                value,
            }),
            None if format != F::Voice => missing.push(kind),
            None => {}
        }
    }
    (found, missing)
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Over a channel's limit a minute: tried again in 10 s, not counted
    /// as a failed try.
    pub held: usize,
    pub sent: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub fell_through: usize,
}

/// Pages one pass handles at most.
pub const PASS_LIMIT: usize = 100;

async fn event(
    tx: &impl tokio_postgres::GenericClient,
    alert: i64,
    page: i64,
    kind: &str,
    person: &str,
    channel: Option<&str>,
    detail: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO oncall_events (alert_id, page_id, kind, person, channel, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&alert, &page, &kind, &person, &channel, &detail],
    )
    .await
    .map(|_| ())
}

/// Sends the due pages, one transaction each.
pub async fn deliver_due(client: &mut Client, pager: &Pager) -> anyhow::Result<Pass> {
    let mut pass = Pass::default();
    let key = links::key(&*client).await?;
    while pass.sent + pass.failed + pass.cancelled + pass.held < PASS_LIMIT {
        let tx = client.transaction().await?;
        let Some(r) = tx
            .query_opt(
                &format!(
                    "SELECT p.id, p.person, p.step, p.round, p.policy, p.method, p.tries,
                            a.snoozed_until, {ALERT_COLUMNS}
                       FROM oncall_pages p JOIN alerts a ON a.id = p.alert_id
                      WHERE p.delivered_at IS NULL AND p.failed_at IS NULL
                        AND p.cancelled_at IS NULL AND p.next_attempt_at <= now()
                      ORDER BY p.id LIMIT 1
                      FOR UPDATE OF p SKIP LOCKED"
                ),
                &[],
            )
            .await?
        else {
            break;
        };
        let (id, person_id, step, policy_id, method, tries): (
            i64,
            String,
            i32,
            Option<String>,
            i32,
            i32,
        ) = (r.get(0), r.get(1), r.get(2), r.get(4), r.get(5), r.get(6));
        let snoozed: Option<DateTime<Utc>> = r.get(7);
        let alert = AlertView::from_row(&r, 8);
        let now = Utc::now();
        if alert.state != "firing" || snoozed.is_some_and(|s| s > now) {
            let why = match alert.state.as_str() {
                "acknowledged" => "the alert was acknowledged before this page went out",
                "resolved" => "the alert resolved before this page went out",
                _ => "the alert is snoozed",
            };
            tx.execute(
                "UPDATE oncall_pages SET cancelled_at = now(), last_error = $2 WHERE id = $1",
                &[&id, &why],
            )
            .await?;
            event(&tx, alert.id, id, "cancelled", &person_id, None, why).await?;
            tx.commit().await?;
            pass.cancelled += 1;
            continue;
        }
        let roster = &pager.roster;
        let site_tz = escalation::site_tz(
            roster,
            alert
                .labels
                .get("site")
                .and_then(|v| v.as_str())
                .unwrap_or(""),
        );
        let person = roster.person(&person_id);
        let (found, missing) = match person {
            Some(p) => methods(p, &alert.severity, &pager.channels),
            None => (Vec::new(), Vec::new()),
        };
        if method == 0 && tries == 0 && !missing.is_empty() {
            let detail = format!("no channel configured for {}: skipped", missing.join(", "));
            event(&tx, alert.id, id, "skipped", &person_id, None, &detail).await?;
        }
        let outcome = match found.get(method as usize) {
            None => Err(if person.is_none() {
                format!("{person_id} is not in the roster")
            } else if found.is_empty() {
                format!("{person_id} has no contact method with a channel")
            } else {
                "every contact method failed".to_owned()
            }),
            Some(m) => {
                let tz = site_tz;
                let urls = links::urls(&key, &pager.public_url, id, now + pager.link_valid);
                let person = person.expect("methods come from a person");
                let message = page_message(
                    &alert,
                    id,
                    person.language == Language::Zh,
                    tz,
                    Some(urls),
                    pager.snooze_minutes,
                );
                let request = page_request(m.channel, m.value, &person.name, &message, now);
                if let Err(e) = pager
                    .sender
                    .take_rate(&m.channel.name, super::channels::per_minute(m.channel))
                {
                    // Over the channel's limit a minute: held, not a failed
                    // try (a storm must not exhaust every method in seconds).
                    tx.execute(
                        "UPDATE oncall_pages SET last_error = $2,
                                next_attempt_at = now() + interval '10 seconds'
                          WHERE id = $1",
                        &[&id, &e],
                    )
                    .await?;
                    tx.commit().await?;
                    pass.held += 1;
                    continue;
                }
                let sent = pager.sender.deliver(&request).await;
                sent.map(|()| m.channel.name.clone())
                    .map_err(|e| format!("{} ({}): {e}", m.channel.name, m.kind))
            }
        };
        match outcome {
            Ok(via) => {
                tx.execute(
                    "UPDATE oncall_pages SET delivered_at = now(), delivered_via = $2,
                            tries = tries + 1, last_error = NULL WHERE id = $1",
                    &[&id, &via],
                )
                .await?;
                let detail = format!("step {} accepted by {via}", step + 1);
                event(&tx, alert.id, id, "sent", &person_id, Some(&via), &detail).await?;
                tx.commit().await?;
                pass.sent += 1;
                tracing::info!(page = id, alert = alert.id, person = %person_id, channel = %via,
                    step = step + 1, "page delivered");
            }
            Err(error) => {
                pass.failed += 1;
                let channel = found.get(method as usize).map(|m| m.channel.name.clone());
                let exhausted = tries + 1 >= pager.tries_per_method;
                let next_method = if exhausted { method + 1 } else { method };
                let last =
                    found.get(method as usize).is_none() || next_method as usize >= found.len();
                tracing::warn!(page = id, alert = alert.id, person = %person_id, %error,
                    falls_through = exhausted && last, "page not delivered");
                event(
                    &tx,
                    alert.id,
                    id,
                    "failed",
                    &person_id,
                    channel.as_deref(),
                    &error,
                )
                .await?;
                if exhausted && last || found.get(method as usize).is_none() {
                    tx.execute(
                        "UPDATE oncall_pages SET failed_at = now(), tries = tries + 1,
                                last_error = $2 WHERE id = $1",
                        &[&id, &error],
                    )
                    .await?;
                    let policy = policy_id
                        .as_deref()
                        .and_then(|p| roster.policies.iter().find(|x| x.id == p));
                    match escalation::fall_through(roster, policy, step as usize, &person_id, now) {
                        Some((next, to, reason)) => {
                            tx.execute(
                                "INSERT INTO oncall_pages (alert_id, policy, round, step, due_at,
                                        person, reason, flagged, fallthrough_of, person_name,
                                        out_of_hours)
                                 SELECT alert_id, policy, round, $2, now(), $3, $4, true, id, $5, $6
                                   FROM oncall_pages WHERE id = $1
                                 ON CONFLICT DO NOTHING",
                                &[
                                    &id,
                                    &(next as i32),
                                    &to,
                                    &reason,
                                    &roster.name_of(&to),
                                    &super::report::out_of_hours(Some(roster), &to, now, site_tz),
                                ],
                            )
                            .await?;
                            event(&tx, alert.id, id, "fell_through", &to, None, &reason).await?;
                            pass.fell_through += 1;
                        }
                        None => {
                            let why = format!(
                                "{error}; nobody left to fall through to: the alert still \
                                 reaches Alertmanager and the webhooks"
                            );
                            event(&tx, alert.id, id, "unreachable", &person_id, None, &why).await?;
                            tracing::error!(page = id, alert = alert.id, person = %person_id,
                                "page reached nobody: every method and fallback failed");
                        }
                    }
                } else {
                    let wait = if exhausted {
                        0.0
                    } else {
                        backoff(tries + 1, pager.max_backoff_s) as f64
                    };
                    tx.execute(
                        "UPDATE oncall_pages SET method = $2, tries = $3, last_error = $4,
                                next_attempt_at = now() + make_interval(secs => $5)
                          WHERE id = $1",
                        &[
                            &id,
                            &next_method,
                            &(if exhausted { 0 } else { tries + 1 }),
                            &error,
                            &wait,
                        ],
                    )
                    .await?;
                }
                tx.commit().await?;
            }
        }
    }
    Ok(pass)
}
