//! Settings: defaults, then an optional `rapport.toml`, then `RAPPORT_*` environment variables
//! (the environment wins). Unknown keys in the file are an error, so a typo never silently falls
//! back to a default. Secrets are `SecretString`s: their `Debug` output is redacted.

use std::{net::SocketAddr, num::NonZeroU32, path::Path, time::Duration};

use secrecy::SecretString;
use serde::Deserialize;

/// `Debug` is written by hand: the database URL may hold a password.
#[derive(Clone)]
pub struct Settings {
    pub database_url: String,
    pub listen: SocketAddr,
    pub public_url: String,
    pub smtp_url: Option<SecretString>,
    pub master_key: Option<SecretString>,
    /// The master key before the last rotation: still unwraps keys not yet re-wrapped.
    pub previous_master_key: Option<SecretString>,
    pub admin_token: Option<SecretString>,
    pub log: String,
    pub log_format: LogFormat,
    /// Requests from one client address (healthz and readyz excepted).
    pub rate_limit_ip: RateLimit,
    /// Requests carrying one `Authorization: Bearer` credential, whether valid or not.
    pub rate_limit_credential: RateLimit,
    /// Public writes from one client address: signup form posts and requests for a preferences
    /// link, on top of the address's limit.
    pub rate_limit_form: RateLimit,
    pub mail: MailSettings,
    pub webhooks: WebhookSettings,
    /// The JetStream consumer, when `RAPPORT_NATS_URL` is set.
    pub nats: Option<NatsSettings>,
}

/// Where the stream consumer reads events from and how. `Debug` shows no secret: the URL, which
/// may carry a user and password or a token, is a `SecretString`.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: SecretString,
    /// The subject events are published to; it may hold wildcards (`events.>`).
    pub subject: String,
    /// The stream to create when none covers the subject yet.
    pub stream: String,
    /// The durable pull consumer, made if missing: its position in the stream outlives restarts.
    pub consumer: String,
    /// Messages stored per transaction, at most.
    pub batch_size: usize,
    /// How long the broker waits for an acknowledgement before delivering a message again;
    /// applies to a consumer this process creates.
    pub ack_wait: Duration,
    /// Create the contacts events name by external id or email when they do not exist yet, as
    /// `?createContacts=true` does for `POST /v1/events`.
    pub create_contacts: bool,
}

impl NatsSettings {
    pub const DEFAULT_STREAM: &'static str = "RAPPORT_EVENTS";
    pub const DEFAULT_CONSUMER: &'static str = "rapport";
    pub const DEFAULT_BATCH_SIZE: usize = 1_000;
    pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

    /// The URL without any password, for logs.
    pub fn url_display(&self) -> String {
        redact_url_password(secrecy::ExposeSecret::expose_secret(&self.url))
    }
}

/// How outbound webhooks are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// Whether this process posts webhooks. Every process writes them; with several processes
    /// on one database, some may be left to serve requests only.
    pub deliver: bool,
    /// Lets endpoints point at loopback, private and other internal addresses. Off by default:
    /// an admin's URL must not reach the server's own network (SSRF).
    pub allow_private_networks: bool,
    /// The first wait of the retry schedule; the later ones are fixed multiples of it (see
    /// `domain::webhook`), about three days in all with the default of 5 s.
    pub retry_base: Duration,
    /// How long a worker holds deliveries it took: after a crash, they wait this long for
    /// another worker. The worker renews it while it posts them, so a receiver slower than the
    /// lease is not sent a message twice.
    pub lease: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            deliver: true,
            allow_private_networks: false,
            retry_base: Duration::from_secs(5),
            lease: Duration::from_secs(60),
        }
    }
}

