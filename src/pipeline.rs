//! The engine task of one source partition: decode, window, dead-letter, and hand everything
//! that results to the outputs through one [`Fanout`].
//!
//! A small async loop around the synchronous engine, selecting between input batches and a
//! 100 ms timer (idle advancement, emission, live-state flush). Everything per record happens in
//! plain synchronous code; the loop awaits once per batch. Durable outputs are sent to with back
//! pressure (summaries must not be lost); the hub never waits (live views may skip a beat, the
//! pipeline never waits for browsers). On cancellation it drains its queue, flushes every
//! window, and ends — the outputs end when their input closes.
//!
//! A [`Durable`] partition (Kafka, Kinesis) is one its source can re-read from a position. Its
//! engine's checkpoint is handed to the source at most once a second, together with a barrier
//! sent down every durable output behind every summary and dead letter emitted so far: the
//! source commits the checkpoint only when every barrier has come back, that is once everything
//! that depends on the records before it is stored. Such a partition is never
//! flushed: when its source stops it or the partition moves to another instance, it hands off —
//! it stops, commits its last checkpoint, and leaves its open windows to the next owner, which
//! re-reads them from the committed position and emits the same summaries (DESIGN decision 2).

use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::alert::{Alerts, Change, Rule};
use crate::decode::{decode, Detached};
use crate::hub::{LiveKey, LiveRecord};
use crate::metrics::{PartitionGauges, METRICS};
use crate::output::{Fanout, Records};
use crate::record::{
    DeadLetter, Field, Reject, RejectReason, SourceKind, Summary, MAX_RECORD_BYTES,
};
use crate::time::{now_ms, Millis};
use crate::view::registry::Registry;
use crate::view::step::ViewStep;
use crate::window::{
    shrink_mostly_empty, Accepted, Checkpoint, Engine, Forgotten, NameId, TimeMode, WindowConfig,
};

/// How often a durable partition hands its checkpoint to its source, at most.
pub const COMMIT_EVERY_MS: Millis = 1_000;

/// How often an engine task looks for unicorns to forget (a scan of all it tracks).
const FORGET_EVERY_MS: Millis = 1_000;

/// At most this many errors are listed in a reply.
pub const MAX_LISTED_ERRORS: usize = 100;

/// Raw records for one partition: a payload and the byte ranges of its records.
pub struct Batch {
    /// The bytes the records are cut from.
    pub payload: Bytes,
    /// One range per record, in order.
    pub records: Vec<Range<usize>>,
    /// The source position of each record (Kafka offsets), increasing; empty when the source
    /// has none (HTTP, file) and the partition numbers its records itself.
    pub positions: Vec<u64>,
    /// Kinesis: each record's sequence number, the one name of a record that is the same for
    /// every reader (positions count from a checkpoint); empty for other sources.
    pub sequences: Vec<String>,
    /// Where to report the outcome (HTTP ingest waits for it).
    pub reply: Option<oneshot::Sender<Outcome>>,
    /// Each record already decoded by the sender (HTTP ingest decodes on the request's own
    /// thread, so that requests decode in parallel and the partition only windows), its strings
    /// ranges of `payload`; empty when the partition is to decode.
    pub decoded: Vec<Result<Detached, Reject>>,
    /// Every record is a whole line of `payload` with no CR or LF in it (an NDJSON body with no
    /// CR): the archive keeps them as they lie without looking for line breaks.
    pub plain_lines: bool,
}

/// What became of a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Records accepted into a window.
    pub accepted: u64,
    /// Records rejected.
    pub rejected: u64,
    /// The first [`MAX_LISTED_ERRORS`] rejects: index in the batch and why.
    pub errors: Vec<(usize, Reject)>,
}

/// What every partition of a source computes: the window settings and the alert rules (none:
/// alerts are off). Handed to each partition task as it starts.
#[derive(Clone)]
pub struct Steps {
    /// Window settings.
    pub window: WindowConfig,
    /// The alert rules evaluated per record; empty when alerts are off.
    pub rules: Arc<[Rule]>,
    /// The views kept over the records (CONTRACT §9), when the service keeps views.
    pub views: Option<Arc<Registry>>,
}

