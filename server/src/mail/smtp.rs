//! The SMTP side of delivery: a pool of lettre connections to one relay, kept open between
//! messages. lettre's own pooled transport is not used because its sockets keep Nagle's
//! algorithm on: a message body written in several pieces then waits for the relay's delayed ACK
//! (40 ms on Linux) on every message, which caps a connection at a few dozen messages a second.
//! Here each TCP connection is opened with `TCP_NODELAY` and handed to lettre, which speaks SMTP
//! on it (EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA).

use std::{
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use lettre::{
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use url::Url;

/// How long a relay gets to answer a connect or a command before the attempt counts as failed.
const TIMEOUT: Duration = Duration::from_secs(30);
/// A connection idle for longer is checked with NOOP before it carries a message: relays close
/// idle connections (Postfix after 300 s), and a message must not be lost to a dead socket.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(30);

/// How to reach the relay, from `RAPPORT_SMTP_URL`.
#[derive(Clone)]
pub struct Relay {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<(String, SecretString)>,
}

/// The same choices as lettre's own URLs: `smtps://` is TLS from the first byte, `smtp://` is
/// plain unless `?tls=required` (STARTTLS or fail) or `?tls=opportunistic` (STARTTLS if offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Plain,
    Opportunistic,
    StartTls,
    Implicit,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelayError {
    #[error("is not a URL such as smtp://127.0.0.1:2525 or smtps://user:password@mail.example.com")]
    NotAUrl,
    #[error("must start with smtp:// or smtps://")]
    Scheme,
    #[error("names no host")]
    NoHost,
    #[error("tls must be required or opportunistic")]
    TlsMode,
}

impl Relay {
    pub fn parse(url: &SecretString) -> Result<Self, RelayError> {
        let url = Url::parse(url.expose_secret()).map_err(|_| RelayError::NotAUrl)?;
        let tls = url.query_pairs().find(|(key, _)| key == "tls").map(|(_, value)| value.into_owned());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtps", _) => (Security::Implicit, 465),
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTls, 587),
            ("smtp", Some("opportunistic")) => (Security::Opportunistic, 587),
            ("smtp", Some(_)) => return Err(RelayError::TlsMode),
            _ => return Err(RelayError::Scheme),
        };
        let host = url.host_str().filter(|host| !host.is_empty()).ok_or(RelayError::NoHost)?;
        // `[::1]` is how a URL writes an IPv6 address; sockets want it bare.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let credentials = (!url.username().is_empty()).then(|| {
            (percent_decode(url.username()), SecretString::from(percent_decode(url.password().unwrap_or_default())))
        });
        Ok(Self { port: url.port().unwrap_or(default_port), host, security, credentials })
    }

    /// `host:port`, for logs (never the credentials).
    pub fn display(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn tls(&self) -> Result<TlsParameters, lettre::transport::smtp::Error> {
        TlsParameters::new(self.host.clone())
    }
}

fn percent_decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// Why a message was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// The relay refused for good (5xx): the code and its text.
    Permanent { code: u16, reply: String },
    /// A 4xx answer, a timeout, or no connection: worth trying again later.
    Transient { reply: String },
}

impl From<lettre::transport::smtp::Error> for SendFailure {
    fn from(error: lettre::transport::smtp::Error) -> Self {
        let reply = error.to_string();
        match error.status() {
            Some(code) if error.is_permanent() => SendFailure::Permanent { code: u16::from(code), reply },
            _ => SendFailure::Transient { reply },
        }
    }
}

struct Idle {
    connection: AsyncSmtpConnection,
    since: Instant,
}

/// Up to `size` connections to one relay, opened when needed and reused while they work.
pub struct SmtpPool {
    relay: Relay,
    hello: ClientId,
    idle: Mutex<Vec<Idle>>,
    slots: Semaphore,
}