/// How the delivery worker sends. `Debug` leaves out nothing secret: the DKIM key is a path.
#[derive(Debug, Clone, PartialEq)]
pub struct MailSettings {
    /// SMTP connections kept open to the relay at once.
    pub smtp_connections: usize,
    /// Messages per second over all recipients; unset is as fast as the relay takes them.
    pub rate_per_second: Option<f64>,
    /// Messages per second to any one recipient domain (gmail.com, say).
    pub domain_rate_per_second: Option<f64>,
    /// The wait before the first retry of a deferred message; later waits double.
    pub retry_base: Duration,
    /// Attempts before a message that keeps being deferred is given up as failed.
    pub max_attempts: u32,
    /// How long a worker's claim on sends lasts without being renewed (it renews it every third
    /// of this while it works): after a crash, its sends wait this long for another worker.
    pub lease: Duration,
    pub dkim: Option<DkimSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DkimSettings {
    pub selector: String,
    pub domain: String,
    /// An RSA key as PKCS#1 PEM or an Ed25519 key as base64.
    pub key_file: std::path::PathBuf,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            smtp_connections: 8,
            rate_per_second: None,
            domain_rate_per_second: None,
            // With fifteen attempts the last comes one to two days after the first.
            retry_base: Duration::from_secs(60),
            max_attempts: 15,
            lease: Duration::from_secs(60),
            dkim: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &self.database_display())
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("smtp_url", &self.smtp_url)
            .field("master_key", &self.master_key)
            .field("admin_token", &self.admin_token)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("rate_limit_ip", &self.rate_limit_ip)
            .field("rate_limit_credential", &self.rate_limit_credential)
            .field("rate_limit_form", &self.rate_limit_form)
            .field("mail", &self.mail)
            .field("webhooks", &self.webhooks)
            .field("nats", &self.nats)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How fast one client may call: a sustained rate, and a burst it may spend at once (and earns
/// back at that rate). Valid by construction: both are positive and small enough that the
/// limiter's arithmetic cannot overflow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    per_second: f64,
    burst: NonZeroU32,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateLimitError {
    #[error("must be greater than 0 (0 would refuse every request); the smallest rate is {MIN_PER_SECOND}")]
    RateNotPositive,
    #[error("must be between {MIN_PER_SECOND} and {MAX_PER_SECOND} requests per second")]
    RateOutOfRange,
    #[error("must be at least 1 (a burst of 0 would refuse every request)")]
    BurstNotPositive,
    #[error("must be at most {MAX_BURST} requests")]
    BurstTooLarge,
}

/// One request in about 17 minutes; slower limits are better served by other means.
const MIN_PER_SECOND: f64 = 0.001;
/// Far above what one server answers: setting this lifts the limit in effect.
const MAX_PER_SECOND: f64 = 1_000_000.0;
const MAX_BURST: u32 = 1_000_000;

impl RateLimit {
    pub fn new(per_second: f64, burst: u32) -> Result<Self, RateLimitError> {
        if per_second.is_nan() || per_second <= 0.0 {
            return Err(RateLimitError::RateNotPositive);
        }
        if !(MIN_PER_SECOND..=MAX_PER_SECOND).contains(&per_second) {
            return Err(RateLimitError::RateOutOfRange);
        }
        let burst = NonZeroU32::new(burst).ok_or(RateLimitError::BurstNotPositive)?;
        if burst.get() > MAX_BURST {
            return Err(RateLimitError::BurstTooLarge);
        }
        Ok(Self { per_second, burst })
    }

    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// How long one spent request takes to be earned back.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "sqlite://rapport.db?mode=rwc".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".to_owned(),
            smtp_url: None,
            master_key: None,
            previous_master_key: None,
            admin_token: None,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            rate_limit_ip: DEFAULT_RATE_LIMIT_IP,
            rate_limit_credential: DEFAULT_RATE_LIMIT_CREDENTIAL,
            rate_limit_form: DEFAULT_RATE_LIMIT_FORM,
            mail: MailSettings::default(),
            webhooks: WebhookSettings::default(),
            nats: None,
        }
    }
}

/// A back-office integration usually runs on one host with one key, so it should meet its key's
/// limit, not its address's: an address may also carry several keys (behind NAT or a proxy).
/// 100 requests a second sustained is several times what one integration needs and a few per
/// cent of what one server answers (BENCHMARKS.md), so one runaway client cannot starve the rest.
/// (The `expect`s run at compile time.)
const DEFAULT_RATE_LIMIT_CREDENTIAL: RateLimit =
    RateLimit { per_second: 100.0, burst: NonZeroU32::new(200).expect("non-zero") };
const DEFAULT_RATE_LIMIT_IP: RateLimit =
    RateLimit { per_second: 200.0, burst: NonZeroU32::new(400).expect("non-zero") };
/// A person signs up or asks for a link a few times at most; a household or office behind one
/// address a few more. Ten a minute (bursts of twenty) leaves them room and keeps a script from
/// filling the contacts with addresses or mailboxes with confirmation mail.
const DEFAULT_RATE_LIMIT_FORM: RateLimit =
    RateLimit { per_second: 10.0 / 60.0, burst: NonZeroU32::new(20).expect("non-zero") };