/// What a partition is and where it starts.
pub struct PartitionSpec {
    /// What the partition computes.
    pub steps: Steps,
    /// Where its records come from, for dead letters and metrics.
    pub source: SourceKind,
    /// Partition or shard name, for logs and dead letters.
    pub name: String,
    /// Set for a partition its source can re-read (see the module docs).
    pub durable: Option<Durable>,
}

/// The link between a re-readable partition and the source that commits its positions.
pub struct Durable {
    /// The source's own number for the partition, echoed in each [`CommitRequest`].
    pub slot: u32,
    /// The checkpoint committed with the position the source re-reads from, if any.
    pub resume: Option<Checkpoint>,
    /// Where checkpoints go.
    pub commits: mpsc::UnboundedSender<CommitRequest>,
}

/// A checkpoint to commit once everything emitted before it is stored.
#[derive(Debug)]
pub struct CommitRequest {
    /// [`Durable::slot`].
    pub slot: u32,
    /// The engine's state; commit [`Checkpoint::resume_position`] with it.
    pub checkpoint: Checkpoint,
    /// One per durable output: each resolves once what was sent before it is durable there; a
    /// closed one (the output gave up) means the checkpoint must not be committed.
    pub stored: Vec<crate::output::Answered>,
}

/// The latest record of one unicorn, kept beside the engine until the next live flush.
struct LiveSlot {
    record: LiveRecord,
    dirty: bool,
}

struct PartitionTask {
    engine: Engine,
    source: SourceKind,
    name: String,
    next_position: u64,
    live: Vec<Option<LiveSlot>>,
    live_dirty: Vec<NameId>,
    /// One shared copy of each unicorn's name for the live records.
    names: Vec<Option<Arc<str>>>,
    /// This engine's number in the live records' keys ([`LiveKey`]).
    live_source: u32,
    emitted: Vec<Summary>,
    out: Fanout,
    durable: Option<Durable>,
    committed: Option<(Checkpoint, Millis)>,
    gauges: Arc<PartitionGauges>,
    /// When silent unicorns were last looked for.
    last_forget: Millis,
    forgotten: Forgotten,
    /// The partition's name, shared with the hub's alert list.
    shared_name: Arc<str>,
    alerts: Option<Alerts>,
    changes: Vec<Change>,
    /// After a resume: records up to this position are accounted for by the checkpoint (its
    /// alert state; the archive holds them): they are re-read only for their windows.
    resumed_through: Option<u64>,
    /// The views' step, when the service keeps views.
    views: Option<ViewStep>,
}