impl SmtpPool {
    pub fn new(relay: Relay, size: usize) -> Self {
        Self { relay, hello: ClientId::default(), idle: Mutex::new(Vec::new()), slots: Semaphore::new(size.max(1)) }
    }

    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Sends one message. A connection that failed is dropped; the next message opens another.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendFailure> {
        let _slot = self.slots.acquire().await.map_err(|_| SendFailure::Transient { reply: "pool closed".into() })?;
        let mut connection = match self.take_idle().await {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        let sent = tokio::time::timeout(TIMEOUT, connection.send(envelope, message)).await;
        match sent {
            Ok(Ok(_)) => {
                self.put_back(connection);
                Ok(())
            }
            Ok(Err(error)) => {
                // lettre has already sent QUIT on a failed command; the connection is spent.
                Err(SendFailure::from(error))
            }
            Err(_) => Err(SendFailure::Transient { reply: format!("no answer within {} s", TIMEOUT.as_secs()) }),
        }
    }

    /// Says goodbye on every idle connection.
    pub async fn close(&self) {
        let idle: Vec<Idle> = self.idle.lock().map(|mut idle| idle.drain(..).collect()).unwrap_or_default();
        for mut idle in idle {
            let _ = idle.connection.quit().await;
        }
    }

    async fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let idle = self.idle.lock().ok()?.pop()?;
            let mut connection = idle.connection;
            if idle.since.elapsed() < IDLE_CHECK_AFTER || connection.test_connected().await {
                return Some(connection);
            }
        }
    }

    fn put_back(&self, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle { connection, since: Instant::now() });
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendFailure> {
        let relay = &self.relay;
        let transient = |reply: String| SendFailure::Transient { reply };
        let mut connection = if relay.security == Security::Implicit {
            let tls = relay.tls().map_err(|error| transient(error.to_string()))?;
            AsyncSmtpConnection::connect_tokio1(
                (relay.host.as_str(), relay.port),
                Some(TIMEOUT),
                &self.hello,
                Some(tls),
                None::<IpAddr>,
            )
            .await?
        } else {
            let stream =
                tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect((relay.host.as_str(), relay.port)))
                    .await
                    .map_err(|_| {
                        transient(format!("cannot connect to {} within {} s", relay.display(), TIMEOUT.as_secs()))
                    })?
                    .map_err(|error| transient(format!("cannot connect to {}: {error}", relay.display())))?;
            stream.set_nodelay(true).map_err(|error| transient(error.to_string()))?;
            tokio::time::timeout(TIMEOUT, AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello))
                .await
                .map_err(|_| {
                    transient(format!("{} sent no greeting within {} s", relay.display(), TIMEOUT.as_secs()))
                })??
        };
        match relay.security {
            Security::StartTls => {
                let tls = relay.tls().map_err(|error| transient(error.to_string()))?;
                connection.starttls(tls, &self.hello).await?;
            }
            Security::Opportunistic if connection.can_starttls() => {
                let tls = relay.tls().map_err(|error| transient(error.to_string()))?;
                connection.starttls(tls, &self.hello).await?;
            }
            _ => {}
        }
        if let Some((user, password)) = &relay.credentials {
            let credentials = Credentials::new(user.clone(), password.expose_secret().to_owned());
            connection.auth(&[Mechanism::Plain, Mechanism::Login], &credentials).await?;
        }
        Ok(connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(url: &str) -> Result<Relay, RelayError> {
        Relay::parse(&SecretString::from(url))
    }

    #[test]
    fn urls_choose_port_and_security_like_lettre() {
        let plain = relay("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((plain.display().as_str(), plain.security), ("127.0.0.1:2525", Security::Plain));
        assert!(plain.credentials.is_none());
        let implicit = relay("smtps://user%40example.com:p%40ss@mail.example.com").unwrap();
        assert_eq!((implicit.port, implicit.security), (465, Security::Implicit));
        let (user, password) = implicit.credentials.unwrap();
        assert_eq!((user.as_str(), password.expose_secret()), ("user@example.com", "p@ss"));
        assert_eq!(relay("smtp://mail.example.com?tls=required").unwrap().security, Security::StartTls);
        assert_eq!(relay("smtp://[::1]:25").unwrap().host, "::1");
    }

    #[test]
    fn bad_relay_urls_are_refused() {
        assert_eq!(relay("mail.example.com").err(), Some(RelayError::NotAUrl));
        assert_eq!(relay("http://mail.example.com").err(), Some(RelayError::Scheme));
        assert_eq!(relay("smtp://mail.example.com?tls=maybe").err(), Some(RelayError::TlsMode));
    }
}
