//! Rate limits per client address and per presented credential (GCRA, from `governor`), checked
//! before anything else a request costs: before its body is read and before authentication.
//! A credential is keyed by its SHA-256, so each API key, JWT and the bootstrap token get a
//! bucket of their own without being checked first, and no raw credential is kept. The public
//! writes that anyone may send without a link (signup forms, asking for a preferences link) each
//! create data or mail someone, so an address gets a much smaller bucket for those on top.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::anyhow;
use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use sha2::{Digest, Sha256};

use super::{auth::bearer_token, error::ApiError, graphql};
use crate::{config::RateLimit, domain::request::client_of, service::Error};

/// Probes from orchestrators and load balancers: throttling them would make a busy server look
/// dead and get it restarted.
const UNLIMITED_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Keyed limiters keep one entry per key ever seen, so an attacker rotating fake credentials (or
/// IPv6 addresses) would grow them without bound. Every this many requests the keys whose
/// buckets have refilled are dropped: they behave exactly like absent ones. Counting requests
/// rather than time bounds the stale entries whatever the attack rate, needs no task to stop
/// with the server, and costs an idle server nothing.
const SWEEP_EVERY: u64 = 10_000;

pub struct Limiters {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_credential: DefaultKeyedRateLimiter<[u8; 32]>,
    /// Public writes (`POST /forms/{key}`, `POST /preferences`) per client address.
    public_writes: DefaultKeyedRateLimiter<IpAddr>,
    requests: AtomicU64,
}

/// Whether a request is a public write: a signup form or a request for a preferences link.
/// Confirmation and unsubscribe posts are not: they need a signed link, and mailbox providers
/// send one-click unsubscribes for many people from few addresses.
fn is_public_write(method: &Method, path: &str) -> bool {
    method == Method::POST && (path == "/preferences" || path.starts_with("/forms/"))
}

impl Limiters {
    pub fn new(per_ip: RateLimit, per_credential: RateLimit, public_writes: RateLimit) -> anyhow::Result<Self> {
        Ok(Self {
            per_ip: RateLimiter::keyed(quota(per_ip)?),
            per_credential: RateLimiter::keyed(quota(per_credential)?),
            public_writes: RateLimiter::keyed(quota(public_writes)?),
            requests: AtomicU64::new(0),
        })
    }

    /// `Err` holds how long the caller must wait. The address is checked first, so a refused
    /// address spends nothing from the credential's or the public writes' bucket.
    fn check(&self, peer: IpAddr, headers: &HeaderMap, public_write: bool) -> Result<(), Duration> {
        if self.requests.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.per_ip.retain_recent();
            self.per_credential.retain_recent();
            self.public_writes.retain_recent();
        }
        let clock = self.per_ip.clock();
        let client = client_of(peer);
        self.per_ip.check_key(&client).map_err(|not_until| {
            tracing::debug!("over the per-address rate limit");
            not_until.wait_time_from(clock.now())
        })?;
        if public_write {
            self.public_writes.check_key(&client).map_err(|not_until| {
                tracing::debug!("over the per-address rate limit of public writes");
                not_until.wait_time_from(clock.now())
            })?;
        }
        if let Some(credential) = bearer_token(headers).filter(|credential| !credential.is_empty()) {
            let key: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
            self.per_credential.check_key(&key).map_err(|not_until| {
                tracing::debug!("over the per-credential rate limit");
                not_until.wait_time_from(clock.now())
            })?;
        }
        Ok(())
    }
}

fn quota(limit: RateLimit) -> anyhow::Result<Quota> {
    let quota = Quota::with_period(limit.period()).ok_or_else(|| anyhow!("{limit:?} is too fast to enforce"))?;
    Ok(quota.allow_burst(limit.burst()))
}

