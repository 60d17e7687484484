//! Signed tokens (JWT, HS256): short-lived access tokens for signed-in users and expiring
//! contact tokens for links in emails. The signing key is derived from the master key, so a
//! master-key rotation also rotates it, and tokens signed with the previous key keep working
//! while that key is still configured. The algorithm is pinned: `none` and any other `alg` are
//! refused before the signature is even considered.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode};
use serde::{Serialize, de::DeserializeOwned};

use super::{DerivedKey, MasterKeys};

const ISSUER: &str = "rapport";
const LABEL: &str = "token signing v1";

/// Who a token is meant for; a token for one audience is refused by the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Admin,
    Contact,
}

impl Audience {
    fn as_str(self) -> &'static str {
        match self {
            Audience::Admin => "rapport:admin",
            Audience::Contact => "rapport:contact",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Expired, altered, signed with another key or algorithm, for another audience, or not a
    /// token at all. Callers learn no more than that.
    #[error("token is invalid or expired")]
    Invalid,
}

/// The registered claims every token carries, around the claims of its kind.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Envelope<C> {
    iss: String,
    aud: String,
    sub: String,
    iat: i64,
    exp: i64,
    jti: String,
    #[serde(flatten)]
    claims: C,
}

/// A verified token: whom it is about and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<C> {
    pub subject: String,
    pub token_id: String,
    /// To the millisecond (from the token id), so that a revocation can tell tokens issued just
    /// before it from those issued just after.
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub claims: C,
}

#[derive(Clone)]
pub struct TokenSigner {
    keys: Vec<DerivedKey>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("key_ids", &self.keys.iter().map(DerivedKey::id).collect::<Vec<_>>())
            .finish()
    }
}

impl TokenSigner {
    pub fn new(masters: &MasterKeys) -> Self {
        Self { keys: masters.derive(LABEL) }
    }

    pub fn sign<C: Serialize>(
        &self,
        audience: Audience,
        subject: &str,
        claims: C,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> String {
        let key = &self.keys[0];
        let header = Header { kid: Some(key.id().to_owned()), ..Header::new(Algorithm::HS256) };
        let envelope = Envelope {
            iss: ISSUER.to_owned(),
            aud: audience.as_str().to_owned(),
            sub: subject.to_owned(),
            iat: issued_at.timestamp(),
            exp: expires_at.timestamp(),
            jti: token_id(issued_at).to_string(),
            claims,
        };
        encode(&header, &envelope, &EncodingKey::from_secret(key.bytes()))
            .unwrap_or_else(|error| unreachable!("HS256 signs any serialisable claims: {error}"))
    }

    /// Checks signature, algorithm, key id, issuer, audience and expiry (with a minute of leeway
    /// for clocks that disagree), in that order of trust: nothing in the token is believed before
    /// its signature is.
    pub fn verify<C: DeserializeOwned>(&self, audience: Audience, token: &str) -> Result<Verified<C>, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let key = self.keys.iter().find(|key| key.id() == kid).ok_or(TokenError::Invalid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        let data = decode::<Envelope<C>>(token, &DecodingKey::from_secret(key.bytes()), &validation)
            .map_err(|_| TokenError::Invalid)?;
        let envelope = data.claims;
        let issued_at = uuid::Uuid::try_parse(&envelope.jti)
            .ok()
            .and_then(|id| id.get_timestamp())
            .map(|stamp| stamp.to_unix())
            .and_then(|(seconds, nanos)| DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos))
            .or_else(|| DateTime::from_timestamp(envelope.iat, 0))
            .ok_or(TokenError::Invalid)?;
        Ok(Verified {
            subject: envelope.sub,
            token_id: envelope.jti,
            issued_at,
            expires_at: DateTime::from_timestamp(envelope.exp, 0).ok_or(TokenError::Invalid)?,
            claims: envelope.claims,
        })
    }
}