/// The keys `rapport.toml` may hold; each is also `RAPPORT_<KEY>` in the environment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    database_url: Option<String>,
    listen: Option<String>,
    public_url: Option<String>,
    smtp_url: Option<SecretString>,
    master_key: Option<SecretString>,
    previous_master_key: Option<SecretString>,
    admin_token: Option<SecretString>,
    log: Option<String>,
    log_format: Option<String>,
    rate_limit_ip_per_second: Option<f64>,
    rate_limit_ip_burst: Option<i64>,
    rate_limit_credential_per_second: Option<f64>,
    rate_limit_credential_burst: Option<i64>,
    rate_limit_form_per_second: Option<f64>,
    rate_limit_form_burst: Option<i64>,
    smtp_connections: Option<i64>,
    mail_rate_per_second: Option<f64>,
    mail_domain_rate_per_second: Option<f64>,
    mail_retry_base_seconds: Option<f64>,
    mail_max_attempts: Option<i64>,
    mail_lease_seconds: Option<f64>,
    dkim_selector: Option<String>,
    dkim_domain: Option<String>,
    dkim_key_file: Option<String>,
    webhook_delivery: Option<bool>,
    webhook_allow_private_networks: Option<bool>,
    webhook_retry_base_seconds: Option<f64>,
    webhook_lease_seconds: Option<f64>,
    nats_url: Option<SecretString>,
    nats_subject: Option<String>,
    nats_stream: Option<String>,
    nats_consumer: Option<String>,
    nats_batch_size: Option<i64>,
    nats_ack_wait_seconds: Option<f64>,
    nats_create_contacts: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

impl Settings {
    /// Reads the file (if given) and the process environment.
    pub fn load(config_path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(config_path, |name| std::env::var(name).ok())
    }

    pub fn load_from(config_path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut file = match config_path {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
                toml::from_str::<FileSettings>(&text).map_err(|error| {
                    // A wrong type's message names no key; the line does.
                    let line = error.span().map(|span| text[..span.start].matches('\n').count() + 1);
                    let path = line.map_or(shown.clone(), |line| format!("{shown}, line {line}"));
                    ConfigError::File { path, message: error.message().to_owned() }
                })?
            }
            None => FileSettings::default(),
        };
        let secret = |name: &str| env(name).map(SecretString::from);
        macro_rules! overlay {
            ($($field:ident => $var:literal),+ $(,)?) => { $(if let Some(value) = env($var) { file.$field = Some(value); })+ };
        }
        overlay!(
            database_url => "RAPPORT_DATABASE_URL",
            listen => "RAPPORT_LISTEN",
            public_url => "RAPPORT_PUBLIC_URL",
            log => "RAPPORT_LOG",
            log_format => "RAPPORT_LOG_FORMAT",
        );
        if let Some(value) = secret("RAPPORT_SMTP_URL") {
            file.smtp_url = Some(value);
        }
        if let Some(value) = secret("RAPPORT_MASTER_KEY") {
            file.master_key = Some(value);
        }
        if let Some(value) = secret("RAPPORT_PREVIOUS_MASTER_KEY") {
            file.previous_master_key = Some(value);
        }
        if let Some(value) = secret("RAPPORT_ADMIN_TOKEN") {
            file.admin_token = Some(value);
        }
        if let Some(value) = secret("RAPPORT_NATS_URL") {
            file.nats_url = Some(value);
        }