/// Runs one partition until `cancel` fires or its input closes. An ordinary partition then
/// drains its queue and flushes every window; a durable one hands off when cancelled (see the
/// module docs) and flushes like any other when its input ends.
pub async fn run(
    spec: PartitionSpec,
    mut rx: mpsc::Receiver<Batch>,
    out: Fanout,
    cancel: CancellationToken,
) {
    let now = now_ms();
    let resume = spec.durable.as_ref().and_then(|d| d.resume.as_ref());
    let mut engine = match resume {
        Some(checkpoint) => Engine::resume(spec.steps.window, checkpoint, now),
        None => Engine::new(spec.steps.window),
    };
    let mut views = spec.steps.views.map(ViewStep::new);
    if let Some(views) = views.as_mut() {
        // Views keep windows past the minute: a replay may start before the engine's own low
        // water, and must tell which records the engine took (see `window::Finals`).
        engine.keep_finals();
        if resume.is_some() {
            views.resumed(engine.accepted_after());
        }
    }
    // Alert rules are evaluated when alerts are on.
    let mut alerts = (!spec.steps.rules.is_empty()).then(|| Alerts::new(spec.steps.rules));
    let resumed_through = resume.and_then(|c| c.last_position);
    if let (Some(alerts), Some(checkpoint)) = (alerts.as_mut(), resume) {
        if let Some(text) = &checkpoint.alerts {
            if let Err(e) = alerts.restore(text) {
                tracing::error!(partition = %spec.name, error = %e, "starting without alert state: changes before this may be notified again");
            }
        }
    }
    let gauges = METRICS.partition(spec.source.as_str(), &spec.name);
    let mut p = PartitionTask {
        gauges,
        engine,
        source: spec.source,
        shared_name: spec.name.as_str().into(),
        name: spec.name,
        next_position: 0,
        live: Vec::new(),
        live_dirty: Vec::new(),
        names: Vec::new(),
        live_source: LiveKey::next_source(),
        emitted: Vec::new(),
        out,
        durable: spec.durable,
        committed: None,
        last_forget: now,
        forgotten: Forgotten::default(),
        alerts,
        changes: Vec::new(),
        resumed_through,
        views,
    };
    if let Some(alerts) = &p.alerts {
        let firing = alerts.firing(|id| p.engine.name(id));
        if !firing.is_empty() {
            p.out.partition_alerts(&p.shared_name, Some(firing)).await;
        }
    }
    let mut tick = interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut input_ended = false;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            batch = rx.recv() => match batch {
                Some(batch) => {
                    p.gauges.queue.store(rx.len() as i64, Relaxed);
                    p.process(batch).await;
                }
                None => {
                    input_ended = true;
                    break;
                }
            },
            _ = tick.tick() => p.tick().await,
        }
    }
    if p.durable.is_some() && !input_ended {
        // Hand-off: what is queued is re-read by the next owner, open windows are its to emit.
        rx.close();
        p.request_commit(now_ms(), true).await;
        if p.alerts.is_some() {
            p.out.partition_alerts(&p.shared_name, None).await;
        }
        tracing::info!(partition = %p.name, stats = ?p.engine.stats(), "partition handed off");
        return;
    }
    // Shutdown: what was queued still counts.
    rx.close();
    while let Some(batch) = rx.recv().await {
        p.process(batch).await;
    }
    p.engine.flush(&mut p.emitted);
    p.publish().await;
    if let Some(views) = p.views.as_mut() {
        let handed = views.flush().await;
        p.out.views(&p.shared_name, handed).await;
    }
    p.flush_live();
    // A durable partition whose input ended (a Kinesis shard closed by a reshard): its last
    // checkpoint says everything is accounted for.
    p.request_commit(now_ms(), true).await;
    tracing::info!(partition = %p.name, stats = ?p.engine.stats(), "partition flushed");
}

