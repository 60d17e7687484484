//! A real SMTP server for the end-to-end tests: aiosmtpd running tests/smtp_server.py as a child
//! process, so that Rapport's delivery is judged by an implementation we did not write. Messages
//! are read back from the files that server writes, and DKIM signatures are checked by dkimpy
//! (tests/dkim_verify.py) for the same reason. tests/run installs both into a venv.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub struct SmtpServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    // Declared after `child`: the server is killed before its directory is removed.
    _tempdir: Option<tempfile::TempDir>,
}

#[derive(Debug, Default, Clone)]
pub struct SmtpOptions {
    /// None picks a free port; a restarted server passes the port of the one it replaces.
    pub port: Option<u16>,
    /// How long the server waits before answering DATA, so a test can stop the sender mid-batch.
    pub delay_ms: u64,
    /// Where messages are written; reusing a directory keeps the numbering across restarts.
    /// None makes a temporary one that lives as long as the server.
    pub dir: Option<PathBuf>,
}

/// One accepted message, as tests/smtp_server.py stored it.
#[derive(Debug, Clone, Deserialize)]
pub struct Received {
    pub mail_from: String,
    /// MAIL FROM parameters as sent, e.g. `SMTPUTF8`, `BODY=8BITMIME`, `SIZE=1234`.
    pub mail_options: Vec<String>,
    pub rcpt_to: Vec<String>,
    /// `(name, raw value unfolded, value with RFC 2047 decoded)`, in message order.
    pub headers: Vec<(String, String, String)>,
    pub html: Option<String>,
    pub text: Option<String>,
    pub size: u64,
    /// When the server stored it (seconds since the Unix epoch), just before it answered 250.
    pub received_at: f64,
    /// The message exactly as received: what a DKIM verifier must see.
    #[serde(skip)]
    pub raw: Vec<u8>,
    /// The `.eml` file holding `raw`.
    #[serde(skip)]
    pub path: PathBuf,
}

impl SmtpServer {
    pub async fn start() -> Self {
        Self::start_with(SmtpOptions::default()).await
    }

    pub async fn start_with(options: SmtpOptions) -> Self {
        let (dir, tempdir) = match options.dir {
            Some(dir) => (dir, None),
            None => {
                let tempdir = tempfile::tempdir().expect("temporary directory for the SMTP server");
                (tempdir.path().to_path_buf(), Some(tempdir))
            }
        };
        let mut child = Command::new(python())
            .arg(tests_dir().join("smtp_server.py"))
            .args(["--port", &options.port.unwrap_or(0).to_string()])
            .args(["--delay-ms", &options.delay_ms.to_string()])
            .arg("--dir")
            .arg(&dir)
            // The server exits when stdin closes: on stop(), and when this process dies
            // without running destructors.
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error} (tests/run sets up RAPPORT_TEST_PYTHON)", python()));
        let stdout = child.stdout.take().expect("the SMTP server's stdout is piped");
        let line = tokio::time::timeout(Duration::from_secs(20), BufReader::new(stdout).lines().next_line())
            .await
            .expect("the SMTP server reports its port within 20 s")
            .expect("reading the SMTP server's stdout");
        let port = line
            .as_deref()
            .and_then(|line| line.strip_prefix("LISTENING "))
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("the SMTP server did not start (it said {line:?}; its error is above; is aiosmtpd installed?)")
            });
        SmtpServer { child: Some(child), port, dir, _tempdir: tempdir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every complete message so far, in the order the server accepted them.
    pub fn received(&self) -> Vec<Received> {
        self.complete_messages().iter().map(|json| Received::read(json)).collect()
    }

    /// Waits until at least `count` messages have arrived and returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        // Counting files is cheap; parsing every message on every poll would not be.
        while self.complete_messages().len() < count {
            if Instant::now() >= deadline {
                let received: Vec<_> = self.received().iter().map(Received::summary).collect();
                panic!("expected {count} messages within 30 s, the SMTP server has {}: {received:#?}", received.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.received()
    }

    /// Stops the server and waits for it to exit, so its port is free for a restart.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // Closing its stdin asks the server to exit (--exit-with-stdin); SIGTERM would need libc.
        drop(child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
            child.kill().await.expect("killing the SMTP server");
        }
    }

    /// The `<seq>.json` files in sequence order; the server writes each one after its `.eml`,
    /// and renames it into place, so a listed message is complete.
    fn complete_messages(&self) -> Vec<PathBuf> {
        let entries =
            std::fs::read_dir(&self.dir).unwrap_or_else(|error| panic!("reading {}: {error}", self.dir.display()));
        let mut numbered: Vec<(u64, PathBuf)> = entries
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let seq = path.file_name()?.to_str()?.strip_suffix(".json")?.parse::<u64>().ok()?;
                Some((seq, path))
            })
            .collect();
        numbered.sort();
        numbered.into_iter().map(|(_, path)| path).collect()
    }
}

impl Received {
    fn read(json: &Path) -> Self {
        let bytes = std::fs::read(json).unwrap_or_else(|error| panic!("reading {}: {error}", json.display()));
        let mut received: Received =
            serde_json::from_slice(&bytes).unwrap_or_else(|error| panic!("parsing {}: {error}", json.display()));
        received.path = json.with_extension("eml");
        received.raw = std::fs::read(&received.path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", received.path.display()));
        received
    }

    /// The first header called `name` (any case), RFC 2047 decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).into_iter().next()
    }

    /// The first header called `name` (any case) as sent, unfolded but not decoded.
    pub fn raw_header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, ..)| header.eq_ignore_ascii_case(name)).map(|(_, raw, _)| raw.as_str())
    }

    /// Every header called `name` (any case), decoded, in message order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(header, ..)| header.eq_ignore_ascii_case(name))
            .map(|(_, _, decoded)| decoded.as_str())
            .collect()
    }

    fn summary(&self) -> String {
        format!("{} -> {:?}: {:?}", self.mail_from, self.rcpt_to, self.header("Subject").unwrap_or_default())
    }
}

/// Checks `message`'s DKIM-Signature with dkimpy against the test key in tests/fixtures/dkim;
/// the error is the verifier's reason.
pub fn verify_dkim(message: &Path) -> Result<(), String> {
    let output = std::process::Command::new(python())
        .arg(tests_dir().join("dkim_verify.py"))
        .arg(message)
        .arg("--public-key")
        .arg(tests_dir().join("fixtures/dkim/public.txt"))
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error} (tests/run sets up RAPPORT_TEST_PYTHON)", python()));
    if output.status.success() {
        return Ok(());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("{stdout}{stderr}").trim().to_owned())
}

/// The interpreter with aiosmtpd and dkimpy: the venv tests/run made, else whatever python3 is.
pub fn python() -> String {
    std::env::var("RAPPORT_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// The PKCS#1 PEM private key whose public half verify_dkim checks against.
pub fn dkim_private_key() -> String {
    let path = tests_dir().join("fixtures/dkim/private.pem");
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

pub(crate) fn tests_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
