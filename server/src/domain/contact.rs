//! A contact: the person Rapport keeps a profile of, identified by an id, an optional external id
//! from the customer's own systems, and an optional email address (at least one of the last two).

use std::{collections::BTreeMap, fmt, str::FromStr};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{TextError, clean_text, field::FieldValue, key::Key};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContactId(Uuid);

impl ContactId {
    /// UUID v7: ordered by creation time, so keyset pagination by id is also chronological.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for ContactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The customer's own identifier for the person (CRM id, shop customer number …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        clean_text(raw, 255).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, normalised so that uniqueness means what people expect: surrounding space
/// trimmed and the domain lower-cased. The local part keeps its case (RFC 5321 lets servers
/// treat it as case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not a valid email address")]
pub struct InvalidEmail;

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let trimmed = raw.trim();
        let (local, domain) = trimmed.rsplit_once('@').ok_or(InvalidEmail)?;
        let normalised = format!("{local}@{}", domain.to_ascii_lowercase());
        let parsed = email_address::EmailAddress::from_str(&normalised).map_err(|_| InvalidEmail)?;
        // A bare host ("user@localhost") or an IP literal cannot receive marketing mail.
        let domain = parsed.domain();
        if !domain.contains('.') || domain.starts_with('[') {
            return Err(InvalidEmail);
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form (`+` and up to 15 digits). Spaces, dots, dashes and brackets
/// that people type for readability are removed first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an E.164 phone number such as +4930123456")]
pub struct InvalidPhone;

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, InvalidPhone> {
        let compact: String = raw.trim().chars().filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')')).collect();
        let digits = compact.strip_prefix('+').ok_or(InvalidPhone)?;
        let valid =
            (2..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) && !digits.starts_with('0');
        if valid { Ok(Self(compact)) } else { Err(InvalidPhone) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        clean_text(raw, 200).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP 47 language tag, kept in its canonical case (`de-CH`, `zh-Hant-TW`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locale(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a BCP 47 language tag such as en or de-CH")]
pub struct InvalidLocale;

impl Locale {
    pub fn parse(raw: &str) -> Result<Self, InvalidLocale> {
        let tag = language_tags::LanguageTag::parse(raw.trim()).map_err(|_| InvalidLocale)?;
        // Private-use-only tags ("x-foo") and grandfathered oddities carry no language.
        if tag.primary_language().starts_with('x') && tag.primary_language().len() == 1 {
            return Err(InvalidLocale);
        }
        tag.validate().map_err(|_| InvalidLocale)?;
        Ok(Self(canonical_case(tag.as_str())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// BCP 47 recommends lowercase language, Titlecase script and UPPERCASE region subtags.
fn canonical_case(tag: &str) -> String {
    tag.split('-')
        .enumerate()
        .map(|(index, part)| match (index, part.len()) {
            (0, _) => part.to_ascii_lowercase(),
            (_, 2) => part.to_ascii_uppercase(),
            (_, 4) if part.chars().all(|c| c.is_ascii_alphabetic()) => {
                let mut chars = part.chars();
                let first = chars.next().map(|c| c.to_ascii_uppercase());
                first.into_iter().chain(chars.map(|c| c.to_ascii_lowercase())).collect()
            }
            _ => part.to_ascii_lowercase(),
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// An IANA time zone name (`Europe/Berlin`), checked against the bundled tz database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZone(chrono_tz::Tz);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an IANA time zone name such as Europe/Berlin")]
pub struct InvalidTimeZone;

impl TimeZone {
    pub fn parse(raw: &str) -> Result<Self, InvalidTimeZone> {
        raw.trim().parse::<chrono_tz::Tz>().map(Self).map_err(|_| InvalidTimeZone)
    }

    pub fn as_str(&self) -> &'static str {
        self.0.name()
    }
}

/// An ISO 3166-1 alpha-2 country code, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CountryCode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an ISO 3166-1 alpha-2 country code such as DE")]
pub struct InvalidCountry;

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, InvalidCountry> {
        let upper = raw.trim().to_ascii_uppercase();
        isocountry::CountryCode::for_alpha2(&upper).map_err(|_| InvalidCountry)?;
        Ok(Self(upper))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Custom field values by field key; only values that passed their definition get here.
pub type Attributes = BTreeMap<Key, FieldValue>;

#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: ContactId,
    pub external_id: Option<ExternalId>,
    pub email: Option<EmailAddress>,
    pub profile: Profile,
    pub attributes: Attributes,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped on every change; writers pass the version they read to detect lost updates.
    pub version: i64,
}

/// The built-in profile fields other than the identifiers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub phone: Option<PhoneNumber>,
    pub first_name: Option<PersonName>,
    pub last_name: Option<PersonName>,
    pub locale: Option<Locale>,
    pub time_zone: Option<TimeZone>,
    pub country: Option<CountryCode>,
}

/// How a caller names a contact it wants to read or change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContactRef {
    Id(ContactId),
    ExternalId(ExternalId),
    Email(EmailAddress),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_its_domain_lower_cased() {
        let email = EmailAddress::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Ada.Lovelace@example.com");
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for raw in ["", "plain", "a@", "@example.com", "a b@example.com", "a@localhost", "a@@b.com"] {
            assert_eq!(EmailAddress::parse(raw), Err(InvalidEmail), "{raw:?}");
        }
    }

    #[test]
    fn phone_numbers_lose_their_punctuation() {
        assert_eq!(PhoneNumber::parse("+49 (30) 123-456").unwrap().as_str(), "+4930123456");
        for raw in ["030123456", "+0301234", "+1", "+49 30 abc", "+1234567890123456"] {
            assert_eq!(PhoneNumber::parse(raw), Err(InvalidPhone), "{raw:?}");
        }
    }

    #[test]
    fn locales_are_canonically_cased() {
        assert_eq!(Locale::parse("de-ch").unwrap().as_str(), "de-CH");
        assert_eq!(Locale::parse("ZH-hant-tw").unwrap().as_str(), "zh-Hant-TW");
        assert_eq!(Locale::parse("english please"), Err(InvalidLocale));
    }

    #[test]
    fn time_zones_must_exist_in_the_tz_database() {
        assert_eq!(TimeZone::parse("Europe/Berlin").unwrap().as_str(), "Europe/Berlin");
        assert_eq!(TimeZone::parse("Mars/Olympus_Mons"), Err(InvalidTimeZone));
    }

    #[test]
    fn countries_are_upper_cased_alpha2_codes() {
        assert_eq!(CountryCode::parse("de").unwrap().as_str(), "DE");
        assert_eq!(CountryCode::parse("XX"), Err(InvalidCountry));
        assert_eq!(CountryCode::parse("DEU"), Err(InvalidCountry));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn email_normalisation_is_idempotent_and_lower_cases_the_domain(
                local in "[A-Za-z0-9._%+-]{1,20}",
                domain in "[A-Za-z0-9-]{1,15}\\.[A-Za-z]{2,6}",
                padding in " {0,3}",
            ) {
                if let Ok(email) = EmailAddress::parse(&format!("{padding}{local}@{domain}{padding}")) {
                    prop_assert_eq!(EmailAddress::parse(email.as_str()), Ok(email.clone()));
                    let (kept_local, kept_domain) = email.as_str().rsplit_once('@').unwrap();
                    prop_assert_eq!(kept_local, local.as_str());
                    prop_assert_eq!(kept_domain, domain.to_ascii_lowercase());
                }
            }

            #[test]
            fn e164_numbers_parse_whatever_the_punctuation(
                digits in "[1-9][0-9]{1,14}",
                separators in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("-"), Just(".")], 15),
            ) {
                let typed: String = digits.chars().zip(separators.iter().cycle()).map(|(digit, separator)| format!("{digit}{separator}")).collect();
                let phone = PhoneNumber::parse(&format!("+{typed}")).unwrap();
                prop_assert_eq!(phone.as_str(), format!("+{digits}"));
            }

            #[test]
            fn parsing_arbitrary_text_never_panics(raw in "\\PC{0,40}") {
                let _ = EmailAddress::parse(&raw);
                let _ = PhoneNumber::parse(&raw);
                let _ = Locale::parse(&raw);
                let _ = TimeZone::parse(&raw);
                let _ = CountryCode::parse(&raw);
            }
        }
    }
}