impl PartitionTask {
    async fn process(&mut self, mut batch: Batch) {
        let now = now_ms();
        let mut outcome = Outcome::default();
        let mut dead = Vec::new();
        let mut rejected_by = [0u64; RejectReason::ALL.len()];
        // Live sources in event time: a record from the future must not move the watermark, and
        // one dated before 1970 is no reading of a live fleet (the first record of a partition,
        // before any watermark, would open windows centuries back and reach the archive).
        let (min_time, max_future) = match self.engine.config() {
            WindowConfig {
                time: TimeMode::Event,
                max_future_ms: Some(max),
                ..
            } => (0, now.saturating_add(*max)),
            _ => (Millis::MIN, Millis::MAX),
        };
        let mut late = 0u64;
        if let Some(views) = self.views.as_mut() {
            views.sync();
        }
        let mut views = self.views.as_mut().filter(|v| !v.is_empty());
        let mut newest = Millis::MIN;
        let mut kept = self.out.wants_records().then(|| Records {
            source: self.source,
            partition: self.name.as_str().into(),
            payload: batch.payload.clone(),
            ranges: Vec::with_capacity(batch.records.len()),
            positions: Vec::with_capacity(batch.records.len()),
            times: Vec::with_capacity(batch.records.len()),
            sequences: Vec::new(),
            plain_lines: batch.plain_lines,
            fields: if self.out.wants_fields() {
                Vec::with_capacity(batch.records.len())
            } else {
                Vec::new()
            },
            names: if self.out.wants_fields() {
                Vec::with_capacity(batch.records.len() * 16)
            } else {
                Vec::new()
            },
        });
        let fields = kept.is_some() && self.out.wants_fields();
        for (index, range) in batch.records.iter().enumerate() {
            let position = batch
                .positions
                .get(index)
                .copied()
                .unwrap_or(self.next_position);
            self.next_position = position + 1;
            let raw = batch.payload.get(range.clone()).unwrap_or_default();
            let decoded = match batch.decoded.get(index) {
                Some(Ok(record)) => Ok(record.telemetry(&batch.payload)),
                Some(Err(reject)) => Err(*reject),
                None => decode(raw),
            };
            let result = decoded.and_then(|record| {
                if record.status_time > max_future {
                    return Err(Reject::field(RejectReason::TooEarly, Field::StatusTime));
                }
                if record.status_time < min_time {
                    return Err(Reject::field(RejectReason::OutOfRange, Field::StatusTime));
                }
                // Replayed records are judged once the replay is over (see `ViewStep::step`).
                let closed = if self.resumed_through.is_some_and(|t| position <= t) {
                    Millis::MIN
                } else {
                    self.engine.accepted_after()
                };
                let accepted = self
                    .engine
                    .push(&record, position, now)
                    .map_err(|_| Reject::new(RejectReason::TooLate))?;
                if accepted != Accepted::ReplayedTooLate {
                    newest = newest.max(record.status_time);
                    if let Some(views) = views.as_mut() {
                        views.push(&record, position, closed);
                    }
                }
                let id = self.engine.last_unicorn();
                remember(&mut self.live, &mut self.live_dirty, id, &record);
                if let Some(alerts) = &mut self.alerts {
                    if self
                        .resumed_through
                        .is_some_and(|through| position <= through)
                    {
                        alerts.observe(id, &record);
                    } else {
                        alerts.evaluate(id, &record, &mut self.changes);
                    }
                }
                let status_time = record.status_time;
                let decoded = fields.then(|| (crate::output::Fields::of(&record), record.name));
                Ok((accepted, status_time, decoded))
            });
            match result {
                Ok((accepted, status_time, decoded)) => {
                    outcome.accepted += 1;
                    late += u64::from(accepted == Accepted::Late);
                    let resumed = self.resumed_through.is_some_and(|t| position <= t);
                    if let Some(kept) = kept.as_mut().filter(|_| !resumed) {
                        kept.ranges.push(range.clone());
                        kept.positions.push(position);
                        kept.times.push(status_time);
                        if let Some(sequence) = batch.sequences.get_mut(index) {
                            kept.sequences.push(std::mem::take(sequence));
                        }
                        if let Some((decoded, name)) = decoded {
                            kept.fields.push(decoded);
                            kept.names.extend_from_slice(name.as_bytes());
                        }
                    }
                }
                Err(reject) => {
                    outcome.rejected += 1;
                    rejected_by[reject.reason.index()] += 1;
                    if outcome.errors.len() < MAX_LISTED_ERRORS {
                        outcome.errors.push((index, reject));
                    }
                    dead.push(DeadLetter {
                        reason: reject.reason,
                        field: reject.field,
                        source: self.source,
                        partition: self.name.clone(),
                        position,
                        at: now,
                        raw: raw[..raw.len().min(MAX_RECORD_BYTES)].to_vec(),
                    });
                }
            }
        }
        METRICS
            .records_in
            .fetch_add(batch.records.len() as u64, Relaxed);
        METRICS.late.fetch_add(late, Relaxed);
        for (i, n) in rejected_by.iter().enumerate() {
            if *n > 0 {
                METRICS.rejected[i].fetch_add(*n, Relaxed);
            }
        }
        if let Some(views) = self.views.as_mut() {
            views.saw(newest);
        }
        if !dead.is_empty() {
            self.out.dead_letters(dead).await;
        }
        if let Some(kept) = kept.filter(|k| !k.ranges.is_empty()) {
            self.out.records(kept).await;
        }
        if !self.changes.is_empty() {
            let changes = std::mem::take(&mut self.changes);
            let covered = self.durable.is_some();
            self.out.alerts(&self.shared_name, changes, covered).await;
        }
        self.engine.advance(now, &mut self.emitted);
        self.publish().await;
        self.step_views(false).await;
        self.flush_live();
        if let Some(reply) = batch.reply {
            let _ = reply.send(outcome);
        }
        self.maybe_commit(now).await;
    }

