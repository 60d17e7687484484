//! Open and click tracking: `instrument` rewrites a rendered HTML part so that its links go
//! through `/t/c/{token}` and an open pixel loads `/t/o/{token}`. The tokens carry everything
//! the redirect needs, signed, so nothing is stored per link and only URLs that were in the
//! email can ever be redirected to: the redirect target is the signed URL, not a parameter.
//!
//! A token is `base64url(kind ‖ send id ‖ contact id ‖ email version id ‖ [url] ‖ tag)`, the ids
//! as 16 raw bytes and the tag the first 16 bytes of an HMAC-SHA256 over everything before it,
//! under a key derived from the master key ("mail tracking v1"). 128 bits of tag leave nothing
//! to guess and keep an open token at 87 characters.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;
use uuid::Uuid;

use super::{
    html::{Token, Tokens},
    text::TextCollector,
};
use crate::{
    crypto::{DerivedKey, MasterKeys},
    domain::contact::ContactId,
};

const KEY_LABEL: &str = "mail tracking v1";
const TAG_LEN: usize = 16;
const UUID_LEN: usize = 16;
/// Kind byte, then the three ids.
const HEADER_LEN: usize = 1 + 3 * UUID_LEN;

/// The first byte of a token. A token of one kind is refused where the other is expected, and a
/// new format gets new values.
const OPEN_V1: u8 = 0x01;
const CLICK_V1: u8 = 0x02;

/// Paths (under the public URL) that a delivery must see untouched: they act on their own
/// (one-click unsubscribe) and a detour through a redirect would only leak them to the log.
const UNTRACKED_PATHS: [&str; 2] = ["/unsubscribe/", "/preferences/"];

/// Signs and verifies tracking tokens: signs with the key derived from the current master key,
/// verifies with it or, during a rotation, with the one derived from the previous key.
#[derive(Clone)]
pub struct TrackingKeys {
    keys: Vec<DerivedKey>,
    /// HMAC under the current key with the key already absorbed: a message signs a token per
    /// link, and keying afresh each time was two of every token's five hash blocks.
    signer: Hmac<Sha256>,
}

impl std::fmt::Debug for TrackingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackingKeys")
            .field("key_ids", &self.keys.iter().map(DerivedKey::id).collect::<Vec<_>>())
            .finish()
    }
}

/// The one send a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackedSend {
    /// The outbox row.
    pub send_id: Uuid,
    pub contact_id: ContactId,
    pub email_version_id: Uuid,
}

/// A verified click token: the send, and the URL of the link as it was in the email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedClick {
    pub send: TrackedSend,
    pub url: Url,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidToken {
    /// Not base64, too short, of the other kind, altered, or signed with a key this server does
    /// not hold. Callers learn no more than that.
    #[error("tracking token is invalid")]
    Invalid,
}

impl TrackingKeys {
    pub fn new(masters: &MasterKeys) -> Self {
        let keys = masters.derive(KEY_LABEL);
        let signer = Self::mac(&keys[0], &[]);
        Self { keys, signer }
    }

