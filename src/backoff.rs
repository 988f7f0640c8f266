//! The one retry schedule: exponential backoff with jitter, restarted when an attempt makes
//! progress. Every loop that retries a call (stores, streams, leases, the broker, producers)
//! waits through a [`Backoff`].

use std::time::Duration;

/// Waits that double from `first` up to `max`, each cut by up to half at random so that
/// retrying clients spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// A schedule starting at `first`, never longer than `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            next: first,
            max,
        }
    }

    /// How long to wait before the next attempt; the wait after it doubles.
    pub fn next_wait(&mut self) -> Duration {
        let wait = jitter(self.next);
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// The wait the next attempt would get, without jitter (for logs).
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// An attempt made progress: the next wait is the first again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps for [`Backoff::next_wait`] (in a Tokio task).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }

    /// Sleeps for [`Backoff::next_wait`] (on a plain thread).
    pub fn wait_blocking(&mut self) {
        std::thread::sleep(self.next_wait());
    }
}

/// Up to 50% less than `d`.
pub fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.5 + f64::from(nanos % 1_000) / 2_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_within_jitter_and_restart_on_progress() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        for want in [100, 200, 350, 350] {
            let wait = b.next_wait();
            assert!(
                wait >= ms(want) / 2 && wait <= ms(want),
                "{wait:?} for {want}"
            );
        }
        b.reset();
        assert_eq!(b.peek(), ms(100));
    }
}
