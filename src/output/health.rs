//! Whether each output can do its work, for `/readyz`: up until it reports trouble or a write
//! of its stalls, with the reason; and what an error says of itself (can a retry help).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::metrics::METRICS;
use crate::time::{now_ms, Millis};

/// A write that has not finished after this long makes its output unhealthy (a store that
/// hangs, rather than fails, says so on `/readyz` too).
pub const STALLED_AFTER_MS: Millis = 5_000;

/// A permanent error is logged at most this often per output (it repeats on every retry).
pub const LOG_PERMANENT_EVERY_MS: Millis = 60_000;

/// What an error says of itself: whether retrying can help.
pub trait Classify {
    /// Permanent or transient.
    fn kind(&self) -> ErrorKind;
}

/// How an output's service failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retrying will not help until someone acts: access denied, table or topic missing,
    /// a request the service calls invalid.
    Permanent,
    /// Throttling, a timeout, a connection lost: retried with backoff.
    Transient,
}

impl ErrorKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Permanent => "permanent",
            ErrorKind::Transient => "transient",
        }
    }
}

/// Whether an output can currently do its work, for `/readyz` (up until it reports trouble, or
/// while one of its writes has been under way longer than [`STALLED_AFTER_MS`]), and why not.
#[derive(Debug, Clone)]
pub struct Health {
    name: &'static str,
    /// The output's own view, or its client library's connection flag.
    up: Arc<AtomicBool>,
    /// A permanent error was reported and nothing has succeeded since (kept apart from `up`,
    /// which a client library may overwrite every second).
    broken: Arc<AtomicBool>,
    /// When the write under way started (epoch ms); 0 when none is.
    busy_since: Arc<AtomicI64>,
    /// The last error while down.
    reason: Arc<std::sync::Mutex<Option<String>>>,
    /// When a permanent error was last logged (epoch ms).
    logged_at: Arc<AtomicI64>,
    /// While it cannot write: the records received (`stampede_records_in_total`) when it
    /// stopped, plus one; 0 while it writes.
    down_since: Arc<AtomicU64>,
    errors: Arc<crate::metrics::OutputErrors>,
}

impl Health {
    /// The health of output `name`, up until it reports trouble.
    pub fn new(name: &'static str) -> Health {
        Health::from_flag(name, Arc::new(AtomicBool::new(true)))
    }

    /// This health's reason while down is also what `reason` holds (a client library's last
    /// error, which it writes itself).
    #[must_use]
    pub fn with_reason(mut self, reason: Arc<std::sync::Mutex<Option<String>>>) -> Health {
        self.reason = reason;
        self
    }

    /// Records whether the output works now.
    pub fn set(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        if up {
            self.broken.store(false, Ordering::Relaxed);
            self.down_since.store(0, Ordering::Relaxed);
            *self
                .reason
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }

    /// A write succeeded, which proves the service reachable: up again if a client library's
    /// connection flag said otherwise (its first statistics come a second after start, and may
    /// predate the first connection). Cheap enough for every write; a reported error is cleared
    /// only by [`Health::set`].
    pub fn wrote(&self) {
        if !self.up.load(Ordering::Relaxed) {
            self.up.store(true, Ordering::Relaxed);
        }
        // Writes go through: nothing waits for it any more (see [`Backlog`]).
        if self.down_since.load(Ordering::Relaxed) != 0 {
            self.down_since.store(0, Ordering::Relaxed);
        }
    }

    /// An error from the output's service: counted by kind in
    /// `stampede_output_errors_total{output,kind}`. A permanent one marks the output down with
    /// the error as the reason `/readyz` gives, and is logged at most once a minute; a
    /// transient one is the caller's to log (it is retried, and usually passes).
    pub fn failed(&self, kind: ErrorKind, error: &dyn std::fmt::Display) {
        self.errors.count(kind == ErrorKind::Permanent);
        if kind == ErrorKind::Transient {
            return;
        }
        let text = error.to_string();
        self.broken.store(true, Ordering::Relaxed);
        self.stopped_writing();
        let now = now_ms();
        let last = self.logged_at.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= LOG_PERMANENT_EVERY_MS {
            self.logged_at.store(now, Ordering::Relaxed);
            tracing::error!(output = self.name, error = %text, "output failing: retrying, but this needs someone to act (logged once a minute)");
        }
        *self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(text);
    }

    /// The output is down for `reason` (a transient error that keeps coming back).
    pub fn down(&self, reason: &dyn std::fmt::Display) {
        self.up.store(false, Ordering::Relaxed);
        self.stopped_writing();
        *self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.to_string());
    }

