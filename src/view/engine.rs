//! A view kept window by window over one partition's records: the state the partition task
//! keeps (and `stampede aggregate --view` over files), a micro-batch at a time.
//!
//! Records come in micro-batches (Arrow arrays of accepted records, with their source
//! positions): each record is placed in its window(s), filtered by the view's `WHERE`, grouped
//! by its key with arrow's row format, and each group's accumulators are updated with its slice
//! of the batch — a cost per batch and group, never a dynamic call per record. `TUMBLE` and
//! `HOP` windows are known from the record alone; a `SESSION` is the key's run of records no
//! further apart than the gap, merged when a record bridges two.
//!
//! What comes out is partial: a row of [`ViewPlan::partial_schema`] per window and key that
//! closed (the watermark passed its end) or changed since, holding the accumulators' state;
//! [`ViewPlan::finish`] turns partials into the view's rows. A session merged into another is
//! withdrawn (a partial row that does not stand). A window is forgotten once the watermark has
//! passed its end by the allowed lateness; a record for it after that is dropped and counted.
//! [`ViewEngine::low_water`] is the oldest source position of a window that can still change:
//! where the partition re-reads from after a crash or a move.

/// A map with foldhash: keys are the batch's own rows, hashed per record.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringBuilder,
    TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{concat, filter_record_batch, interleave, take};
use datafusion::arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};

pub use super::compile::{record_schema, EngineError, ViewPlan};
use super::compile::{windowed_schema, Bound, WINDOW_START};
use super::plan::Window as Kind;
use crate::time::Millis;

/// One window of the partition's records (`TUMBLE`, `HOP`): its keys, each a group of
/// vectorized accumulators (one call per aggregate and batch for all of the window's keys).
struct Window {
    end: Millis,
    /// Key (arrow's row format) → group.
    index: HashMap<Box<[u8]>, u32>,
    /// Group → key.
    keys: Vec<Box<[u8]>>,
    /// The oldest source position of its records.
    min_position: u64,
    phase: Phase,
}

/// Whether a window was handed on.
enum Phase {
    /// Not yet: every group's state, one accumulator per aggregate.
    Open(Vec<Box<dyn GroupsAccumulator>>),
    /// Handed on when the watermark passed its end; late records restate it.
    Closed(Closed),
}

/// A window handed on: each group's state as last handed on, and the late records since.
struct Closed {
    /// State columns handed on (all of the aggregates'), in chunks: the close, then each
    /// restatement.
    chunks: Vec<Vec<ArrayRef>>,
    /// Group → (chunk, row) of its state; `None` for a key first seen late.
    at: Vec<Option<(u32, u32)>>,
    /// Late records' state, by late group.
    late: Vec<Box<dyn GroupsAccumulator>>,
    /// Late group → group.
    late_groups: Vec<u32>,
    /// Group → late group.
    late_index: HashMap<u32, u32>,
}

/// One session of a key.
struct Session {
    /// Its first record's time.
    start: Millis,
    /// Its last record's time.
    last: Millis,
    accumulators: Vec<Box<dyn Accumulator>>,
    min_position: u64,
    dirty: bool,
    /// The window it was last handed on as, if any.
    emitted: Option<Millis>,
}

/// One view's windows over one partition's records.
pub struct ViewEngine {
    plan: Arc<ViewPlan>,
    /// The keys other than the window's bounds, in arrow's row format.
    rows: RowConverter,
    /// Which of the plan's keys those are.
    other: Vec<usize>,
    /// `TUMBLE` and `HOP` windows by start.
    windows: std::collections::BTreeMap<Millis, Window>,
    sessions: HashMap<OwnedRow, Vec<Session>>,
    /// Sessions handed on and since merged into another: (key, start, end) to withdraw.
    withdrawn: Vec<(OwnedRow, Millis, Millis)>,
    /// Records dropped because their window had closed past the allowed lateness.
    pub dropped_late: u64,
    /// Records before this event time are not this engine's (a backfill counts them).
    cut: Millis,
}

impl ViewEngine {
    /// An empty engine for `plan`.
    ///
    /// # Errors
    /// A key's type has no row format (none of the stream's types, nor their expressions').
    pub fn new(plan: Arc<ViewPlan>) -> Result<ViewEngine, EngineError> {
        let other: Vec<usize> = (0..plan.keys.len())
            .filter(|i| plan.bounds[*i].is_none())
            .collect();
        let mut fields: Vec<SortField> = other
            .iter()
            .map(|i| SortField::new(plan.key_types[*i].clone()))
            .collect();
        if fields.is_empty() {
            // Rows need a column to count them: a constant stands for "no key".
            fields.push(SortField::new(
                datafusion::arrow::datatypes::DataType::Boolean,
            ));
        }
        let rows = RowConverter::new(fields).map_err(|e| plan.fail(e))?;
        Ok(ViewEngine {
            plan,
            rows,
            other,
            windows: std::collections::BTreeMap::new(),
            sessions: HashMap::default(),
            withdrawn: Vec::new(),
            dropped_late: 0,
            cut: Millis::MIN,
        })
    }

    /// The engine of a view backfilled from the archive: it counts only records from event time
    /// `cut` on, the backfill those before.
    pub fn from_cut(mut self, cut: Millis) -> ViewEngine {
        self.cut = cut;
        self
    }

    /// The view's plan.
    pub fn plan(&self) -> &Arc<ViewPlan> {
        &self.plan
    }

    /// The oldest source position of a record in a window that can still change; `None` when
    /// no window holds one.
    pub fn low_water(&self) -> Option<u64> {
        let windows = self.windows.values().map(|w| w.min_position);
        let sessions = self
            .sessions
            .values()
            .flat_map(|s| s.iter().map(|s| s.min_position));
        windows.chain(sessions).min()
    }

    /// Windows and keys (or sessions) held.
    pub fn windows(&self) -> usize {
        self.windows.values().map(|w| w.keys.len()).sum::<usize>()
            + self.sessions.values().map(Vec::len).sum::<usize>()
    }

