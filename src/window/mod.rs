//! The window engine of CONTRACT §2: event-time tumbling windows per unicorn, a watermark per
//! source partition, restatement of late records, and the partition's low-water position.
//!
//! Pure and synchronous. A source drives one [`Engine`] per partition: [`Engine::push`] each
//! decoded record with its source position and arrival time, then [`Engine::advance`] after a
//! batch or on a timer to collect the summaries that became due, and [`Engine::flush`] when the
//! input ends. Nothing here reads a clock, locks, or awaits; the caller passes the time. The
//! batch path may instead hand it a batch with no late record folded per (unicorn, window)
//! ([`fold`], [`Engine::push_group`]): the same decisions, taken for the batch at once.
//!
//! # Semantics, record by record
//!
//! Every decision that shapes a summary is taken per record, in position order, so it does not
//! depend on how the input was cut into batches — a replay gives the same summaries:
//!
//! * the watermark is `max(event time seen) − out_of_orderness`, never moving back;
//! * a record whose window end + allowed lateness ≤ the watermark is rejected as `too_late`;
//! * a record whose window end ≤ the watermark is *late*: it is accepted and restates the window;
//! * `Revision` is the number of late records the window holds, so the first emission of a window
//!   that closed normally is revision 0 and each late record raises it by one. Several late
//!   records that arrive between two calls to `advance` are emitted once, with the last count.
//!
//! Idle advancement and emission timing depend on the wall clock the caller passes in; they
//! change when a summary appears, never what it holds.
//!
//! # Exactly-once replay
//!
//! [`Engine::checkpoint`] gives the partition's low-water position (the oldest record of any
//! window that can still change), the watermark and the last position pushed. A source commits
//! the low-water position once the summaries emitted so far are stored; after a crash the next
//! owner builds the engine with [`Engine::resume`] and re-reads from that position. Records
//! already accounted for in a final window are skipped silently, windows that were open are
//! rebuilt and emitted as before, and windows that had closed are re-emitted once the replay
//! passes the checkpoint, with a revision at least as high as any emitted before the crash.

mod engine;
pub mod fold;
mod intern;

pub use engine::{Accepted, Checkpoint, Closings, Engine, EngineStats, Finals, Forgotten, TooLate};
pub use intern::{Interner, NameId};

use crate::time::Millis;

/// Below this many entries (or bytes) nothing is compacted or shrunk: not worth the copy.
const SMALL: usize = 4_096;

/// Gives back a vector's spare capacity when it is mostly spare, keeping room to grow: for
/// state kept per unicorn once many unicorns have been forgotten.
pub fn shrink_mostly_empty<T>(v: &mut Vec<T>) {
    if v.capacity() > SMALL && v.capacity() > 4 * v.len() {
        v.shrink_to(2 * v.len());
    }
}

/// Which clock assigns a record to its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeMode {
    /// The record's own `StatusTime` (the default).
    #[default]
    Event,
    /// The time the record reached Stampede: the workshop's Kinesis Analytics behaviour.
    Ingest,
}

/// The `[window]` section of the configuration, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Event or arrival time.
    pub time: TimeMode,
    /// Window length; windows are aligned to multiples of it since the epoch.
    pub size_ms: Millis,
    /// How far behind the newest event time the watermark trails.
    pub out_of_orderness_ms: Millis,
    /// How long after its close a window still accepts (and restates for) late records.
    pub allowed_lateness_ms: Millis,
    /// Wall time without records after which the watermark advances with the wall clock;
    /// `None` disables idle advancement (batch mode).
    pub idle_timeout_ms: Option<Millis>,
    /// Live sources: how far ahead of the wall clock a `StatusTime` may be before the record is
    /// rejected as `too_early` (applied by the engine task in event time, not by the engine);
    /// `None` for history (files, `aggregate`), which keeps no wall-clock rule.
    pub max_future_ms: Option<Millis>,
    /// Live sources: a unicorn with no window that can still change and no record for this
    /// long is forgotten (applied by the engine task with [`Engine::forget_silent`]);
    /// `None` keeps every name (`aggregate`, which runs once and ends).
    pub forget_after_ms: Option<Millis>,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            time: TimeMode::Event,
            size_ms: 60_000,
            out_of_orderness_ms: 5_000,
            allowed_lateness_ms: 60_000,
            idle_timeout_ms: Some(10_000),
            max_future_ms: None,
            forget_after_ms: None,
        }
    }
}

/// A window setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("window.{key} must be {rule}, got {value_ms} ms")]
pub struct WindowConfigError {
    /// The config key, e.g. `size_secs`.
    pub key: &'static str,
    /// The rule it breaks, in words.
    pub rule: &'static str,
    /// The value given, in milliseconds.
    pub value_ms: Millis,
}

impl WindowConfig {
    /// The start of the window event time `t` falls in.
    pub fn window_start(&self, t: Millis) -> Millis {
        t.div_euclid(self.size_ms) * self.size_ms
    }

    /// The watermark a record of event time `t` raises its partition's to (if higher).
    pub fn watermark_of(&self, t: Millis) -> Millis {
        t.saturating_sub(self.out_of_orderness_ms)
    }

    /// Checks that the settings make sense together.
    ///
    /// # Errors
    /// The first setting out of range, named as in the config file.
    pub fn validate(&self) -> Result<(), WindowConfigError> {
        const DAY: Millis = 86_400_000;
        let check = |key, rule, value_ms: Millis, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(WindowConfigError {
                    key,
                    rule,
                    value_ms,
                })
            }
        };
        let size = self.size_ms;
        check(
            "size_secs",
            "from 1 s to 1 day",
            size,
            (1_000..=DAY).contains(&size),
        )?;
        let ooo = self.out_of_orderness_ms;
        check(
            "out_of_orderness_secs",
            "from 0 to 1 day",
            ooo,
            (0..=DAY).contains(&ooo),
        )?;
        let late = self.allowed_lateness_ms;
        check(
            "allowed_lateness_secs",
            "from 0 to 1 day",
            late,
            (0..=DAY).contains(&late),
        )?;
        if let Some(idle) = self.idle_timeout_ms {
            check("idle_timeout_secs", "positive", idle, idle > 0)?;
        }
        if let Some(future) = self.max_future_ms {
            // Below a second, ordinary clock skew between producers and this host is rejected.
            check(
                "max_future_secs",
                "from 1 s to 1 year",
                future,
                (1_000..=365 * DAY).contains(&future),
            )?;
        }
        Ok(())
    }
}
