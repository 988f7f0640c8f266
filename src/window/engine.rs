//! The engine proper: per-(unicorn, window) accumulators in a slab, per-window buckets for
//! closing and eviction, the watermark, idle advancement and replay.
//!
//! Layout: `heads[unicorn]` starts a short linked list of that unicorn's live slots, newest
//! window first (the record's window is almost always the head). A slot is 48 bytes: vitals are
//! kept as `i32` and a slot moves its extremes to a side table in the rare case a vital leaves
//! that range (the contract allows any i64). Each live
//! window has a bucket listing its slots, the lowest source position among its records, and
//! whether it has been emitted; buckets sit in a `BTreeMap` by window start, touched once per
//! unicorn per window, never per record.

use std::collections::{BTreeMap, HashMap};

use super::intern::{Interner, NameId};
use super::{shrink_mostly_empty, TimeMode, WindowConfig, SMALL};
use crate::record::{Summary, Telemetry};
use crate::time::Millis;

const NIL: u32 = u32::MAX;
/// `Slot::late`: a restatement is pending.
const DIRTY: u32 = 1 << 31;
/// `Slot::late`: the vitals live in `Engine::wide`.
const WIDE: u32 = 1 << 30;
/// `Slot::late`: the late-record count (the revision).
const LATE_MASK: u32 = WIDE - 1;

/// Min and max health, min and max magic.
type Vitals<T> = [T; 4];

/// One unicorn's aggregate in one window.
#[derive(Clone, Copy)]
struct Slot {
    distance: f64,
    /// The vitals' extremes while they fit in i32 (else see `WIDE`).
    vitals: Vitals<i32>,
    /// Window index, `start / size`, wrapping: a unicorn's live windows are never 2^31 apart.
    window: u32,
    /// Next slot of the same unicorn (older window), or the next free slot.
    next: u32,
    unicorn: NameId,
    records: u32,
    /// Late records (the revision), with the DIRTY and WIDE bits.
    late: u32,
}

const EMPTY_VITALS: Vitals<i32> = [i32::MAX, i32::MIN, i32::MAX, i32::MIN];

/// Folds a record's vitals into extremes.
#[inline]
pub(super) fn fold<T: Ord + Copy>(v: &mut Vitals<T>, health: T, magic: T) {
    v[0] = v[0].min(health);
    v[1] = v[1].max(health);
    v[2] = v[2].min(magic);
    v[3] = v[3].max(magic);
}

/// Whether window index `a` is newer than `b`, across wrap-around.
#[inline]
fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// One live window across all unicorns of the partition.
struct Bucket {
    slots: Vec<u32>,
    min_position: u64,
    /// Emitted once already: further records are restatements.
    closed: bool,
    /// While its close is under way: how many of `slots` are emitted (see [`CLOSE_SLICE`]).
    emitted: usize,
}

/// At most this many windows are emitted by one [`Engine::advance`]. A big fleet's minute closes
/// over a few batches instead of in one step that holds the partition up: a million windows
/// took 80–130 ms to emit and as long again to hand over, while nothing else moved.
pub const CLOSE_SLICE: usize = 50_000;

/// How a record was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Into a window that has not closed.
    OnTime,
    /// Into a closed window inside its allowed lateness: the window will be restated.
    Late,
    /// A replayed record (position ≤ the checkpoint's) already accounted for in a final window.
    Replayed,
    /// A replayed record whose window was already final when it was first read: it was
    /// rejected as too late then (its dead letter is stored), and counts for nothing now. Told
    /// apart from [`Accepted::Replayed`] only when the engine keeps finals
    /// ([`Engine::keep_finals`]); otherwise both are `Replayed`.
    ReplayedTooLate,
}

/// The record's window is final: end + allowed lateness ≤ the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLate {
    /// The record's window start.
    pub window_start: Millis,
    /// The watermark it was judged against.
    pub watermark: Millis,
}

/// What a source stores with its committed position so that a new owner can resume exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The partition's watermark (`i64::MIN` before the first record).
    pub watermark: Millis,
    /// Lowest position of any record in a window that can still change; `None` when no window
    /// holds a record (commit everything up to `last_position`).
    pub low_water: Option<u64>,
    /// The last position pushed, if any.
    pub last_position: Option<u64>,
    /// For each window end the watermark has passed whose window can still change: the last
    /// position pushed when it passed (`None`: before any). A replayed record of such a window
    /// was late exactly when its position is after that one, so a resumed engine restores each
    /// window's `Revision` as it was.
    pub closings: Closings,
    /// The alert state as of `last_position` (`alert::Alerts::checkpoint`'s text, which has no
    /// spaces), when there is any: the engine itself neither writes nor reads it.
    pub alerts: Option<String>,
    /// When windows became final, as far back as a replay from `low_water` needs (see
    /// [`Finals`]); empty unless the engine keeps them.
    pub finals: Finals,
}

/// When windows became final: `(end, at)` says that windows ending at or before `end` were
/// final (end + allowed lateness ≤ the watermark) once the record at position `at` had been
/// read (`None`: before any record a replay can reach). Increasing in both.
///
/// Views (CONTRACT §9) keep windows longer than the summary's minute, so a partition with views
/// may resume from a position older than the summary engine's own low water; a record re-read
/// there whose minute is final now was either accepted when first read or rejected as too late,
/// and only these entries tell which: it was accepted exactly when the first entry whose end
/// reaches its window's end has `at` at or after its position.
pub type Finals = Vec<(Millis, Option<u64>)>;

/// Window ends passed by the watermark, with the position at the time, oldest first; at most
/// `allowed_lateness / size + 1` of them (windows older than that are final).
pub type Closings = Vec<(Millis, Option<u64>)>;

impl Checkpoint {
    /// Where a new owner re-reads from: the low-water position, or past the last record when no
    /// window can change any more; `None` before the first record.
    pub fn resume_position(&self) -> Option<u64> {
        self.low_water
            .or_else(|| self.last_position.map(|p| p.saturating_add(1)))
    }

    /// The checkpoint as the text a source stores beside the position it commits (Kafka offset
    /// metadata, a lease row): `stampede/1 watermark=W last=P`.
    pub fn encode(&self) -> String {
        let mut s = format!("{CHECKPOINT_TAG} watermark={}", self.watermark);
        if let Some(last) = self.last_position {
            s.push_str(&format!(" last={last}"));
        }
        write_ends_at(&mut s, "closed", &self.closings);
        write_ends_at(&mut s, "finals", &self.finals);
        if let Some(alerts) = &self.alerts {
            s.push_str(" alerts=");
            s.push_str(alerts);
        }
        s
    }

