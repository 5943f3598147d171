//! The chat channels estates use, as their public documentation defines
//! them: a webhook receiver of `[[alerts.webhooks]]` can be a DingTalk
//! custom robot (signed: `timestamp` and `sign` in the query), a Feishu /
//! Lark custom bot (signed: `timestamp` and `sign` in the body), a WeCom
//! group robot, a Slack-compatible incoming webhook, or estatemon's own JSON
//! (signed with `X-Estatemon-Signature: sha256=<hex HMAC of the body>` when
//! a secret is set), a Telegram bot (`sendMessage`), or a Twilio-compatible
//! SMS gateway (form-encoded, Basic authentication). Messages are short and say the severity, what
//! happened, where (site, building, device) and by when to respond, in
//! English or Chinese.

use base64::Engine;
use chrono::{DateTime, Utc};
use estatemon_domain::config::{WebhookConfig, WebhookFormat};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::alerts::notify::AlertView;

/// One request to send: URL, extra headers, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// Sent form-encoded instead of the JSON body (SMS gateways).
    pub form: Option<Vec<(String, String)>>,
    /// Basic authentication (user, password).
    pub basic_auth: Option<(String, String)>,
    /// Sent as e-mail over SMTP instead (`url` is `smtp://host:port`).
    pub mail: Option<Mail>,
}

/// An e-mail to send over SMTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    /// Stable per notification, so a receiver can tell a repeat.
    pub message_id: String,
    /// SMTP authentication (user, password), when the relay asks.
    pub credentials: Option<(String, String)>,
}

impl Request {
    /// A JSON request.
    pub fn json(url: String, headers: Vec<(String, String)>, body: Value) -> Request {
        Request {
            url,
            headers,
            body,
            form: None,
            basic_auth: None,
            mail: None,
        }
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// DingTalk's signature: Base64 of HMAC-SHA256(key = secret, message =
/// "timestamp\nsecret"), URL-encoded (timestamp in milliseconds).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let raw = hmac_sha256(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    url::form_urlencoded::byte_serialize(b64.as_bytes()).collect()
}

/// A DingTalk robot's URL, signed when it has a secret: `timestamp` (ms)
/// and `sign` added to its query.
fn dingtalk_url(url: &str, secret: Option<&str>, now: DateTime<Utc>) -> String {
    match secret {
        Some(s) => {
            let ts = now.timestamp_millis();
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}timestamp={ts}&sign={}", dingtalk_sign(s, ts))
        }
        None => url.to_owned(),
    }
}

/// Feishu's signature: Base64 of HMAC-SHA256(key = "timestamp\nsecret",
/// message = empty) (timestamp in seconds).
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    let raw = hmac_sha256(format!("{timestamp_s}\n{secret}").as_bytes(), b"");
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// estatemon's own signature of a body: `sha256=` and the hex HMAC.
pub fn body_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    )
}

/// The messages a minute a channel takes (its documented limit: DingTalk
/// and WeCom robots 20, a Telegram bot 20 to one group, Feishu bots 100,
/// Slack incoming webhooks and SMS gateways about one a second), or the
/// hook's own `rate_per_minute`; none for estatemon's.
pub fn per_minute(hook: &WebhookConfig) -> Option<u32> {
    hook.rate_per_minute.or(match hook.format {
        WebhookFormat::Dingtalk | WebhookFormat::Wecom | WebhookFormat::Telegram => Some(20),
        WebhookFormat::Feishu => Some(100),
        WebhookFormat::Slack | WebhookFormat::Sms | WebhookFormat::Voice => Some(60),
        WebhookFormat::Estatemon | WebhookFormat::Email => None,
    })
}

/// Where an alert is: `site / building / device` from its labels, or its
/// subject when it has none of them.
fn place(alert: &AlertView) -> String {
    let parts: Vec<&str> = ["site", "building", "device"]
        .iter()
        .filter_map(|k| alert.labels.get(*k).and_then(Value::as_str))
        .collect();
    if parts.is_empty() {
        alert.subject.clone()
    } else {
        parts.join(" / ")
    }
}

