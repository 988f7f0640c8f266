//! Waiting for what a test can only see by asking again: one async [`eventually`] and its
//! blocking twin [`wait_until`], with one default timeout, [`TIMEOUT`].
//!
//! A few waits are genuinely longer; they say so with [`LONG`] or [`LONGEST`] (and why at the
//! call site when it is neither).

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a wait lasts unless it says otherwise: generous for a debug build on a busy 2-core
/// machine that also runs the emulators, the broker and other tests.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Seconds for what follows a Kafka group's rebalance or a Kinesis lease's expiry (a session or
/// a lease must lapse first, then the group or the leases settle, on a broker or an emulator
/// shared with other tests), or tens of thousands of records crossing a debug build.
pub const LONG: u64 = 60;

/// Seconds for whole data sets compared after such a hand-over, written through an emulator
/// (DynamoDB, Kinesis, S3) one round trip at a time.
pub const LONGEST: u64 = 90;

/// How often a condition is asked again.
const INTERVAL: Duration = Duration::from_millis(100);

/// Asks `check` until it gives `Some`, for at most [`TIMEOUT`]; fails naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(TIMEOUT, what, check).await
}

/// As [`eventually`], for at most `timeout`.
pub async fn eventually_within<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} ({timeout:?})"
        );
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Asks `f` until it holds, for at most [`TIMEOUT`], blocking the thread; fails naming `what`.
pub fn wait_until(what: &str, f: impl FnMut() -> bool) {
    wait_until_within(TIMEOUT.as_secs(), what, f);
}

/// As [`wait_until`], for at most `secs` seconds.
pub fn wait_until_within(secs: u64, what: &str, f: impl FnMut() -> bool) {
    assert!(
        holds_within(Duration::from_secs(secs), INTERVAL, f),
        "{what}: not within {secs} s"
    );
}

/// Asks `f` every `every` until it holds or `timeout` has passed; whether it held. For a wait
/// whose caller then compares what it found and says what differs.
pub fn holds_within(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}