    /// Reads what [`Checkpoint::encode`] wrote, for a partition committed at `position`. `None`
    /// for anything else (an offset committed by another program), which a source treats as no
    /// checkpoint: it starts a fresh engine there.
    pub fn decode(text: &str, position: u64) -> Option<Checkpoint> {
        let mut words = text.split(' ');
        if words.next()? != CHECKPOINT_TAG {
            return None;
        }
        let mut checkpoint = Checkpoint {
            watermark: Millis::MIN,
            low_water: Some(position),
            last_position: None,
            closings: Closings::new(),
            alerts: None,
            finals: Finals::new(),
        };
        let mut seen_watermark = false;
        for word in words {
            match word.split_once('=')? {
                ("watermark", v) => {
                    checkpoint.watermark = v.parse().ok()?;
                    seen_watermark = true;
                }
                ("last", v) => checkpoint.last_position = Some(v.parse().ok()?),
                ("closed", v) => checkpoint.closings = ends_at(v)?,
                ("finals", v) => checkpoint.finals = ends_at(v)?,
                ("alerts", v) => checkpoint.alerts = Some(v.to_owned()),
                _ => {}
            }
        }
        seen_watermark.then_some(checkpoint)
    }
}

/// Writes ` key=end@position,…` (`-` for no position), unless `items` is empty.
fn write_ends_at(s: &mut String, key: &str, items: &[(Millis, Option<u64>)]) {
    use std::fmt::Write as _;
    if items.is_empty() {
        return;
    }
    let _ = write!(s, " {key}=");
    for (i, (end, at)) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = match at {
            Some(p) => write!(s, "{end}@{p}"),
            None => write!(s, "{end}@-"),
        };
    }
}

/// Reads `end@position,…` (`-` for no position).
fn ends_at(v: &str) -> Option<Vec<(Millis, Option<u64>)>> {
    v.split(',')
        .map(|item| {
            let (end, at) = item.split_once('@')?;
            let at = match at {
                "-" => None,
                p => Some(p.parse().ok()?),
            };
            Some((end.parse().ok()?, at))
        })
        .collect()
}

/// The version tag of an encoded [`Checkpoint`].
const CHECKPOINT_TAG: &str = "stampede/1";

/// What [`Engine::forget_silent`] did to unicorn ids, for state kept beside the engine.
#[derive(Debug, Default)]
pub struct Forgotten {
    /// Ids forgotten (free now; a later name may get one).
    pub ids: Vec<NameId>,
    /// Ids moved afterwards, `(old, new)`: `new` was among the forgotten ones.
    pub moved: Vec<(NameId, NameId)>,
}

/// Counters since the engine was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Records accepted on time.
    pub on_time: u64,
    /// Late records accepted (each restates its window).
    pub late: u64,
    /// Records rejected as too late.
    pub too_late: u64,
    /// Replayed records skipped as already accounted for.
    pub replayed: u64,
    /// Summaries emitted for the first time.
    pub emitted: u64,
    /// Restatements emitted.
    pub restated: u64,
}

/// The window engine of one source partition. See the module docs of `window`.
pub struct Engine {
    cfg: WindowConfig,
    names: Interner,
    heads: Vec<u32>,
    /// Per unicorn: the arrival time of its last record (see [`Engine::forget_silent`]).
    seen: Vec<Millis>,
    slots: Vec<Slot>,
    free: u32,
    /// Slots in use (the rest of `slots` is on the free list).
    used: usize,
    buckets: BTreeMap<Millis, Bucket>,
    /// Slots with a pending restatement, with their window start.
    dirty: Vec<(u32, Millis)>,
    /// Vitals of slots whose values left the i32 range.
    wide: HashMap<u32, Vitals<i64>>,
    watermark: Millis,
    /// Windows ending at or before this have been emitted.
    closed_through: Millis,
    /// A close is under way: windows the watermark passed are not all emitted yet.
    closing: bool,
    last_arrival: Millis,
    watermark_at_last_record: Millis,
    last_position: Option<u64>,
    /// While replaying after [`Engine::resume`]: the checkpoint's last position.
    replay_through: Option<u64>,
    /// Window ends the watermark passed that can still change, with the position then.
    closings: Closings,
    /// When windows became final, kept when [`Engine::keep_finals`] says so.
    finals: Option<Finals>,
    /// The unicorn of the last accepted record.
    last_unicorn: NameId,
    stats: EngineStats,
}

impl Engine {
    /// A fresh engine. The config should have passed [`WindowConfig::validate`].
    pub fn new(cfg: WindowConfig) -> Self {
        Engine {
            cfg,
            names: Interner::default(),
            heads: Vec::new(),
            seen: Vec::new(),
            slots: Vec::new(),
            free: NIL,
            used: 0,
            buckets: BTreeMap::new(),
            dirty: Vec::new(),
            wide: HashMap::new(),
            watermark: Millis::MIN,
            closed_through: Millis::MIN,
            closing: false,
            last_arrival: Millis::MIN,
            watermark_at_last_record: Millis::MIN,
            last_position: None,
            replay_through: None,
            closings: Closings::new(),
            finals: None,
            last_unicorn: 0,
            stats: EngineStats::default(),
        }
    }

    /// An engine that continues from `checkpoint`, for a source that re-reads its partition from
    /// `checkpoint.low_water`. `now` is the wall time, the start of the idle timeout.
    pub fn resume(cfg: WindowConfig, checkpoint: &Checkpoint, now: Millis) -> Self {
        let mut e = Engine::new(cfg);
        e.watermark = checkpoint.watermark;
        e.closed_through = checkpoint.watermark;
        e.watermark_at_last_record = checkpoint.watermark;
        e.last_arrival = now;
        e.replay_through = checkpoint.last_position;
        e.closings = checkpoint.closings.clone();
        if !checkpoint.finals.is_empty() {
            e.finals = Some(checkpoint.finals.clone());
        }
        e
    }

    /// Keeps [`Finals`] from now on (a partition with views: see there). A resumed engine
    /// whose checkpoint had none knows only that windows final at its watermark were final
    /// before anything re-read.
    pub fn keep_finals(&mut self) {
        if self.finals.is_none() {
            let mut finals = Finals::new();
            if self.watermark != Millis::MIN {
                finals.push((self.final_end(self.watermark), None));
            }
            self.finals = Some(finals);
        }
    }

    /// The last window end that is final at watermark `at`.
    fn final_end(&self, at: Millis) -> Millis {
        let limit = at.saturating_sub(self.cfg.allowed_lateness_ms);
        limit
            .div_euclid(self.cfg.size_ms)
            .saturating_mul(self.cfg.size_ms)
    }

