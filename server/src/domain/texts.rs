//! The texts of the customer pages in each language they speak (web/pages/i18n/*.toml, plain
//! files that translators edit). They are read here, below the pages, because consent proof has
//! to name the exact wording a person saw, and the built-in purposes' wording is among them.

use std::{collections::BTreeMap, sync::LazyLock};

/// One language's texts, by key.
pub type Texts = BTreeMap<String, String>;

/// The languages the pages are written in; the first is the fallback.
const SOURCES: [(&str, &str); 2] =
    [("en", include_str!("../../../web/pages/i18n/en.toml")), ("de", include_str!("../../../web/pages/i18n/de.toml"))];

static TEXTS: LazyLock<Vec<(&'static str, Texts)>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|(language, source)| {
            // A broken file leaves its language without texts (the pages then fall back key by
            // key) rather than taking the server down; the test below keeps that from shipping.
            let texts = toml::from_str::<Texts>(source).unwrap_or_else(|error| {
                tracing::error!(language, %error, "a page text file does not parse");
                Texts::new()
            });
            (*language, texts)
        })
        .collect()
});

/// The language every page falls back to.
pub const DEFAULT_LANGUAGE: &str = SOURCES[0].0;

/// The languages the pages speak, the default first.
pub fn languages() -> impl Iterator<Item = &'static str> {
    SOURCES.iter().map(|(language, _)| *language)
}

/// The spoken language of a BCP 47 tag (`de-CH` is `de`), if the pages speak it.
pub fn spoken(tag: &str) -> Option<&'static str> {
    let primary = tag.split(['-', '_']).next().unwrap_or_default().trim().to_ascii_lowercase();
    languages().find(|language| *language == primary)
}

/// The texts of `language`, or of the default language if the pages do not speak it.
pub fn of(language: &str) -> &'static Texts {
    let texts = &*TEXTS;
    texts.iter().find(|(spoken, _)| *spoken == language).or(texts.first()).map_or_else(empty, |(_, texts)| texts)
}

fn empty() -> &'static Texts {
    static EMPTY: Texts = Texts::new();
    &EMPTY
}

/// How a built-in purpose is worded in `language` (label, description), if it is translated.
pub fn purpose_wording(language: &str, purpose: &str) -> Option<(&'static str, Option<&'static str>)> {
    let texts = of(language);
    let label = texts.get(&format!("purpose_{purpose}_label"))?;
    Some((label.as_str(), texts.get(&format!("purpose_{purpose}_description")).map(String::as_str)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_parses_and_has_the_keys_of_the_default_one() {
        let default = of(DEFAULT_LANGUAGE);
        assert!(default.len() > 10);
        for language in languages() {
            let texts = of(language);
            assert!(default.keys().eq(texts.keys()), "{language} has the same keys as {DEFAULT_LANGUAGE}");
        }
    }

    #[test]
    fn tags_are_spoken_by_their_primary_language() {
        assert_eq!(spoken("de-CH"), Some("de"));
        assert_eq!(spoken("EN_gb"), Some("en"));
        assert_eq!(spoken("fr"), None);
        assert_eq!(purpose_wording("de", "marketing").map(|(label, _)| label), Some("Werbung"));
        assert_eq!(purpose_wording("de", "newsletter"), None);
    }
}
