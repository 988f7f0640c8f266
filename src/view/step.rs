//! The views' step of a partition task: every view of the [`Registry`] kept over the
//! partition's accepted records, a micro-batch at a time.
//!
//! The task adds each accepted record to one [`Batcher`] (appends to column buffers, nothing
//! per view), then once per batch of the source hands the micro-batch to each view's engine and
//! collects the partial rows of windows that closed or changed, for the views output to merge.
//! A view whose expressions fail on the records (a division by zero, say) is marked failed and
//! dropped from the step; the others go on.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;

use super::engine::{Batcher, ViewEngine};
use super::registry::{LiveView, Registry};
use crate::record::Telemetry;
use crate::time::Millis;

/// Partial rows of one view, handed on to the views output.
pub struct Handed {
    /// The view.
    pub view: Arc<LiveView>,
    /// Rows of its [`super::compile::ViewPlan::partial_schema`].
    pub partials: RecordBatch,
}

impl std::fmt::Debug for Handed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} partial rows of view {}",
            self.partials.num_rows(),
            self.view.name()
        )
    }
}

/// The views of one partition; see the module docs.
pub struct ViewStep {
    registry: Arc<Registry>,
    version: u64,
    engines: Vec<(Arc<LiveView>, ViewEngine)>,
    batcher: Batcher,
    /// A replay is (or was, until the next step) under way.
    replayed: bool,
    /// The newest event time this partition accepted.
    newest: Millis,
    /// When the engines were last fed (wall clock).
    fed_at: Millis,
    /// A resumed partition: the newest window end final at its checkpoint (what a replay
    /// re-reads of windows ending by then was handed on whole before).
    resumed_final: Millis,
}

/// Records gathered before the engines are fed, at most: each window and key then gets several
/// records per accumulator call rather than one (a unicorn's minute is 60 records).
pub const FEED_RECORDS: usize = 65_536;

/// How long records wait in the gatherer at most before the engines are fed (and so how much
/// later than the summaries a view's window may be handed on).
pub const FEED_EVERY_MS: Millis = 1_000;

impl ViewStep {
    /// Every view of `registry`, from now on.
    pub fn new(registry: Arc<Registry>) -> ViewStep {
        let mut step = ViewStep {
            version: registry.version().wrapping_sub(1),
            registry,
            engines: Vec::new(),
            batcher: Batcher::default(),
            replayed: false,
            newest: Millis::MIN,
            fed_at: Millis::MIN,
            resumed_final: Millis::MIN,
        };
        step.sync();
        step
    }

    /// Takes up views added or removed since the last look (one atomic load when none was).
    pub fn sync(&mut self) {
        let version = self.registry.version();
        if version == self.version {
            return;
        }
        self.version = version;
        let mut old = std::mem::take(&mut self.engines);
        for view in self.registry.list().iter() {
            if view.failure().is_some() {
                continue;
            }
            let kept = old.iter().position(|(v, _)| Arc::ptr_eq(v, view));
            let engine = match kept {
                Some(i) => old.swap_remove(i).1,
                None => {
                    let cut = view.cut.load(Relaxed);
                    if cut != Millis::MIN && self.newest >= cut {
                        // Records past the cut were read before this partition saw the view:
                        // neither the backfill nor the partition would count them.
                        view.fail(format!(
                            "it was defined while a partition was reading records past its backfill cut ({}); DELETE it and define it again",
                            crate::time::format_status_time(cut)
                        ));
                        continue;
                    }
                    match ViewEngine::new(Arc::clone(&view.plan)) {
                        Ok(engine) => engine.from_cut(cut),
                        Err(e) => {
                            view.fail(e.message);
                            continue;
                        }
                    }
                }
            };
            self.engines.push((Arc::clone(view), engine));
        }
    }

    /// The partition accepted records up to event time `t` (views or not: a view defined later
    /// is backfilled up to the newest time any partition read).
    pub fn saw(&mut self, t: Millis) {
        if t > self.newest {
            self.newest = t;
            self.registry.saw(t);
        }
    }

    /// The partition resumed from a checkpoint at which windows ending by `closed` were final
    /// (`window::Engine::accepted_after` of the resumed engine).
    pub fn resumed(&mut self, closed: Millis) {
        self.resumed_final = closed;
    }

