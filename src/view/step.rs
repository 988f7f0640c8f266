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

use super::engine::{Batcher, Records, ViewEngine};
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

/// A view with its engine over this partition's records.
type Kept = (Arc<LiveView>, ViewEngine);

/// The views of one partition; see the module docs.
pub struct ViewStep {
    registry: Arc<Registry>,
    version: u64,
    /// The engines, when no job has them.
    engines: Vec<Kept>,
    /// The engines at work on a micro-batch off the partition's task, if any.
    job: Option<Job>,
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
            job: None,
            batcher: Batcher::default(),
            replayed: false,
            newest: Millis::MIN,
            fed_at: Millis::MIN,
            resumed_final: Millis::MIN,
        };
        step.sync();
        step
    }

    /// Takes up views added or removed since the last look (one atomic load when none was;
    /// put off while a job has the engines).
    pub fn sync(&mut self) {
        let version = self.registry.version();
        if version == self.version || self.job.is_some() {
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
        self.engines.is_empty() && self.job.is_none()
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
    /// Records wait in a gatherer between steps (up to [`FEED_RECORDS`] or [`FEED_EVERY_MS`]),
    /// then go to the engines in a *job* on a blocking thread (spread over the cores), while
    /// the partition's task reads on; what a job hands on is returned by the first step after
    /// it finished. One job at a time: records wait in the gatherer while one runs. `now`
    /// waits for the job, then feeds whatever the gatherer holds and waits for that too: a
    /// checkpoint is taken only after a step `now`, so that every window final at a checkpoint
    /// has been handed on (what a resumed partition relies on, above).
    pub async fn step(
        &mut self,
        (watermark, closed): (Millis, Millis),
        replaying: bool,
        now: bool,
    ) -> Vec<Handed> {
        let mut out = self.collect(now).await;
        if self.job.is_some() {
            return out;
        }
        let wall = crate::time::now_ms();
        let due = now
            || self.batcher.len() >= FEED_RECORDS
            || wall.saturating_sub(self.fed_at) >= FEED_EVERY_MS
            || self.replayed != replaying;
        if !due {
            // Records wait in the gatherer (their positions hold the low water back); nothing
            // is handed on before they are in the engines.
            return out;
        }
        self.fed_at = wall;
        let forget = if replaying {
            self.replayed = true;
            None
        } else {
            std::mem::take(&mut self.replayed).then_some(self.resumed_final)
        };
        let work = Work::Step {
            watermark,
            closed,
            replaying,
            forget,
        };
        self.start(work);
        if now {
            out.extend(self.collect(true).await);
        }
        out
    }

    /// The partial rows of every window new or changed (the partition's input ended).
    pub async fn flush(&mut self) -> Vec<Handed> {
        let mut out = self.collect(true).await;
        self.start(Work::Flush);
        out.extend(self.collect(true).await);
        out
    }

    /// The oldest position of a record in a window some view can still change, or gathered and
    /// not yet in the engines (or in a job's hands).
    pub fn low_water(&self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        let engines = self.engines.iter().filter_map(|(_, e)| e.low_water());
        let job = self.job.as_ref().and_then(|j| j.low_water);
        engines.chain(job).chain(self.batcher.min_position()).min()
    }

    /// Hands the engines and the records gathered to a job.
    fn start(&mut self, work: Work) {
        let taken = if self.batcher.is_empty() {
            None
        } else {
            match self.batcher.take() {
                Ok(taken) => Some(taken),
                Err(e) => {
                    tracing::error!(error = %e, "views: the records could not be gathered");
                    None
                }
            }
        };
        let low_water = self
            .engines
            .iter()
            .filter_map(|(_, e)| e.low_water())
            .chain(taken.as_ref().and_then(|t| t.1.iter().copied().min()))
            .min();
        let mut engines = std::mem::take(&mut self.engines);
        let views = engines.iter().map(|(v, _)| Arc::clone(v)).collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let replaying = matches!(
                work,
                Work::Step {
                    replaying: true,
                    ..
                }
            );
            if let Some(taken) = &taken {
                feed(&mut engines, taken, replaying);
            }
            let handed = match work {
                Work::Step {
                    replaying: true, ..
                } => Vec::new(),
                Work::Step {
                    watermark,
                    closed,
                    forget,
                    ..
                } => {
                    if let Some(final_at) = forget {
                        for (_, engine) in &mut engines {
                            engine.forget_final(final_at);
                        }
                    }
                    hand_on(&mut engines, |engine| engine.advance(watermark, closed))
                }
                Work::Flush => hand_on(&mut engines, ViewEngine::flush),
            };
            let _ = tx.send((engines, handed));
        });
        self.job = Some(Job {
            rx,
            views,
            low_water,
        });
    }

    /// What the job in hand did, once it is done (waiting for it when `wait`); its engines
    /// come back.
    async fn collect(&mut self, wait: bool) -> Vec<Handed> {
        let Some(job) = self.job.as_mut() else {
            return Vec::new();
        };
        let done = if wait {
            (&mut job.rx).await.ok()
        } else {
            match job.rx.try_recv() {
                Ok(done) => Some(done),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return Vec::new(),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => None,
            }
        };
        let job = self.job.take();
        match done {
            Some((engines, handed)) => {
                self.engines = engines;
                handed
            }
            None => {
                // The job panicked: its views' state is lost with it, and engines started
                // afresh here would hand on windows short of what the lost ones held (and a
                // checkpoint would pass their records). The views stop, said so; the others
                // (defined later) go on.
                for view in job.iter().flat_map(|j| j.views.iter()) {
                    view.fail(
                        "its engine on a partition failed (a bug: the log says where); its rows stop here: DELETE it and define it again, or restart the service".into(),
                    );
                }
                tracing::error!("views: a job failed; its views are marked failed");
                Vec::new()
            }
        }
    }
}

