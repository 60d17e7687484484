//! The preference center: what admins set (branding, the profile fields a contact may edit, the
//! sender of the center's own emails) and what a contact sends back from its page.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{TextError, clean_text, consent::Channel, contact::EmailAddress, key::Key, topic::Frequency};

/// The profile fields built into every contact that admins may let contacts edit; any custom
/// field may be allowed too.
pub const EDITABLE_PROFILE_FIELDS: [&str; 5] = ["first_name", "last_name", "country", "locale", "time_zone"];

/// The settings, as stored (JSON) and as the pages read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferenceCenter {
    pub company_name: String,
    /// A `data:` URL, so the page loads nothing from another host.
    pub logo: Option<String>,
    /// `#rrggbb`, dark enough for white text on it and for links on white (WCAG AA).
    pub primary_color: String,
    pub footer_text: Option<String>,
    pub privacy_policy_url: Option<String>,
    /// Keys of the fields the page shows for editing, in display order.
    pub editable_fields: Vec<String>,
    /// Who the center's emails (fresh links, opt-in confirmations) come from; without one they
    /// are not sent.
    pub sender_name: Option<String>,
    pub sender_address: Option<String>,
    /// The emails the center sends, created with the first sender and editable like any other.
    pub link_email_id: Option<Uuid>,
    pub confirmation_email_id: Option<Uuid>,
}

impl Default for PreferenceCenter {
    fn default() -> Self {
        Self {
            company_name: "Rapport".to_owned(),
            logo: None,
            primary_color: "#1d4ed8".to_owned(),
            footer_text: None,
            privacy_policy_url: None,
            editable_fields: vec!["first_name".to_owned()],
            sender_name: None,
            sender_address: None,
            link_email_id: None,
            confirmation_email_id: None,
        }
    }
}

impl PreferenceCenter {
    pub fn sender(&self) -> Option<EmailAddress> {
        self.sender_address.as_deref().and_then(|address| EmailAddress::parse(address).ok())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ColorError {
    #[error("must be a colour as #rrggbb")]
    Format,
    #[error(
        "is too light: white text on it and links in it on white need a contrast of 4.5:1 (WCAG AA); it has {0:.1}:1"
    )]
    Contrast(f64),
}

/// The smallest contrast WCAG 2.1 AA asks of normal text.
const AA_CONTRAST: f64 = 4.5;

/// A brand colour the pages can use for buttons (white text) and links (on white).
pub fn parse_color(raw: &str) -> Result<String, ColorError> {
    let hex = raw.trim().strip_prefix('#').filter(|hex| hex.len() == 6).ok_or(ColorError::Format)?;
    let channel = |at: usize| u8::from_str_radix(&hex[at..at + 2], 16).map_err(|_| ColorError::Format);
    let (red, green, blue) = (channel(0)?, channel(2)?, channel(4)?);
    let linear = |value: u8| {
        let value = f64::from(value) / 255.0;
        if value <= 0.03928 { value / 12.92 } else { ((value + 0.055) / 1.055).powf(2.4) }
    };
    let luminance = 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue);
    let contrast_with_white = 1.05 / (luminance + 0.05);
    if contrast_with_white < AA_CONTRAST {
        return Err(ColorError::Contrast(contrast_with_white));
    }
    Ok(format!("#{}", hex.to_ascii_lowercase()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoError {
    #[error(
        "must be a data: URL of a PNG, JPEG, GIF, WebP or SVG image, so that the page loads nothing from elsewhere"
    )]
    NotAnImageDataUrl,
    #[error("must be at most {MAX_LOGO_BYTES} bytes: the whole page must stay small")]
    TooLarge,
}

pub const MAX_LOGO_BYTES: usize = 16 * 1024;

pub fn parse_logo(raw: &str) -> Result<String, LogoError> {
    const TYPES: [&str; 5] = ["image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml"];
    let raw = raw.trim();
    if raw.len() > MAX_LOGO_BYTES {
        return Err(LogoError::TooLarge);
    }
    let rest = raw.strip_prefix("data:").ok_or(LogoError::NotAnImageDataUrl)?;
    let (media_type, data) = rest.split_once(";base64,").ok_or(LogoError::NotAnImageDataUrl)?;
    let valid = TYPES.contains(&media_type)
        && !data.is_empty()
        && data.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'='));
    if valid { Ok(raw.to_owned()) } else { Err(LogoError::NotAnImageDataUrl) }
}

/// Free text admins show on the page (company name, footer).
pub fn parse_page_text(raw: &str) -> Result<String, TextError> {
    clean_text(raw, 500)
}

/// What a contact sent from the page: the whole state of the form, not a difference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreferencesForm {
    /// Topics ticked, with the frequency chosen for each topic shown.
    pub subscribed: Vec<Key>,
    pub frequencies: Vec<(Key, Frequency)>,
    /// Consents ticked, as (purpose, channel).
    pub granted: Vec<(Key, Channel)>,
    /// Editable fields as typed; empty clears.
    pub fields: Vec<(String, String)>,
    /// The language the page was shown in (one the pages speak), which words the built-in
    /// consent purposes: the proof of a decision names it.
    pub language: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brand_colours_must_be_dark_enough_for_white_text_and_links() {
        assert_eq!(parse_color("#1D4ED8").as_deref(), Ok("#1d4ed8"));
        assert_eq!(parse_color("#000000").as_deref(), Ok("#000000"));
        assert!(matches!(parse_color("#ffff00"), Err(ColorError::Contrast(contrast)) if contrast < 1.1));
        assert_eq!(parse_color("blue"), Err(ColorError::Format));
        assert_eq!(parse_color("#12345g"), Err(ColorError::Format));
    }

    #[test]
    fn logos_are_small_image_data_urls() {
        assert!(parse_logo("data:image/png;base64,iVBORw0KGgo=").is_ok());
        assert_eq!(parse_logo("https://cdn.example.com/logo.png"), Err(LogoError::NotAnImageDataUrl));
        assert_eq!(parse_logo("data:text/html;base64,PHNjcmlwdD4="), Err(LogoError::NotAnImageDataUrl));
        assert_eq!(parse_logo("data:image/png;base64,<script>"), Err(LogoError::NotAnImageDataUrl));
        let big = format!("data:image/png;base64,{}", "A".repeat(MAX_LOGO_BYTES));
        assert_eq!(parse_logo(&big), Err(LogoError::TooLarge));
    }
}
