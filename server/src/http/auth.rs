//! Who is calling. For now the only credential is the deployment's bootstrap token
//! (`RAPPORT_ADMIN_TOKEN`), compared in constant time so neither its value nor its length can be guessed from timings.

use axum::http::{HeaderMap, header};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::service::{Actor, Error};

#[derive(Clone)]
pub enum Authenticator {
    /// Every request must carry `Authorization: Bearer <token>`.
    Token(SecretString),
    /// `--insecure-dev` without a token: everyone is the owner. Never for production.
    Open,
}

impl Authenticator {
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Actor, Error> {
        match (self, bearer_token(headers)) {
            (Authenticator::Open, _) => Ok(Actor::Bootstrap),
            (Authenticator::Token(expected), Some(presented)) => {
                // Comparing digests keeps the time independent of the token's length too.
                let expected = Sha256::digest(expected.expose_secret().as_bytes());
                let matches: bool = expected.ct_eq(&Sha256::digest(presented.as_bytes())).into();
                if matches { Ok(Actor::Bootstrap) } else { Err(Error::Unauthenticated) }
            }
            (Authenticator::Token(_), None) => Err(Error::Unauthenticated),
        }
    }
}

/// The credential of `Authorization: Bearer <credential>`, as presented (not yet checked).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
}