    /// Moves the watermark up to `to`, noting the window ends it passes (see [`Closings`]).
    fn raise_watermark(&mut self, to: Millis) {
        let size = self.cfg.size_ms;
        // Only ends of windows that can still change matter: bounded by lateness / size + 1.
        let oldest = to.saturating_sub(self.cfg.allowed_lateness_ms);
        self.closings.retain(|(end, _)| *end > oldest);
        let from = self.watermark.max(oldest);
        let mut end = from.div_euclid(size).saturating_add(1).saturating_mul(size);
        while end <= to {
            self.closings.push((end, self.last_position));
            end = end.saturating_add(size);
        }
        if self.finals.is_some() {
            let end = self.final_end(to);
            let position = self.last_position;
            if let Some(finals) = self.finals.as_mut() {
                if finals.last().is_none_or(|(last, _)| end > *last) {
                    finals.push((end, position));
                }
            }
        }
        self.watermark = to;
    }

    /// The settings.
    pub fn config(&self) -> &WindowConfig {
        &self.cfg
    }

    /// Takes one decoded record at source `position` (never decreasing in read order: a Kafka
    /// offset, a local counter for Kinesis, a line number for a file), which arrived at
    /// wall time `arrival` (used for ingest-time windows and the idle timeout).
    ///
    /// # Errors
    /// [`TooLate`] when the record's window is final; the caller dead-letters it.
    #[inline]
    pub fn push(
        &mut self,
        record: &Telemetry<'_>,
        position: u64,
        arrival: Millis,
    ) -> Result<Accepted, TooLate> {
        let t = match self.cfg.time {
            TimeMode::Event => record.status_time,
            TimeMode::Ingest => arrival,
        };
        self.last_position = Some(position);
        let replaying = match self.replay_through {
            Some(through) => {
                if position >= through {
                    self.replay_through = None;
                }
                position <= through
            }
            None => false,
        };
        let start = self.cfg.window_start(t);
        let end = start.saturating_add(self.cfg.size_ms);
        if end.saturating_add(self.cfg.allowed_lateness_ms) <= self.watermark {
            if replaying {
                self.stats.replayed += 1;
                let accepted = match &self.finals {
                    None => true,
                    Some(finals) => finals
                        .iter()
                        .find(|(last, _)| *last >= end)
                        .is_some_and(|(_, at)| at.is_some_and(|at| position <= at)),
                };
                return Ok(if accepted {
                    Accepted::Replayed
                } else {
                    Accepted::ReplayedTooLate
                });
            }
            self.stats.too_late += 1;
            return Err(TooLate {
                window_start: start,
                watermark: self.watermark,
            });
        }
        let late = if replaying {
            // As it was: late if the watermark had passed the window before this record.
            match self.closings.iter().find(|(e, _)| *e == end) {
                Some((_, at)) => at.is_none_or(|at| position > at),
                None => end <= self.watermark,
            }
        } else {
            end <= self.watermark
        };
        let slot = self.add(
            &record.name,
            start,
            position,
            arrival,
            std::slice::from_ref(&record.distance),
            &[(record.health_points, record.magic_points)],
        );
        let s = &mut self.slots[slot as usize];
        let accepted = if late {
            if s.late & DIRTY == 0 {
                self.dirty.push((slot, start));
            }
            s.late = ((s.late & LATE_MASK) + 1).min(LATE_MASK) | (s.late & WIDE) | DIRTY;
            self.stats.late += 1;
            Accepted::Late
        } else {
            self.stats.on_time += 1;
            Accepted::OnTime
        };
        let candidate = self.cfg.watermark_of(t);
        if candidate > self.watermark {
            self.raise_watermark(candidate);
        }
        self.last_arrival = arrival;
        self.watermark_at_last_record = self.watermark;
        Ok(accepted)
    }

    /// Takes one unicorn's records in one window, folded from a batch ([`super::fold`]), when
    /// none of the batch's records is late: the same windows as pushing them one by one. The
    /// caller raises the watermark after the batch's groups with
    /// [`Engine::raise_watermark_through`]. `position` is the source position of the group's
    /// first record. Unlike record by record, [`Engine::last_unicorn`] is the last group's.
    ///
    /// Only for event time and outside a replay (the batch path): folding decides lateness
    /// against event time, and a replay decides each record against its checkpoint.
    pub fn push_group(
        &mut self,
        name: &str,
        start: Millis,
        vitals: [i64; 4],
        distances: &[f64],
        position: u64,
        arrival: Millis,
    ) {
        debug_assert!(self.cfg.time == TimeMode::Event && self.replay_through.is_none());
        debug_assert!(start.saturating_add(self.cfg.size_ms) > self.watermark);
        self.add(
            name,
            start,
            position,
            arrival,
            distances,
            &[(vitals[0], vitals[2]), (vitals[1], vitals[3])],
        );
        self.stats.on_time += distances.len() as u64;
        self.last_arrival = arrival;
    }

    /// Adds records of unicorn `name` to the window at `start` (its slot made when missing,
    /// noting `position`): their distances in order, their count, and the (health, magic) pairs
    /// to fold into its minima and maxima. The slot. What [`Engine::push`] and
    /// [`Engine::push_group`] do alike.
    #[inline]
    fn add(
        &mut self,
        name: &str,
        start: Millis,
        position: u64,
        arrival: Millis,
        distances: &[f64],
        vitals: &[(i64, i64)],
    ) -> u32 {
        let id = self.names.intern(name);
        self.last_unicorn = id;
        let slot = self.slot(id, start, position);
        self.seen[id as usize] = arrival;
        let s = &mut self.slots[slot as usize];
        for d in distances {
            s.distance += d;
        }
        let n = u32::try_from(distances.len()).unwrap_or(u32::MAX);
        s.records = s.records.saturating_add(n);
        for &(health, magic) in vitals {
            self.fold_vitals(slot, health, magic);
        }
        slot
    }

    /// After a batch's [`Engine::push_group`]s: the records through source `position` (the
    /// batch's last line, a record or not) raised the watermark to `candidate` (their highest
    /// event time less the out-of-orderness). The watermark is the one record by record gives;
    /// the last position, and the position noted with each window end the watermark passed, are
    /// the batch's last rather than its records' (a replay needs neither: the batch path has
    /// none).
    pub fn raise_watermark_through(&mut self, candidate: Millis, position: u64) {
        self.last_position = Some(position);
        if candidate > self.watermark {
            self.raise_watermark(candidate);
        }
        self.watermark_at_last_record = self.watermark;
    }

    /// Folds a record's vitals into `slot`, widening its minima and maxima to 64 bits once a
    /// value does not fit in 32.
    #[inline]
    fn fold_vitals(&mut self, slot: u32, health: i64, magic: i64) {
        let s = &mut self.slots[slot as usize];
        match (i32::try_from(health), i32::try_from(magic)) {
            (Ok(h), Ok(m)) if s.late & WIDE == 0 => fold(&mut s.vitals, h, m),
            _ => {
                if s.late & WIDE == 0 {
                    s.late |= WIDE;
                    let n = s.vitals;
                    let [health, magic] = [widen(n[0], n[1]), widen(n[2], n[3])];
                    let widened = [health.0, health.1, magic.0, magic.1];
                    self.wide.insert(slot, widened);
                }
                if let Some(v) = self.wide.get_mut(&slot) {
                    fold(v, health, magic);
                }
            }
        }
    }