        let defaults = Settings::default();
        let mail = mail_settings(&env, &file)?;
        let webhooks = webhook_settings(&env, &file)?;
        let nats = nats_settings(&env, &file)?;
        let listen = match file.listen {
            Some(raw) => raw.parse().map_err(|_| ConfigError::Invalid {
                key: "listen".to_owned(),
                reason: format!("{raw:?} is not an address such as 127.0.0.1:8080"),
            })?,
            None => defaults.listen,
        };
        let log_format = match file.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log_format".to_owned(),
                    reason: format!("{other:?} is neither text nor json"),
                });
            }
        };
        let log = file.log.unwrap_or(defaults.log);
        if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
            return Err(ConfigError::Invalid {
                key: "log".to_owned(),
                reason: format!("{log:?} is not a tracing filter such as info or info,rapport=debug"),
            });
        }
        let database_url = file.database_url.unwrap_or(defaults.database_url);
        // Every pooled connection to an in-memory SQLite database is a database of its own.
        if database_url.starts_with("sqlite:") && database_url.contains(":memory:") {
            return Err(ConfigError::Invalid {
                key: "database_url".to_owned(),
                reason: "an in-memory SQLite database would lose everything; name a file".to_owned(),
            });
        }
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "database_url".to_owned(),
                reason: "must start with sqlite: or postgres://".to_owned(),
            });
        }
        let rate_limit_ip = rate_limit(
            &env,
            "rate_limit_ip",
            file.rate_limit_ip_per_second,
            file.rate_limit_ip_burst,
            defaults.rate_limit_ip,
        )?;
        let rate_limit_credential = rate_limit(
            &env,
            "rate_limit_credential",
            file.rate_limit_credential_per_second,
            file.rate_limit_credential_burst,
            defaults.rate_limit_credential,
        )?;
        let rate_limit_form = rate_limit(
            &env,
            "rate_limit_form",
            file.rate_limit_form_per_second,
            file.rate_limit_form_burst,
            defaults.rate_limit_form,
        )?;
        Ok(Settings {
            mail,
            webhooks,
            nats,
            database_url,
            listen,
            public_url: file.public_url.unwrap_or(defaults.public_url),
            smtp_url: file.smtp_url,
            master_key: file.master_key,
            previous_master_key: file.previous_master_key,
            admin_token: file.admin_token.filter(|token| !secrecy::ExposeSecret::expose_secret(token).is_empty()),
            log,
            log_format,
            rate_limit_ip,
            rate_limit_credential,
            rate_limit_form,
        })
    }

    /// The database location without any password, for logs.
    pub fn database_display(&self) -> String {
        redact_url_password(&self.database_url)
    }
}

/// `<prefix>_per_second` and `<prefix>_burst`, from the environment or else the file.
fn rate_limit(
    env: &impl Fn(&str) -> Option<String>,
    prefix: &str,
    per_second: Option<f64>,
    burst: Option<i64>,
    default: RateLimit,
) -> Result<RateLimit, ConfigError> {
    let per_second_key = format!("{prefix}_per_second");
    let burst_key = format!("{prefix}_burst");
    let invalid = |key: &str, reason: String| ConfigError::Invalid { key: key.to_owned(), reason };
    let from_env = |key: &str| env(&format!("RAPPORT_{}", key.to_ascii_uppercase()));
    let per_second = match from_env(&per_second_key) {
        Some(raw) => raw
            .trim()
            .parse::<f64>()
            .map_err(|_| invalid(&per_second_key, format!("{raw:?} is not a number of requests per second")))?,
        None => per_second.unwrap_or(default.per_second),
    };
    let burst = match from_env(&burst_key) {
        Some(raw) => {
            raw.trim().parse::<i64>().map_err(|_| invalid(&burst_key, format!("{raw:?} is not a whole number")))?
        }
        None => burst.map_or(i64::from(default.burst.get()), i64::from),
    };
    // A negative burst is as wrong as zero; beyond u32 it is out of range either way.
    let burst = u32::try_from(burst.max(0)).unwrap_or(u32::MAX);
    RateLimit::new(per_second, burst).map_err(|error| match error {
        RateLimitError::RateNotPositive | RateLimitError::RateOutOfRange => invalid(&per_second_key, error.to_string()),
        RateLimitError::BurstNotPositive | RateLimitError::BurstTooLarge => invalid(&burst_key, error.to_string()),
    })
}

/// A number from `RAPPORT_<KEY>`, or else the file.
fn number<T: std::str::FromStr + Copy>(
    env: &impl Fn(&str) -> Option<String>,
    key: &str,
    from_file: Option<T>,
) -> Result<Option<T>, ConfigError> {
    match env(&format!("RAPPORT_{}", key.to_ascii_uppercase())) {
        Some(raw) => raw
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid { key: key.to_owned(), reason: format!("{raw:?} is not a number") }),
        None => Ok(from_file),
    }
}

