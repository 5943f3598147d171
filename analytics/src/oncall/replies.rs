//! Replies that acknowledge: an SMS answered to the Twilio-compatible
//! gateway, which posts it to `estatemon api` (`POST /oncall/sms`, its
//! "incoming message" webhook). The gateway signs the request as Twilio
//! documents ("Webhooks security"): `X-Twilio-Signature` is the Base64
//! HMAC-SHA1, keyed by the account's auth token (the channel's `secret`),
//! of the full URL followed by every POST parameter's name and value,
//! sorted by name. An unsigned or wrongly signed reply acts on nothing.
//!
//! The reply names the page (`ACK P123`, `確認 P123`, or only the number)
//! or nothing (`ACK`, `OK`, `1`): then the newest page delivered to that
//! phone whose alert is still firing. Only the person a page went to can
//! acknowledge it by reply.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use tokio_postgres::GenericClient;

use super::roster::Roster;

/// What Twilio signs: the full URL, then each POST parameter's name and
/// value, sorted by name.
fn signed_data(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    data.into_bytes()
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(&signed_data(url, params));
    mac
}

/// Twilio's signature of a webhook request.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether the signature is Twilio's for this request (constant time).
pub fn verify_twilio(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    given: &str,
) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(given.trim())
        .is_ok_and(|given| mac(auth_token, url, params).verify_slice(&given).is_ok())
}

/// What a reply asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Acknowledge this page, or (None) the newest one.
    Ack(Option<i64>),
    /// Not an acknowledgement.
    Other,
}

/// Reads a reply's text: `ACK`, `OK`, `1`, `Y`, `確認`, `收到`, each with
/// an optional page reference (`P123` or `123`).
pub fn parse(body: &str) -> Ask {
    let text = body.trim().to_uppercase();
    let mut words = text.split_whitespace();
    let Some(first) = words.next() else {
        return Ask::Other;
    };
    let number = |w: &str| w.trim_start_matches('P').parse::<i64>().ok();
    // Only a page reference: "P123".
    if first.starts_with('P') {
        if let Some(n) = number(first) {
            return Ask::Ack(Some(n));
        }
    }
    if matches!(
        first,
        "ACK" | "OK" | "1" | "Y" | "YES" | "確認" | "收到" | "确认"
    ) {
        return Ask::Ack(words.next().and_then(number));
    }
    Ask::Other
}

/// The roster person with this phone number (spaces and dashes ignored).
pub fn person_by_phone<'a>(roster: &'a Roster, phone: &str) -> Option<&'a super::roster::Person> {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect::<String>()
    };
    let want = norm(phone);
    roster
        .people
        .iter()
        .find(|p| p.contacts.phone.as_deref().is_some_and(|x| norm(x) == want))
}

/// The page a reply acknowledges: the named one if it went to `person`,
/// or their newest delivered page whose alert still fires. (page, alert).
pub async fn page_for(
    client: &impl GenericClient,
    person: &str,
    page: Option<i64>,
) -> Result<Option<(i64, i64)>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT p.id, p.alert_id FROM oncall_pages p JOIN alerts a ON a.id = p.alert_id
              WHERE p.person = $1 AND ($2::bigint IS NULL OR p.id = $2)
                AND ($2::bigint IS NOT NULL OR (p.delivered_at IS NOT NULL AND a.state = 'firing'))
              ORDER BY p.delivered_at DESC NULLS LAST, p.id DESC LIMIT 1",
            &[&person, &page],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twilio's own example (TwilioDevEd/api-snippets,
    /// security/signature_validation): the auth token `12345`, its URL and
    /// parameters give `GvWf1cFY/Q7PnoempGyD5oXAezc=`.
    #[test]
    fn twilios_documented_signature() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature("12345", url, &params),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert!(verify_twilio(
            "12345",
            url,
            &params,
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
        assert!(!verify_twilio(
            "12346",
            url,
            &params,
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
    }

    #[test]
    fn replies_that_acknowledge() {
        assert_eq!(parse("ack"), Ask::Ack(None));
        assert_eq!(parse(" ACK P42 "), Ask::Ack(Some(42)));
        assert_eq!(parse("確認 42"), Ask::Ack(Some(42)));
        assert_eq!(parse("P7"), Ask::Ack(Some(7)));
        assert_eq!(parse("1"), Ask::Ack(None));
        assert_eq!(parse("who is this?"), Ask::Other);
        assert_eq!(parse(""), Ask::Other);
    }
}