    async fn tick(&mut self) {
        let now = now_ms();
        self.engine.advance(now, &mut self.emitted);
        self.publish().await;
        self.step_views(false).await;
        self.flush_live();
        let wm = self.engine.watermark();
        if wm != Millis::MIN {
            self.gauges
                .watermark_lag_ms
                .store(now.saturating_sub(wm), Relaxed);
        }
        if now.saturating_sub(self.last_forget) >= FORGET_EVERY_MS {
            self.last_forget = now;
            self.forget_silent(now);
        }
        self.maybe_commit(now).await;
    }

    /// Forgets unicorns gone silent with no window left that can change (guard 2 of issue 11):
    /// the engine's state, and here their live records and shared names. The hub forgets its
    /// own copy on the same rule.
    fn forget_silent(&mut self, now: Millis) {
        if let Some(after) = self.engine.config().forget_after_ms {
            // Live records are flushed after every batch and tick: none is pending here.
            debug_assert!(self.live_dirty.is_empty());
            let gone = &mut self.forgotten;
            let alerts = &self.alerts;
            let keep = |id| alerts.as_ref().is_some_and(|a| a.has_state(id));
            self.engine.forget_silent(now, after, keep, gone);
            for &id in &gone.ids {
                let idx = id as usize;
                if let Some(live) = self.live.get_mut(idx) {
                    *live = None;
                }
                if let Some(name) = self.names.get_mut(idx) {
                    *name = None;
                }
            }
            for &(old, new) in &gone.moved {
                let (old, new) = (old as usize, new as usize);
                if old < self.live.len() && new < self.live.len() {
                    self.live.swap(old, new);
                }
                if old < self.names.len() && new < self.names.len() {
                    self.names.swap(old, new);
                }
            }
            let bound = self.engine.id_bound();
            if let Some(alerts) = &mut self.alerts {
                alerts.forget(gone, bound);
            }
            self.live.truncate(bound);
            self.names.truncate(bound);
            shrink_mostly_empty(&mut self.live);
            shrink_mostly_empty(&mut self.names);
            shrink_mostly_empty(&mut gone.ids);
            shrink_mostly_empty(&mut gone.moved);
        }
        self.gauges
            .unicorns
            .store(self.engine.unicorns() as i64, Relaxed);
    }

    /// Hands the records gathered to the views and their closed or changed windows on (not
    /// while a resumed partition replays what its checkpoint covers); `now`: whatever the
    /// gatherer holds (before a checkpoint).
    async fn step_views(&mut self, now: bool) {
        let Some(views) = self.views.as_mut() else {
            return;
        };
        let replaying = self
            .resumed_through
            .is_some_and(|through| self.next_position <= through);
        let handed = views
            .step(
                (self.engine.watermark(), self.engine.accepted_after()),
                replaying,
                now,
            )
            .await;
        if !handed.is_empty() {
            self.out.views(&self.shared_name, handed).await;
        }
    }

    /// Requests a commit when the last one is [`COMMIT_EVERY_MS`] old (after a batch or a tick:
    /// a busy partition may not see its timer for a while).
    async fn maybe_commit(&mut self, now: Millis) {
        if self.durable.is_some()
            && self
                .committed
                .as_ref()
                .is_none_or(|(_, at)| now.saturating_sub(*at) >= COMMIT_EVERY_MS)
        {
            self.request_commit(now, false).await;
        }
    }

