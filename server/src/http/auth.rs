//! Who is calling: the deployment's bootstrap token (`RAPPORT_ADMIN_TOKEN`, compared in constant
//! time), or a credential the services recognise (API key, access token, contact token). No
//! credential at all makes an anonymous caller, whom each route refuses or confines.

use axum::http::{HeaderMap, header};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::service::{Actor, Error, Services};

#[derive(Clone)]
pub struct Authenticator {
    bootstrap: Option<SecretString>,
    /// `--insecure-dev`: callers without credentials act as the owner. Never for production.
    open: bool,
}

impl Authenticator {
    pub fn new(bootstrap: Option<SecretString>, insecure_dev: bool) -> Self {
        Self { bootstrap, open: insecure_dev }
    }

    pub async fn authenticate(&self, services: &Services, headers: &HeaderMap) -> Result<Actor, Error> {
        if !headers.contains_key(header::AUTHORIZATION) {
            return Ok(if self.open { Actor::Bootstrap } else { Actor::Anonymous });
        }
        let presented = bearer_token(headers).filter(|token| !token.is_empty()).ok_or(Error::Unauthenticated)?;
        if let Some(bootstrap) = &self.bootstrap {
            // Comparing digests keeps the time independent of the token's length too.
            let expected = Sha256::digest(bootstrap.expose_secret().as_bytes());
            if bool::from(expected.ct_eq(&Sha256::digest(presented.as_bytes()))) {
                return Ok(Actor::Bootstrap);
            }
        }
        services.authenticate_bearer(presented).await
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