    fn mac(key: &DerivedKey, payload: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        #[allow(clippy::expect_used)]
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes()).expect("HMAC takes any key length");
        mac.update(payload);
        mac
    }

    fn sign(&self, kind: u8, send: &TrackedSend, url: Option<&Url>) -> String {
        let mut token = String::new();
        self.sign_into(kind, send, url, &mut token);
        token
    }

    /// Appends the token to `out`: links are written straight into the message.
    fn sign_into(&self, kind: u8, send: &TrackedSend, url: Option<&Url>, out: &mut String) {
        let url = url.map_or(&[][..], |url| url.as_str().as_bytes());
        let mut token = Vec::with_capacity(HEADER_LEN + url.len() + TAG_LEN);
        token.push(kind);
        token.extend_from_slice(send.send_id.as_bytes());
        token.extend_from_slice(send.contact_id.as_uuid().as_bytes());
        token.extend_from_slice(send.email_version_id.as_bytes());
        token.extend_from_slice(url);
        let mut mac = self.signer.clone();
        mac.update(&token);
        let tag = mac.finalize().into_bytes();
        token.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode_string(token, out);
    }

    pub fn open_token(&self, send: &TrackedSend) -> String {
        self.sign(OPEN_V1, send, None)
    }

    pub fn click_token(&self, send: &TrackedSend, url: &Url) -> String {
        self.sign(CLICK_V1, send, Some(url))
    }

    /// The payload after the kind byte, once the tag has been checked (in constant time) and the
    /// kind is the one expected; nothing in the token is read before that.
    fn verify(&self, kind: u8, token: &str) -> Result<(TrackedSend, Vec<u8>), InvalidToken> {
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidToken::Invalid)?;
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(InvalidToken::Invalid);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        if !self.keys.iter().any(|key| Self::mac(key, payload).verify_truncated_left(tag).is_ok()) {
            return Err(InvalidToken::Invalid);
        }
        if payload[0] != kind {
            return Err(InvalidToken::Invalid);
        }
        let uuid = |at: usize| -> Result<Uuid, InvalidToken> {
            Uuid::from_slice(&payload[at..at + UUID_LEN]).map_err(|_| InvalidToken::Invalid)
        };
        let send = TrackedSend {
            send_id: uuid(1)?,
            contact_id: ContactId::from_uuid(uuid(1 + UUID_LEN)?),
            email_version_id: uuid(1 + 2 * UUID_LEN)?,
        };
        Ok((send, payload[HEADER_LEN..].to_vec()))
    }

    pub fn verify_open(&self, token: &str) -> Result<TrackedSend, InvalidToken> {
        match self.verify(OPEN_V1, token)? {
            (send, rest) if rest.is_empty() => Ok(send),
            _ => Err(InvalidToken::Invalid),
        }
    }

    pub fn verify_click(&self, token: &str) -> Result<TrackedClick, InvalidToken> {
        let (send, url) = self.verify(CLICK_V1, token)?;
        let url = String::from_utf8(url).map_err(|_| InvalidToken::Invalid)?;
        // Only `instrument` signs URLs, and it signs http(s) ones alone; checking again costs
        // nothing and keeps a redirect to anything else impossible even with a leaked key.
        let url = web_url(&url).ok_or(InvalidToken::Invalid)?;
        Ok(TrackedClick { send, url })
    }
}

/// What `instrument` needs to know about one message.
#[derive(Debug, Clone, Copy)]
pub struct Tracking<'a> {
    /// `RAPPORT_PUBLIC_URL`, with or without a trailing slash.
    pub public_url: &'a str,
    pub send: TrackedSend,
    pub keys: &'a TrackingKeys,
}

/// Rewrites every `<a href>` with an http(s) URL into a click redirect and appends an open
/// pixel before `</body>` (or at the end when there is none). `mailto:`, fragments, relative
/// links and the unsubscribe and preference links stay as they are. Runs on rendered HTML.
pub fn instrument(html: &str, tracking: &Tracking<'_>) -> String {
    rewrite(html, tracking, None)
}

/// `instrument`, and the text part made from the HTML as it was before (`text::from_html`), in
/// one pass over the HTML.
pub fn instrument_with_text(html: &str, tracking: &Tracking<'_>) -> (String, String) {
    let mut collector = TextCollector::new(html.len());
    let instrumented = rewrite(html, tracking, Some(&mut collector));
    (instrumented, collector.into_text())
}

/// The tracking rewrite, feeding every token to `text` on the way. Only the values of rewritten
/// links change and the pixel is added; every other byte is copied as it was.
fn rewrite(html: &str, tracking: &Tracking<'_>, mut text: Option<&mut TextCollector>) -> String {
    let base = public_base(tracking.public_url);
    let untracked: Vec<String> = UNTRACKED_PATHS.iter().map(|path| format!("{base}{path}")).collect();
    let pixel = format!(
        r#"<img src="{}" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0">"#,
        htmlize::escape_attribute(format!("{base}/t/o/{}", tracking.keys.open_token(&tracking.send)))
    );
    let click_prefix = htmlize::escape_attribute(format!("{base}/t/c/")).into_owned();
    let mut out = String::with_capacity(html.len() + html.len() / 4 + pixel.len());
    let mut copied = 0;
    let mut pixel_placed = false;
    for (start, token) in Tokens::new(html) {
        if let Some(text) = text.as_deref_mut() {
            text.feed(&token);
        }
        match token {
            Token::Start(tag) if tag.is("a") => {
                let Some(href) = tag.attribute("href") else { continue };
                let Some(url) = web_url(&htmlize::unescape_attribute(href.value)) else { continue };
                if untracked.iter().any(|prefix| url.as_str().starts_with(prefix.as_str())) {
                    continue;
                }
                out.push_str(&html[copied..href.span.start]);
                out.push('"');
                out.push_str(&click_prefix);
                // Tokens are base64url: nothing in them needs escaping in an attribute.
                tracking.keys.sign_into(CLICK_V1, &tracking.send, Some(&url), &mut out);
                out.push('"');
                copied = href.span.end;
            }
            Token::End { name } if !pixel_placed && name.eq_ignore_ascii_case("body") => {
                out.push_str(&html[copied..start]);
                out.push_str(&pixel);
                copied = start;
                pixel_placed = true;
            }
            _ => {}
        }
    }
    out.push_str(&html[copied..]);
    if !pixel_placed {
        out.push_str(&pixel);
    }
    out
}