fn webhook_settings(
    env: &impl Fn(&str) -> Option<String>,
    file: &FileSettings,
) -> Result<WebhookSettings, ConfigError> {
    let defaults = WebhookSettings::default();
    let retry_base = number(env, "webhook_retry_base_seconds", file.webhook_retry_base_seconds)?.map_or(
        Ok(defaults.retry_base),
        |seconds| {
            Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|base| !base.is_zero() && *base <= Duration::from_secs(3_600))
                .ok_or_else(|| ConfigError::Invalid {
                    key: "webhook_retry_base_seconds".to_owned(),
                    reason: "must be above 0 and at most an hour".to_owned(),
                })
        },
    )?;
    let lease =
        number(env, "webhook_lease_seconds", file.webhook_lease_seconds)?.map_or(Ok(defaults.lease), |seconds| {
            Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|lease| *lease >= Duration::from_secs(1) && *lease <= Duration::from_secs(3_600))
                .ok_or_else(|| ConfigError::Invalid {
                    key: "webhook_lease_seconds".to_owned(),
                    reason: "must be between 1 and 3600".to_owned(),
                })
        })?;
    Ok(WebhookSettings {
        lease,
        deliver: number(env, "webhook_delivery", file.webhook_delivery)?.unwrap_or(defaults.deliver),
        allow_private_networks: number(env, "webhook_allow_private_networks", file.webhook_allow_private_networks)?
            .unwrap_or(defaults.allow_private_networks),
        retry_base,
    })
}

fn nats_settings(
    env: &impl Fn(&str) -> Option<String>,
    file: &FileSettings,
) -> Result<Option<NatsSettings>, ConfigError> {
    let invalid = |key: &str, reason: &str| ConfigError::Invalid { key: key.to_owned(), reason: reason.to_owned() };
    let text = |key: &str, from_file: &Option<String>| {
        env(&format!("RAPPORT_{}", key.to_ascii_uppercase()))
            .or_else(|| from_file.clone())
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    let url = file.nats_url.clone().filter(|url| !secrecy::ExposeSecret::expose_secret(url).trim().is_empty());
    let subject = text("nats_subject", &file.nats_subject);
    let (url, subject) = match (url, subject) {
        (None, None) => return Ok(None),
        (Some(url), Some(subject)) => (url, subject),
        (Some(_), None) => {
            return Err(invalid("nats_subject", "is required with nats_url: name the subject to consume"));
        }
        (None, Some(_)) => {
            return Err(invalid("nats_url", "is required with nats_subject, e.g. nats://127.0.0.1:4222"));
        }
    };
    let exposed = secrecy::ExposeSecret::expose_secret(&url).trim();
    if !["nats://", "tls://", "nats+tls://"].iter().any(|scheme| exposed.starts_with(scheme)) && exposed.contains("://")
    {
        return Err(invalid("nats_url", "must be a nats:// or tls:// URL, e.g. nats://127.0.0.1:4222"));
    }
    if !is_subject(&subject) {
        return Err(invalid(
            "nats_subject",
            "must be a NATS subject: tokens separated by dots, no spaces, `*` and `>` as whole tokens",
        ));
    }
    let name = |key: &str, from_file: &Option<String>, default: &str| {
        let name = text(key, from_file).unwrap_or_else(|| default.to_owned());
        if is_name(&name) {
            Ok(name)
        } else {
            Err(invalid(key, "must be a JetStream name: letters, digits, `-` and `_`, at most 32 characters"))
        }
    };
    let stream = name("nats_stream", &file.nats_stream, NatsSettings::DEFAULT_STREAM)?;
    let consumer = name("nats_consumer", &file.nats_consumer, NatsSettings::DEFAULT_CONSUMER)?;
    let batch_size =
        number(env, "nats_batch_size", file.nats_batch_size)?.unwrap_or(NatsSettings::DEFAULT_BATCH_SIZE as i64);
    // The batch API's own limit: one batch is one call to the same use case.
    if !(1..=crate::service::events::MAX_EVENTS_PER_REQUEST as i64).contains(&batch_size) {
        return Err(invalid("nats_batch_size", "must be between 1 and 10000"));
    }
    let ack_wait = number(env, "nats_ack_wait_seconds", file.nats_ack_wait_seconds)?.map_or(
        Ok(NatsSettings::DEFAULT_ACK_WAIT),
        |seconds| {
            Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|wait| *wait >= Duration::from_secs(1) && *wait <= Duration::from_secs(3_600))
                .ok_or_else(|| invalid("nats_ack_wait_seconds", "must be between 1 and 3600"))
        },
    )?;
    Ok(Some(NatsSettings {
        url,
        subject,
        stream,
        consumer,
        batch_size: batch_size as usize,
        ack_wait,
        create_contacts: number(env, "nats_create_contacts", file.nats_create_contacts)?.unwrap_or(false),
    }))
}

/// A subject as NATS takes it: non-empty dot-separated tokens without whitespace, where `*` and
/// `>` stand alone and `>` comes last.
fn is_subject(subject: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.iter().enumerate().all(|(index, token)| {
        !token.is_empty()
            && !token.chars().any(char::is_whitespace)
            && (!token.contains('*') || *token == "*")
            && (!token.contains('>') || (*token == ">" && index == tokens.len() - 1))
    })
}

