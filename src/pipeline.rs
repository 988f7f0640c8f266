//! The engine task of one source partition: decode, window, dead-letter, and hand summaries to
//! the store and live records to the hub.
//!
//! A small async loop around the synchronous engine, selecting between input batches and a
//! 100 ms timer (idle advancement, emission, live-state flush). Everything per record happens in
//! plain synchronous code; the loop awaits once per batch. The store is sent to with back
//! pressure (summaries must not be lost); the hub with `try_send` (live views may skip a beat,
//! the pipeline never waits for browsers). On cancellation it drains its queue, flushes every
//! window, and ends — the stages after it end when their input closes.

use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::decode::decode;
use crate::hub::{HubInput, LiveRecord};
use crate::metrics::METRICS;
use crate::record::{Reject, RejectReason, Summary, MAX_RECORD_BYTES};
use crate::sink::store::{DeadLetter, StoreItem};
use crate::time::{now_ms, Millis};
use crate::window::{Accepted, Engine, NameId, WindowConfig};

/// At most this many errors are listed in a reply.
pub const MAX_LISTED_ERRORS: usize = 100;

/// Raw records for one partition: a payload and the byte ranges of its records.
pub struct Batch {
    /// The bytes the records are cut from.
    pub payload: Bytes,
    /// One range per record, in order.
    pub records: Vec<Range<usize>>,
    /// Where to report the outcome (HTTP ingest waits for it).
    pub reply: Option<oneshot::Sender<Outcome>>,
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

/// Where a partition's results go.
pub struct Outputs {
    /// Summaries and dead letters (back pressure).
    pub store: mpsc::Sender<StoreItem>,
    /// Live records and summaries (never waited on).
    pub hub: mpsc::Sender<HubInput>,
}

/// The latest record of one unicorn, kept beside the engine until the next live flush.
struct LiveSlot {
    record: LiveRecord,
    dirty: bool,
}

struct Partition {
    engine: Engine,
    source: &'static str,
    name: String,
    next_position: u64,
    live: Vec<Option<LiveSlot>>,
    live_dirty: Vec<NameId>,
    /// One shared copy of each unicorn's name for the live records.
    names: Vec<Option<std::sync::Arc<str>>>,
    emitted: Vec<Summary>,
    out: Outputs,
}

/// Runs one partition until `cancel` fires (then drains and flushes) or its input closes.
pub async fn run(
    cfg: WindowConfig,
    source: &'static str,
    partition: String,
    mut rx: mpsc::Receiver<Batch>,
    out: Outputs,
    cancel: CancellationToken,
) {
    let mut p = Partition {
        engine: Engine::new(cfg),
        source,
        name: partition,
        next_position: 0,
        live: Vec::new(),
        live_dirty: Vec::new(),
        names: Vec::new(),
        emitted: Vec::new(),
        out,
    };
    let mut tick = interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            batch = rx.recv() => match batch {
                Some(batch) => {
                    METRICS.queue_engine.store(rx.len() as i64, Relaxed);
                    p.process(batch).await;
                }
                None => break,
            },
            _ = tick.tick() => p.tick().await,
        }
    }
    // Shutdown: what was queued still counts.
    rx.close();
    while let Some(batch) = rx.recv().await {
        p.process(batch).await;
    }
    p.engine.flush(&mut p.emitted);
    p.publish().await;
    p.flush_live();
    tracing::info!(partition = %p.name, stats = ?p.engine.stats(), "partition flushed");
}

impl Partition {
    async fn process(&mut self, batch: Batch) {
        let now = now_ms();
        let mut outcome = Outcome::default();
        let mut dead = Vec::new();
        let mut rejected_by = [0u64; 6];
        let mut late = 0u64;
        for (index, range) in batch.records.iter().enumerate() {
            let position = self.next_position;
            self.next_position += 1;
            let raw = batch.payload.get(range.clone()).unwrap_or_default();
            let result = decode(raw).and_then(|record| {
                let accepted = self
                    .engine
                    .push(&record, position, now)
                    .map_err(|_| Reject::new(RejectReason::TooLate))?;
                let id = self.engine.last_unicorn();
                remember(&mut self.live, &mut self.live_dirty, id, &record);
                Ok(accepted)
            });
            match result {
                Ok(accepted) => {
                    outcome.accepted += 1;
                    late += u64::from(accepted == Accepted::Late);
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
        if !dead.is_empty() {
            self.store(StoreItem::DeadLetters(dead)).await;
        }
        self.engine.advance(now, &mut self.emitted);
        self.publish().await;
        self.flush_live();
        if let Some(reply) = batch.reply {
            let _ = reply.send(outcome);
        }
    }

    async fn tick(&mut self) {
        let now = now_ms();
        self.engine.advance(now, &mut self.emitted);
        self.publish().await;
        self.flush_live();
        let wm = self.engine.watermark();
        if wm != Millis::MIN {
            METRICS
                .watermark_lag_ms
                .store(now.saturating_sub(wm), Relaxed);
        }
    }

    /// Sends emitted summaries to the store (waiting if it is busy) and the hub (not waiting).
    async fn publish(&mut self) {
        if self.emitted.is_empty() {
            return;
        }
        let summaries = std::mem::take(&mut self.emitted);
        let now = now_ms();
        for s in &summaries {
            if s.revision == 0 {
                METRICS.summaries.fetch_add(1, Relaxed);
                METRICS.observe_emit_latency(now.saturating_sub(s.window_end).max(0) as u64);
            } else {
                METRICS.restated.fetch_add(1, Relaxed);
            }
        }
        let _ = self
            .out
            .hub
            .try_send(HubInput::Summaries(summaries.clone()));
        self.store(StoreItem::Summaries(summaries)).await;
    }

    /// Hands `item` to the store writer, waiting while it is busy (nothing is dropped).
    async fn store(&self, item: StoreItem) {
        if self.out.store.send(item).await.is_err() {
            // Only during a failed shutdown: the writer ended before its inputs.
            tracing::error!(partition = %self.name, "store writer gone: results not stored");
        }
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
                record.name = std::sync::Arc::clone(name);
                records.push(record);
            }
        }
        let _ = self.out.hub.try_send(HubInput::Telemetry(records));
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
        r.input_data = record.input_data.as_deref().map(std::sync::Arc::from);
    }
    if !slot.dirty {
        slot.dirty = true;
        dirty.push(id);
    }
}
