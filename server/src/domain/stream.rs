//! What the NATS stream consumer is doing, for `/readyz`: the consumer writes it, the health
//! check reads it, so that an operator sees a broker outage or skipped messages without logs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerState {
    /// Connecting to the broker, or binding to the stream and its durable consumer.
    Connecting,
    /// Bound and reading (or waiting for) messages.
    Consuming,
    /// The broker or the database failed; waiting before trying again.
    Retrying,
    /// Shut down with the process.
    Stopped,
}

impl ConsumerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerState::Connecting => "connecting",
            ConsumerState::Consuming => "consuming",
            ConsumerState::Retrying => "retrying",
            ConsumerState::Stopped => "stopped",
        }
    }
}

/// Counts since this process started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStatus {
    pub state: ConsumerState,
    /// Events stored for the first time.
    pub stored: u64,
    /// Messages whose event was already stored (a redelivery, or a repeated idempotency key).
    pub duplicates: u64,
    /// Messages that could not become an event (not JSON, an invalid event, an unknown contact)
    /// and were acknowledged as finished so that they do not block the stream.
    pub skipped: u64,
}

impl Default for ConsumerStatus {
    fn default() -> Self {
        Self { state: ConsumerState::Connecting, stored: 0, duplicates: 0, skipped: 0 }
    }
}
