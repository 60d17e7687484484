//! The SMTP side of delivery: a pool of lettre connections to one relay, kept open between
//! messages. lettre's own pooled transport is not used because its sockets keep Nagle's
//! algorithm on: a message body written in several pieces then waits for the relay's delayed ACK
//! (40 ms on Linux) on every message, which caps a connection at a few dozen messages a second.
//! Here each TCP connection is opened with `TCP_NODELAY` and handed to lettre, which speaks SMTP
//! on it (EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA). Two things lettre does not do are done here, for
//! throughput: MAIL, RCPT and DATA go in one write when the relay offers PIPELINING (RFC 2920),
//! and the message is dot-stuffed in one pass and written at once.

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
        commands::{Data, Ehlo, Mail, Rcpt},
        extension::{ClientId, MailBodyParameter, MailParameter},
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
    /// The relay refused this message for good (5xx): the code and its text, and whether the
    /// refusal was of the recipient's mailbox itself (550, 551 or 553 at RCPT, not a policy
    /// refusal such as 5.7.x), which is what makes an address a hard bounce.
    Permanent { code: u16, reply: String, mailbox_refused: bool },
    /// Worth trying again later: a 4xx answer, a timeout, a lost connection. `relay` when the
    /// relay itself could not be used (no connection, a refused greeting, STARTTLS or AUTH): that
    /// says nothing about this message, so it does not count as one of its attempts.
    Transient { reply: String, relay: bool },
}

/// The step of an SMTP transaction a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connect,
    Mail,
    Rcpt,
    Data,
}

/// RFC 5321 (4.5.3.2) timeouts: how long a client waits for each reply.
fn reply_timeout(stage: Stage) -> Duration {
    match stage {
        Stage::Connect => TIMEOUT,
        Stage::Mail | Stage::Rcpt => Duration::from_secs(5 * 60),
        // The reply to the final dot may take ten minutes: the relay may be filtering the message.
        Stage::Data => Duration::from_secs(10 * 60),
    }
}

/// What went wrong in one step: the relay's answer (or lettre's account of the connection), or
/// a connection that could not be made or did not answer in time.
#[derive(Debug)]
enum StepError {
    Smtp(lettre::transport::smtp::Error),
    Network(String),
}

impl From<lettre::transport::smtp::Error> for StepError {
    fn from(error: lettre::transport::smtp::Error) -> Self {
        StepError::Smtp(error)
    }
}

impl StepError {
    /// Whether the relay answered at all (as opposed to a dead or silent connection).
    fn answered(&self) -> bool {
        matches!(self, StepError::Smtp(error) if error.status().is_some())
    }
}

fn failure(stage: Stage, error: &StepError) -> SendFailure {
    let error = match error {
        StepError::Network(reply) => {
            return SendFailure::Transient { reply: reply.clone(), relay: stage == Stage::Connect };
        }
        StepError::Smtp(error) => error,
    };
    // Replies may name the recipient ("<ada@example.com>: Recipient address rejected"): the
    // delivery log keeps the answer without the address.
    let reply = without_addresses(&error.to_string());
    match error.status() {
        Some(code) if error.is_permanent() && stage != Stage::Connect => {
            let code = u16::from(code);
            let policy = reply.contains(" 5.7.") || reply.contains(": 5.7.");
            SendFailure::Permanent {
                code,
                mailbox_refused: stage == Stage::Rcpt && matches!(code, 550 | 551 | 553) && !policy,
                reply,
            }
        }
        _ => SendFailure::Transient { reply, relay: stage == Stage::Connect },
    }
}

/// `text` with every word that holds an `@` replaced, so that no address is stored with it.
pub fn without_addresses(text: &str) -> String {
    text.split(' ').map(|word| if word.contains('@') { "[address]" } else { word }).collect::<Vec<_>>().join(" ")
}

/// A connection and what its relay offers beyond what lettre keeps track of.
struct Connection {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
}

