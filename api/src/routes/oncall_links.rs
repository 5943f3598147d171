//! The links in every page (`/oncall/a/{token}`): usable from a phone
//! without logging in, because the token is signed, expires and works
//! once. Opening a link shows the alert and one button; the action
//! happens only when the button is pressed (a POST), so the previews
//! chat apps fetch of every link cannot acknowledge anything. Every use
//! and every refusal (altered, expired, used before) is audited with the
//! person the page was sent to; the audit row keeps the token without its
//! signature.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use estatemon_analytics::oncall::links::{self, Action, Claim};
use estatemon_analytics::oncall::roster::{Language, Roster};
use estatemon_domain::schema::alerts as store;

use crate::audit::{Detail, KeepHtml, LinkActor};
use crate::AppState;

/// The page and alert a link is about.
struct Target {
    page: i64,
    alert: i64,
    person: String,
    name: String,
    chinese: bool,
    summary: String,
    severity: String,
    state: String,
    place: String,
    acknowledged_by: Option<String>,
    used: Option<DateTime<Utc>>,
}

fn text(chinese: bool, en: &'static str, zh: &'static str) -> &'static str {
    if chinese {
        zh
    } else {
        en
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small page that reads on a phone (390 px wide and up).
fn page(status: StatusCode, chinese: bool, title: &str, body: &str) -> Response {
    let title = escape(title);
    let lang = if chinese { "zh-Hant-HK" } else { "en" };
    let html = format!(
        r#"<!doctype html><html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font:17px/1.45 system-ui,-apple-system,"Noto Sans CJK TC","PingFang HK",sans-serif;margin:0;padding:20px;background:#f4f5f7;color:#1d2127}}
main{{max-width:480px;margin:0 auto;background:#fff;border-radius:12px;padding:20px;box-shadow:0 1px 3px #0002}}
h1{{font-size:21px;margin:0 0 12px}} .sev{{display:inline-block;padding:2px 10px;border-radius:999px;font-weight:600;font-size:14px}}
.emergency{{background:#c62828;color:#fff}} .ordinary{{background:#ef6c00;color:#fff}} .routine{{background:#546e7a;color:#fff}}
dl{{margin:14px 0}} dt{{color:#5f6b7a;font-size:14px}} dd{{margin:0 0 8px}}
button{{width:100%;font-size:19px;padding:16px;border:0;border-radius:10px;background:#1565c0;color:#fff;margin-top:8px}}
.note{{color:#5f6b7a;font-size:14px;margin-top:14px}} .refused{{border-left:6px solid #c62828;padding-left:12px}}
.done{{border-left:6px solid #2e7d32;padding-left:12px}}
</style></head><body><main>{body}</main></body></html>"#
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    r.extensions_mut().insert(KeepHtml);
    r
}

/// A refused link: a clear page in both languages (the person is not
/// known yet), audited.
fn refused(status: StatusCode, why: &str, actor: Option<&str>) -> Response {
    let body = format!(
        r#"<div class="refused"><h1>This link cannot be used · 此連結無法使用</h1><p>{}</p></div>
<p class="note">Acknowledge in Grafana or with <code>estatemon alerts ack</code>, or ask the control room. · 請在 Grafana 或以 <code>estatemon alerts ack</code> 確認，或致電控制室。</p>"#,
        escape(why)
    );
    let mut r = page(status, false, "Link refused · 連結無效", &body);
    r.extensions_mut()
        .insert(Detail(format!("on-call link refused: {why}")));
    if let Some(a) = actor {
        r.extensions_mut().insert(LinkActor(a.to_owned()));
    }
    r
}

async fn roster(state: &AppState) -> Option<Roster> {
    super::oncall::current_roster(state).await.ok().flatten()
}

/// Verifies the token and finds its page; Err is the refusal to answer.
async fn target(
    state: &AppState,
    token: &str,
    action_taken: bool,
) -> Result<(Claim, Target), Response> {
    let unavailable = |e: String| {
        refused(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the database is unavailable ({e}); try again in a minute"),
            None,
        )
    };
    let client = state
        .pool
        .get()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let key = links::key(&**client)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let claim = links::verify(&key, token, Utc::now()).map_err(|e| {
        let status = match e {
            links::Refused::Expired(_) => StatusCode::GONE,
            _ => StatusCode::FORBIDDEN,
        };
        refused(status, &e.to_string(), None)
    })?;
    let row = client
        .query_opt(
            "SELECT p.id, p.alert_id, p.person, a.summary, a.severity, a.state,
                    concat_ws(' / ', a.labels->>'site', a.labels->>'building', a.labels->>'device'),
                    a.acknowledged_by,
                    (SELECT used_at FROM oncall_link_uses u WHERE u.page_id = p.id AND u.action = $2)
               FROM oncall_pages p JOIN alerts a ON a.id = p.alert_id WHERE p.id = $1",
            &[&claim.page, &claim.action.as_str()],
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .ok_or_else(|| {
            refused(
                StatusCode::NOT_FOUND,
                "the page this link was sent in no longer exists",
                None,
            )
        })?;
    let person: String = row.get(2);
    let who = roster(state).await;
    let p = who.as_ref().and_then(|r| r.person(&person));
    let t = Target {
        page: row.get(0),
        alert: row.get(1),
        name: p.map_or_else(|| person.clone(), |p| p.name.clone()),
        chinese: p.is_some_and(|p| p.language == Language::Zh),
        person,
        summary: row.get(3),
        severity: row.get(4),
        state: row.get(5),
        place: row.get(6),
        acknowledged_by: row.get(7),
        used: row.get(8),
    };
    if let Some(at) = t.used.filter(|_| !action_taken) {
        return Err(refused(
            StatusCode::GONE,
            &format!(
                "this link was used at {}; each link works once",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Some(&format!("link:{}", t.person)),
        ));
    }
    Ok((claim, t))
}

fn label(action: Action, chinese: bool, snooze_minutes: u32) -> String {
    match action {
        Action::Ack => text(chinese, "Acknowledge", "確認收到").to_owned(),
        Action::Resolve => text(chinese, "Mark resolved", "標示為已解決").to_owned(),
        Action::Snooze if chinese => format!("延後 {snooze_minutes} 分鐘"),
        Action::Snooze => format!("Snooze {snooze_minutes} minutes"),
    }
}

fn summary(t: &Target) -> String {
    let c = t.chinese;
    format!(
        r#"<span class="sev {sev}">{sev}</span><h1>{summary}</h1><dl>
<dt>{where_}</dt><dd>{place}</dd><dt>{state_}</dt><dd>{state}{ack}</dd>
<dt>{sent_}</dt><dd>{name} · P{page}</dd></dl>"#,
        sev = escape(&t.severity),
        summary = escape(&t.summary),
        where_ = text(c, "Where", "地點"),
        place = escape(&t.place),
        state_ = text(c, "State", "狀態"),
        state = escape(&t.state),
        ack = t
            .acknowledged_by
            .as_deref()
            .map(|b| format!(" ({})", escape(b)))
            .unwrap_or_default(),
        sent_ = text(c, "Sent to", "發送給"),
        name = escape(&t.name),
        page = t.page,
    )
}

/// `GET /oncall/a/{token}`: the alert and the one button.
pub async fn show(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let (claim, t) = match target(&state, &token, false).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let body = format!(
        r#"{}<form method="post"><button type="submit">{}</button></form>
<p class="note">{}</p>"#,
        summary(&t),
        label(claim.action, t.chinese, state.config.oncall.snooze_minutes),
        text(
            t.chinese,
            "This link works once and only for this page.",
            "此連結只可使用一次，只適用於這次通知。"
        ),
    );
    let mut r = page(StatusCode::OK, t.chinese, &t.summary, &body);
    r.extensions_mut()
        .insert(LinkActor(format!("link:{}", t.person)));
    r.extensions_mut().insert(Detail(format!(
        "opened the {} link of page P{} (alert {})",
        claim.action.as_str(),
        t.page,
        t.alert
    )));
    r
}

/// `POST /oncall/a/{token}`: does what the link says, once.
pub async fn act(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let (claim, t) = match target(&state, &token, false).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let actor = format!("link:{}", t.person);
    let by = format!("{} (link in page P{})", t.name, t.page);
    let result: Result<Option<String>, String> = async {
        let mut client = state.pool.get().await.map_err(|e| e.to_string())?;
        act_in(&state, &mut client, claim.action, &t, &by)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    answer(&state, &token, claim, t, actor, result).await
}

async fn act_in(
    state: &AppState,
    client: &mut deadpool_postgres::Client,
    action: Action,
    t: &Target,
    by: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let claim_action = action;
    {
        let tx = client.transaction().await?;
        let first = tx
            .execute(
                "INSERT INTO oncall_link_uses (page_id, action) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&t.page, &claim_action.as_str()],
            )
            .await?
            == 1;
        if !first {
            return Ok(None);
        }
        let (kind, done) = match claim_action {
            Action::Ack => ("acknowledged", store::acknowledge(&*tx, t.alert, by).await?),
            Action::Resolve => {
                let done =
                    store::resolve(&*tx, t.alert, Utc::now(), &state.config.alerts.receivers())
                        .await?;
                if done {
                    tx.execute(
                        "UPDATE alerts SET resolved_by = $2 WHERE id = $1",
                        &[&t.alert, &by],
                    )
                    .await?;
                }
                ("resolved", done)
            }
            Action::Snooze => {
                let minutes = state.config.oncall.snooze_minutes as f64;
                let n = tx
                    .execute(
                        "UPDATE alerts SET snoozed_until = now() + make_interval(mins => $2::int)
                          WHERE id = $1 AND state <> 'resolved'",
                        &[&t.alert, &(minutes as i32)],
                    )
                    .await?;
                ("snoozed", n == 1)
            }
        };
        let detail = if done {
            format!("{kind} by {by}")
        } else {
            format!("{kind}: nothing to do, the alert was already {}", t.state)
        };
        tx.execute(
            "INSERT INTO oncall_events (alert_id, page_id, kind, person, channel, detail)
             VALUES ($1, $2, $3, $4, 'link', $5)",
            &[&t.alert, &t.page, &kind, &t.person, &detail],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(detail))
    }
}

async fn answer(
    state: &AppState,
    token: &str,
    claim: Claim,
    t: Target,
    actor: String,
    result: Result<Option<String>, String>,
) -> Response {
    match result {
        Err(e) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the database did not take this ({e}); the link is still valid, try again"),
            Some(&actor),
        ),
        Ok(None) => {
            // Another press of the button (or a replay) got there first.
            let (_, t) = match target(state, token, true).await {
                Ok(x) => x,
                Err(r) => return r,
            };
            refused(
                StatusCode::GONE,
                &format!(
                    "this link was used at {}; each link works once",
                    t.used
                        .map(|u| u.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_default()
                ),
                Some(&actor),
            )
        }
        Ok(Some(detail)) => {
            let c = t.chinese;
            let done = match claim.action {
                Action::Ack => text(
                    c,
                    "Acknowledged. The escalation stops here.",
                    "已確認。升級通知已停止。",
                )
                .to_owned(),
                Action::Resolve => text(c, "Marked resolved.", "已標示為已解決。").to_owned(),
                Action::Snooze => {
                    let m = state.config.oncall.snooze_minutes;
                    if c {
                        format!("已延後 {m} 分鐘，之後會繼續通知。")
                    } else {
                        format!("Snoozed for {m} minutes; pages resume after that.")
                    }
                }
            };
            let body = format!(
                r#"<div class="done"><h1>{done}</h1></div>{}<p class="note">{}</p>"#,
                summary(&t),
                escape(&detail)
            );
            let mut r = page(StatusCode::OK, c, &done, &body);
            r.extensions_mut().insert(LinkActor(actor));
            r.extensions_mut().insert(Detail(format!(
                "page P{} (alert {}): {detail}",
                t.page, t.alert
            )));
            r
        }
    }
}

/// TwiML: the message the gateway sends back to the phone.
fn twiml(status: StatusCode, text: &str, actor: Option<String>, detail: String) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
        escape(text)
    );
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    r.extensions_mut().insert(KeepHtml);
    r.extensions_mut().insert(Detail(detail));
    if let Some(a) = actor {
        r.extensions_mut().insert(LinkActor(a));
    }
    r
}

/// `POST /oncall/sms`: an SMS reply through the Twilio-compatible gateway
/// (its incoming-message webhook), signed with the account's auth token.
/// `ACK`, `ACK P123`, `確認 123` acknowledge; the answer is TwiML.
pub async fn sms_reply(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use estatemon_analytics::oncall::replies;
    let Some(channel) = state
        .config
        .oncall
        .channels
        .iter()
        .find(|c| c.format == estatemon_domain::config::WebhookFormat::Sms)
    else {
        return twiml(
            StatusCode::NOT_FOUND,
            "No SMS channel is configured.",
            None,
            "SMS reply refused: no oncall.channel of format sms".into(),
        );
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let public = state
        .config
        .oncall
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", state.config.api.listen));
    let url = format!("{}/oncall/sms", public.trim_end_matches('/'));
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = channel.secret.as_deref().unwrap_or("");
    if !replies::verify_twilio(token, &url, &params, signature) {
        return twiml(
            StatusCode::FORBIDDEN,
            "Not signed by the gateway.",
            None,
            "SMS reply refused: X-Twilio-Signature missing or wrong".into(),
        );
    }
    let field = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let roster = roster(&state).await;
    let Some(person) = roster
        .as_ref()
        .and_then(|r| replies::person_by_phone(r, &field("From")))
    else {
        return twiml(
            StatusCode::OK,
            "This number is not on the on-call roster.",
            None,
            "SMS reply from a number not on the roster".into(),
        );
    };
    let actor = format!("link:{}", person.id);
    let replies::Ask::Ack(page) = replies::parse(&field("Body")) else {
        let hint = if person.language == Language::Zh {
            "回覆「確認」或「確認 P編號」以確認警報。"
        } else {
            "Reply ACK (or ACK P<ref>) to acknowledge."
        };
        return twiml(
            StatusCode::OK,
            hint,
            Some(actor),
            "SMS reply not understood".into(),
        );
    };
    let done: Result<Option<(i64, i64, bool)>, String> = async {
        let mut client = state.pool.get().await.map_err(|e| e.to_string())?;
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        let Some((page, alert)) = replies::page_for(&*tx, &person.id, page)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let by = format!("{} (SMS reply to page P{page})", person.name);
        let acked = store::acknowledge(&*tx, alert, &by)
            .await
            .map_err(|e| e.to_string())?;
        tx.execute(
            "INSERT INTO oncall_events (alert_id, page_id, kind, person, channel, detail)
             VALUES ($1, $2, 'acknowledged', $3, 'sms reply', $4)",
            &[
                &alert,
                &page,
                &person.id,
                &if acked {
                    format!("acknowledged by {by}")
                } else {
                    "acknowledged: nothing to do, the alert was no longer firing".into()
                },
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(Some((page, alert, acked)))
    }
    .await;
    let zh = person.language == Language::Zh;
    match done {
        Err(e) => twiml(
            StatusCode::SERVICE_UNAVAILABLE,
            if zh {
                "系統暫時無法處理，請用連結確認。"
            } else {
                "Not taken (database unavailable); use the link."
            },
            Some(actor),
            format!("SMS reply not taken: {e}"),
        ),
        Ok(None) => twiml(
            StatusCode::OK,
            if zh {
                "找不到需要確認的警報。"
            } else {
                "No firing alert of yours to acknowledge."
            },
            Some(actor),
            "SMS reply: no page to acknowledge".into(),
        ),
        Ok(Some((page, alert, acked))) => twiml(
            StatusCode::OK,
            &match (acked, zh) {
                (true, false) => format!("Acknowledged alert {alert} (P{page}). Thank you."),
                (true, true) => format!("已確認警報 {alert}（P{page}）。"),
                (false, false) => {
                    format!("Alert {alert} (P{page}) was already acknowledged or resolved.")
                }
                (false, true) => format!("警報 {alert}（P{page}）已被確認或已解除。"),
            },
            Some(actor),
            format!("SMS reply for page P{page} (alert {alert}): acknowledged {acked}"),
        ),
    }
}

/// `GET /oncall/ical/{person}/{token}`: a person's shifts as iCalendar for
/// their phone's calendar to subscribe to (a week back, 90 days ahead):
/// the signed URL is the authority (`estatemon oncall ical --url`); it
/// carries team names and times only.
pub async fn calendar(
    State(state): State<AppState>,
    Path((person, token)): Path<(String, String)>,
) -> Response {
    let plain = |status: StatusCode, text: String| {
        let mut r = (status, text.clone()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r.extensions_mut().insert(KeepHtml);
        r.extensions_mut().insert(Detail(text));
        r
    };
    let key = match state.pool.get().await {
        Ok(c) => match links::key(&**c).await {
            Ok(k) => k,
            Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")),
        },
        Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")),
    };
    let token = token.trim_end_matches(".ics");
    if !links::verify_calendar(&key, &person, token) {
        return plain(
            StatusCode::FORBIDDEN,
            "calendar link refused: not signed for this person".into(),
        );
    }
    let Some(roster) = roster(&state).await else {
        return plain(StatusCode::NOT_FOUND, "no on-call roster".into());
    };
    let now = Utc::now();
    let Some(feed) = estatemon_analytics::oncall::ical::person_feed(
        &roster,
        &person,
        now - chrono::Duration::days(7),
        now + chrono::Duration::days(90),
        now,
    ) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("`{person}` is not on the roster"),
        );
    };
    let mut r = (StatusCode::OK, feed).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/calendar; charset=utf-8"),
    );
    r.extensions_mut()
        .insert(LinkActor(format!("calendar:{person}")));
    r.extensions_mut()
        .insert(Detail(format!("calendar feed of {person}")));
    r
}