/// A UUIDv7 stamped with the token's issue time (the service's clock, not the machine's).
fn token_id(issued_at: DateTime<Utc>) -> uuid::Uuid {
    let seconds = u64::try_from(issued_at.timestamp()).unwrap_or_default();
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, issued_at.timestamp_subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use chrono::Duration;
    use serde::Deserialize;

    use super::*;
    use crate::crypto::MasterKey;

    #[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
    struct Claims {
        role: String,
    }

    fn new_signer() -> (TokenSigner, MasterKey) {
        let master = MasterKey::generate();
        (TokenSigner::new(&MasterKeys::new(master.clone(), None)), master)
    }

    fn token(signer: &TokenSigner, audience: Audience, lifetime: Duration) -> String {
        let now = Utc::now();
        signer.sign(audience, "user-1", Claims { role: "admin".into() }, now, now + lifetime)
    }

    #[test]
    fn a_token_verifies_for_its_audience_until_it_expires() {
        let (signer, _) = new_signer();
        let verified =
            signer.verify::<Claims>(Audience::Admin, &token(&signer, Audience::Admin, Duration::minutes(5))).unwrap();
        assert_eq!(verified.subject, "user-1");
        assert_eq!(verified.claims, Claims { role: "admin".into() });
        let for_contacts = token(&signer, Audience::Contact, Duration::minutes(5));
        assert_eq!(signer.verify::<Claims>(Audience::Admin, &for_contacts).unwrap_err(), TokenError::Invalid);
        let expired = token(&signer, Audience::Admin, Duration::minutes(-5));
        assert_eq!(signer.verify::<Claims>(Audience::Admin, &expired).unwrap_err(), TokenError::Invalid);
    }

    #[test]
    fn a_token_knows_when_it_was_issued_to_the_millisecond() {
        let (signer, _) = new_signer();
        let issued_at = DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123456Z").unwrap().to_utc();
        let token = signer.sign(
            Audience::Contact,
            "c",
            Claims { role: "x".into() },
            issued_at,
            Utc::now() + Duration::hours(1),
        );
        let verified = signer.verify::<Claims>(Audience::Contact, &token).unwrap();
        assert_eq!(verified.issued_at, DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123Z").unwrap().to_utc());
        let again = signer.sign(
            Audience::Contact,
            "c",
            Claims { role: "x".into() },
            issued_at,
            Utc::now() + Duration::hours(1),
        );
        assert_ne!(signer.verify::<Claims>(Audience::Contact, &again).unwrap().token_id, verified.token_id);
    }

    #[test]
    fn altered_unsigned_and_foreign_tokens_are_refused() {
        let (signer, _) = new_signer();
        let good = token(&signer, Audience::Admin, Duration::minutes(5));
        let (header, rest) = good.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD
            .encode(String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap().replace("admin\"", "owner\""));
        for forged in [
            format!("{header}.{forged_payload}.{signature}"),
            format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)),
            format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode(r#"{"alg":"HS512","typ":"JWT"}"#)),
            token(&new_signer().0, Audience::Admin, Duration::minutes(5)),
            "not a token".to_owned(),
        ] {
            assert_eq!(signer.verify::<Claims>(Audience::Admin, &forged).unwrap_err(), TokenError::Invalid, "{forged}");
        }
    }

    #[test]
    fn tokens_signed_before_a_master_key_rotation_still_verify_during_it() {
        let (old_signer, old_master) = new_signer();
        let old_token = token(&old_signer, Audience::Admin, Duration::minutes(5));
        let rotating = TokenSigner::new(&MasterKeys::new(MasterKey::generate(), Some(old_master)));
        assert!(rotating.verify::<Claims>(Audience::Admin, &old_token).is_ok());
        let rotated = TokenSigner::new(&MasterKeys::new(MasterKey::generate(), None));
        assert!(rotated.verify::<Claims>(Audience::Admin, &old_token).is_err());
    }
}
