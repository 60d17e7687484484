//! A real webhook receiver for the end-to-end tests: tests/webhook_receiver.py, which verifies
//! every request with the `standardwebhooks` package and reports it on its stdout.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
};

use crate::smtp::{python, tests_dir};

pub struct WebhookReceiver {
    child: Child,
    port: u16,
    reports: Arc<Mutex<Vec<Value>>>,
}

impl WebhookReceiver {
    /// Answers 503 to the first `fail_first` requests that verify.
    pub async fn start(fail_first: usize) -> Self {
        Self::start_with(fail_first, Duration::ZERO).await
    }

    /// Like `start`, taking `delay` to answer each request that verifies.
    pub async fn start_with(fail_first: usize, delay: Duration) -> Self {
        let mut child = Command::new(python())
            .arg(tests_dir().join("webhook_receiver.py"))
            .args(["--fail-first", &fail_first.to_string(), "--delay", &delay.as_secs_f64().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error} (tests/run sets up RAPPORT_TEST_PYTHON)", python()));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the webhook receiver reports its port within 20 s")
            .expect("reading the webhook receiver's stdout");
        let port = first
            .as_deref()
            .and_then(|line| line.strip_prefix("LISTENING "))
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("the webhook receiver did not start (it said {first:?}; is standardwebhooks installed?)")
            });
        let reports = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&reports);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let report: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                collected.lock().expect("reports lock").push(report);
            }
        });
        Self { child, port, reports }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// Hands the receiver the endpoint's `whsec_` secret; until then it answers 503.
    pub async fn set_secret(&mut self, secret: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin.write_all(format!("{secret}\n").as_bytes()).await.expect("writing the secret");
        stdin.flush().await.expect("flushing the secret");
    }

    /// Everything reported so far: `{"outcome": "delivered" | "failed" | "rejected", "id", …}`.
    pub fn reports(&self) -> Vec<Value> {
        self.reports.lock().expect("reports lock").clone()
    }

    /// The verified, accepted webhooks so far, in arrival order.
    pub fn delivered(&self) -> Vec<Value> {
        self.reports().into_iter().filter(|report| report["outcome"] == "delivered").collect()
    }

    /// Waits until `count` webhooks were accepted and returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let delivered = self.delivered();
            if delivered.len() >= count {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} webhooks within 30 s; the receiver saw {:#?}",
                self.reports()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
