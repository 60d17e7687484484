//! Settings: defaults, then an optional `rapport.toml`, then `RAPPORT_*` environment variables
//! (the environment wins). Unknown keys in the file are an error, so a typo never silently falls
//! back to a default. Secrets are `SecretString`s: their `Debug` output is redacted.

use std::{net::SocketAddr, path::Path};

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
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
        }
    }
}

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
                toml::from_str::<FileSettings>(&text)
                    .map_err(|error| ConfigError::File { path: shown, message: error.message().to_owned() })?
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

        let defaults = Settings::default();
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
        Ok(Settings {
            database_url,
            listen,
            public_url: file.public_url.unwrap_or(defaults.public_url),
            smtp_url: file.smtp_url,
            master_key: file.master_key,
            previous_master_key: file.previous_master_key,
            admin_token: file.admin_token.filter(|token| !secrecy::ExposeSecret::expose_secret(token).is_empty()),
            log,
            log_format,
        })
    }

    /// The database location without any password, for logs.
    pub fn database_display(&self) -> String {
        redact_url_password(&self.database_url)
    }
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
}