    /// The slot of (`id`, window `start`), created empty when missing; notes `position` in the
    /// window's bucket.
    #[inline]
    fn slot(&mut self, id: NameId, start: Millis, position: u64) -> u32 {
        let idx = id as usize;
        if idx >= self.heads.len() {
            self.heads.resize(idx + 1, NIL);
            self.seen.resize(idx + 1, Millis::MIN);
        }
        // Walk the unicorn's list (newest window first) for the window or its place.
        let window = start.div_euclid(self.cfg.size_ms) as u32;
        let mut prev = NIL;
        let mut cur = self.heads[idx];
        while cur != NIL {
            let s = &self.slots[cur as usize];
            if s.window == window {
                // The bucket's lowest position was noted when the slot was made, and positions
                // only grow: nothing to update.
                return cur;
            }
            if newer(window, s.window) {
                break;
            }
            prev = cur;
            cur = s.next;
        }
        let new = Slot {
            distance: 0.0,
            vitals: EMPTY_VITALS,
            window,
            next: cur,
            unicorn: id,
            records: 0,
            late: 0,
        };
        let slot = if self.free != NIL {
            let slot = self.free;
            self.free = self.slots[slot as usize].next;
            self.slots[slot as usize] = new;
            slot
        } else {
            self.slots.push(new);
            (self.slots.len() - 1) as u32
        };
        self.used += 1;
        if prev == NIL {
            self.heads[idx] = slot;
        } else {
            self.slots[prev as usize].next = slot;
        }
        let closed = start.saturating_add(self.cfg.size_ms) <= self.closed_through;
        let bucket = self.buckets.entry(start).or_insert_with(|| Bucket {
            slots: Vec::new(),
            min_position: position,
            closed,
            emitted: 0,
        });
        bucket.min_position = bucket.min_position.min(position);
        bucket.slots.push(slot);
        slot
    }

    /// Moves time forward to wall time `now`: applies idle advancement, then appends to `out`
    /// every summary that became due — windows the watermark has passed, restatements of late
    /// records (held back while a replay is under way) — and frees windows that became final.
    pub fn advance(&mut self, now: Millis, out: &mut Vec<Summary>) {
        if let Some(idle) = self.cfg.idle_timeout_ms {
            if self.watermark_at_last_record != Millis::MIN {
                let idle_for = now.saturating_sub(self.last_arrival).saturating_sub(idle);
                if idle_for > 0 {
                    let advanced = self.watermark_at_last_record.saturating_add(idle_for);
                    if advanced > self.watermark {
                        self.raise_watermark(advanced);
                    }
                }
            }
        }
        self.close_through(self.watermark, out, CLOSE_SLICE);
        // Restatements wait for the close: a window not emitted yet is emitted with its late
        // records in it, once.
        if self.replay_through.is_none() && !self.closing {
            self.emit_dirty(out);
        }
        // Nor is anything evicted meanwhile: a final window may still hold a restatement
        // that waits with the others (its slot would be freed and reused under it).
        if !self.closing {
            self.evict_final();
        }
    }

    /// A close is under way: some windows the watermark passed are not emitted yet (the next
    /// [`Engine::advance`] goes on with them). A checkpoint must wait for it to finish, for a
    /// resumed engine takes every window its watermark passed for emitted.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Emits the rest of a close under way at once (before a hand-off's last checkpoint).
    pub fn finish_closing(&mut self, out: &mut Vec<Summary>) {
        if self.closing {
            self.close_through(self.watermark, out, usize::MAX);
            if self.replay_through.is_none() {
                self.emit_dirty(out);
            }
        }
    }

    /// End of input: emits every window not yet emitted and every pending restatement, and
    /// empties the engine (names stay interned).
    pub fn flush(&mut self, out: &mut Vec<Summary>) {
        self.replay_through = None;
        self.close_through(Millis::MAX, out, usize::MAX);
        self.emit_dirty(out);
        for bucket in std::mem::take(&mut self.buckets).into_values() {
            for slot in bucket.slots {
                self.release(slot);
            }
        }
        self.closed_through = self.watermark;
    }

    /// Emits the windows the watermark passed, at most `budget` of them; the rest stay for the
    /// next call ([`Engine::closing`]).
    fn close_through(&mut self, watermark: Millis, out: &mut Vec<Summary>, budget: usize) {
        let size = self.cfg.size_ms;
        let mut left = budget;
        for (&start, bucket) in self.buckets.iter_mut() {
            if start.saturating_add(size) > watermark {
                break;
            }
            if bucket.closed {
                continue;
            }
            let until = bucket.slots.len().min(bucket.emitted.saturating_add(left));
            for &slot in &bucket.slots[bucket.emitted..until] {
                let s = &mut self.slots[slot as usize];
                s.late &= !DIRTY;
                out.push(summary(&self.names, &self.wide, slot, s, start, size));
                self.stats.emitted += 1;
            }
            left -= until - bucket.emitted;
            bucket.emitted = until;
            if until < bucket.slots.len() {
                self.closing = true;
                return;
            }
            bucket.closed = true;
        }
        self.closing = false;
        self.closed_through = self.closed_through.max(watermark);
    }

    fn emit_dirty(&mut self, out: &mut Vec<Summary>) {
        for (slot, start) in self.dirty.drain(..) {
            let s = &mut self.slots[slot as usize];
            if s.late & DIRTY != 0 {
                s.late &= !DIRTY;
                out.push(summary(
                    &self.names,
                    &self.wide,
                    slot,
                    s,
                    start,
                    self.cfg.size_ms,
                ));
                self.stats.restated += 1;
            }
        }
    }

    /// Frees windows whose end + allowed lateness ≤ the watermark: nothing can change them now.
    fn evict_final(&mut self) {
        let limit = self.watermark;
        while let Some(entry) = self.buckets.first_entry() {
            let end = entry.key().saturating_add(self.cfg.size_ms);
            if end.saturating_add(self.cfg.allowed_lateness_ms) > limit || !entry.get().closed {
                break;
            }
            for slot in entry.remove().slots {
                self.release(slot);
            }
        }
    }

    /// Unlinks `slot` from its unicorn's list and puts it on the free list.
    fn release(&mut self, slot: u32) {
        let s = self.slots[slot as usize];
        if s.late & WIDE != 0 {
            self.wide.remove(&slot);
        }
        let head = &mut self.heads[s.unicorn as usize];
        if *head == slot {
            *head = s.next;
        } else {
            let mut cur = *head;
            while cur != NIL {
                let next = self.slots[cur as usize].next;
                if next == slot {
                    self.slots[cur as usize].next = s.next;
                    break;
                }
                cur = next;
            }
        }
        self.slots[slot as usize].next = self.free;
        self.free = slot;
        self.used -= 1;
    }

