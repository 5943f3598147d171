//! The links in every page: acknowledge, resolve, snooze. Each is signed
//! (HMAC-SHA256 under a key kept in the database, made once by whichever
//! process needs it first), expires, and works once (`oncall_link_uses`),
//! so a forwarded or replayed message cannot act twice, and a link
//! someone edits is refused.
//!
//! A token reads `{page}.{action}.{expires}.{signature}`: the page's id,
//! `ack`, `resolve` or `snooze`, the expiry in Unix seconds, and the
//! Base64url HMAC of the three. Nothing in it is personal; the page names
//! the person it was sent to.

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_postgres::GenericClient;

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Ack,
    Resolve,
    Snooze,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Ack, Action::Resolve, Action::Snooze];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ack => "ack",
            Action::Resolve => "resolve",
            Action::Snooze => "snooze",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A verified link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub page: i64,
    pub action: Action,
    pub expires: DateTime<Utc>,
}

/// Why a link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this link is not one estatemon made (malformed)")]
    Malformed,
    #[error("this link has been altered: its signature does not match")]
    Tampered,
    #[error("this link expired at {0}")]
    Expired(DateTime<Utc>),
}

fn mac(key: &[u8], payload: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(payload.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// The token of a link.
pub fn sign(key: &[u8], claim: Claim) -> String {
    let payload = format!(
        "{}.{}.{}",
        claim.page,
        claim.action.as_str(),
        claim.expires.timestamp()
    );
    let sig = mac(key, &payload);
    format!("{payload}.{sig}")
}

/// Checks a token's form, signature (in constant time) and expiry at `now`.
pub fn verify(key: &[u8], token: &str, now: DateTime<Utc>) -> Result<Claim, Refused> {
    let mut parts = token.splitn(4, '.');
    let (Some(page), Some(action), Some(expires), Some(sig)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::Malformed);
    };
    let page: i64 = page.parse().map_err(|_| Refused::Malformed)?;
    let action = Action::parse(action).ok_or(Refused::Malformed)?;
    let expires: i64 = expires.parse().map_err(|_| Refused::Malformed)?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| Refused::Malformed)?;
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(format!("{page}.{}.{expires}", action.as_str()).as_bytes());
    m.verify_slice(&sig).map_err(|_| Refused::Tampered)?;
    let expires = DateTime::from_timestamp(expires, 0).ok_or(Refused::Malformed)?;
    if now >= expires {
        return Err(Refused::Expired(expires));
    }
    Ok(Claim {
        page,
        action,
        expires,
    })
}

/// What a token shows of itself in logs and the audit: the page and the
/// action, never the signature.
pub fn redact(token: &str) -> String {
    match token.rsplit_once('.') {
        Some((payload, _)) if payload.contains('.') => format!("{payload}.***"),
        _ => "***".into(),
    }
}

/// The token of a person's calendar URL (`/oncall/ical/{person}/{token}`):
/// a phone's calendar subscribes without logging in, so the URL itself is
/// the secret; it shows shifts only (team names and times), never contacts.
pub fn calendar_token(key: &[u8], person: &str) -> String {
    mac(key, &format!("calendar\n{person}"))
}

/// Whether `token` is `person`'s calendar token (constant time).
pub fn verify_calendar(key: &[u8], person: &str, token: &str) -> bool {
    let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) else {
        return false;
    };
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(format!("calendar\n{person}").as_bytes());
    m.verify_slice(&sig).is_ok()
}

/// The signing key, made on first use (32 bytes from PostgreSQL's strong
/// random source) and shared through the database by every process.
pub async fn key(client: &impl GenericClient) -> Result<Vec<u8>, tokio_postgres::Error> {
    // Read first: every page and every link request asks, the key is made once.
    if let Some(r) = client
        .query_opt("SELECT key FROM oncall_keys WHERE id = 1", &[])
        .await?
    {
        return Ok(r.get(0));
    }
    client
        .execute(
            "INSERT INTO oncall_keys (id, key)
             VALUES (1, uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))
             ON CONFLICT (id) DO NOTHING",
            &[],
        )
        .await?;
    Ok(client
        .query_one("SELECT key FROM oncall_keys WHERE id = 1", &[])
        .await?
        .get(0))
}

/// The three links of a page, under `base` (the API's public address).
pub fn urls(key: &[u8], base: &str, page: i64, expires: DateTime<Utc>) -> Links {
    let link = |action| {
        format!(
            "{}/oncall/a/{}",
            base.trim_end_matches('/'),
            sign(
                key,
                Claim {
                    page,
                    action,
                    expires
                }
            )
        )
    };
    Links {
        ack: link(Action::Ack),
        resolve: link(Action::Resolve),
        snooze: link(Action::Snooze),
    }
}

/// A page's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    pub ack: String,
    pub resolve: String,
    pub snooze: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn a_link_verifies_until_it_expires_and_not_once_altered() {
        let key = b"0123456789abcdef0123456789abcdef";
        let claim = Claim {
            page: 42,
            action: Action::Ack,
            expires: at(2_000_000_000),
        };
        let token = sign(key, claim);
        assert_eq!(verify(key, &token, at(1_999_999_999)), Ok(claim));
        assert_eq!(
            verify(key, &token, at(2_000_000_000)),
            Err(Refused::Expired(at(2_000_000_000)))
        );
        // Another page, action or expiry under the same signature.
        for altered in [
            token.replacen("42.", "43.", 1),
            token.replacen(".ack.", ".resolve.", 1),
            token.replacen(".2000000000.", ".2100000000.", 1),
        ] {
            assert_eq!(
                verify(key, &altered, at(0)),
                Err(Refused::Tampered),
                "{altered}"
            );
        }
        assert_eq!(
            verify(b"another key", &token, at(0)),
            Err(Refused::Tampered)
        );
        assert_eq!(verify(key, "42.ack", at(0)), Err(Refused::Malformed));
        assert_eq!(redact(&token), "42.ack.2000000000.***");
        let cal = calendar_token(key, "chan-tai-man");
        assert!(verify_calendar(key, "chan-tai-man", &cal));
        assert!(!verify_calendar(key, "wong-siu-ming", &cal));
        assert!(!verify_calendar(b"another key", "chan-tai-man", &cal));
    }

    proptest! {
        /// Whatever arrives in the path, verification answers (no panic),
        /// and only what was signed passes.
        #[test]
        fn any_token_is_answered(token in ".{0,120}") {
            let key = b"k";
            let r = verify(key, &token, at(0));
            if let Ok(c) = r {
                prop_assert_eq!(sign(key, c), token);
            }
        }
    }
}
