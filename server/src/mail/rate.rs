//! Sending rate limits as sliding windows: at most `capacity` messages in any window of
//! `window`, wherever the window starts (governor's GCRA would let a full burst through on top of
//! the sustained rate, so a relay could see twice the limit within one second).

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct SlidingWindow {
    capacity: usize,
    window: Duration,
    /// When the messages in the current window went, per key (a recipient domain, or one key
    /// for all mail).
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl SlidingWindow {
    /// `per_second` messages a second: a window of one second below one a second is longer
    /// (0.5 a second is one message in any two seconds).
    pub fn new(per_second: f64) -> Self {
        let capacity = per_second.floor().max(1.0);
        Self {
            capacity: capacity as usize,
            window: Duration::from_secs_f64(capacity / per_second),
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place in `key`'s window now, or says how long until one frees up.
    pub fn try_take(&self, key: &str) -> Result<(), Duration> {
        self.try_take_at(key, Instant::now())
    }

    fn try_take_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut sent) = self.sent.lock() else { return Ok(()) };
        let times = sent.entry(key.to_owned()).or_default();
        while times.front().is_some_and(|at| now.duration_since(*at) >= self.window) {
            times.pop_front();
        }
        if times.len() < self.capacity {
            times.push_back(now);
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        Err(self.window.saturating_sub(now.duration_since(oldest)))
    }

    /// Waits for a place in `key`'s window and takes it.
    pub async fn take(&self, key: &str) {
        while let Err(wait) = self.try_take(key) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Drops keys with nothing in their window, so that memory does not grow with every domain
    /// ever mailed.
    pub fn forget_idle(&self) {
        let now = Instant::now();
        if let Ok(mut sent) = self.sent.lock() {
            sent.retain(|_, times| times.back().is_some_and(|at| now.duration_since(*at) < self.window));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_window_holds_more_than_the_capacity() {
        let limit = SlidingWindow::new(3.0);
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        for millis in [0, 10, 20] {
            assert_eq!(limit.try_take_at("a", at(millis)), Ok(()));
        }
        assert_eq!(limit.try_take_at("a", at(500)), Err(Duration::from_millis(500)));
        assert_eq!(limit.try_take_at("b", at(500)), Ok(()), "keys are limited apart");
        assert_eq!(limit.try_take_at("a", at(1_000)), Ok(()), "the first place frees up after a second");
        assert!(limit.try_take_at("a", at(1_005)).is_err());
    }

    #[test]
    fn rates_below_one_a_second_get_a_longer_window() {
        let limit = SlidingWindow::new(0.5);
        let start = Instant::now();
        assert_eq!(limit.try_take_at("a", start), Ok(()));
        assert_eq!(limit.try_take_at("a", start + Duration::from_secs(1)), Err(Duration::from_secs(1)));
        assert_eq!(limit.try_take_at("a", start + Duration::from_secs(2)), Ok(()));
    }
}
