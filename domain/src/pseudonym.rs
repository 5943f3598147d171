//! Keyed pseudonymisation of personal identifiers (card numbers, face ids).
//!
//! HMAC-SHA-256 under a site secret, truncated to 128 bits: the same card
//! always maps to the same pseudonym (so weekly swipe analysis still works),
//! but without the key the card number cannot be recovered or brute-forced
//! from a list of card numbers, which a plain hash would allow.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A pseudonymised credential: 32 lower-case hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pseudonym(String);

impl Pseudonym {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Holds the key; cheap to clone.
#[derive(Clone)]
pub struct Pseudonymiser {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(<key hidden>)")
    }
}

impl Pseudonymiser {
    pub fn new(key: &[u8]) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        Pseudonymiser { mac }
    }

    pub fn pseudonymise(&self, credential: &str) -> Pseudonym {
        let mut mac = self.mac.clone();
        mac.update(credential.as_bytes());
        let digest = mac.finalize().into_bytes();
        Pseudonym(hex::encode(&digest[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_key_and_never_the_raw_value() {
        let a = Pseudonymiser::new(b"site-secret");
        let b = Pseudonymiser::new(b"other-secret");
        let p1 = a.pseudonymise("CARD-0042");
        assert_eq!(p1, a.pseudonymise("CARD-0042"));
        assert_ne!(p1, a.pseudonymise("CARD-0043"));
        assert_ne!(p1, b.pseudonymise("CARD-0042"));
        assert_eq!(p1.as_str().len(), 32);
        assert!(!p1.as_str().contains("0042"));
    }
}
