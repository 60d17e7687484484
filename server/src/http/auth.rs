//! Who is calling. For now the only credential is the deployment's bootstrap token
//! (`RAPPORT_ADMIN_TOKEN`), compared in constant time so its value cannot be guessed byte by byte.

use axum::http::{HeaderMap, header};
use secrecy::{ExposeSecret, SecretString};
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
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim);
        match (self, presented) {
            (Authenticator::Open, _) => Ok(Actor::Bootstrap),
            (Authenticator::Token(expected), Some(presented)) => {
                let matches: bool = expected.expose_secret().as_bytes().ct_eq(presented.as_bytes()).into();
                if matches { Ok(Actor::Bootstrap) } else { Err(Error::Unauthenticated) }
            }
            (Authenticator::Token(_), None) => Err(Error::Unauthenticated),
        }
    }
}