    /// Takes in accepted records (columns of [`record_schema`]) read at `positions`; `closed`
    /// holds for each the time before which no record could be accepted any more when it was
    /// read (`window::Engine::accepted_after`): a record whose window had ended by then is
    /// dropped and counted (never one the summaries accept, in the service). Judged record by
    /// record, the answer does not depend on how records were batched.
    ///
    /// # Errors
    /// An expression failed on the batch (a type DataFusion could not coerce, say).
    pub fn push(
        &mut self,
        records: &RecordBatch,
        positions: &[u64],
        closed: &[Millis],
    ) -> Result<(), EngineError> {
        if records.num_rows() == 0 {
            return Ok(());
        }
        let plan = Arc::clone(&self.plan);
        let fail = |e: &dyn std::fmt::Display| plan.fail(e);
        let batch = self.windowed(records, positions, closed)?;
        let batch = match &plan.filter {
            None => batch,
            Some(f) => {
                let keep = f
                    .evaluate(&batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| fail(&e))?;
                let keep = keep
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| fail(&"WHERE is not a condition"))?;
                filter_record_batch(&batch, keep).map_err(|e| fail(&e))?
            }
        };
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let mut keys = self
            .other
            .iter()
            .map(|i| plan.keys[*i].evaluate(&batch).and_then(|v| v.into_array(n)))
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(|e| fail(&e))?;
        if keys.is_empty() {
            keys.push(Arc::new(BooleanArray::from(vec![true; n])));
        }
        let rows = self.rows.convert_columns(&keys).map_err(|e| fail(&e))?;
        let column = |at: usize| {
            batch
                .column(at)
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .cloned()
                .ok_or_else(|| fail(&"window bounds"))
        };
        let (starts, ends) = (column(WINDOW_START)?, column(WINDOW_START + 1)?);
        let times = column(1)?;
        let positions = batch
            .column(WINDOW_START + 2)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .cloned()
            .ok_or_else(|| fail(&"positions"))?;
        let closed = batch
            .column(WINDOW_START + 3)
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| fail(&"closed"))?;
        let inputs = plan
            .inputs
            .iter()
            .map(|exprs| {
                exprs
                    .iter()
                    .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(n)))
                    .collect::<Result<Vec<ArrayRef>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(&e))?;
        let gap = match plan.view().window {
            Kind::Session { gap_ms } => Some(gap_ms),
            _ => None,
        };
        if gap.is_none() {
            let columns = Columns {
                starts: &starts,
                ends: &ends,
                times: &times,
                positions: &positions,
                closed: &closed,
            };
            return self.push_windows(&rows, &columns, &inputs);
        }
        // Rows of the batch by key (and window), in order of first appearance: keys borrowed
        // from the batch's rows, owned once per group.
        let mut order: Vec<((Row<'_>, Millis), Vec<u32>)> = Vec::new();
        let mut members: HashMap<(Row<'_>, Millis), usize> = HashMap::default();
        for i in 0..n {
            // A session's own window, as a lone record, is [t, t + gap).
            let end = gap.map_or(ends.value(i), |g| starts.value(i).saturating_add(g));
            if times.value(i) < self.cut {
                continue;
            }
            if end <= closed.value(i) {
                self.dropped_late += 1;
                continue;
            }
            // Sessions group by key (and the hour: see SESSION_SPAN_MS); their windows are found
            // below.
            let window = match gap {
                Some(_) => session_span(starts.value(i)),
                None => starts.value(i),
            };
            let key = (rows.row(i), window);
            let at = *members.entry(key).or_insert_with(|| {
                order.push((key, Vec::new()));
                order.len() - 1
            });
            order[at].1.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        if order.is_empty() {
            return Ok(());
        }
        // Every aggregate's inputs taken once in group order: each group is then a slice.
        let permutation: Vec<u32> = order
            .iter()
            .flat_map(|(_, ix)| ix.iter().copied())
            .collect();
        let inputs = take_all(&inputs, &UInt32Array::from(permutation)).map_err(|e| fail(&e))?;
        let mut from = 0usize;
        for ((row, window), mut indices) in order {
            let range = from..from + indices.len();
            from = range.end;
            let key = (row.owned(), window);
            match gap {
                None => {}
                Some(gap) => {
                    // The group's records in time order, as offsets into its slice.
                    let mut local: Vec<usize> = (0..indices.len()).collect();
                    local.sort_by_key(|j| starts.value(indices[*j] as usize));
                    indices = local.iter().map(|j| indices[*j]).collect();
                    let sorted = UInt32Array::from_iter_values(
                        local.iter().map(|j| (range.start + j) as u32),
                    );
                    let group_inputs = take_all(&inputs, &sorted).map_err(|e| fail(&e))?;
                    // Runs of the batch's records no further apart than the gap.
                    let mut run_from = 0;
                    while run_from < indices.len() {
                        let mut to = run_from + 1;
                        while to < indices.len()
                            && starts.value(indices[to] as usize)
                                - starts.value(indices[to - 1] as usize)
                                <= gap
                        {
                            to += 1;
                        }
                        let first = starts.value(indices[run_from] as usize);
                        let last = starts.value(indices[to - 1] as usize);
                        let low = indices[run_from..to]
                            .iter()
                            .map(|i| positions.value(*i as usize))
                            .min()
                            .unwrap_or(0);
                        let session = self.session(&key.0, first, last, gap, low)?;
                        update(
                            &plan,
                            &mut session.accumulators,
                            &group_inputs,
                            run_from..to,
                        )?;
                        run_from = to;
                    }
                }
            }
        }
        Ok(())
    }

    /// The session of `key` that a run of records from `first` to `last` belongs to: a new one,
    /// or the one it extends, or several it bridges merged into one (those handed on under
    /// another start are withdrawn).
    fn session(
        &mut self,
        key: &OwnedRow,
        first: Millis,
        last: Millis,
        gap: Millis,
        position: u64,
    ) -> Result<&mut Session, EngineError> {
        let plan = Arc::clone(&self.plan);
        let list = self.sessions.entry(key.clone()).or_default();
        // Kept in order of start; those the run touches are adjacent (and in its span).
        let span = session_span(first);
        let touches = |s: &Session| {
            s.start - last <= gap && first - s.last <= gap && session_span(s.start) == span
        };
        let from = list.iter().position(touches);
        let mut merged = match from {
            None => Session {
                start: first,
                last,
                accumulators: plan.accumulators()?,
                min_position: position,
                dirty: true,
                emitted: None,
            },
            Some(from) => {
                let to = from + list[from..].iter().take_while(|s| touches(s)).count();
                let mut parts = list.drain(from..to);
                let mut base = parts.next().ok_or_else(|| plan.fail("session"))?;
                let mut emitted = vec![base.emitted];
                for mut other in parts {
                    for (acc, from) in base.accumulators.iter_mut().zip(&mut other.accumulators) {
                        let state = from
                            .state()
                            .and_then(|s| s.into_iter().map(|v| v.to_array()).collect())
                            .map_err(|e| plan.fail(e))?;
                        let state: Vec<ArrayRef> = state;
                        acc.merge_batch(&state).map_err(|e| plan.fail(e))?;
                    }
                    base.start = base.start.min(other.start);
                    base.last = base.last.max(other.last);
                    base.min_position = base.min_position.min(other.min_position);
                    emitted.push(other.emitted);
                }
                base.start = base.start.min(first);
                base.last = base.last.max(last);
                base.min_position = base.min_position.min(position);
                base.dirty = true;
                // The row under the merged session's start stays (and changes); others go.
                base.emitted = None;
                for start in emitted.into_iter().flatten() {
                    if start == base.start {
                        base.emitted = Some(start);
                    } else {
                        self.withdrawn.push((key.clone(), start, start));
                    }
                }
                base
            }
        };
        merged.dirty = true;
        let at = list.partition_point(|s| s.start < merged.start);
        list.insert(at, merged);
        Ok(&mut list[at])
    }

    /// Each record with its window(s) — one for `TUMBLE`, size/slide for `HOP`, for `SESSION`
    /// its own time as both bounds (sessions are found after grouping) — and its position.
    fn windowed(
        &self,
        records: &RecordBatch,
        positions: &[u64],
        closed: &[Millis],
    ) -> Result<RecordBatch, EngineError> {
        let plan = &self.plan;
        let (slide, size) = match plan.view().window {
            Kind::Tumble { size_ms } => (size_ms, size_ms),
            Kind::Hop { slide_ms, size_ms } => (slide_ms, size_ms),
            Kind::Session { .. } => (0, 0),
        };
        let times = records
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| plan.fail("statustime"))?;
        let n = records.num_rows();
        let position = |i: usize| positions.get(i).copied().unwrap_or(0);
        let limit = |i: usize| closed.get(i).copied().unwrap_or(Millis::MIN);
        let mut columns = records.columns().to_vec();
        let (starts, ends, at, limits) = if slide == 0 {
            let t: Vec<Millis> = times.values().to_vec();
            (
                t.clone(),
                t,
                (0..n).map(position).collect::<Vec<_>>(),
                (0..n).map(limit).collect::<Vec<_>>(),
            )
        } else {
            let copies = usize::try_from(size / slide).unwrap_or(1).max(1);
            let mut index = Vec::with_capacity(n * copies);
            let mut starts = Vec::with_capacity(n * copies);
            let mut at = Vec::with_capacity(n * copies);
            let mut limits = Vec::with_capacity(n * copies);
            for i in 0..n {
                let t = times.value(i);
                let first = t - t.rem_euclid(slide);
                for c in 0..copies {
                    index.push(u32::try_from(i).unwrap_or(u32::MAX));
                    starts.push(first - (c as Millis) * slide);
                    at.push(position(i));
                    limits.push(limit(i));
                }
            }
            if copies > 1 {
                let index = UInt32Array::from(index);
                columns = columns
                    .iter()
                    .map(|c| take(c.as_ref(), &index, None))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| plan.fail(e))?;
            }
            let ends = starts.iter().map(|s| s + size).collect();
            (starts, ends, at, limits)
        };
        columns.extend(ViewPlan::window_columns(starts, ends));
        columns.push(Arc::new(UInt64Array::from(at)));
        columns.push(Arc::new(Int64Array::from(limits)));
        RecordBatch::try_new(windowed_schema(), columns).map_err(|e| plan.fail(e))
    }

    /// Partial rows of the windows that ended by `watermark` and are new or changed since handed
    /// on, and of sessions withdrawn; windows that ended by `closed` (no late record can reach
    /// them any more) are forgotten.
    ///
    /// # Errors
    /// An aggregate's state could not be read.
    pub fn advance(
        &mut self,
        watermark: Millis,
        closed: Millis,
    ) -> Result<Option<RecordBatch>, EngineError> {
        let out = self.due(watermark)?;
        self.windows.retain(|_, w| w.end > closed);
        let gap = self.session_gap();
        self.sessions.retain(|_, list| {
            list.retain(|s| s.last.saturating_add(gap) > closed);
            !list.is_empty()
        });
        Ok(out)
    }

    /// A `SESSION` view's gap; 0 for the others (a session's window ends at last + gap).
    fn session_gap(&self) -> Millis {
        match self.plan.view().window {
            Kind::Session { gap_ms } => gap_ms,
            _ => 0,
        }
    }

    /// Forgets, without handing anything on, every window that ended by `closed`: after a
    /// replay, which re-read records of windows already final (re-read for the windows that
    /// were not): those were handed on whole before, and what was re-read of them is partial.
    pub fn forget_final(&mut self, closed: Millis) {
        self.windows.retain(|_, w| w.end > closed);
        let gap = self.session_gap();
        self.sessions.retain(|_, list| {
            list.retain(|s| s.last.saturating_add(gap) > closed);
            !list.is_empty()
        });
    }

    /// Partial rows of every window new or changed, whatever the watermark (the end of a file).
    ///
    /// # Errors
    /// As [`ViewEngine::advance`].
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, EngineError> {
        self.advance(Millis::MAX, Millis::MIN)
    }

    fn due(&mut self, watermark: Millis) -> Result<Option<RecordBatch>, EngineError> {
        if !matches!(self.plan.view().window, Kind::Session { .. }) {
            return self.due_windows(watermark);
        }
        let plan = Arc::clone(&self.plan);
        // (start, key, end) of what goes out, in order of window then key.
        let mut due: Vec<(Millis, OwnedRow, Millis, bool)> = Vec::new();
        let gap = self.session_gap();
        for (key, list) in &self.sessions {
            for s in list {
                let end = s.last.saturating_add(gap);
                if s.dirty && end <= watermark {
                    due.push((s.start, key.clone(), end, true));
                }
            }
        }
        for (key, start, end) in self.withdrawn.drain(..) {
            due.push((start, key, end, false));
        }
        if due.is_empty() {
            return Ok(None);
        }
        due.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let others = self
            .rows
            .convert_rows(due.iter().map(|d| d.1.row()))
            .map_err(|e| plan.fail(e))?;
        let mut others = others.into_iter();
        let mut keys: Vec<ArrayRef> = Vec::with_capacity(plan.bounds.len());
        for bound in &plan.bounds {
            keys.push(match bound {
                Some(Bound::Start) => Arc::new(TimestampMillisecondArray::from_iter_values(
                    due.iter().map(|d| d.0),
                )),
                Some(Bound::End) => Arc::new(TimestampMillisecondArray::from_iter_values(
                    due.iter().map(|d| d.2),
                )),
                None => others.next().ok_or_else(|| plan.fail("keys"))?,
            });
        }
        let windows: Vec<(Millis, Millis)> = due.iter().map(|d| (d.0, d.2)).collect();
        // The accumulators of each row that stands, in order (withdrawn rows have none).
        let mut states: Vec<Option<&mut Vec<Box<dyn Accumulator>>>> = Vec::with_capacity(due.len());
        let mut wanted: HashMap<(OwnedRow, Millis), usize> = HashMap::default();
        for (i, d) in due.iter().enumerate() {
            if d.3 {
                wanted.insert((d.1.clone(), d.0), i);
            }
            states.push(None);
        }
        for (key, list) in self.sessions.iter_mut() {
            for s in list.iter_mut() {
                if let Some(i) = wanted.get(&(key.clone(), s.start)) {
                    if s.dirty {
                        s.dirty = false;
                        s.emitted = Some(s.start);
                        states[*i] = Some(&mut s.accumulators);
                    }
                }
            }
        }
        plan.partials(keys, &windows, states).map(Some)
    }
}