    /// Hands the engine's checkpoint to a durable partition's source, behind a barrier in each
    /// durable output, when it changed since the last request (or in any case when `handing_off`).
    async fn request_commit(&mut self, now: Millis, handing_off: bool) {
        if self.durable.is_none() {
            return;
        }
        // A checkpoint's watermark says every window it passed is emitted: none is taken while
        // a close is under way (the next batch or tick goes on with it), and a hand-off
        // finishes the close first.
        if self.engine.closing() {
            if !handing_off {
                return;
            }
            self.engine.finish_closing(&mut self.emitted);
            self.publish().await;
        }
        // Every window final at the checkpoint is handed on before it (see `ViewStep::step`).
        self.step_views(true).await;
        let Some(durable) = &self.durable else {
            return;
        };
        let views_low = self.views.as_ref().and_then(ViewStep::low_water);
        let mut checkpoint = self.engine.checkpoint_with(views_low);
        if self.views.is_some() {
            if let Some(from) = checkpoint.resume_position() {
                self.engine.prune_finals(from);
                checkpoint.finals = self.engine.checkpoint_with(views_low).finals;
            }
        }
        if let Some(alerts) = &self.alerts {
            let engine = &self.engine;
            checkpoint.alerts = alerts.checkpoint(|id| engine.name(id));
        }
        let unchanged = self
            .committed
            .as_ref()
            .is_some_and(|(c, _)| *c == checkpoint);
        if checkpoint.resume_position().is_none() || (unchanged && !handing_off) {
            return;
        }
        let stored = self.out.barrier(&self.shared_name, handing_off).await;
        let request = CommitRequest {
            slot: durable.slot,
            checkpoint: checkpoint.clone(),
            stored,
        };
        if durable.commits.send(request).is_err() {
            tracing::warn!(partition = %self.name, "source gone: checkpoint not committed");
        }
        self.committed = Some((checkpoint, now));
    }

    /// Sends emitted summaries to the outputs (waiting for durable ones that are busy).
    async fn publish(&mut self) {
        if self.emitted.is_empty() {
            return;
        }
        let summaries = std::mem::take(&mut self.emitted);
        let now = now_ms();
        for s in &summaries {
            if s.revision == 0 {
                METRICS.summaries.fetch_add(1, Relaxed);
                METRICS
                    .emit_latency
                    .observe(now.saturating_sub(s.window_end).max(0) as u64);
            } else {
                METRICS.restated.fetch_add(1, Relaxed);
            }
        }
        self.out.summaries(summaries).await;
    }

    /// Hands the latest record of every unicorn heard since the last flush to the hub (after
    /// every batch: the hub decides when a frame goes out). No allocation per record: the names
    /// are shared.
    fn flush_live(&mut self) {
        if self.live_dirty.is_empty() {
            return;
        }
        let mut records = Vec::with_capacity(self.live_dirty.len());
        for id in self.live_dirty.drain(..) {
            if let Some(Some(slot)) = self.live.get_mut(id as usize) {
                slot.dirty = false;
                let idx = id as usize;
                if idx >= self.names.len() {
                    self.names.resize(idx + 1, None);
                }
                let name = self.names[idx].get_or_insert_with(|| self.engine.name(id).into());
                let mut record = slot.record.clone();
                record.name = Arc::clone(name);
                record.key = LiveKey {
                    source: self.live_source,
                    id,
                };
                records.push(record);
            }
        }
        self.out.live(records);
    }
}

/// Keeps `record` as the latest (by event time) of unicorn `id`, allocating nothing after its
/// first sighting (unless its InputData changes).
fn remember(
    live: &mut Vec<Option<LiveSlot>>,
    dirty: &mut Vec<NameId>,
    id: NameId,
    record: &crate::record::Telemetry<'_>,
) {
    let idx = id as usize;
    if idx >= live.len() {
        live.resize_with(idx + 1, || None);
    }
    let slot = live[idx].get_or_insert_with(|| LiveSlot {
        record: LiveRecord {
            name: "".into(),
            status_time: Millis::MIN,
            latitude: 0.0,
            longitude: 0.0,
            distance: 0.0,
            health_points: 0,
            magic_points: 0,
            input_data: None,
            key: LiveKey::NONE,
        },
        dirty: false,
    });
    let r = &mut slot.record;
    if record.status_time < r.status_time {
        // An out-of-order record: the map shows where the unicorn is, not where it was.
        return;
    }
    r.status_time = record.status_time;
    r.latitude = record.latitude;
    r.longitude = record.longitude;
    r.distance = record.distance;
    r.health_points = record.health_points;
    r.magic_points = record.magic_points;
    if r.input_data.as_deref() != record.input_data.as_deref() {
        r.input_data = record.input_data.as_deref().map(Arc::from);
    }
    if !slot.dirty {
        slot.dirty = true;
        dirty.push(id);
    }
}