/// The middleware: answers 429 with `Retry-After` over the limit, shaped as a GraphQL response
/// on `/graphql` and as `{"error": …}` elsewhere (CONTRACT.md).
pub async fn enforce(
    State(limiters): State<Arc<Limiters>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if UNLIMITED_PATHS.contains(&path) {
        return next.run(request).await;
    }
    let public_write = is_public_write(request.method(), path);
    match limiters.check(peer.ip(), request.headers(), public_write) {
        Ok(()) => next.run(request).await,
        Err(retry_after) if path == "/graphql" => graphql::rate_limited(request.headers(), retry_after),
        Err(retry_after) => ApiError::from(Error::RateLimited { retry_after }).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};

    use super::*;

    fn bearer(credential: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {credential}")).unwrap());
        headers
    }

    fn limiters(ip_burst: u32, credential_burst: u32) -> Limiters {
        let never = |burst| RateLimit::new(0.001, burst).unwrap();
        Limiters::new(never(ip_burst), never(credential_burst), never(2)).unwrap()
    }

    #[test]
    fn each_credential_has_its_own_bucket_within_the_address_bucket() {
        let limiters = limiters(3, 1);
        let peer = IpAddr::from([192, 0, 2, 1]);
        assert!(limiters.check(peer, &bearer("rpk_one"), false).is_ok());
        assert!(limiters.check(peer, &bearer("rpk_one"), false).is_err());
        assert!(limiters.check(peer, &bearer("rpk_two"), false).is_ok());
        // The address has spent its three requests (the refused one counted too).
        assert!(limiters.check(peer, &bearer("rpk_three"), false).is_err());
        assert!(limiters.check(IpAddr::from([192, 0, 2, 2]), &bearer("rpk_three"), false).is_ok());
    }

    #[test]
    fn public_writes_have_a_bucket_of_their_own_within_the_address_bucket() {
        let limiters = limiters(5, 5);
        let peer = IpAddr::from([192, 0, 2, 1]);
        assert!(limiters.check(peer, &HeaderMap::new(), true).is_ok());
        assert!(limiters.check(peer, &HeaderMap::new(), true).is_ok());
        assert!(limiters.check(peer, &HeaderMap::new(), true).is_err(), "two public writes, then no more");
        assert!(limiters.check(peer, &HeaderMap::new(), false).is_ok(), "other requests go on");
        assert!(limiters.check(IpAddr::from([192, 0, 2, 2]), &HeaderMap::new(), true).is_ok());
        assert!(is_public_write(&Method::POST, "/forms/newsletter") && is_public_write(&Method::POST, "/preferences"));
        assert!(
            !is_public_write(&Method::GET, "/preferences") && !is_public_write(&Method::POST, "/preferences/token")
        );
        assert!(
            !is_public_write(&Method::POST, "/unsubscribe/token") && !is_public_write(&Method::POST, "/confirm/token")
        );
    }

    #[test]
    fn the_wait_is_what_it_takes_to_earn_one_request_back() {
        let limiters = limiters(1, 1);
        let peer = IpAddr::from([192, 0, 2, 1]);
        assert!(limiters.check(peer, &HeaderMap::new(), false).is_ok());
        let wait = limiters.check(peer, &HeaderMap::new(), false).unwrap_err();
        assert!(wait > Duration::from_secs(990) && wait <= Duration::from_secs(1000), "{wait:?}");
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_address_is_itself() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(client_of(one), client_of(other));
        assert_ne!(client_of(one), client_of("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(client_of("::ffff:192.0.2.1".parse().unwrap()), IpAddr::from([192, 0, 2, 1]));
    }

    #[test]
    fn idle_keys_are_swept_after_enough_requests() {
        let limiters = Limiters::new(
            RateLimit::new(1_000_000.0, 1_000_000).unwrap(),
            RateLimit::new(1_000_000.0, 1).unwrap(),
            RateLimit::new(1_000_000.0, 1).unwrap(),
        )
        .unwrap();
        let peer = IpAddr::from([192, 0, 2, 1]);
        for n in 0..SWEEP_EVERY - 1 {
            assert!(limiters.check(peer, &bearer(&format!("fake-{n}")), false).is_ok());
        }
        assert_eq!(limiters.per_credential.len() as u64, SWEEP_EVERY - 1);
        std::thread::sleep(Duration::from_millis(5));
        let _ = limiters.check(peer, &bearer("one-more"), false);
        assert!(limiters.per_credential.len() <= 1, "{} keys left", limiters.per_credential.len());
    }
}