/// Stream and consumer names become tokens of API subjects and, on the server, file names.
fn is_name(name: &str) -> bool {
    name.len() <= 32 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn mail_settings(env: &impl Fn(&str) -> Option<String>, file: &FileSettings) -> Result<MailSettings, ConfigError> {
    let defaults = MailSettings::default();
    let invalid = |key: &str, reason: &str| ConfigError::Invalid { key: key.to_owned(), reason: reason.to_owned() };
    let positive_rate = |key: &str, value: Option<f64>| match value {
        Some(rate) if !(rate > 0.0 && rate <= MAX_PER_SECOND) => {
            Err(invalid(key, "must be a number of messages per second above 0"))
        }
        other => Ok(other),
    };
    let connections =
        number(env, "smtp_connections", file.smtp_connections)?.unwrap_or(defaults.smtp_connections as i64);
    if !(1..=256).contains(&connections) {
        return Err(invalid("smtp_connections", "must be between 1 and 256"));
    }
    let retry_base = number(env, "mail_retry_base_seconds", file.mail_retry_base_seconds)?.map_or(
        Ok(defaults.retry_base),
        |seconds| {
            Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|base| !base.is_zero() && *base <= Duration::from_secs(86_400))
                .ok_or_else(|| invalid("mail_retry_base_seconds", "must be above 0 and at most a day"))
        },
    )?;
    let lease = number(env, "mail_lease_seconds", file.mail_lease_seconds)?.map_or(Ok(defaults.lease), |seconds| {
        Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|lease| *lease >= Duration::from_secs(1) && *lease <= Duration::from_secs(3_600))
            .ok_or_else(|| invalid("mail_lease_seconds", "must be between 1 and 3600"))
    })?;
    let max_attempts =
        number(env, "mail_max_attempts", file.mail_max_attempts)?.unwrap_or(i64::from(defaults.max_attempts));
    if !(1..=100).contains(&max_attempts) {
        return Err(invalid("mail_max_attempts", "must be between 1 and 100"));
    }
    let text = |key: &str, from_file: &Option<String>| {
        env(&format!("RAPPORT_{}", key.to_ascii_uppercase()))
            .or_else(|| from_file.clone())
            .filter(|value| !value.trim().is_empty())
    };
    let dkim = match (
        text("dkim_selector", &file.dkim_selector),
        text("dkim_domain", &file.dkim_domain),
        text("dkim_key_file", &file.dkim_key_file),
    ) {
        (None, None, None) => None,
        (Some(selector), Some(domain), Some(key_file)) => {
            Some(DkimSettings { selector, domain, key_file: std::path::PathBuf::from(key_file) })
        }
        _ => {
            return Err(invalid(
                "dkim",
                "dkim_selector, dkim_domain and dkim_key_file go together: set all three or none",
            ));
        }
    };
    Ok(MailSettings {
        smtp_connections: connections as usize,
        rate_per_second: positive_rate(
            "mail_rate_per_second",
            number(env, "mail_rate_per_second", file.mail_rate_per_second)?,
        )?,
        domain_rate_per_second: positive_rate(
            "mail_domain_rate_per_second",
            number(env, "mail_domain_rate_per_second", file.mail_domain_rate_per_second)?,
        )?,
        retry_base,
        max_attempts: max_attempts as u32,
        lease,
        dkim,
    })
}

fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, io::Write};

    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn nothing_configured_means_a_local_sqlite_file_on_port_8080() {
        let settings = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(settings.database_url, "sqlite://rapport.db?mode=rwc");
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert!(settings.admin_token.is_none());
    }

    #[test]
    fn mail_settings_come_from_file_and_environment_and_are_checked() {
        let config = file("smtp_connections = 4\nmail_domain_rate_per_second = 2.5\n");
        let env_vars = [("RAPPORT_MAIL_RETRY_BASE_SECONDS", "0.5"), ("RAPPORT_SMTP_CONNECTIONS", "3")];
        let mail = Settings::load_from(Some(config.path()), env(&env_vars)).unwrap().mail;
        assert_eq!(mail.smtp_connections, 3);
        assert_eq!(mail.domain_rate_per_second, Some(2.5));
        assert_eq!(mail.retry_base, Duration::from_millis(500));
        assert_eq!(mail.rate_per_second, None);
        let refused = |vars: &[(&str, &str)]| Settings::load_from(None, env(vars)).unwrap_err().to_string();
        assert!(refused(&[("RAPPORT_SMTP_CONNECTIONS", "0")]).starts_with("smtp_connections:"));
        assert!(refused(&[("RAPPORT_MAIL_RATE_PER_SECOND", "-1")]).starts_with("mail_rate_per_second:"));
        assert!(refused(&[("RAPPORT_DKIM_SELECTOR", "s1")]).starts_with("dkim:"));
        assert!(refused(&[("RAPPORT_MAIL_MAX_ATTEMPTS", "many")]).starts_with("mail_max_attempts:"));
    }

    #[test]
    fn the_stream_consumer_is_off_until_a_nats_url_and_subject_are_given() {
        assert!(Settings::load_from(None, env(&[])).unwrap().nats.is_none());
        let config = file("nats_subject = \"shop.events.>\"\nnats_batch_size = 500\n");
        let env_vars =
            [("RAPPORT_NATS_URL", "nats://app:hunter2@127.0.0.1:4222"), ("RAPPORT_NATS_ACK_WAIT_SECONDS", "5")];
        let settings = Settings::load_from(Some(config.path()), env(&env_vars)).unwrap();
        let nats = settings.nats.clone().unwrap();
        assert_eq!(nats.subject, "shop.events.>");
        assert_eq!((nats.stream.as_str(), nats.consumer.as_str()), ("RAPPORT_EVENTS", "rapport"));
        assert_eq!((nats.batch_size, nats.ack_wait, nats.create_contacts), (500, Duration::from_secs(5), false));
        assert_eq!(nats.url_display(), "nats://app:***@127.0.0.1:4222");
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn a_half_or_malformed_stream_consumer_setting_is_rejected_with_its_key() {
        let refused = |vars: &[(&str, &str)]| Settings::load_from(None, env(vars)).unwrap_err().to_string();
        let url = ("RAPPORT_NATS_URL", "nats://127.0.0.1:4222");
        let subject = ("RAPPORT_NATS_SUBJECT", "events");
        assert!(refused(&[url]).starts_with("nats_subject:"));
        assert!(refused(&[subject]).starts_with("nats_url:"));
        assert!(refused(&[("RAPPORT_NATS_URL", "http://127.0.0.1:4222"), subject]).starts_with("nats_url:"));
        for bad in ["a b", "events..x", "events.>.x", "ev*"] {
            assert!(refused(&[url, ("RAPPORT_NATS_SUBJECT", bad)]).starts_with("nats_subject:"), "{bad}");
        }
        assert!(refused(&[url, subject, ("RAPPORT_NATS_STREAM", "a.b")]).starts_with("nats_stream:"));
        assert!(refused(&[url, subject, ("RAPPORT_NATS_CONSUMER", "x>")]).starts_with("nats_consumer:"));
        assert!(refused(&[url, subject, ("RAPPORT_NATS_BATCH_SIZE", "0")]).starts_with("nats_batch_size:"));
        assert!(refused(&[url, subject, ("RAPPORT_NATS_ACK_WAIT_SECONDS", "0")]).starts_with("nats_ack_wait_seconds:"));
        assert!(refused(&[url, subject, ("RAPPORT_NATS_CREATE_CONTACTS", "yes")]).starts_with("nats_create_contacts:"));
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let config = file("listen = \"127.0.0.1:9000\"\nlog = \"debug\"\n");
        let settings = Settings::load_from(Some(config.path()), env(&[("RAPPORT_LISTEN", "127.0.0.1:9100")])).unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(settings.log, "debug");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named_in_the_error() {
        let config = file("listen = \"127.0.0.1:9000\"\ndatabse_url = \"sqlite://x.db\"\n");
        let error = Settings::load_from(Some(config.path()), env(&[])).unwrap_err().to_string();
        assert!(error.contains("databse_url"), "{error}");
    }

    #[test]
    fn secrets_are_read_but_never_printed() {
        let settings = Settings::load_from(None, env(&[("RAPPORT_ADMIN_TOKEN", "s3cret-token")])).unwrap();
        assert_eq!(settings.admin_token.as_ref().unwrap().expose_secret(), "s3cret-token");
        assert!(!format!("{settings:?}").contains("s3cret-token"));
        let settings =
            Settings::load_from(None, env(&[("RAPPORT_DATABASE_URL", "postgres://app:hunter2@db/rapport")])).unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn database_passwords_are_redacted_for_display() {
        let settings =
            Settings::load_from(None, env(&[("RAPPORT_DATABASE_URL", "postgres://app:hunter2@db:5432/rapport")]))
                .unwrap();
        assert_eq!(settings.database_display(), "postgres://app:***@db:5432/rapport");
    }

    #[test]
    fn malformed_values_are_rejected_with_their_key() {
        let error = Settings::load_from(None, env(&[("RAPPORT_LISTEN", "everywhere")])).unwrap_err().to_string();
        assert!(error.starts_with("listen:"), "{error}");
        let error = Settings::load_from(None, env(&[("RAPPORT_LOG", "info,[[[")])).unwrap_err().to_string();
        assert!(error.starts_with("log:"), "{error}");
        let error =
            Settings::load_from(None, env(&[("RAPPORT_DATABASE_URL", "sqlite::memory:")])).unwrap_err().to_string();
        assert!(error.starts_with("database_url:"), "{error}");
    }

    #[test]
    fn rate_limits_default_to_100_a_second_per_credential_and_200_per_address() {
        let settings = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(settings.rate_limit_credential, RateLimit::new(100.0, 200).unwrap());
        assert_eq!(settings.rate_limit_ip, RateLimit::new(200.0, 400).unwrap());
        assert_eq!(settings.rate_limit_form, RateLimit::new(10.0 / 60.0, 20).unwrap());
    }

    #[test]
    fn rate_limits_come_from_the_file_as_whole_or_decimal_numbers_and_the_environment_wins() {
        let config =
            file("rate_limit_ip_per_second = 20\nrate_limit_ip_burst = 40\nrate_limit_credential_per_second = 0.5\n");
        let settings = Settings::load_from(Some(config.path()), env(&[("RAPPORT_RATE_LIMIT_IP_BURST", "60")])).unwrap();
        assert_eq!(settings.rate_limit_ip, RateLimit::new(20.0, 60).unwrap());
        assert_eq!(settings.rate_limit_credential, RateLimit::new(0.5, 200).unwrap());
        assert_eq!(settings.rate_limit_credential.period(), Duration::from_secs(2));
    }

    #[test]
    fn a_zero_negative_or_malformed_rate_limit_is_rejected_with_its_key() {
        let error_for =
            |name: &str, value: &str| Settings::load_from(None, env(&[(name, value)])).unwrap_err().to_string();
        let error = error_for("RAPPORT_RATE_LIMIT_IP_PER_SECOND", "0");
        assert!(error.starts_with("rate_limit_ip_per_second: must be greater than 0"), "{error}");
        let error = error_for("RAPPORT_RATE_LIMIT_CREDENTIAL_PER_SECOND", "-5");
        assert!(error.starts_with("rate_limit_credential_per_second: must be greater than 0"), "{error}");
        let error = error_for("RAPPORT_RATE_LIMIT_CREDENTIAL_BURST", "0");
        assert!(error.starts_with("rate_limit_credential_burst: must be at least 1"), "{error}");
        let error = error_for("RAPPORT_RATE_LIMIT_IP_BURST", "-1");
        assert!(error.starts_with("rate_limit_ip_burst: must be at least 1"), "{error}");
        for (name, value) in [
            ("RAPPORT_RATE_LIMIT_IP_PER_SECOND", "fast"),
            ("RAPPORT_RATE_LIMIT_IP_PER_SECOND", "NaN"),
            ("RAPPORT_RATE_LIMIT_IP_PER_SECOND", "0.0001"),
            ("RAPPORT_RATE_LIMIT_IP_PER_SECOND", "inf"),
            ("RAPPORT_RATE_LIMIT_IP_BURST", "2.5"),
            ("RAPPORT_RATE_LIMIT_IP_BURST", "10000000000"),
        ] {
            let error = error_for(name, value);
            let key = name.trim_start_matches("RAPPORT_").to_ascii_lowercase();
            assert!(error.starts_with(&format!("{key}: ")), "{name}={value}: {error}");
        }
        let config = file("rate_limit_credential_burst = 0\n");
        let error = Settings::load_from(Some(config.path()), env(&[])).unwrap_err().to_string();
        assert!(error.starts_with("rate_limit_credential_burst: must be at least 1"), "{error}");
        let config = file("log = \"info\"\nrate_limit_ip_per_second = \"fast\"\n");
        let error = Settings::load_from(Some(config.path()), env(&[])).unwrap_err().to_string();
        assert!(error.contains(", line 2: invalid type: string \"fast\""), "{error}");
    }
}