impl ViewEngine {
    /// `TUMBLE` and `HOP`: each record's window and group found, then one update per aggregate
    /// and window for all of the batch's records in it (late records of a window already
    /// handed on go to its late accumulators).
    fn push_windows(
        &mut self,
        rows: &Rows,
        c: &Columns<'_>,
        inputs: &[Vec<ArrayRef>],
    ) -> Result<(), EngineError> {
        let plan = Arc::clone(&self.plan);
        let fail = |e: &dyn std::fmt::Display| plan.fail(e);
        let n = rows.num_rows();
        // The batch's records by window, in order of first appearance (a batch spans few).
        let mut by_window: Vec<(Millis, Vec<u32>)> = Vec::new();
        for i in 0..n {
            if c.times.value(i) < self.cut {
                continue;
            }
            if c.ends.value(i) <= c.closed.value(i) {
                self.dropped_late += 1;
                continue;
            }
            let start = c.starts.value(i);
            let at = match by_window.iter().position(|(s, _)| *s == start) {
                Some(at) => at,
                None => {
                    by_window.push((start, Vec::with_capacity(n)));
                    by_window.len() - 1
                }
            };
            by_window[at].1.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        for (start, records) in by_window {
            let end = c.ends.value(records[0] as usize);
            let min_position = records
                .iter()
                .map(|i| c.positions.value(*i as usize))
                .min()
                .unwrap_or(0);
            let window = match self.windows.entry(start) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(Window {
                    end,
                    index: HashMap::default(),
                    keys: Vec::new(),
                    min_position,
                    phase: Phase::Open(plan.groups_accumulators()?),
                }),
            };
            window.min_position = window.min_position.min(min_position);
            let mut groups: Vec<usize> = Vec::with_capacity(records.len());
            for i in &records {
                let key = rows.row(*i as usize);
                let bytes: &[u8] = key.as_ref();
                let g = match window.index.get(bytes) {
                    Some(g) => *g,
                    None => {
                        let g = u32::try_from(window.keys.len()).map_err(|e| fail(&e))?;
                        window.index.insert(bytes.into(), g);
                        window.keys.push(bytes.into());
                        if let Phase::Closed(closed) = &mut window.phase {
                            closed.at.push(None);
                        }
                        g
                    }
                };
                groups.push(g as usize);
            }
            let values = if records.len() == n {
                inputs.to_vec()
            } else {
                take_all(inputs, &UInt32Array::from(records)).map_err(|e| fail(&e))?
            };
            match &mut window.phase {
                Phase::Open(accumulators) => {
                    let total = window.keys.len();
                    for (acc, args) in accumulators.iter_mut().zip(&values) {
                        acc.update_batch(args, &groups, None, total)
                            .map_err(|e| fail(&e))?;
                    }
                }
                Phase::Closed(Closed {
                    late,
                    late_groups,
                    late_index,
                    ..
                }) => {
                    for g in &mut groups {
                        let group = *g as u32;
                        let j = *late_index.entry(group).or_insert_with(|| {
                            late_groups.push(group);
                            (late_groups.len() - 1) as u32
                        });
                        *g = j as usize;
                    }
                    let total = late_groups.len();
                    for (acc, args) in late.iter_mut().zip(&values) {
                        acc.update_batch(args, &groups, None, total)
                            .map_err(|e| fail(&e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `TUMBLE` and `HOP`: partial rows of every window that ended by `watermark` — all its
    /// keys the first time, then the keys late records changed, their state merged with what
    /// was handed on — in order of window.
    fn due_windows(&mut self, watermark: Millis) -> Result<Option<RecordBatch>, EngineError> {
        let plan = Arc::clone(&self.plan);
        let fail = |e: &dyn std::fmt::Display| plan.fail(e);
        let mut out: Vec<(Millis, Millis, Vec<u32>, Vec<ArrayRef>)> = Vec::new();
        for (start, w) in self.windows.iter_mut() {
            if w.end > watermark {
                continue;
            }
            match &mut w.phase {
                Phase::Open(accumulators) => {
                    let states = emit(accumulators).map_err(|e| fail(&e))?;
                    let n = w.keys.len();
                    out.push((*start, w.end, (0..n as u32).collect(), states.clone()));
                    w.phase = Phase::Closed(Closed {
                        chunks: vec![states],
                        at: (0..n as u32).map(|i| Some((0, i))).collect(),
                        late: plan.groups_accumulators()?,
                        late_groups: Vec::new(),
                        late_index: HashMap::default(),
                    });
                }
                Phase::Closed(c) if !c.late_groups.is_empty() => {
                    let late = emit(&mut c.late).map_err(|e| fail(&e))?;
                    c.late = plan.groups_accumulators()?;
                    let k = c.late_groups.len();
                    // (late group, where its state handed on is) for keys handed on before.
                    let prior: Vec<(usize, (usize, usize))> = c
                        .late_groups
                        .iter()
                        .enumerate()
                        .filter_map(|(j, g)| {
                            c.at[*g as usize]
                                .map(|(chunk, row)| (j, (chunk as usize, row as usize)))
                        })
                        .collect();
                    let places: Vec<(usize, usize)> = prior.iter().map(|p| p.1).collect();
                    let prior_groups: Vec<usize> = prior.iter().map(|p| p.0).collect();
                    let every: Vec<usize> = (0..k).collect();
                    let mut merged = plan.groups_accumulators()?;
                    // State columns follow the keys and the three window columns (a view
                    // without aggregates has none).
                    let first = plan.bounds.len() + 3;
                    for (a, acc) in merged.iter_mut().enumerate() {
                        let columns = plan.state_columns(a);
                        let columns = columns.start - first..columns.end - first;
                        if !prior.is_empty() {
                            let before = columns
                                .clone()
                                .map(|col| {
                                    let chunks: Vec<&dyn Array> =
                                        c.chunks.iter().map(|ch| ch[col].as_ref()).collect();
                                    interleave(&chunks, &places)
                                })
                                .collect::<Result<Vec<ArrayRef>, _>>()
                                .map_err(|e| fail(&e))?;
                            acc.merge_batch(&before, &prior_groups, k)
                                .map_err(|e| fail(&e))?;
                        }
                        acc.merge_batch(&late[columns], &every, k)
                            .map_err(|e| fail(&e))?;
                    }
                    let states = emit(&mut merged).map_err(|e| fail(&e))?;
                    let chunk = u32::try_from(c.chunks.len()).map_err(|e| fail(&e))?;
                    for (j, g) in c.late_groups.iter().enumerate() {
                        c.at[*g as usize] = Some((chunk, j as u32));
                    }
                    c.chunks.push(states.clone());
                    c.late_index.clear();
                    out.push((*start, w.end, std::mem::take(&mut c.late_groups), states));
                }
                Phase::Closed(_) => {}
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        let parser = self.rows.parser();
        let mut keys: Vec<Row<'_>> = Vec::new();
        let mut windows: Vec<(Millis, Millis)> = Vec::new();
        for (start, end, groups, _) in &out {
            let w = self.windows.get(start).ok_or_else(|| fail(&"window"))?;
            for g in groups {
                keys.push(parser.parse(&w.keys[*g as usize]));
                windows.push((*start, *end));
            }
        }
        let mut others = self
            .rows
            .convert_rows(keys)
            .map_err(|e| fail(&e))?
            .into_iter();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(plan.bounds.len());
        for bound in &plan.bounds {
            columns.push(match bound {
                Some(Bound::Start) => Arc::new(TimestampMillisecondArray::from_iter_values(
                    windows.iter().map(|w| w.0),
                )),
                Some(Bound::End) => Arc::new(TimestampMillisecondArray::from_iter_values(
                    windows.iter().map(|w| w.1),
                )),
                None => others.next().ok_or_else(|| fail(&"keys"))?,
            });
        }
        let width = out.first().map_or(0, |o| o.3.len());
        let states = (0..width)
            .map(|col| {
                if out.len() == 1 {
                    Ok(Arc::clone(&out[0].3[col]))
                } else {
                    let parts: Vec<&dyn Array> = out.iter().map(|o| o.3[col].as_ref()).collect();
                    concat(&parts)
                }
            })
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(|e| fail(&e))?;
        plan.partials_of(columns, &windows, states).map(Some)
    }
}

/// A windowed, filtered batch's columns that place its records.
struct Columns<'a> {
    starts: &'a TimestampMillisecondArray,
    ends: &'a TimestampMillisecondArray,
    times: &'a TimestampMillisecondArray,
    positions: &'a UInt64Array,
    closed: &'a Int64Array,
}

/// Every group's state of `accumulators` (which are left empty), the aggregates' columns in
/// order.
fn emit(
    accumulators: &mut [Box<dyn GroupsAccumulator>],
) -> datafusion::common::Result<Vec<ArrayRef>> {
    let mut columns = Vec::new();
    for acc in accumulators {
        columns.extend(acc.state(EmitTo::All)?);
    }
    Ok(columns)
}

/// A session never spans two of these (UTC hours): a key with records every few seconds
/// for days would otherwise keep one session open, and a partition resuming from its first
/// record would re-read days. Cut at each hour, a replay re-reads at most an hour and the
/// allowed lateness of records. The batch answer ([`super::batch`]) cuts the same way.
pub const SESSION_SPAN_MS: Millis = 3_600_000;

/// The start of the span of time `t` (see [`SESSION_SPAN_MS`]).
pub fn session_span(t: Millis) -> Millis {
    t.div_euclid(SESSION_SPAN_MS) * SESSION_SPAN_MS
}

/// Every aggregate's inputs at the rows `indices`, in their order.
fn take_all(
    inputs: &[Vec<ArrayRef>],
    indices: &UInt32Array,
) -> Result<Vec<Vec<ArrayRef>>, datafusion::arrow::error::ArrowError> {
    inputs
        .iter()
        .map(|args| {
            args.iter()
                .map(|a| take(a.as_ref(), indices, None))
                .collect()
        })
        .collect()
}

/// Updates `accumulators` with the rows `range` of each aggregate's inputs (slices: no copy).
fn update(
    plan: &ViewPlan,
    accumulators: &mut [Box<dyn Accumulator>],
    inputs: &[Vec<ArrayRef>],
    range: std::ops::Range<usize>,
) -> Result<(), EngineError> {
    for (acc, args) in accumulators.iter_mut().zip(inputs) {
        let slice: Vec<ArrayRef> = args
            .iter()
            .map(|a| a.slice(range.start, range.len()))
            .collect();
        acc.update_batch(&slice).map_err(|e| plan.fail(e))?;
    }
    Ok(())
}

/// Accepted records gathered into Arrow columns, a micro-batch at a time, with their source
/// positions. Appends to growing buffers: no allocation per record.
pub struct Batcher {
    names: StringBuilder,
    times: Vec<Millis>,
    latitudes: Vec<f64>,
    longitudes: Vec<f64>,
    distances: Vec<f64>,
    health: Vec<i64>,
    magic: Vec<i64>,
    positions: Vec<u64>,
    closed: Vec<Millis>,
}

/// A micro-batch of accepted records: the columns, each record's position, and for each the
/// time windows had to end after to take it (see [`ViewEngine::push`]).
pub type Records = (RecordBatch, Vec<u64>, Vec<Millis>);

impl Default for Batcher {
    fn default() -> Self {
        Batcher {
            names: StringBuilder::new(),
            times: Vec::new(),
            latitudes: Vec::new(),
            longitudes: Vec::new(),
            distances: Vec::new(),
            health: Vec::new(),
            magic: Vec::new(),
            positions: Vec::new(),
            closed: Vec::new(),
        }
    }
}

impl Batcher {
    /// Adds one accepted record read at `position`, when windows ending by `closed` could take
    /// no record any more.
    pub fn push(&mut self, r: &crate::record::Telemetry<'_>, position: u64, closed: Millis) {
        self.closed.push(closed);
        self.names.append_value(&r.name);
        self.times.push(r.status_time);
        self.latitudes.push(r.latitude);
        self.longitudes.push(r.longitude);
        self.distances.push(r.distance);
        self.health.push(r.health_points);
        self.magic.push(r.magic_points);
        self.positions.push(position);
    }

    /// The oldest position of a record gathered.
    pub fn min_position(&self) -> Option<u64> {
        self.positions.iter().copied().min()
    }

    /// Records gathered.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The records gathered so far; empties it.
    ///
    /// # Errors
    /// Never in practice: the columns are built to the schema.
    pub fn take(&mut self) -> Result<Records, datafusion::arrow::error::ArrowError> {
        let names = self.names.finish();
        let batch = RecordBatch::try_new(
            record_schema(),
            vec![
                Arc::new(names),
                Arc::new(TimestampMillisecondArray::from(std::mem::take(
                    &mut self.times,
                ))),
                Arc::new(Float64Array::from(std::mem::take(&mut self.latitudes))),
                Arc::new(Float64Array::from(std::mem::take(&mut self.longitudes))),
                Arc::new(Float64Array::from(std::mem::take(&mut self.distances))),
                Arc::new(Int64Array::from(std::mem::take(&mut self.health))),
                Arc::new(Int64Array::from(std::mem::take(&mut self.magic))),
            ],
        )?;
        Ok((
            batch,
            std::mem::take(&mut self.positions),
            std::mem::take(&mut self.closed),
        ))
    }
}

/// The final rows of an engine that has seen everything: each window and key's partial, made
/// into the view's row (`revision` 0), in order of window then key. For one engine over all the
/// records (`stampede aggregate --view`, tests).
///
/// # Errors
/// As [`ViewPlan::finish`].
pub fn final_rows(engine: &mut ViewEngine) -> Result<Option<RecordBatch>, EngineError> {
    let Some(partials) = engine.flush()? else {
        return Ok(None);
    };
    let plan = Arc::clone(engine.plan());
    // In order of window, then key (the engine hands windows on in order, keys as first seen).
    let k = plan.bounds.len();
    let mut order: Vec<ArrayRef> = vec![Arc::clone(partials.column(k))];
    for (i, bound) in plan.bounds.iter().enumerate() {
        if bound.is_none() {
            order.push(Arc::clone(partials.column(i)));
        }
    }
    let sorter = RowConverter::new(
        order
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )
    .map_err(|e| plan.fail(e))?;
    let sort_rows = sorter.convert_columns(&order).map_err(|e| plan.fail(e))?;
    let mut sorted: Vec<u32> = (0..partials.num_rows() as u32).collect();
    sorted.sort_by(|a, b| sort_rows.row(*a as usize).cmp(&sort_rows.row(*b as usize)));
    let partials =
        datafusion::arrow::compute::take_record_batch(&partials, &UInt32Array::from(sorted))
            .map_err(|e| plan.fail(e))?;
    let groups: Vec<_> = (0..partials.num_rows())
        .filter(|i| plan.partial_window(&partials, *i).2)
        .map(|i| i..i + 1)
        .collect();
    let (rows, _) = plan.finish(&partials, &groups)?;
    let revisions = vec![0; rows.num_rows()];
    plan.with_revisions(&rows, revisions).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::archive::target::Target;
    use crate::query::{context, json_rows, run, Answer, Limits, Tables};
    use crate::time::format_status_time;
    use crate::view::{batch, plan::parse};
    use datafusion::arrow::array::StringArray;
    use std::collections::HashMap;

    const T0: Millis = 1_521_343_200_000;

    /// Four unicorns over 14 minutes, a little out of order, some weak, and a few records a
    /// five minutes late.
    fn records() -> Vec<(String, Millis, f64, f64, i64)> {
        let mut out = Vec::new();
        for step in 0..84i64 {
            for (u, name) in ["Shadowfax", "Rocinante", "Bucephalus", "Pegasus"]
                .iter()
                .enumerate()
            {
                let t = T0 + step * 10_000 + (u as i64) * 1_000 - (step % 3) * 4_000;
                let lat = 40.70 + (u as f64) * 0.004;
                let health = if (step + u as i64) % 5 == 0 { 80 } else { 150 };
                out.push(((*name).to_owned(), t, lat, 1.0 + u as f64, health));
            }
            // Now and then a record five minutes late: its window was emitted, and is restated.
            if step % 17 == 16 {
                out.push((
                    "Pegasus".to_owned(),
                    T0 + step * 10_000 - 300_000,
                    40.712,
                    0.5,
                    90,
                ));
            }
        }
        out
    }

    fn batch_of(records: &[(String, Millis, f64, f64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            record_schema(),
            vec![
                Arc::new(StringArray::from(
                    records.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(TimestampMillisecondArray::from(
                    records.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    records.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(vec![-73.98; records.len()])),
                Arc::new(Float64Array::from(
                    records.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    records.iter().map(|r| r.4).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(vec![100; records.len()])),
            ],
        )
        .unwrap()
    }

    /// The view's final rows kept live: its records split over `partitions` partitions by
    /// name (as the sources split them), fed in batches with a watermark that trails them so
    /// that windows close and later restate, their partials merged per window and key as the
    /// service's views output does; each key's last row, without `revision`, sorted. Also
    /// whether any row was restated.
    async fn kept_in(sql: &str, partitions: usize) -> (Vec<String>, bool) {
        let plan = Arc::new(ViewPlan::new(parse(sql).unwrap()).await.unwrap());
        let mut engines: Vec<ViewEngine> = (0..partitions)
            .map(|_| ViewEngine::new(Arc::clone(&plan)).unwrap())
            .collect();
        let all = records();
        // (key, window start) → partition → partial.
        let mut partials: HashMap<(String, Millis), HashMap<usize, RecordBatch>> = HashMap::new();
        let mut finals: HashMap<(String, Millis), String> = HashMap::new();
        let mut restated = false;
        let mut merge =
            |p: usize, batch: RecordBatch, finals: &mut HashMap<(String, Millis), String>| {
                // The batch's keys, written column by column, are the rows' keys one by one.
                let keys = plan.partial_keys(&batch).unwrap();
                for (row, written) in keys.iter().enumerate() {
                    let (start, _, live) = plan.partial_window(&batch, row);
                    let key = (plan.partial_key(&batch, row).unwrap(), start);
                    assert_eq!(*written, key.0);
                    let slot = partials.entry(key.clone()).or_default();
                    if live {
                        slot.insert(p, batch.slice(row, 1));
                    } else {
                        slot.remove(&p);
                    }
                    if slot.is_empty() {
                        finals.remove(&key);
                        continue;
                    }
                    let parts: Vec<RecordBatch> = slot.values().cloned().collect();
                    let merged =
                        datafusion::arrow::compute::concat_batches(&plan.partial_schema(), &parts)
                            .unwrap();
                    let all = 0..merged.num_rows();
                    let (rows, kept) = plan.finish(&merged, std::slice::from_ref(&all)).unwrap();
                    if !kept[0] {
                        finals.remove(&key);
                        continue;
                    }
                    let answer = Answer {
                        schema: rows.schema(),
                        batches: vec![rows],
                        truncated: false,
                    };
                    let line = json_rows(&answer).remove(0);
                    let line = serde_json::from_str::<serde_json::Value>(&line)
                        .unwrap()
                        .to_string();
                    if let Some(old) = finals.insert(key, line.clone()) {
                        restated |= old != line;
                    }
                }
            };
        for chunk in all.chunks(97) {
            for (p, engine) in engines.iter_mut().enumerate() {
                let mine: Vec<_> = chunk
                    .iter()
                    .filter(|r| r.0.len() % partitions == p)
                    .cloned()
                    .collect();
                let positions: Vec<u64> = (0..mine.len() as u64).collect();
                let closed = vec![Millis::MIN; mine.len()];
                engine.push(&batch_of(&mine), &positions, &closed).unwrap();
                let newest = chunk.iter().map(|r| r.1).max().unwrap();
                if let Some(batch) = engine.advance(newest - 5_000, Millis::MIN).unwrap() {
                    merge(p, batch, &mut finals);
                }
            }
        }
        for (p, engine) in engines.iter_mut().enumerate() {
            if let Some(batch) = engine.flush().unwrap() {
                merge(p, batch, &mut finals);
            }
        }
        let mut out: Vec<String> = finals.into_values().collect();
        out.sort();
        (out, restated)
    }

    async fn kept(sql: &str) -> (Vec<String>, bool) {
        kept_in(sql, 1).await
    }

    /// The same view in batch, by SQL alone (view::batch), over the same records archived.
    async fn batch(sql: &str) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!(
            "stampede-view-engine-{}-{}",
            std::process::id(),
            crate::time::now_ms()
        ));
        let hour = dir.join("2018/03/18/03");
        std::fs::create_dir_all(&hour).unwrap();
        let mut ndjson = String::new();
        for (name, t, lat, distance, health) in records() {
            ndjson.push_str(&format!(
                "{{\"Name\":\"{name}\",\"StatusTime\":\"{}\",\"Latitude\":{lat},\"Longitude\":-73.98,\"Distance\":{distance},\"HealthPoints\":{health},\"MagicPoints\":100}}\n",
                format_status_time(t)
            ));
        }
        std::fs::write(hour.join("wildrydes-1-x"), ndjson).unwrap();
        let tables = Tables {
            archive: Some(Target::Dir(dir.clone())),
            summaries: None,
            views: Vec::new(),
        };
        let ctx = context(
            &tables,
            Limits {
                partitions: 1,
                memory_bytes: None,
            },
        )
        .await
        .unwrap();
        let answer = run(&ctx, &batch::sql(&parse(sql).unwrap()), None)
            .await
            .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let mut out: Vec<String> = json_rows(&answer)
            .into_iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(&l)
                    .unwrap()
                    .to_string()
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn the_summary_view_kept_live_equals_its_batch_answer() {
        let sql = "CREATE VIEW summary AS SELECT name, window_start, window_end, SUM(distance) AS distance, \
                   MIN(healthpoints) AS minhealth, MAX(healthpoints) AS maxhealth, COUNT(*) AS records \
                   FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY name, window_start, window_end";
        let (live, restated) = kept(sql).await;
        assert!(!live.is_empty());
        assert!(restated, "late records restated some windows");
        assert_eq!(live, batch(sql).await);
    }

    #[tokio::test]
    async fn a_hopping_view_kept_live_equals_its_batch_answer() {
        let sql = "CREATE VIEW fleet AS SELECT window_start, window_end, COUNT(*) AS records, AVG(distance) AS distance, \
                   approx_distinct(name) AS unicorns \
                   FROM HOP(wildrydes, statustime, INTERVAL '1' MINUTE, INTERVAL '3' MINUTE) GROUP BY window_start, window_end";
        assert_eq!(kept(sql).await.0, batch(sql).await);
    }

    /// A view with no aggregate at all (the keys seen per window), restated by late records.
    #[tokio::test]
    async fn a_view_without_aggregates_kept_live_equals_its_batch_answer() {
        let sql = "CREATE VIEW seen AS SELECT name, window_start \
                   FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY name, window_start";
        let (live, restated) = kept(sql).await;
        assert_eq!(live, batch(sql).await);
        assert!(!restated, "no value to restate");
    }

    #[tokio::test]
    async fn a_fleet_wide_view_over_two_partitions_equals_its_batch_answer() {
        let sql = "CREATE VIEW fleet AS SELECT window_start, COUNT(*) AS records, SUM(distance) AS distance, \
                   approx_distinct(name) AS unicorns, MIN(healthpoints) AS weakest, \
                   last_value(latitude ORDER BY statustime) AS lat \
                   FROM HOP(wildrydes, statustime, INTERVAL '1' MINUTE, INTERVAL '2' MINUTE) GROUP BY window_start";
        let (live, restated) = kept_in(sql, 2).await;
        assert!(restated, "late records restated some windows");
        assert_eq!(live, batch(sql).await);
    }

    #[tokio::test]
    async fn sessions_kept_live_equal_their_batch_answer_merged_when_bridged() {
        // Pegasus's late records fall in its gaps: a late record bridges two rides.
        let sql = "CREATE VIEW rides AS SELECT name, window_start, window_end, COUNT(*) AS records, \
                   SUM(distance) AS distance, MIN(healthpoints) AS weakest \
                   FROM SESSION(wildrydes, statustime, INTERVAL '6' SECOND) GROUP BY name, window_start, window_end";
        let (live, _) = kept(sql).await;
        assert!(live.len() > 10, "{live:?}");
        assert_eq!(live, batch(sql).await);
    }

    /// Two rides handed on, then a late record between them: one ride, the second withdrawn.
    #[tokio::test]
    async fn a_late_record_bridging_two_sessions_merges_them_and_withdraws_one() {
        let sql = "CREATE VIEW rides AS SELECT name, window_start, window_end, COUNT(*) AS n \
                   FROM SESSION(wildrydes, statustime, INTERVAL '6' SECOND) GROUP BY name, window_start, window_end";
        let plan = Arc::new(ViewPlan::new(parse(sql).unwrap()).await.unwrap());
        let mut engine = ViewEngine::new(Arc::clone(&plan)).unwrap();
        let at = |secs: i64| ("Shadowfax".to_owned(), T0 + secs * 1_000, 40.7, 1.0, 100);
        engine
            .push(&batch_of(&[at(0), at(10)]), &[1, 2], &[Millis::MIN; 2])
            .unwrap();
        let first = engine.advance(T0 + 60_000, Millis::MIN).unwrap().unwrap();
        let windows: Vec<_> = (0..first.num_rows())
            .map(|r| plan.partial_window(&first, r))
            .collect();
        assert_eq!(
            windows,
            [(T0, T0 + 6_000, true), (T0 + 10_000, T0 + 16_000, true)]
        );
        engine
            .push(&batch_of(&[at(5)]), &[3], &[Millis::MIN])
            .unwrap();
        assert_eq!(engine.low_water(), Some(1));
        let second = engine.advance(T0 + 60_000, Millis::MIN).unwrap().unwrap();
        let windows: Vec<_> = (0..second.num_rows())
            .map(|r| plan.partial_window(&second, r))
            .collect();
        assert_eq!(
            windows,
            [(T0, T0 + 16_000, true), (T0 + 10_000, T0 + 10_000, false)],
            "the merged ride restated under its start; the second withdrawn"
        );
        let (rows, _) = plan.finish(&second, std::slice::from_ref(&(0..1))).unwrap();
        let n = rows
            .column(3)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(n.value(0), 3);
        // Past the lateness, the ride is forgotten and nothing holds a position back.
        assert!(engine.advance(T0 + 60_000, T0 + 30_000).unwrap().is_none());
        assert_eq!((engine.windows(), engine.low_water()), (0, None));
    }

    /// Aggregates of integer columns that take floating-point numbers (AVG,
    /// approx_percentile_cont) read them through DataFusion's type coercion, as in batch.
    #[tokio::test]
    async fn aggregates_of_integer_columns_are_coerced_as_in_batch() {
        let sql = "CREATE VIEW vitals AS SELECT window_start, AVG(healthpoints) AS mean_health, \
                   approx_percentile_cont(healthpoints, 0.5) AS median_health, AVG(magicpoints) AS mean_magic \
                   FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY window_start";
        let (live, _) = kept_in(sql, 2).await;
        assert!(!live.is_empty());
        assert_eq!(live, batch(sql).await);
    }

    #[tokio::test]
    async fn where_having_and_expressions_kept_live_equal_their_batch_answer() {
        let sql = "CREATE VIEW weak AS SELECT window_start, round(latitude, 2) AS lat, COUNT(*) AS weak, \
                   MIN(healthpoints) + 1 AS floor \
                   FROM TUMBLE(wildrydes, statustime, INTERVAL '2' MINUTE) WHERE healthpoints < 100 \
                   GROUP BY window_start, round(latitude, 2) HAVING COUNT(*) >= 2";
        let (live, _) = kept(sql).await;
        assert!(!live.is_empty());
        assert_eq!(live, batch(sql).await);
    }
}