    /// Forgets every unicorn that has no window left that can change and whose last record
    /// arrived at least `after` before wall time `now`: its name and its id go (a returning
    /// unicorn is simply new). Then gives memory back: ids are packed below the number of
    /// unicorns left, per-unicorn arrays are cut to them, and slots are renumbered densely when
    /// most of them are free. Whoever keeps state per id must follow `forgotten`.
    ///
    /// Scans every unicorn: call it about once a second, not per batch. A unicorn for which
    /// `keep` holds (state kept beside the engine that must not be lost, such as a firing alert)
    /// is not forgotten.
    pub fn forget_silent(
        &mut self,
        now: Millis,
        after: Millis,
        keep: impl Fn(NameId) -> bool,
        forgotten: &mut Forgotten,
    ) {
        forgotten.ids.clear();
        forgotten.moved.clear();
        for (id, (&head, &seen)) in self.heads.iter().zip(&self.seen).enumerate() {
            let id = id as NameId;
            if head == NIL
                && now.saturating_sub(seen) >= after
                && self.names.contains(id)
                && !keep(id)
            {
                forgotten.ids.push(id);
            }
        }
        if forgotten.ids.is_empty() {
            return;
        }
        for &id in &forgotten.ids {
            self.names.forget(id);
        }
        self.names.pack(&mut forgotten.moved);
        for &(old, new) in &forgotten.moved {
            let (old, new) = (old as usize, new as usize);
            self.heads[new] = std::mem::replace(&mut self.heads[old], NIL);
            self.seen[new] = self.seen[old];
            let mut slot = self.heads[new];
            while slot != NIL {
                let s = &mut self.slots[slot as usize];
                s.unicorn = new as NameId;
                slot = s.next;
            }
        }
        self.names.trim();
        let bound = self.names.id_bound();
        self.heads.truncate(bound);
        self.seen.truncate(bound);
        shrink_mostly_empty(&mut self.heads);
        shrink_mostly_empty(&mut self.seen);
        self.compact_slots();
    }

    /// Renumbers the slots in use densely, dropping the free list, when it is mostly free: a
    /// flood of unicorns leaves a slab sized for the flood otherwise.
    fn compact_slots(&mut self) {
        if self.slots.len() <= SMALL || self.used * 4 > self.slots.len() {
            return;
        }
        let mut renumber = vec![NIL; self.slots.len()];
        let mut slots = Vec::with_capacity(self.used * 2);
        for bucket in self.buckets.values_mut() {
            for slot in &mut bucket.slots {
                renumber[*slot as usize] = slots.len() as u32;
                slots.push(self.slots[*slot as usize]);
                *slot = (slots.len() - 1) as u32;
            }
        }
        let moved = |slot: u32| {
            if slot == NIL {
                NIL
            } else {
                renumber[slot as usize]
            }
        };
        for s in &mut slots {
            s.next = moved(s.next);
        }
        for head in &mut self.heads {
            *head = moved(*head);
        }
        self.dirty.retain_mut(|(slot, _)| {
            *slot = moved(*slot);
            *slot != NIL
        });
        self.wide = std::mem::take(&mut self.wide)
            .into_iter()
            .filter_map(|(slot, v)| Some((moved(slot), v)).filter(|(s, _)| *s != NIL))
            .collect();
        self.slots = slots;
        self.free = NIL;
        shrink_mostly_empty(&mut self.dirty);
    }

    /// The id of the unicorn of the last accepted record (for callers keeping per-unicorn state
    /// beside the engine's).
    pub fn last_unicorn(&self) -> NameId {
        self.last_unicorn
    }

    /// The name of an id from [`Engine::last_unicorn`].
    pub fn name(&self, id: NameId) -> &str {
        self.names.name(id)
    }

    /// A time no record accepted from now on can have, or be before: the start of the oldest
    /// window that is not final (the watermark less the allowed lateness, less a window;
    /// `i64::MIN` before the first record). A view's window that ends by then can take no
    /// record the engine accepts any more: views judge lateness by it, and so never drop a
    /// record the summaries count.
    pub fn accepted_after(&self) -> Millis {
        self.watermark
            .saturating_sub(self.cfg.allowed_lateness_ms)
            .saturating_sub(self.cfg.size_ms)
    }

    /// The partition's current watermark (`i64::MIN` before the first record).
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    /// Lowest source position of any record in a window that can still change (open, or closed
    /// but inside its allowed lateness); `None` when no window holds a record.
    pub fn low_water(&self) -> Option<u64> {
        self.buckets.values().map(|b| b.min_position).min()
    }

    /// What to store with a committed position; see the module docs.
    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint_with(None)
    }

    /// The checkpoint of a partition that also keeps records at or after `low_water` (views):
    /// it resumes from the lower of the two, and its [`Finals`] reach back that far.
    pub fn checkpoint_with(&self, low_water: Option<u64>) -> Checkpoint {
        let low_water = match (self.low_water(), low_water) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Checkpoint {
            watermark: self.watermark,
            closings: self.closings.clone(),
            alerts: None,
            low_water,
            last_position: self.last_position,
            finals: self.finals.clone().unwrap_or_default(),
        }
    }

    /// Drops [`Finals`] no replay from `from` on can need: entries of positions before it
    /// become one, of no position.
    pub fn prune_finals(&mut self, from: u64) {
        if let Some(finals) = self.finals.as_mut() {
            let cut = finals
                .iter()
                .take_while(|(_, at)| at.is_none_or(|at| at < from))
                .count();
            if cut > 1
                || finals
                    .first()
                    .is_some_and(|(_, at)| at.is_some() && cut == 1)
            {
                let end = finals[cut - 1].0;
                finals.drain(..cut);
                finals.insert(0, (end, None));
            }
        }
    }

    /// Counters since the engine was built.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Live (unicorn, window) accumulators.
    pub fn live_slots(&self) -> usize {
        self.buckets.values().map(|b| b.slots.len()).sum()
    }

    /// Unicorns tracked: seen and not forgotten.
    pub fn unicorns(&self) -> usize {
        self.names.len()
    }

    /// One past the highest unicorn id in use: arrays a caller keeps per id need no more.
    pub fn id_bound(&self) -> usize {
        self.names.id_bound()
    }

    /// Heap bytes of window state (slots, per-unicorn heads, buckets, pending restatements),
    /// and separately of the name table: capacities, not lengths.
    pub fn heap_bytes(&self) -> (usize, usize) {
        let state = self.slots.capacity() * size_of::<Slot>()
            + self.heads.capacity() * size_of::<u32>()
            + self.seen.capacity() * size_of::<Millis>()
            + self.dirty.capacity() * size_of::<(u32, Millis)>()
            + self.wide.capacity() * (size_of::<(u32, Vitals<i64>)>() + 1)
            + self
                .buckets
                .values()
                .map(|b| b.slots.capacity() * 4 + size_of::<Bucket>() + 16)
                .sum::<usize>();
        (state, self.names.heap_bytes())
    }
}

