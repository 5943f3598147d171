//! Reading back `&'static str` fields (units, statuses, methods) of data
//! that was serialised, such as a stored report re-rendered to add a
//! signature. Each distinct string is kept once for the life of the
//! process: the fields come from small fixed vocabularies, so this is a
//! few bytes, not a leak that grows with use.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer};

static INTERNED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// A `&'static str` field that is read back with [`deserialize`]. (Named,
/// because serde's derive borrows a field spelled `&'static str` from the
/// input, which would tie every deserialiser to a `'static` input.)
pub type Label = &'static str;

/// Longest string accepted: every vocabulary here is a few words.
const MAX_LEN: usize = 200;

/// The interned `&'static str` equal to `s`.
pub fn intern(s: &str) -> &'static str {
    let mut set = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// `#[serde(deserialize_with = "crate::static_str::deserialize")]`
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
    if s.len() > MAX_LEN {
        return Err(serde::de::Error::custom(format!(
            "a {}-byte label where at most {MAX_LEN} are expected",
            s.len()
        )));
    }
    Ok(intern(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let a = intern(&String::from("kWh"));
        let b = intern(&String::from("kWh"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "kWh");
    }

    #[test]
    fn long_labels_are_refused() {
        let long = format!("\"{}\"", "x".repeat(MAX_LEN + 1));
        let mut de = serde_json::Deserializer::from_str(&long);
        assert!(deserialize(&mut de).is_err());
    }
}