/// What a job does after feeding the engines.
enum Work {
    /// Hand on the windows due (none while `replaying`), after forgetting those final at a
    /// resumed checkpoint.
    Step {
        watermark: Millis,
        closed: Millis,
        replaying: bool,
        forget: Option<Millis>,
    },
    /// Hand on every window.
    Flush,
}

/// The engines at work off the partition's task.
struct Job {
    rx: tokio::sync::oneshot::Receiver<(Vec<Kept>, Vec<Handed>)>,
    /// Their views.
    views: Vec<Arc<LiveView>>,
    /// The oldest position the job's engines or records hold.
    low_water: Option<u64>,
}

/// Feeds a micro-batch to every engine; a view that fails on it is dropped from the step.
fn feed(engines: &mut Vec<Kept>, (records, positions, closed): &Records, replaying: bool) {
    let results = each_engine(engines, records.num_rows(), |(_, engine)| {
        let before = engine.dropped_late;
        engine
            .push(records, positions, closed)
            .map(|()| engine.dropped_late - before)
    });
    let mut results = results.into_iter();
    engines.retain(|(view, _)| match results.next() {
        Some(Ok(dropped)) => {
            if !replaying {
                view.dropped_late.fetch_add(dropped, Relaxed);
            }
            true
        }
        Some(Err(e)) => {
            view.fail(e.message);
            false
        }
        None => true,
    });
}

/// What `take` gives of every engine, as handed-on partial rows.
fn hand_on(
    engines: &mut Vec<Kept>,
    take: impl Fn(&mut ViewEngine) -> Result<Option<RecordBatch>, super::compile::EngineError> + Sync,
) -> Vec<Handed> {
    let mut out = Vec::new();
    // Closing a window costs in proportion to its keys: as much as a batch of records.
    let results = each_engine(engines, usize::MAX, |(_, engine)| take(engine));
    let mut results = results.into_iter();
    engines.retain(|(view, _)| match results.next() {
        Some(Ok(Some(partials))) => {
            out.push(Handed {
                view: Arc::clone(view),
                partials,
            });
            true
        }
        Some(Ok(None)) | None => true,
        Some(Err(e)) => {
            view.fail(e.message);
            false
        }
    });
    out
}

/// Records below which a step's engines are run one after the other: spreading them over the
/// cores costs a thread each.
const SPREAD_FROM: usize = 4_096;

/// `f` on every engine, in order of the engines: spread over the machine's cores when there
/// are several engines and `work` (records) is worth it — the views of one partition are
/// independent, and one partition (HTTP ingest has one) would otherwise hold every view's work
/// to one core. Runs in a job's blocking thread.
fn each_engine<T: Send>(
    engines: &mut [Kept],
    work: usize,
    f: impl Fn(&mut Kept) -> T + Sync,
) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(engines.len());
    if threads <= 1 || work < SPREAD_FROM {
        return engines.iter_mut().map(f).collect();
    }
    let mut run = || {
        std::thread::scope(|scope| {
            // Engine i goes to thread i mod threads: neighbours (often alike) apart.
            let mut shares: Vec<Vec<(usize, &mut Kept)>> =
                (0..threads).map(|_| Vec::new()).collect();
            for (i, engine) in engines.iter_mut().enumerate() {
                shares[i % threads].push((i, engine));
            }
            let f = &f;
            let handles: Vec<_> = shares
                .into_iter()
                .map(|share| {
                    scope.spawn(move || {
                        share
                            .into_iter()
                            .map(|(i, engine)| (i, f(engine)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut results: Vec<(usize, T)> = handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(done) => done,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect();
            results.sort_by_key(|(i, _)| *i);
            results.into_iter().map(|(_, r)| r).collect()
        })
    };
    run()
}