struct Idle {
    connection: Connection,
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
    /// A connection that turns out dead before the relay has accepted anything (it closed the
    /// connection while it was idle) is replaced once, at no cost to the message.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendFailure> {
        let relay_failure = |reply: String| SendFailure::Transient { reply, relay: true };
        let _slot = self.slots.acquire().await.map_err(|_| relay_failure("pool closed".into()))?;
        if let Some(mut reused) = self.take_idle().await {
            match transact(&mut reused, envelope, message).await {
                Ok(()) => {
                    self.put_back(reused);
                    return Ok(());
                }
                Err((Stage::Mail, error)) if !error.answered() => {
                    tracing::debug!(error = ?error, "a pooled SMTP connection was dead; opening another");
                }
                Err((stage, error)) => return Err(failure(stage, &error)),
            }
        }
        let mut fresh = match self.connect().await {
            Ok(connection) => connection,
            Err(error) => return Err(failure(Stage::Connect, &error)),
        };
        match transact(&mut fresh, envelope, message).await {
            Ok(()) => {
                self.put_back(fresh);
                Ok(())
            }
            Err((stage, error)) => Err(failure(stage, &error)),
        }
    }

    /// Says goodbye on every idle connection.
    pub async fn close(&self) {
        let idle: Vec<Idle> = self.idle.lock().map(|mut idle| idle.drain(..).collect()).unwrap_or_default();
        for mut idle in idle {
            let _ = idle.connection.smtp.quit().await;
        }
    }

    async fn take_idle(&self) -> Option<Connection> {
        loop {
            let idle = self.idle.lock().ok()?.pop()?;
            let mut connection = idle.connection;
            if idle.since.elapsed() < IDLE_CHECK_AFTER || connection.smtp.test_connected().await {
                return Some(connection);
            }
        }
    }

    fn put_back(&self, connection: Connection) {
        if connection.smtp.has_broken() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle { connection, since: Instant::now() });
        }
    }

    async fn connect(&self) -> Result<Connection, StepError> {
        let relay = &self.relay;
        let mut connection = if relay.security == Security::Implicit {
            AsyncSmtpConnection::connect_tokio1(
                (relay.host.as_str(), relay.port),
                Some(TIMEOUT),
                &self.hello,
                Some(relay.tls()?),
                None::<IpAddr>,
            )
            .await?
        } else {
            let address = (relay.host.as_str(), relay.port);
            let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(address))
                .await
                .map_err(|_| network(format!("cannot connect to {} within {} s", relay.display(), TIMEOUT.as_secs())))?
                .map_err(|error| network(format!("cannot connect to {}: {error}", relay.display())))?;
            stream.set_nodelay(true).map_err(|error| network(error.to_string()))?;
            tokio::time::timeout(TIMEOUT, AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello))
                .await
                .map_err(|_| {
                    network(format!("{} sent no greeting within {} s", relay.display(), TIMEOUT.as_secs()))
                })??
        };
        match relay.security {
            Security::StartTls => connection.starttls(relay.tls()?, &self.hello).await?,
            Security::Opportunistic if connection.can_starttls() => {
                connection.starttls(relay.tls()?, &self.hello).await?
            }
            _ => {}
        }
        // lettre reads the EHLO reply for the extensions it uses and drops the rest; asking again
        // (before AUTH, which a second EHLO could otherwise undo on some relays) tells whether the
        // relay pipelines.
        let hello = tokio::time::timeout(TIMEOUT, connection.command(Ehlo::new(self.hello.clone()))).await.map_err(
            |_| network(format!("{} did not answer EHLO within {} s", relay.display(), TIMEOUT.as_secs())),
        )??;
        let pipelining = hello.message().any(|line| line.eq_ignore_ascii_case("PIPELINING"));
        if let Some((user, password)) = &relay.credentials {
            let credentials = Credentials::new(user.clone(), password.expose_secret().to_owned());
            connection.auth(&[Mechanism::Plain, Mechanism::Login], &credentials).await?;
        }
        Ok(Connection { smtp: connection, pipelining })
    }
}

fn network(message: String) -> StepError {
    StepError::Network(message)
}

