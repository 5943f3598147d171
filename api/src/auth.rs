//! Bearer tokens with roles. A token is shown once when created; only its
//! SHA-256 is stored. Requests are matched against the cached hashes with a
//! constant-time comparison of every entry (no early exit, no index
//! lookup keyed by attacker input), so timing says nothing about how close
//! a guess was.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;

use crate::error::ApiError;

/// What a token may do; each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Also acknowledge and silence alerts.
    Operator,
    /// Also manage devices, rules and tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: Role,
}

impl Actor {
    /// Fails unless the actor's role is at least `need`.
    pub fn require(&self, need: Role, what: &str) -> Result<(), ApiError> {
        if self.role >= need {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                have: self.role.as_str(),
                need: need.as_str(),
                what: what.to_owned(),
            })
        }
    }
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: `emt_` and 43 URL-safe characters (256 bits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::from("emt_");
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[derive(Debug, Clone)]
struct Entry {
    hash: [u8; 32],
    actor: Actor,
}

/// The live tokens, reloaded from `api_tokens` at most every few seconds
/// (a revoked token stops working within that time).
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<RwLock<(Vec<Entry>, Option<Instant>)>>,
    ttl: Duration,
}

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            inner: Arc::new(RwLock::new((Vec::new(), None))),
            ttl,
        }
    }

    /// Fills the cache without the database, valid for the TTL (tests).
    #[cfg(test)]
    pub fn preload(&self, tokens: Vec<([u8; 32], Actor)>) {
        let entries = tokens
            .into_iter()
            .map(|(hash, actor)| Entry { hash, actor })
            .collect();
        *self.inner.try_write().expect("uncontended") = (entries, Some(Instant::now()));
    }

    /// Forgets the cache (after creating or revoking a token).
    pub async fn invalidate(&self) {
        self.inner.write().await.1 = None;
    }

    async fn refresh(&self, pool: &deadpool_postgres::Pool) -> Result<(), ApiError> {
        {
            let guard = self.inner.read().await;
            if guard.1.is_some_and(|t| t.elapsed() < self.ttl) {
                return Ok(());
            }
        }
        let client = pool.get().await?;
        let rows = client
            .query(
                "SELECT name, role, token_sha256 FROM api_tokens WHERE revoked_at IS NULL",
                &[],
            )
            .await?;
        let entries = rows
            .iter()
            .filter_map(|r| {
                let digest: Vec<u8> = r.get(2);
                Some(Entry {
                    hash: digest.try_into().ok()?,
                    actor: Actor {
                        name: r.get(0),
                        role: Role::parse(r.get::<_, &str>(1))?,
                    },
                })
            })
            .collect();
        *self.inner.write().await = (entries, Some(Instant::now()));
        Ok(())
    }

    /// The actor a presented token belongs to.
    pub async fn authenticate(
        &self,
        pool: &deadpool_postgres::Pool,
        presented: &str,
    ) -> Result<Actor, ApiError> {
        self.refresh(pool).await?;
        let digest = hash(presented);
        let guard = self.inner.read().await;
        let mut found: Option<&Actor> = None;
        for e in &guard.0 {
            // Every entry is compared, whatever matched before.
            let equal: bool = e.hash.ct_eq(&digest).into();
            if equal {
                found = Some(&e.actor);
            }
        }
        found.cloned().ok_or(ApiError::Unauthenticated)
    }
}

/// The token in an `Authorization: Bearer …` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("emt_") && a.len() == 4 + 43, "{a}");
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a), hash(&a.clone()));
    }

    #[test]
    fn roles_include_the_ones_below() {
        let op = Actor {
            name: "ops".into(),
            role: Role::Operator,
        };
        assert!(op.require(Role::Viewer, "read").is_ok());
        assert!(op.require(Role::Operator, "acknowledge alerts").is_ok());
        let e = op.require(Role::Admin, "manage devices").unwrap_err();
        assert!(e.to_string().contains("needs `admin`"), "{e}");
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
