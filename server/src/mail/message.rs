//! Turns a rendered email into the bytes of an RFC 5322 message: headers (RFC 2047 encoded
//! where they hold more than ASCII), a multipart/alternative body with the text part first,
//! the one-click unsubscribe headers of RFC 8058 on marketing mail, and a DKIM signature when a
//! key is configured. lettre does the encoding and the signing.

use std::{sync::Arc, time::SystemTime};

use lettre::{
    Address, Message,
    address::Envelope,
    message::{
        Mailbox as LettreMailbox, MultiPart,
        dkim::{DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm, DkimSigningKey},
        header::{HeaderName, HeaderValue},
    },
};

use crate::domain::{
    contact::EmailAddress,
    email::{Mailbox, RenderedEmail},
};

/// What a message needs besides its rendered parts.
pub struct Addressing<'a> {
    /// `<send id@sender's domain>`: the same for every attempt at one send, so a receiver that
    /// got a message twice (see the outbox's crash window) can tell.
    pub message_id: &'a str,
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    pub to: &'a EmailAddress,
    pub to_name: Option<String>,
    /// Marketing mail only: the RFC 8058 one-click URL.
    pub unsubscribe_url: Option<String>,
    pub date: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("{0} is not an address the mail library accepts")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
}

/// A DKIM signer: the key, its selector and the signing domain.
#[derive(Clone)]
pub struct Dkim(Arc<DkimConfig>);

#[derive(Debug, thiserror::Error)]
#[error("the DKIM key is neither an RSA key (PKCS#1 PEM) nor an Ed25519 key (base64): {0}")]
pub struct DkimKeyError(String);

/// The headers a signature covers. The unsubscribe headers are among them because Gmail and
/// Yahoo honour one-click unsubscribe only when the signature vouches for them.
const SIGNED_HEADERS: [&str; 9] = [
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
];

impl Dkim {
    pub fn new(selector: &str, domain: &str, private_key: &str) -> Result<Self, DkimKeyError> {
        let algorithm =
            if private_key.contains("-----BEGIN") { DkimSigningAlgorithm::Rsa } else { DkimSigningAlgorithm::Ed25519 };
        let key =
            DkimSigningKey::new(private_key.trim(), algorithm).map_err(|error| DkimKeyError(error.to_string()))?;
        let headers = SIGNED_HEADERS.iter().map(|name| HeaderName::new_from_ascii_str(name)).collect();
        let canonicalization =
            DkimCanonicalization { header: DkimCanonicalizationType::Relaxed, body: DkimCanonicalizationType::Relaxed };
        Ok(Self(Arc::new(DkimConfig::new(selector.to_owned(), domain.to_owned(), key, headers, canonicalization))))
    }
}

impl std::fmt::Debug for Dkim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dkim(..)")
    }
}

fn address(address: &EmailAddress) -> Result<Address, MessageError> {
    address.as_str().parse().map_err(|_| MessageError::Address(address.as_str().to_owned()))
}

fn mailbox(name: Option<String>, address_of: &EmailAddress) -> Result<LettreMailbox, MessageError> {
    Ok(LettreMailbox::new(name, address(address_of)?))
}

/// The message bytes and the envelope to send them with.
pub fn build(
    addressing: &Addressing<'_>,
    rendered: &RenderedEmail,
    dkim: Option<&Dkim>,
) -> Result<(Envelope, Vec<u8>), MessageError> {
    let mut builder = Message::builder()
        .from(mailbox(addressing.from.name.clone(), &addressing.from.address)?)
        .to(mailbox(addressing.to_name.clone(), addressing.to)?)
        .subject(rendered.subject.as_str())
        .date(addressing.date)
        .message_id(Some(addressing.message_id.to_owned()));
    if let Some(reply_to) = addressing.reply_to {
        builder = builder.reply_to(mailbox(reply_to.name.clone(), &reply_to.address)?);
    }
    if let Some(url) = &addressing.unsubscribe_url {
        builder = builder
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), format!("<{url}>")))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_owned(),
            ));
    }
    let html = with_preheader(&rendered.html, rendered.preheader.as_deref());
    let parts =
        MultiPart::alternative_plain_html(super::body::encode(rendered.text.clone()), super::body::encode(html));
    let mut message = builder.multipart(parts)?;
    if let Some(dkim) = dkim {
        message.sign(&dkim.0);
    }
    Ok((message.envelope().clone(), message.formatted()))
}

/// Puts the preheader, hidden, first in the body: mail clients show the first text of a message
/// next to its subject in the inbox list.
fn with_preheader(html: &str, preheader: Option<&str>) -> String {
    let Some(preheader) = preheader else {
        return html.to_owned();
    };
    let hidden = format!(
        r#"<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">{}</div>"#,
        htmlize::escape_text(preheader)
    );
    let bytes = html.as_bytes();
    let body_open = memchr::memchr_iter(b'<', bytes)
        .find(|&at| bytes.get(at..at + 5).is_some_and(|tag| tag.eq_ignore_ascii_case(b"<body")))
        .and_then(|start| html[start..].find('>').map(|end| start + end + 1));
    match body_open {
        Some(at) => format!("{}{hidden}{}", &html[..at], &html[at..]),
        None => format!("{hidden}{html}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preheader_opens_the_body_hidden_and_escaped() {
        let html = r#"<html><BODY class="x"><p>Hi</p></BODY></html>"#;
        let with = with_preheader(html, Some("Sales & more"));
        assert!(with.starts_with(r#"<html><BODY class="x"><div style="display:none"#), "{with}");
        assert!(with.contains(">Sales &amp; more</div><p>Hi</p>"), "{with}");
        assert_eq!(with_preheader("<p>Hi</p>", None), "<p>Hi</p>");
        assert!(with_preheader("<p>Hi</p>", Some("Soon")).ends_with("Soon</div><p>Hi</p>"));
    }
}