/// The public URL without its trailing slash, normalised the way `Url` writes links (host in
/// lower case …) so that the unsubscribe and preference links are recognised whatever the
/// spelling of `RAPPORT_PUBLIC_URL`.
fn public_base(public_url: &str) -> String {
    let normalised = Url::parse(public_url).map_or_else(|_| public_url.to_owned(), String::from);
    normalised.trim_end_matches('/').to_owned()
}

/// An absolute http(s) URL, parsed as a browser would (surrounding spaces and controls dropped,
/// host in punycode, unsafe characters percent-encoded): that form is what gets signed, and it
/// is always a valid `Location`.
fn web_url(raw: &str) -> Option<Url> {
    let url = Url::parse(raw).ok()?;
    matches!(url.scheme(), "http" | "https").then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn keys() -> (TrackingKeys, MasterKey) {
        let master = MasterKey::generate();
        (TrackingKeys::new(&MasterKeys::new(master.clone(), None)), master)
    }

    fn send() -> TrackedSend {
        TrackedSend { send_id: Uuid::now_v7(), contact_id: ContactId::generate(), email_version_id: Uuid::now_v7() }
    }

    fn url(raw: &str) -> Url {
        Url::parse(raw).unwrap()
    }

    /// The tokens of every tracked link in `html`, by kind ("o" or "c").
    fn tokens<'h>(html: &'h str, kind: &str) -> Vec<&'h str> {
        let marker = format!("https://rapport.example/t/{kind}/");
        html.match_indices(&marker)
            .map(|(at, _)| {
                let rest = &html[at + marker.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect()
    }

    #[test]
    fn a_token_gives_back_what_was_signed() {
        let (keys, _) = keys();
        let send = send();
        assert_eq!(keys.verify_open(&keys.open_token(&send)).unwrap(), send);
        let link = url("https://example.com/a?b=c&d=%C3%A9#top");
        let click = keys.verify_click(&keys.click_token(&send, &link)).unwrap();
        assert_eq!(click, TrackedClick { send, url: link });
    }

    #[test]
    fn an_open_token_is_short() {
        let (keys, _) = keys();
        assert_eq!(keys.open_token(&send()).len(), 87);
    }

    #[test]
    fn a_token_of_one_kind_is_refused_as_the_other() {
        let (keys, _) = keys();
        let send = send();
        let open = keys.open_token(&send);
        let click = keys.click_token(&send, &url("https://example.com/"));
        assert_eq!(keys.verify_click(&open), Err(InvalidToken::Invalid));
        assert_eq!(keys.verify_open(&click), Err(InvalidToken::Invalid));
    }

    #[test]
    fn an_altered_truncated_or_foreign_token_is_refused() {
        let (keys, _) = keys();
        let send = send();
        let token = keys.click_token(&send, &url("https://example.com/a"));
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for position in [0, 1, 20, 40, HEADER_LEN, bytes.len() - 1] {
            bytes[position] ^= 0x01;
            assert_eq!(keys.verify_click(&URL_SAFE_NO_PAD.encode(&bytes)), Err(InvalidToken::Invalid), "{position}");
            bytes[position] ^= 0x01;
        }
        assert_eq!(keys.verify_click(&token[..token.len() - 2]), Err(InvalidToken::Invalid));
        assert_eq!(keys.verify_click("not a token!"), Err(InvalidToken::Invalid));
        assert_eq!(keys.verify_click(""), Err(InvalidToken::Invalid));
        let (other, _) = self::keys();
        assert_eq!(other.verify_click(&token), Err(InvalidToken::Invalid));
    }

    #[test]
    fn the_url_of_one_token_cannot_be_swapped_for_another() {
        let (keys, _) = keys();
        let send = send();
        let a = URL_SAFE_NO_PAD.decode(keys.click_token(&send, &url("https://example.com/a"))).unwrap();
        // Same length, other host: the tag no longer matches.
        let mut b = a.clone();
        let at = HEADER_LEN + "https://".len();
        b[at..at + "example".len()].copy_from_slice(b"attacke");
        assert_eq!(keys.verify_click(&URL_SAFE_NO_PAD.encode(&b)), Err(InvalidToken::Invalid));
    }

    #[test]
    fn tokens_signed_before_a_rotation_verify_during_it_only() {
        let (old_keys, old_master) = keys();
        let send = send();
        let token = old_keys.open_token(&send);
        let during = TrackingKeys::new(&MasterKeys::new(MasterKey::generate(), Some(old_master)));
        assert_eq!(during.verify_open(&token), Ok(send));
        let after = TrackingKeys::new(&MasterKeys::new(MasterKey::generate(), None));
        assert_eq!(after.verify_open(&token), Err(InvalidToken::Invalid));
    }

    fn instrumented(html: &str) -> (String, TrackingKeys, TrackedSend) {
        let (keys, _) = keys();
        let send = send();
        let tracking = Tracking { public_url: "https://Rapport.example/", send, keys: &keys };
        (instrument(html, &tracking), keys, send)
    }

    #[test]
    fn web_links_become_signed_redirects_to_the_decoded_url() {
        let html = r#"<html><body><a href="https://shop.example/p?a=1&amp;b=2">Shop</a> <A HREF=" http://news.example/ ">News</A> <a class="x" href="https:&#x2f;&#x2f;shop.example&#x2f;sale">Sale</a></body></html>"#;
        let (out, keys, send) = instrumented(html);
        let clicks = tokens(&out, "c");
        let targets: Vec<String> = clicks.iter().map(|token| keys.verify_click(token).unwrap().url.into()).collect();
        assert_eq!(targets, ["https://shop.example/p?a=1&b=2", "http://news.example/", "https://shop.example/sale"]);
        for token in clicks {
            assert_eq!(keys.verify_click(token).unwrap().send, send);
        }
        assert!(out.contains(r#">Shop</a>"#) && out.contains(r#"class="x""#), "{out}");
    }

    #[test]
    fn mailto_fragments_relative_and_unsubscribe_links_are_left_alone() {
        let kept = [
            r#"<a href="mailto:help@example.com">m</a>"#,
            r##"<a href="#top">t</a>"##,
            r#"<a href="/relative">r</a>"#,
            r#"<a href="tel:+441234">p</a>"#,
            r#"<a href="javascript:alert(1)">j</a>"#,
            r#"<a href="https://rapport.example/unsubscribe/tok">u</a>"#,
            r#"<a href="https://RAPPORT.example/preferences/tok">p</a>"#,
            r#"<a name="anchor">n</a>"#,
        ];
        for link in kept {
            let (out, _, _) = instrumented(link);
            assert!(out.starts_with(link), "{out}");
            assert!(tokens(&out, "c").is_empty(), "{out}");
        }
        // Only the public URL's own pages are spared, not another site's of the same name.
        let (out, _, _) = instrumented(r#"<a href="https://other.example/unsubscribe/x">u</a>"#);
        assert_eq!(tokens(&out, "c").len(), 1, "{out}");
    }

    #[test]
    fn the_pixel_goes_before_the_end_of_the_body_or_at_the_end() {
        let (out, keys, send) = instrumented("<html><body><p>Hi</p></body></html>");
        let pixel_at = out.find("<img src=\"https://rapport.example/t/o/").unwrap();
        assert!(out[pixel_at..].starts_with("<img") && out[pixel_at..].contains("</body></html>"), "{out}");
        assert!(out.starts_with("<html><body><p>Hi</p><img"), "{out}");
        let opens = tokens(&out, "o");
        assert_eq!(opens.len(), 1);
        assert_eq!(keys.verify_open(opens[0]).unwrap(), send);

        let (out, _, _) = instrumented("<p>Just a fragment</p>");
        assert!(out.starts_with("<p>Just a fragment</p><img"), "{out}");
        assert_eq!(tokens(&out, "o").len(), 1, "{out}");
    }

    #[test]
    fn the_text_made_in_the_tracking_pass_shows_the_links_as_written() {
        let html = r#"<html><body><p>Read <a href="https://shop.example/p?a=1&amp;b=2">this</a></p><a href="https://rapport.example/unsubscribe/t">Leave</a></body></html>"#;
        let (keys, _) = keys();
        let tracking = Tracking { public_url: "https://rapport.example", send: send(), keys: &keys };
        let (instrumented, text) = instrument_with_text(html, &tracking);
        assert_eq!(instrumented, instrument(html, &tracking));
        assert_eq!(text, crate::mail::text::from_html(html));
        assert!(text.contains("this (https://shop.example/p?a=1&b=2)"), "{text}");
    }

    #[test]
    fn text_and_other_markup_pass_through_unchanged() {
        let html = "<html><head><style>a{color:red}</style></head><body><!-- c --><p>Caf\u{e9} &amp; co</p><img src=\"https://cdn.example/logo.png\"></body></html>";
        let (out, _, _) = instrumented(html);
        let pixel_at = out.find("<img src=\"https://rapport.example").unwrap();
        let pixel_end = pixel_at + out[pixel_at..].find('>').unwrap() + 1;
        assert_eq!(format!("{}{}", &out[..pixel_at], &out[pixel_end..]), html);
    }
}