/// An i32 (minimum, maximum) pair as i64, keeping an unset pair unset. A pair that holds a record
/// has its minimum at or below its maximum; an unset one is (`i32::MAX`, `i32::MIN`). Telling it
/// by the pair, not by each value, keeps a real minimum of `i32::MAX` (or maximum of `i32::MIN`).
fn widen(min: i32, max: i32) -> (i64, i64) {
    if min > max {
        (i64::MAX, i64::MIN)
    } else {
        (i64::from(min), i64::from(max))
    }
}

fn summary(
    names: &Interner,
    wide: &HashMap<u32, Vitals<i64>>,
    slot: u32,
    s: &Slot,
    start: Millis,
    size: Millis,
) -> Summary {
    let v = match wide.get(&slot) {
        Some(v) if s.late & WIDE != 0 => *v,
        _ => s.vitals.map(i64::from),
    };
    Summary {
        name: names.name(s.unicorn).to_owned(),
        window_start: start,
        window_end: start.saturating_add(size),
        distance: s.distance,
        min_health_points: v[0],
        max_health_points: v[1],
        min_magic_points: v[2],
        max_magic_points: v[3],
        records: u64::from(s.records),
        revision: u64::from(s.late & LATE_MASK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn rec(name: &str, secs: i64, health: i64) -> Telemetry<'static> {
        Telemetry {
            name: Cow::Owned(name.to_owned()),
            status_time: secs * 1_000,
            latitude: 0.0,
            longitude: 0.0,
            distance: 1.0,
            health_points: health,
            magic_points: -health,
            input_data: None,
        }
    }

    fn batch_cfg() -> WindowConfig {
        WindowConfig {
            idle_timeout_ms: None,
            ..WindowConfig::default()
        }
    }

    #[test]
    fn checkpoints_round_trip_through_their_text() {
        let cases = [
            Checkpoint {
                watermark: 1_521_343_200_000,
                low_water: Some(17),
                last_position: Some(40),
                closings: Closings::new(),
                alerts: Some("Shadowfax@5:low-health=5/99/f".into()),
                finals: vec![(1_521_343_080_000, None), (1_521_343_140_000, Some(22))],
            },
            Checkpoint {
                watermark: Millis::MIN,
                low_water: Some(0),
                last_position: None,
                closings: Closings::new(),
                alerts: None,
                finals: Finals::new(),
            },
        ];
        for c in cases {
            let position = c.resume_position().unwrap();
            assert_eq!(Checkpoint::decode(&c.encode(), position), Some(c));
        }
        let past_all = Checkpoint {
            watermark: 5,
            low_water: None,
            last_position: Some(9),
            closings: Closings::new(),
            alerts: None,
            finals: Finals::new(),
        };
        assert_eq!(past_all.resume_position(), Some(10));
        let back = Checkpoint::decode(&past_all.encode(), 10).unwrap();
        assert_eq!((back.watermark, back.last_position), (5, Some(9)));
        for foreign in [
            "",
            "stampede/1",
            "other watermark=1",
            "stampede/1 watermark=x",
        ] {
            assert_eq!(Checkpoint::decode(foreign, 3), None, "{foreign:?}");
        }
    }

    #[test]
    fn silent_unicorns_are_forgotten_only_once_their_windows_are_final() {
        let mut e = Engine::new(batch_cfg());
        let mut out = Vec::new();
        let mut gone = Forgotten::default();
        e.push(&rec("a", 10, 1), 0, 0).unwrap();
        e.push(&rec("b", 10, 2), 1, 0).unwrap();
        // Long silent, but window [0, 60) s can still change: nothing is forgotten.
        e.forget_silent(100_000, 30_000, |_| false, &mut gone);
        assert!(gone.ids.is_empty());
        assert_eq!(e.unicorns(), 2);

        // The watermark passes 60 s + 60 s of lateness: window 0 is emitted and final.
        e.push(&rec("c", 200, 3), 2, 100_000).unwrap();
        e.advance(100_000, &mut out);
        assert_eq!(out.len(), 2);
        e.forget_silent(100_000, 30_000, |_| false, &mut gone);
        assert_eq!(gone.ids, [0, 1], "a and b; c still has an open window");
        assert_eq!(e.unicorns(), 1);
        // c was heard from just now: kept however long a and b were silent.
        e.forget_silent(129_999, 30_000, |_| false, &mut gone);
        assert!(gone.ids.is_empty());

        // a returns: it is new (its old window is not reopened) and takes the lowest free id.
        e.push(&rec("a", 201, 9), 3, 130_000).unwrap();
        assert_eq!(e.last_unicorn(), 0);
        out.clear();
        e.flush(&mut out);
        let got: Vec<_> = out
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.window_start,
                    s.records,
                    s.max_health_points,
                )
            })
            .collect();
        assert_eq!(got, [("c", 180_000, 1, 3), ("a", 180_000, 1, 9)]);
    }

    #[test]
    fn a_flood_of_names_gives_its_memory_back() {
        let mut e = Engine::new(batch_cfg());
        let mut out = Vec::new();
        let heap = |e: &Engine| {
            let (state, names) = e.heap_bytes();
            state + names
        };
        const FLOOD: u64 = 100_000;
        for i in 0..FLOOD {
            e.push(&rec(&format!("flood-{i:06}"), 10, 1), i, 0).unwrap();
        }
        let flooded = heap(&e);
        assert!(flooded > 5 << 20, "{flooded} bytes for {FLOOD} unicorns");
        // A fleet of ten keeps flying after the flood, its slots numbered past the flood's.
        for minute in 2..5 {
            for k in 0..10 {
                let t = minute * 60 + k;
                e.push(
                    &rec(&format!("keep-{k}"), t, k),
                    FLOOD + t as u64,
                    t * 1_000,
                )
                .unwrap();
            }
            e.advance(minute * 60_000, &mut out);
        }
        let mut gone = Forgotten::default();
        e.forget_silent(300_000, 30_000, |_| false, &mut gone);
        assert_eq!(gone.ids.len(), FLOOD as usize);
        assert_eq!(gone.moved.len(), 10, "the fleet moved into the flood's ids");
        assert_eq!(e.unicorns(), 10);
        let after = heap(&e);
        assert!(
            after < 64 << 10,
            "{after} bytes left after forgetting the flood"
        );

        // The survivors' windows came through the renumbering intact: window 180 s (closed,
        // inside its lateness) takes a late record, window 240 s is still open.
        out.clear();
        e.push(&rec("keep-3", 185, 100), FLOOD + 1_000, 300_000)
            .unwrap();
        e.flush(&mut out);
        let mut keep: Vec<_> = out
            .iter()
            .map(|s| {
                let w = s.window_start / 1_000;
                (
                    s.name.clone(),
                    w,
                    s.records,
                    s.max_health_points,
                    s.revision,
                )
            })
            .collect();
        keep.sort();
        let mut expected: Vec<_> = (0..10)
            .map(|k| (format!("keep-{k}"), 240, 1, k, 0))
            .collect();
        expected.push(("keep-3".into(), 180, 2, 100, 1));
        expected.sort();
        assert_eq!(keep, expected);
    }

    /// Resumed from an old position (a view's windows reach further back than the minute's), a
    /// replayed record in a window final now is told apart: accepted when first read, or too
    /// late then.
    #[test]
    fn finals_tell_a_replayed_record_accepted_from_one_too_late() {
        let cfg = WindowConfig {
            out_of_orderness_ms: 0,
            allowed_lateness_ms: 60_000,
            ..batch_cfg()
        };
        let mut e = Engine::new(cfg);
        e.keep_finals();
        // Minute 0 is final once the watermark reaches 120 s (position 2).
        let times = [10, 65, 125, 30, 130];
        let mut first = Vec::new();
        for (p, t) in times.iter().enumerate() {
            first.push(e.push(&rec("a", *t, 1), p as u64, 0).is_ok());
        }
        assert_eq!(first, [true, true, true, false, true], "30 s came too late");
        let checkpoint = e.checkpoint_with(Some(0));
        let back = Checkpoint::decode(&checkpoint.encode(), 0).unwrap();
        assert_eq!(back.finals, checkpoint.finals);
        let mut resumed = Engine::resume(cfg, &back, 0);
        resumed.keep_finals();
        let replay: Vec<_> = times
            .iter()
            .enumerate()
            .map(|(p, t)| resumed.push(&rec("a", *t, 1), p as u64, 0))
            .collect();
        assert_eq!(replay[0], Ok(Accepted::Replayed), "minute 0, read in time");
        assert_eq!(
            replay[3],
            Ok(Accepted::ReplayedTooLate),
            "minute 0, read too late"
        );
        // Pruned to position 3, what came before is one entry of no position: still too late.
        resumed.prune_finals(3);
        let mut again = Engine::resume(cfg, &resumed.checkpoint_with(Some(3)), 0);
        again.keep_finals();
        assert_eq!(
            again.push(&rec("a", 30, 1), 3, 0),
            Ok(Accepted::ReplayedTooLate)
        );
    }

    #[test]
    fn slot_is_48_bytes() {
        assert_eq!(size_of::<Slot>(), 48);
    }

    #[test]
    fn vitals_beyond_i32_are_kept_exactly() {
        let mut e = Engine::new(batch_cfg());
        let mut out = Vec::new();
        e.push(&rec("a", 1, 7), 0, 0).unwrap();
        e.push(&rec("a", 2, i64::MAX), 1, 0).unwrap();
        e.push(&rec("a", 3, -5), 2, 0).unwrap();
        e.push(&rec("b", 4, 1 << 40), 3, 0).unwrap();
        e.push(&rec("c", 5, 1), 4, 0).unwrap();
        e.flush(&mut out);
        let v: Vec<_> = out
            .iter()
            .map(|s| {
                (
                    s.min_health_points,
                    s.max_health_points,
                    s.min_magic_points,
                    s.max_magic_points,
                )
            })
            .collect();
        assert_eq!(
            v,
            vec![
                (-5, i64::MAX, -i64::MAX, 5),
                (1 << 40, 1 << 40, -(1 << 40), -(1 << 40)),
                (1, 1, -1, -1)
            ]
        );
        assert!(e.wide.is_empty(), "released with their slots");
    }

    /// Values at the ends of i32 beside values past them, in every order, one by one and as a
    /// folded group: the minima and maxima of the values themselves (a real minimum of
    /// `i32::MAX` once read as "unset" when the window widened to 64 bits).
    #[test]
    fn vitals_at_the_ends_of_i32_in_any_order_record_by_record_or_folded() {
        let (top, bottom) = (i64::from(i32::MAX), i64::from(i32::MIN));
        for values in [
            [1 << 32, top],
            [top, 1 << 32],
            [bottom, -(1 << 32)],
            [-(1 << 32), bottom],
            [top, bottom],
            [bottom, 1 << 32],
        ] {
            let want = (values[0].min(values[1]), values[0].max(values[1]));
            let mut one_by_one = Engine::new(batch_cfg());
            for (i, &health) in values.iter().enumerate() {
                one_by_one
                    .push(&rec("a", i as i64, health), i as u64, 0)
                    .unwrap();
            }
            let mut folded = Engine::new(batch_cfg());
            let vitals = [want.0, want.1, -want.1, -want.0];
            folded.push_group("a", 0, vitals, &[1.0, 1.0], 0, 0);
            for mut e in [one_by_one, folded] {
                let mut out = Vec::new();
                e.flush(&mut out);
                let s = &out[0];
                assert_eq!(
                    (s.min_health_points, s.max_health_points, s.records),
                    (want.0, want.1, 2),
                    "{values:?}"
                );
                assert_eq!(
                    (s.min_magic_points, s.max_magic_points),
                    (-want.1, -want.0),
                    "{values:?}"
                );
            }
        }
    }

    #[test]
    fn closes_when_the_watermark_passes_the_end() {
        let mut e = Engine::new(batch_cfg());
        let mut out = Vec::new();
        e.push(&rec("a", 10, 5), 0, 0).unwrap();
        e.push(&rec("a", 64, 7), 1, 0).unwrap();
        e.advance(0, &mut out);
        assert!(out.is_empty(), "watermark 59 s < end 60 s");
        e.push(&rec("a", 65, 9), 2, 0).unwrap();
        e.advance(0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].window_start, out[0].records, out[0].revision),
            (0, 1, 0)
        );
        assert_eq!((out[0].min_health_points, out[0].max_magic_points), (5, -5));
    }

    /// A fleet bigger than a slice: its minute closes over several advances, each window
    /// once; a late record meanwhile is in its window's one emission (or its restatement, once
    /// emitted), and a checkpoint waits for the close.
    #[test]
    fn a_big_minute_closes_in_slices_each_window_once() {
        let n = CLOSE_SLICE * 2 + 123;
        let names: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
        let mut e = Engine::new(batch_cfg());
        for (i, name) in names.iter().enumerate() {
            e.push(&rec(name, 10, 100), i as u64, 0).unwrap();
        }
        let mut out = Vec::new();
        e.push(&rec("u0", 70, 100), n as u64, 0).unwrap(); // wm 65: window 0 closes
        e.advance(0, &mut out);
        assert_eq!(out.len(), CLOSE_SLICE);
        assert!(e.closing());
        // One late record for a window emitted already, one for a window not yet emitted.
        let last = names.last().unwrap();
        assert_eq!(
            e.push(&rec("u1", 20, 7), n as u64 + 1, 0),
            Ok(Accepted::Late)
        );
        assert_eq!(
            e.push(&rec(last, 20, 7), n as u64 + 2, 0),
            Ok(Accepted::Late)
        );
        e.advance(0, &mut out);
        assert_eq!(
            out.len(),
            2 * CLOSE_SLICE,
            "restatements wait for the close"
        );
        e.advance(0, &mut out);
        assert!(!e.closing());
        // Every window once, then the one restatement of u1; the last one's late record is in
        // its only emission.
        assert_eq!(out.len(), n + 1);
        let mut seen = std::collections::HashSet::new();
        for s in &out[..n] {
            assert!(seen.insert(s.name.as_str()), "{} twice", s.name);
        }
        assert_eq!(seen.len(), n);
        let restated = &out[n];
        assert_eq!(
            (restated.name.as_str(), restated.records, restated.revision),
            ("u1", 2, 1)
        );
        let tail = out[..n].iter().find(|s| s.name == *last).unwrap();
        assert_eq!(
            (tail.records, tail.revision, tail.min_health_points),
            (2, 1, 7)
        );
    }

    /// A late record for the minute before, whose window turns final as the next minute's
    /// close starts: its restatement waits for the close and is emitted, not freed with the
    /// window.
    #[test]
    fn a_restatement_of_a_final_window_waits_for_a_sliced_close() {
        let n = CLOSE_SLICE + 7;
        let mut e = Engine::new(batch_cfg());
        let mut out = Vec::new();
        e.push(&rec("u0", 10, 100), 0, 0).unwrap();
        e.push(&rec("u0", 70, 100), 1, 0).unwrap(); // wm 65: window 0 closes
        e.advance(0, &mut out);
        assert_eq!(out.len(), 1);
        let mut position = 2;
        for i in 0..n {
            e.push(&rec(&format!("u{i}"), 80, 100), position, 0)
                .unwrap();
            position += 1;
        }
        // Late for window 0 (still restatable at wm 65 < end 60 + lateness 60).
        assert_eq!(e.push(&rec("u0", 30, 1), position, 0), Ok(Accepted::Late));
        // wm 125: window 60 closes (in slices) and window 0 becomes final.
        e.push(&rec("u0", 130, 100), position + 1, 0).unwrap();
        e.advance(0, &mut out);
        assert!(e.closing());
        e.advance(0, &mut out);
        assert!(!e.closing());
        let restated: Vec<_> = out
            .iter()
            .filter(|s| s.window_start == 0 && s.revision == 1)
            .collect();
        assert_eq!(restated.len(), 1);
        assert_eq!((restated[0].records, restated[0].min_health_points), (2, 1));
        assert_eq!(out.iter().filter(|s| s.window_start == 60_000).count(), n);
    }

    #[test]
    fn finishing_a_close_emits_the_rest_at_once() {
        let n = CLOSE_SLICE + 1;
        let mut e = Engine::new(batch_cfg());
        for i in 0..n {
            e.push(&rec(&format!("u{i}"), 10, 100), i as u64, 0)
                .unwrap();
        }
        e.push(&rec("u0", 70, 100), n as u64, 0).unwrap();
        let mut out = Vec::new();
        e.advance(0, &mut out);
        assert!(e.closing());
        e.finish_closing(&mut out);
        assert!(!e.closing());
        assert_eq!(out.len(), n);
    }

    #[test]
    fn late_restates_and_too_late_rejects() {
        let mut e = Engine::new(batch_cfg());
        let mut out = Vec::new();
        e.push(&rec("a", 10, 5), 0, 0).unwrap();
        e.push(&rec("a", 70, 5), 1, 0).unwrap(); // wm 65: window 0 closes
        e.advance(0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(e.push(&rec("a", 20, 1), 2, 0), Ok(Accepted::Late));
        e.advance(0, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[1].records, out[1].revision, out[1].min_health_points),
            (2, 1, 1)
        );
        e.push(&rec("a", 125, 5), 3, 0).unwrap(); // wm 120 = end 60 + lateness 60
        assert_eq!(
            e.push(&rec("a", 30, 5), 4, 0),
            Err(TooLate {
                window_start: 0,
                watermark: 120_000
            })
        );
        assert_eq!(e.stats().too_late, 1);
    }

    #[test]
    fn several_late_records_between_advances_emit_once_with_their_count() {
        let mut e = Engine::new(batch_cfg());
        let mut out = Vec::new();
        e.push(&rec("a", 10, 5), 0, 0).unwrap();
        e.push(&rec("a", 70, 5), 1, 0).unwrap();
        e.advance(0, &mut out);
        for (i, secs) in [20, 30, 40].into_iter().enumerate() {
            assert_eq!(
                e.push(&rec("a", secs, 5), 2 + i as u64, 0),
                Ok(Accepted::Late)
            );
        }
        e.advance(0, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].records, out[1].revision), (4, 3));
        e.advance(0, &mut out);
        assert_eq!(out.len(), 2, "nothing pending any more");
    }

    #[test]
    fn low_water_tracks_the_oldest_live_window() {
        let mut e = Engine::new(batch_cfg());
        let mut out = Vec::new();
        assert_eq!(e.low_water(), None);
        e.push(&rec("a", 10, 5), 100, 0).unwrap();
        e.push(&rec("b", 61, 5), 101, 0).unwrap();
        e.push(&rec("a", 11, 5), 102, 0).unwrap();
        assert_eq!(e.low_water(), Some(100));
        e.push(&rec("b", 200, 5), 103, 0).unwrap(); // wm 195: windows 0 and 60 final
        e.advance(0, &mut out);
        assert_eq!(e.low_water(), Some(103));
        e.flush(&mut out);
        assert_eq!(e.low_water(), None);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn idle_timeout_advances_with_the_wall_clock() {
        let mut e = Engine::new(WindowConfig::default());
        let mut out = Vec::new();
        e.push(&rec("a", 30, 5), 0, 1_000_000).unwrap(); // wm 25 s
        e.advance(1_000_000 + 10_000, &mut out); // idle just reached: no advance yet
        assert!(out.is_empty());
        e.advance(1_000_000 + 10_000 + 34_999, &mut out); // wm 59.999 s
        assert!(out.is_empty());
        e.advance(1_000_000 + 10_000 + 35_000, &mut out); // wm 60 s
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn slots_are_reused_after_eviction() {
        let mut e = Engine::new(batch_cfg());
        let mut out = Vec::new();
        for minute in 0..100 {
            for u in 0..10 {
                e.push(&rec(&format!("u{u}"), minute * 60 + 1, 1), 0, 0)
                    .unwrap();
            }
            e.advance(0, &mut out);
        }
        assert!(e.slots.len() <= 40, "{} slots allocated", e.slots.len());
        assert_eq!(e.unicorns(), 10);
    }
}
