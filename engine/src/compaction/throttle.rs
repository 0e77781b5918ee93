//! A bytes-per-second budget for the cleaner's I/O (Kafka's
//! `log.cleaner.io.max.bytes.per.second`): after each chunk read or written the cleaner
//! reports its bytes, and sleeps when it ran ahead of the budget.
//!
//! Owns: the pacing arithmetic. Invariants: over any run the bytes reported divided by the
//! time since the throttle's start never exceed the budget by more than one chunk.

use std::time::{Duration, Instant};

/// Longest single pause (a huge chunk against a tiny budget still makes progress checks).
const THROTTLE_SLEEP_MAX: Duration = Duration::from_secs(1);

/// Paces the cleaner to `bytes_per_sec` (`u64::MAX`: unthrottled).
pub struct Throttle {
    bytes_per_sec: u64,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Throttle {
        Throttle {
            bytes_per_sec: bytes_per_sec.max(1),
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Accounts `bytes` and sleeps until the budget allows them.
    pub async fn consume(&mut self, bytes: u64) {
        if self.bytes_per_sec == u64::MAX {
            return;
        }
        self.bytes = self.bytes.saturating_add(bytes);
        loop {
            let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
            let elapsed = self.started.elapsed();
            if elapsed >= due {
                break;
            }
            compio::time::sleep((due - elapsed).min(THROTTLE_SLEEP_MAX)).await;
        }
        // Forget history older than a few seconds so an idle spell is not banked.
        let elapsed = self.started.elapsed();
        if elapsed > Duration::from_secs(5) {
            let allowed = (elapsed.as_secs_f64() * self.bytes_per_sec as f64) as u64;
            if allowed > self.bytes {
                self.started = Instant::now();
                self.bytes = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_budget() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let mut t = Throttle::new(1_000_000);
            let start = Instant::now();
            for _ in 0..4 {
                t.consume(50_000).await;
            }
            // 200 KB at 1 MB/s: at least 0.2 s (an upper bound would be a timed assertion).
            assert!(start.elapsed() >= Duration::from_millis(195));
        });
    }
}