    /// Marks when writes stopped succeeding (the first failure reported since the last success).
    fn stopped_writing(&self) {
        let received = METRICS.records_in.load(Ordering::Relaxed);
        let _ =
            self.down_since
                .compare_exchange(0, received + 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// While its writes fail: the records received since they started failing, which wait for
    /// it (what was received before may wait too).
    pub fn unwritten(&self) -> Option<u64> {
        let since = self.down_since.load(Ordering::Relaxed);
        (since != 0).then(|| {
            METRICS
                .records_in
                .load(Ordering::Relaxed)
                .saturating_sub(since - 1)
        })
    }

    /// Why it is down: a call under way for too long (what is happening now), else the last
    /// error it reported.
    pub fn reason(&self) -> Option<String> {
        let since = self.busy_since.load(Ordering::Relaxed);
        let busy = now_ms().saturating_sub(since);
        if since != 0 && busy >= STALLED_AFTER_MS {
            return Some(format!(
                "a call has been under way for {} s (no answer)",
                busy / 1_000
            ));
        }
        self.reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A call under way since `since` (epoch ms), the oldest of several; `None`: none is.
    pub fn busy_from(&self, since: Option<Millis>) {
        self.busy_since
            .store(since.map_or(0, |s| s.max(1)), Ordering::Relaxed);
    }

    /// A write starts (`true`) or ends (`false`).
    pub fn busy(&self, busy: bool) {
        let since = if busy { now_ms().max(1) } else { 0 };
        self.busy_since.store(since, Ordering::Relaxed);
    }

    /// Whether it works now.
    pub fn up(&self) -> bool {
        let since = self.busy_since.load(Ordering::Relaxed);
        self.up.load(Ordering::Relaxed)
            && !self.broken.load(Ordering::Relaxed)
            && (since == 0 || now_ms().saturating_sub(since) < STALLED_AFTER_MS)
    }

    /// The health of output `name` that reads `flag` (a client library's connection flag).
    pub fn from_flag(name: &'static str, flag: Arc<AtomicBool>) -> Health {
        Health {
            name,
            up: flag,
            broken: Arc::default(),
            busy_since: Arc::new(AtomicI64::new(0)),
            reason: Arc::default(),
            logged_at: Arc::new(AtomicI64::new(0)),
            down_since: Arc::new(AtomicU64::new(0)),
            errors: METRICS.output_errors(name),
        }
    }
}

/// The outputs that keep what is received (all but the alert notifier, whose channels being down
/// delays only the alerts): while one of them cannot write, what is received waits for it in
/// memory, and past `bound` records received since it stopped writing, sources take no more —
/// `POST /ingest` answers 503 with `Retry-After`, Kafka and Kinesis stop reading — until it
/// writes again.
#[derive(Clone)]
pub struct Backlog {
    keepers: Arc<[(&'static str, Health)]>,
    bound: u64,
}

impl Backlog {
    /// A backlog over `keepers`, full at `bound` records.
    pub fn new(keepers: Vec<(&'static str, Health)>, bound: u64) -> Backlog {
        Backlog {
            keepers: keepers.into(),
            bound,
        }
    }

    /// Why an output that keeps what is received cannot write now, if one cannot (naming it).
    pub fn failing(&self) -> Option<String> {
        self.keepers.iter().find_map(|(name, health)| {
            health.unwritten()?;
            Some(format!(
                "the {name} output cannot write ({})",
                health.reason().unwrap_or_else(|| "failing".into())
            ))
        })
    }

    /// None: nothing waits, or not yet `bound` records. Else why no more may be taken, naming
    /// the output and its error.
    pub fn full(&self) -> Option<String> {
        self.keepers.iter().find_map(|(name, health)| {
            let waiting = health.unwritten()?;
            (waiting >= self.bound).then(|| {
                format!(
                    "the {name} output cannot write ({}); {waiting} records received since wait for it (web.max_unwritten_records = {})",
                    health.reason().unwrap_or_else(|| "failing".into()),
                    self.bound
                )
            })
        })
    }
}
