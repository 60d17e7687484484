//! Machine names chosen by admins (field keys, topic keys, consent purposes, event sources).
//! They appear in templates, filters and URLs, so they are restricted to a safe, stable alphabet.

use std::fmt;

/// `snake_case` identifier: a lowercase letter, then up to 63 lowercase letters, digits or `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "must start with a lowercase letter and contain only lowercase letters, digits and '_' (at most 64 characters)"
)]
pub struct InvalidKey;

impl Key {
    pub fn parse(raw: &str) -> Result<Self, InvalidKey> {
        let mut chars = raw.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_is_valid = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if starts_with_letter && rest_is_valid && raw.len() <= 64 { Ok(Self(raw.to_owned())) } else { Err(InvalidKey) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_keys_are_accepted() {
        for raw in ["a", "loyalty_tier", "score2", &"x".repeat(64)] {
            assert!(Key::parse(raw).is_ok(), "{raw}");
        }
    }

    #[test]
    fn keys_outside_the_alphabet_are_rejected() {
        for raw in ["", "1abc", "Tier", "with space", "dash-ed", "ünï", &"x".repeat(65)] {
            assert_eq!(Key::parse(raw), Err(InvalidKey), "{raw}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_key_of_the_alphabet_round_trips(raw in "[a-z][a-z0-9_]{0,63}") {
            proptest::prop_assert_eq!(Key::parse(&raw).map(|key| key.as_str().to_owned()), Ok(raw));
        }
    }
}
