//! A JetStream stream of its own for one test, on the real NATS server that tests/run starts
//! (`RAPPORT_TEST_NATS_URL`, default nats://127.0.0.1:4222): a unique subject and stream name, so
//! that tests running at once never read each other's events, and the stream deleted afterwards.
//! A missing NATS server fails the test; it never skips it.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, message::PublishMessage, stream};
use futures_util::future::try_join_all;
use rapport::config::NatsSettings;
use secrecy::SecretString;

pub fn nats_url() -> String {
    std::env::var("RAPPORT_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Consumer settings for a fresh subject and stream; redelivery after 2 s rather than 30, so a
/// test of a crash need not wait long.
pub fn unique_settings() -> NatsSettings {
    let id = uuid::Uuid::new_v4().simple().to_string();
    NatsSettings {
        url: SecretString::from(nats_url()),
        subject: format!("test.{id}.events"),
        stream: format!("TEST_{}", &id[..24]),
        consumer: NatsSettings::DEFAULT_CONSUMER.to_owned(),
        batch_size: NatsSettings::DEFAULT_BATCH_SIZE,
        ack_wait: Duration::from_secs(2),
        create_contacts: false,
    }
}

pub struct TestStream {
    pub context: jetstream::Context,
    pub settings: NatsSettings,
}

/// A NATS server of the test's own (Debian's `nats-server`, which tests/run installs), for a
/// test that stops and restarts the broker; the shared one must stay up for the others.
pub struct NatsServer {
    child: Option<tokio::process::Child>,
    pub port: u16,
    pub dir: std::path::PathBuf,
}

impl NatsServer {
    /// Starts one with JetStream on `port` (a free one if none), storing in `dir`, and waits
    /// until it listens.
    pub async fn start(port: Option<u16>, dir: &std::path::Path) -> Self {
        let port = port.unwrap_or_else(|| {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("port").port()
        });
        let child = tokio::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server is installed (tests/run installs it)");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "nats-server did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child: Some(child), port, dir: dir.to_path_buf() }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server the hard way, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL");
            child.wait().await.expect("killed");
        }
    }
}

impl TestStream {
    /// Connects; the stream itself is made by Rapport, or by `create` as an operator would.
    pub async fn connect(settings: NatsSettings) -> Self {
        let url = secrecy::ExposeSecret::expose_secret(&settings.url).to_owned();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url.as_str())
            .await
            .unwrap_or_else(|error| panic!("a NATS server with JetStream is required at {url}: {error}"));
        Self { context: jetstream::new(client), settings }
    }

    /// Makes the stream before Rapport starts, as an operator would.
    pub async fn create(&self) {
        let config = stream::Config {
            name: self.settings.stream.clone(),
            subjects: vec![self.settings.subject.clone()],
            ..Default::default()
        };
        self.context.create_stream(config).await.expect("JetStream stream created");
    }

    /// Publishes each body (with a `Nats-Msg-Id` where one is given) and waits for JetStream to
    /// acknowledge every one; returns their stream sequences.
    pub async fn publish_all(&self, messages: impl IntoIterator<Item = (Option<String>, String)>) -> Vec<u64> {
        let mut sequences = Vec::new();
        let mut pending = Vec::new();
        for (message_id, body) in messages {
            let mut publish = PublishMessage::build().payload(body.into());
            if let Some(id) = message_id {
                publish = publish.message_id(id);
            }
            pending.push(self.context.send_publish(self.settings.subject.clone(), publish).await.expect("published"));
            // Bounded in flight: the broker's acks come back while more are sent.
            if pending.len() == 2_000 {
                sequences.extend(acked(std::mem::take(&mut pending)).await);
            }
        }
        sequences.extend(acked(pending).await);
        sequences
    }

    /// Publishes one body, again while JetStream answers that no stream takes its subject: a
    /// restarted broker answers for its streams before it listens on their subjects again, and a
    /// publish nobody received was not stored, so sending it again stores it once.
    pub async fn publish_once_listening(&self, body: String, patience: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let ack =
                self.context.publish(self.settings.subject.clone(), body.clone().into()).await.expect("published");
            match ack.await {
                Ok(ack) => return ack.sequence,
                Err(error) if error.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the stream did not take its subject again: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("JetStream acknowledged: {error}"),
            }
        }
    }

    pub async fn consumer(&self) -> PullConsumer {
        self.context
            .get_stream(&self.settings.stream)
            .await
            .expect("stream exists")
            .get_consumer(&self.settings.consumer)
            .await
            .expect("the durable consumer exists")
    }

    /// Waits until the durable consumer has every message delivered and acknowledged.
    pub async fn wait_until_all_acknowledged(&self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let info = self.consumer().await.get_info().await.expect("consumer info");
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "messages left unacknowledged: {} pending, {} awaiting an ack",
                info.num_pending,
                info.num_ack_pending
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn acked(pending: Vec<jetstream::context::PublishAckFuture>) -> Vec<u64> {
    let acks = try_join_all(pending.into_iter().map(|ack| ack.into_future())).await.expect("JetStream acknowledged");
    acks.into_iter()
        .map(|ack| {
            assert!(!ack.duplicate, "each test message is published once");
            ack.sequence
        })
        .collect()
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let name = self.settings.stream.clone();
        let url = secrecy::ExposeSecret::expose_secret(&self.settings.url).to_owned();
        // Drop runs outside any async context we could borrow: use a runtime and a connection of
        // its own (the test's connection lives on the test's runtime).
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(url.as_str())
                    .await
                    .ok()?;
                jetstream::new(client).delete_stream(&name).await.ok()
            })
        });
        let _ = deleted.join();
    }
}