/// MAIL, RCPT, DATA and the message on `connection`, each reply with its own timeout. The
/// connection is closed on any failure: after a refusal its state is not worth resetting (and
/// after a pipelined refusal, commands already sent would follow it).
async fn transact(connection: &mut Connection, envelope: &Envelope, message: &[u8]) -> Result<(), (Stage, StepError)> {
    let pipelining = connection.pipelining;
    let smtp = &mut connection.smtp;
    let outcome = async {
        let mut options = Vec::new();
        let addresses = envelope.from().into_iter().chain(envelope.to());
        if addresses.map(|address| address.as_ref()).any(|address: &str| !address.is_ascii()) {
            options.push(MailParameter::SmtpUtfEight);
        }
        if !message.is_ascii() {
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = Mail::new(envelope.from().cloned(), options);
        if pipelining {
            let mut commands = mail.to_string();
            for recipient in envelope.to() {
                commands.push_str(&Rcpt::new(recipient.clone(), Vec::new()).to_string());
            }
            commands.push_str(&Data.to_string());
            step(Stage::Mail, smtp.command(commands)).await?;
            for _ in envelope.to() {
                step(Stage::Rcpt, smtp.read_response()).await?;
            }
            step(Stage::Data, smtp.read_response()).await?;
        } else {
            step(Stage::Mail, smtp.command(mail)).await?;
            for recipient in envelope.to() {
                step(Stage::Rcpt, smtp.command(Rcpt::new(recipient.clone(), Vec::new()))).await?;
            }
            step(Stage::Data, smtp.command(Data)).await?;
        }
        match std::str::from_utf8(message) {
            // `command` writes any text in one piece and reads the one reply.
            Ok(text) => step(Stage::Data, smtp.command(data_content(text))).await,
            Err(_) => step(Stage::Data, smtp.message(message)).await,
        }
    }
    .await;
    if outcome.is_err() {
        smtp.abort().await;
    }
    outcome
}

/// What follows DATA: `message` with a second dot on every line that starts with one (RFC 5321,
/// 4.5.2), and the line with one dot that ends it.
fn data_content(message: &str) -> String {
    const END: &str = "\r\n.\r\n";
    let mut content = String::with_capacity(message.len() + END.len() + 64);
    let mut from = 0;
    if message.starts_with('.') {
        content.push('.');
    }
    for at in memchr::memmem::find_iter(message.as_bytes(), b"\r\n.") {
        // Up to and including the line's dot, which then goes in twice.
        content.push_str(&message[from..at + 3]);
        from = at + 2;
    }
    content.push_str(&message[from..]);
    content.push_str(END);
    content
}

async fn step(
    stage: Stage,
    command: impl Future<Output = Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>>,
) -> Result<(), (Stage, StepError)> {
    match tokio::time::timeout(reply_timeout(stage), command).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err((stage, StepError::Smtp(error))),
        Err(_) => Err((stage, network(format!("no reply within {} s", reply_timeout(stage).as_secs())))),
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
    fn replies_are_kept_without_addresses() {
        assert_eq!(
            without_addresses("permanent error (550): 5.1.1 <ada@example.com>: Recipient address rejected"),
            "permanent error (550): 5.1.1 [address] Recipient address rejected"
        );
    }

    #[test]
    fn lines_starting_with_a_dot_get_a_second_one_and_a_lone_dot_ends_the_content() {
        assert_eq!(data_content(".a\r\n.\r\nb.c\r\n..d\r\n"), "..a\r\n..\r\nb.c\r\n...d\r\n\r\n.\r\n");
        assert_eq!(data_content("a\r\n."), "a\r\n..\r\n.\r\n");
        assert_eq!(data_content(""), "\r\n.\r\n");
    }

    /// A relay that offers PIPELINING, refuses recipients whose address starts with "refused",
    /// and hands over the content of each message it accepts.
    async fn pipelining_relay() -> (Relay, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = relay(&format!("smtp://{}", listener.local_addr().unwrap())).unwrap();
        let (messages, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (reader, mut writer) = stream.into_split();
            let mut lines = BufReader::new(reader).lines();
            writer.write_all(b"220 fake\r\n").await.unwrap();
            let mut accepted = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = match &line[..4] {
                    "EHLO" => "250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                    "MAIL" => "250 ok\r\n",
                    "RCPT" if line.contains("<refused") => "550 5.1.1 no such mailbox\r\n",
                    "RCPT" => {
                        accepted += 1;
                        "250 ok\r\n"
                    }
                    "DATA" if accepted == 0 => "554 no valid recipients\r\n",
                    "DATA" => {
                        writer.write_all(b"354 go on\r\n").await.unwrap();
                        let mut content = String::new();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if line == "." {
                                break;
                            }
                            content.push_str(&line);
                            content.push('\n');
                        }
                        messages.send(content).unwrap();
                        accepted = 0;
                        "250 queued\r\n"
                    }
                    _ => "221 bye\r\n",
                };
                writer.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        (relay, received)
    }

    fn envelope(to: &str) -> Envelope {
        Envelope::new(Some("news@example.com".parse().unwrap()), vec![to.parse().unwrap()]).unwrap()
    }

    #[tokio::test]
    async fn a_pipelining_relay_gets_the_message_dot_stuffed_and_a_refused_recipient_bounces() {
        let (relay, mut received) = pipelining_relay().await;
        let pool = SmtpPool::new(relay, 1);
        pool.send(&envelope("ada@example.com"), b"Subject: Hi\r\n\r\n.hidden\r\nend").await.unwrap();
        assert_eq!(received.recv().await.unwrap(), "Subject: Hi\n\n..hidden\nend\n");
        let refused = pool.send(&envelope("refused@example.com"), b"Subject: Hi\r\n\r\nx").await;
        assert!(matches!(refused, Err(SendFailure::Permanent { code: 550, mailbox_refused: true, .. })), "{refused:?}");
    }

    #[test]
    fn bad_relay_urls_are_refused() {
        assert_eq!(relay("mail.example.com").err(), Some(RelayError::NotAUrl));
        assert_eq!(relay("http://mail.example.com").err(), Some(RelayError::Scheme));
        assert_eq!(relay("smtp://mail.example.com?tls=maybe").err(), Some(RelayError::TlsMode));
    }
}