/// A severity as Hong Kong estates write it.
fn level_zh(severity: &str) -> &'static str {
    match severity {
        "emergency" => "緊急",
        "ordinary" => "一般",
        _ => "例行",
    }
}

/// The short message a person reads on the phone.
pub fn message(alert: &AlertView, kind: &str, chinese: bool) -> String {
    let place = place(alert);
    let by = alert.response_deadline.format("%Y-%m-%d %H:%M UTC");
    let severity = alert.severity.to_uppercase();
    match (kind, chinese) {
        ("resolved", false) => format!("[RESOLVED] {} — {place}. Alert {}.", alert.summary, alert.id),
        ("resolved", true) => format!("【已解除】{} — {place}。警報 {}。", alert.summary, alert.id),
        (_, false) => format!(
            "[{severity}] {} — {place}. Respond by {by}; acknowledge alert {} (estatemon alerts ack {}).",
            alert.summary, alert.id, alert.id
        ),
        (_, true) => {
            let level = level_zh(&alert.severity);
            format!(
                "【{level}】{} — {place}。請於 {by} 前回應；確認警報 {}（estatemon alerts ack {}）。",
                alert.summary, alert.id, alert.id
            )
        }
    }
}

/// The request for one transition (`firing`, `resolved`, `escalated`) of
/// an alert to `hook`, at `now` (signatures carry the time).
pub fn request(
    hook: &WebhookConfig,
    generic_body: Value,
    alert: &AlertView,
    kind: &str,
    now: DateTime<Utc>,
) -> Request {
    let chinese = hook.language.as_deref() == Some("zh");
    let text = message(alert, kind, chinese);
    let secret = hook.secret.as_deref().filter(|s| !s.is_empty());
    match hook.format {
        WebhookFormat::Estatemon => {
            let mut headers = Vec::new();
            if let Some(s) = secret {
                let bytes = serde_json::to_vec(&generic_body).expect("JSON");
                headers.push(("X-Estatemon-Signature".into(), body_signature(s, &bytes)));
            }
            Request::json(hook.url.clone(), headers, generic_body)
        }
        WebhookFormat::Dingtalk => {
            let url = dingtalk_url(&hook.url, secret, now);
            Request::json(
                url,
                Vec::new(),
                json!({"msgtype": "text", "text": {"content": text}}),
            )
        }
        WebhookFormat::Feishu => {
            let mut body = json!({"msg_type": "text", "content": {"text": text}});
            if let Some(s) = secret {
                let ts = now.timestamp();
                body["timestamp"] = json!(ts.to_string());
                body["sign"] = json!(feishu_sign(s, ts));
            }
            Request::json(hook.url.clone(), Vec::new(), body)
        }
        WebhookFormat::Wecom => Request::json(
            hook.url.clone(),
            Vec::new(),
            json!({"msgtype": "text", "text": {"content": text}}),
        ),
        WebhookFormat::Slack => {
            Request::json(hook.url.clone(), Vec::new(), json!({ "text": text }))
        }
        // Telegram Bot API sendMessage: the chat and the text.
        WebhookFormat::Telegram => Request::json(
            hook.url.clone(),
            Vec::new(),
            json!({"chat_id": hook.chat_id, "text": text}),
        ),
        // A Twilio-compatible SMS: To, From, Body, form-encoded, with Basic
        // authentication by account and token (checked on load).
        WebhookFormat::Sms => Request {
            url: hook.url.clone(),
            headers: Vec::new(),
            body: Value::Null,
            form: Some(vec![
                ("To".into(), hook.to.clone().unwrap_or_default()),
                ("From".into(), hook.from.clone().unwrap_or_default()),
                ("Body".into(), text),
            ]),
            basic_auth: Some((
                hook.account.clone().unwrap_or_default(),
                secret.unwrap_or_default().to_owned(),
            )),
            mail: None,
        },
        WebhookFormat::Voice => call(hook, hook.to.as_deref().unwrap_or_default(), &text, chinese),
        WebhookFormat::Email => email(
            hook,
            hook.to.as_deref().unwrap_or_default(),
            &subject_of(alert, kind, chinese),
            &text,
            &format!("<alert-{}-{kind}@estatemon>", alert.id),
        ),
    }
}