    /// Whether no view is kept (the task then gathers nothing).
    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    /// Adds an accepted record, read at `position` when windows ending by `closed` could take no
    /// record any more.
    #[inline]
    pub fn push(&mut self, record: &Telemetry<'_>, position: u64, closed: Millis) {
        self.batcher.push(record, position, closed);
    }

    /// Hands the records gathered to every view; then, unless `replaying` (a resumed partition
    /// re-reading what its checkpoint covers: its windows are emitted once the replay is over,
    /// whole), the partial rows of windows that ended by `watermark` or changed, forgetting
    /// those that ended by `closed`.
    ///
    /// A replay starts at the oldest record of a window some view could still change, and so
    /// re-reads records of windows already final too (handed on whole before the crash or the
    /// move). Replayed records are never dropped as late (a session's record may be older than
    /// `closed` and still belong to a session that is not: which, only the whole replay tells);
    /// once it is over, windows that were final at the checkpoint ([`ViewStep::resumed`]) are
    /// forgotten unsaid — not those final by now: records read since may have closed windows
    /// the checkpoint left open, and those are handed on.
    ///
    /// Records wait in a gatherer between steps (up to [`FEED_RECORDS`] or [`FEED_EVERY_MS`]);
    /// `now` feeds them whatever their number: a checkpoint is taken only after a step `now`,
    /// so that every window final at a checkpoint has been handed on (what a resumed partition
    /// relies on, above).
    pub fn step(
        &mut self,
        (watermark, closed): (Millis, Millis),
        replaying: bool,
        now: bool,
    ) -> Vec<Handed> {
        let wall = crate::time::now_ms();
        let due = now
            || self.batcher.len() >= FEED_RECORDS
            || wall.saturating_sub(self.fed_at) >= FEED_EVERY_MS
            || self.replayed != replaying;
        if !due {
            // Records wait in the gatherer (their positions hold the low water back); nothing
            // is handed on before they are in the engines.
            return Vec::new();
        }
        self.fed_at = wall;
        self.feed(replaying);
        if replaying {
            self.replayed = true;
            return Vec::new();
        }
        if std::mem::take(&mut self.replayed) {
            for (_, engine) in &mut self.engines {
                engine.forget_final(self.resumed_final);
            }
        }
        self.hand_on(|engine| engine.advance(watermark, closed))
    }

    /// The partial rows of every window new or changed (the partition's input ended).
    pub fn flush(&mut self) -> Vec<Handed> {
        self.feed(false);
        self.hand_on(ViewEngine::flush)
    }

    /// The oldest position of a record in a window some view can still change, or gathered and
    /// not yet in the engines.
    pub fn low_water(&self) -> Option<u64> {
        let gathered = (!self.engines.is_empty())
            .then(|| self.batcher.min_position())
            .flatten();
        self.engines
            .iter()
            .filter_map(|(_, e)| e.low_water())
            .chain(gathered)
            .min()
    }

    fn feed(&mut self, replaying: bool) {
        if self.batcher.is_empty() {
            return;
        }
        let (records, positions, closed) = match self.batcher.take() {
            Ok(taken) => taken,
            Err(e) => {
                tracing::error!(error = %e, "views: the records could not be gathered");
                return;
            }
        };
        self.engines.retain_mut(|(view, engine)| {
            let before = engine.dropped_late;
            match engine.push(&records, &positions, &closed) {
                Ok(()) => {
                    if !replaying {
                        view.dropped_late
                            .fetch_add(engine.dropped_late - before, Relaxed);
                    }
                    true
                }
                Err(e) => {
                    view.fail(e.message);
                    false
                }
            }
        });
    }

    fn hand_on(
        &mut self,
        mut take: impl FnMut(
            &mut ViewEngine,
        ) -> Result<Option<RecordBatch>, super::compile::EngineError>,
    ) -> Vec<Handed> {
        let mut out = Vec::new();
        self.engines
            .retain_mut(|(view, engine)| match take(engine) {
                Ok(Some(partials)) => {
                    out.push(Handed {
                        view: Arc::clone(view),
                        partials,
                    });
                    true
                }
                Ok(None) => true,
                Err(e) => {
                    view.fail(e.message);
                    false
                }
            });
        out
    }
}