/// An e-mail's subject: the severity, what happened and where, short.
fn subject_of(alert: &AlertView, kind: &str, chinese: bool) -> String {
    let first: String = message(alert, kind, chinese)
        .split(['.', '。'])
        .next()
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect();
    first
}

/// A Twilio-compatible voice call: To, From and the TwiML that reads
/// `text` aloud twice (Cantonese for Chinese), form-encoded, with Basic
/// authentication.
fn call(hook: &WebhookConfig, to: &str, text: &str, chinese: bool) -> Request {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let language = if chinese { "zh-HK" } else { "en-GB" };
    let say = format!(r#"<Say language="{language}">{escaped}</Say>"#);
    Request {
        url: hook.url.clone(),
        headers: Vec::new(),
        body: Value::Null,
        form: Some(vec![
            ("To".into(), to.to_owned()),
            ("From".into(), hook.from.clone().unwrap_or_default()),
            (
                "Twiml".into(),
                format!(r#"<Response>{say}<Pause length="1"/>{say}</Response>"#),
            ),
        ]),
        basic_auth: Some((
            hook.account.clone().unwrap_or_default(),
            hook.secret.clone().unwrap_or_default(),
        )),
        mail: None,
    }
}

fn email(hook: &WebhookConfig, to: &str, subject: &str, text: &str, message_id: &str) -> Request {
    Request {
        url: hook.url.clone(),
        headers: Vec::new(),
        body: Value::Null,
        form: None,
        basic_auth: None,
        mail: Some(Mail {
            from: hook.from.clone().unwrap_or_default(),
            to: to.to_owned(),
            subject: subject.to_owned(),
            text: text.to_owned(),
            message_id: message_id.to_owned(),
            credentials: hook
                .account
                .clone()
                .map(|u| (u, hook.secret.clone().unwrap_or_default())),
        }),
    }
}

/// One page to one person, as its channel documents a message to one
/// person: the robot's @-mention of their user id (WeCom
/// `mentioned_list`, DingTalk `at.atUserIds`, Feishu `<at user_id>`), the
/// bot's message to their chat with the links as buttons (Telegram), an
/// SMS or a call to their phone, or an e-mail. `contact` is their id,
/// number or address on that channel; `page` the stable notification id.
pub fn page_request(
    channel: &WebhookConfig,
    contact: &str,
    name: &str,
    message: &PageMessage,
    now: DateTime<Utc>,
) -> Request {
    let chinese = message.chinese;
    let text = &message.text;
    let secret = channel.secret.as_deref().filter(|s| !s.is_empty());
    match channel.format {
        WebhookFormat::Wecom => Request::json(
            channel.url.clone(),
            Vec::new(),
            json!({"msgtype": "text", "text": {"content": text, "mentioned_list": [contact]}}),
        ),
        WebhookFormat::Dingtalk => {
            let url = dingtalk_url(&channel.url, secret, now);
            Request::json(
                url,
                Vec::new(),
                json!({"msgtype": "text", "text": {"content": format!("@{contact} {text}")},
                       "at": {"atUserIds": [contact], "isAtAll": false}}),
            )
        }
        WebhookFormat::Feishu => {
            let escaped = name.replace(['<', '>'], "");
            let mut body = json!({"msg_type": "text", "content": {
                "text": format!("<at user_id=\"{contact}\">{escaped}</at> {text}")}});
            if let Some(s) = secret {
                let ts = now.timestamp();
                body["timestamp"] = json!(ts.to_string());
                body["sign"] = json!(feishu_sign(s, ts));
            }
            Request::json(channel.url.clone(), Vec::new(), body)
        }
        WebhookFormat::Telegram => {
            let mut body = json!({"chat_id": contact, "text": text});
            if let Some(l) = &message.links {
                let (ack, resolve, snooze) = if chinese {
                    ("確認", "已解決", "延後 30 分鐘")
                } else {
                    ("Acknowledge", "Resolve", "Snooze 30 min")
                };
                body["reply_markup"] = json!({"inline_keyboard": [[
                    {"text": ack, "url": l.ack},
                    {"text": resolve, "url": l.resolve},
                    {"text": snooze, "url": l.snooze},
                ]]});
            }
            Request::json(channel.url.clone(), Vec::new(), body)
        }
        WebhookFormat::Sms => Request {
            url: channel.url.clone(),
            headers: Vec::new(),
            body: Value::Null,
            form: Some(vec![
                ("To".into(), contact.to_owned()),
                ("From".into(), channel.from.clone().unwrap_or_default()),
                ("Body".into(), text.clone()),
            ]),
            basic_auth: Some((
                channel.account.clone().unwrap_or_default(),
                secret.unwrap_or_default().to_owned(),
            )),
            mail: None,
        },
        // Links are for screens, not for reading aloud.
        WebhookFormat::Voice => call(channel, contact, &message.spoken, chinese),
        WebhookFormat::Email => email(
            channel,
            contact,
            &message.subject,
            text,
            &message.message_id,
        ),
        // Refused on load for on-call channels; a broadcast body if ever.
        WebhookFormat::Estatemon | WebhookFormat::Slack => {
            Request::json(channel.url.clone(), Vec::new(), json!({ "text": text }))
        }
    }
}

/// What a page says: short, in the person's language, the site's local
/// time, the links, and its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct PageMessage {
    pub chinese: bool,
    pub subject: String,
    pub text: String,
    /// The text without links, for a voice call.
    pub spoken: String,
    pub links: Option<super::links::Links>,
    /// `<page-{id}@estatemon>`: the same on every try of the page.
    pub message_id: String,
}

/// The page's message for `alert` (see [`PageMessage`]).
pub fn page_message(
    alert: &AlertView,
    page: i64,
    chinese: bool,
    tz: chrono_tz::Tz,
    links: Option<super::links::Links>,
    snooze_minutes: u32,
) -> PageMessage {
    let place = place(alert);
    let by = alert.response_deadline.with_timezone(&tz).format("%H:%M");
    let day = alert.response_deadline.with_timezone(&tz).format("%m-%d");
    let severity = alert.severity.to_uppercase();
    let (subject, mut text) = if chinese {
        let level = level_zh(&alert.severity);
        let subject = format!("【{level}】{} — {place}", alert.summary);
        let text = format!("{subject}。請於 {day} {by}（{tz}）前回應。");
        (subject, text)
    } else {
        let subject = format!("[{severity}] {} — {place}", alert.summary);
        let text = format!("{subject}. Respond by {by} {day} ({tz}).");
        (subject, text)
    };
    let spoken = if chinese {
        format!("{text} 請盡快確認。")
    } else {
        format!("{text} Please acknowledge with the link in your messages.")
    };
    if let Some(l) = &links {
        if chinese {
            text.push_str(&format!(
                " 確認：{} 已解決：{} 延後{snooze_minutes}分鐘：{}",
                l.ack, l.resolve, l.snooze
            ));
        } else {
            text.push_str(&format!(
                " Acknowledge: {} Resolve: {} Snooze {snooze_minutes} min: {}",
                l.ack, l.resolve, l.snooze
            ));
        }
    } else if chinese {
        text.push_str(&format!(" 確認：estatemon alerts ack {}", alert.id));
    } else {
        text.push_str(&format!(" Acknowledge: estatemon alerts ack {}", alert.id));
    }
    text.push_str(&format!(" (ref P{page})"));
    PageMessage {
        chinese,
        subject,
        text,
        spoken,
        links,
        message_id: format!("<page-{page}@estatemon>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_as_the_documentation_computes_them() {
        // DingTalk's documented steps, by hand: HMAC-SHA256 keyed by the
        // secret over "timestamp\nsecret", Base64, then URL-encoded.
        let secret = "SEC000000000000000000000";
        let ts = 1_700_000_000_000i64;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}\n{secret}").as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let encoded = b64
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(dingtalk_sign(secret, ts), encoded);
        // Feishu's: keyed by "timestamp\nsecret" over nothing.
        let mut mac =
            Hmac::<Sha256>::new_from_slice(format!("1700000000\n{secret}").as_bytes()).unwrap();
        mac.update(b"");
        let b64 = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(feishu_sign(secret, 1_700_000_000), b64);
        assert!(body_signature("k", b"{}").starts_with("sha256="));
    }
}
