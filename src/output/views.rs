//! The views output (CONTRACT §9): merges the partial rows every partition hands on into each
//! view's rows, writes them to the view's table with their revision, and tells the live hub.
//!
//! A window and key of a view may hold records of several partitions (a fleet-wide view holds
//! every partition's unicorns), so each partition hands on its *partial* state and this output
//! keeps, per window and key, the latest partial of each partition; the row is all of them
//! merged ([`ViewPlan::finish`]). The partials are stored beside the rows, so that a restart,
//! or a partition that moved to another instance, merges with everything said before. A row is
//! written only when it changes: `revision` 0 the first time, + 1 after; it is deleted when no
//! partial stands any more (a session merged into another) or `HAVING` stops holding. Replays
//! re-send partials equal to those stored, which change nothing: exactly once, by content.
//!
//! It is a durable output: what it was sent before a barrier is stored before it answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::row::Rows;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::store::views::{Change, SlotRef, ViewTables, ViewsError};
use super::{Health, Interest, Item, Outputs};
use crate::backoff::Backoff;
use crate::hub::HubInput;
use crate::time::Millis;
use crate::view::compile::ViewPlan;
use crate::view::registry::{LiveView, Registry};
use crate::view::step::Handed;

/// Windows and keys kept in memory before the oldest are let go (they are read back from the
/// store if a late partial comes for them).
const CACHED: usize = 200_000;

/// How long past the allowed lateness a window's partials are kept in the store: a partition
/// far behind the others (a backlog being read) may still restate it.
const KEEP_PARTIALS_MS: Millis = 86_400_000;

/// Registers the views output and starts its task.
pub fn build(
    registry: Arc<Registry>,
    tables: ViewTables,
    allowed_lateness_ms: Millis,
    outputs: &mut Outputs,
    hub: Option<mpsc::Sender<HubInput>>,
) {
    let rx = outputs.add(
        "views",
        Interest {
            views: true,
            ..Interest::default()
        },
    );
    let health = Health::new("views");
    let give_up = outputs.give_up();
    let merger = Merger {
        registry,
        tables,
        hub,
        keep_ms: allowed_lateness_ms.saturating_add(KEEP_PARTIALS_MS),
        cache: Map::default(),
        newest: HashMap::new(),
        forgotten: HashMap::new(),
        known: HashMap::new(),
        owners: HashMap::new(),
    };
    let task = {
        let health = health.clone();
        tokio::task::spawn_blocking(move || merger.run(rx, &health, &give_up))
    };
    outputs.run("views", task, health);
}

/// Puts the views to keep in `registry`: those of `files` (from `views.dir`), then those
/// defined at run time and kept in the store. A file whose SQL changed since the last start
/// answers another question: what was stored of its view is dropped.
///
/// # Errors
/// A file's view cannot be planned over the stream (naming the file), a file's view has the
/// name of one defined at run time, or the store cannot be read or written.
pub async fn restore(
    registry: &Registry,
    tables: &ViewTables,
    files: Vec<(std::path::PathBuf, crate::view::plan::ViewDef)>,
) -> Result<(), crate::setting::BadSetting> {
    use crate::setting::BadSetting;
    let stored = tables
        .off_runtime(ViewTables::defs)
        .await
        .map_err(|e| BadSetting::invalid(format!("views: {e}")))?;
    let now = crate::time::now_ms();
    for (file, def) in files {
        let label = file.display().to_string();
        let old = stored.iter().find(|d| d.name == def.name);
        if old.is_some_and(|d| !d.from_file) {
            return Err(BadSetting::key(
                "views.dir",
                format!("{label}: view {:?} was defined at run time too: DELETE /api/views/{} first, or rename the view", def.name, def.name),
            ));
        }
        let plan = ViewPlan::new(def.clone())
            .await
            .map_err(|e| BadSetting::key("views.dir", format!("{label}: {}", e.message)))?;
        let changed = old.is_some_and(|d| d.sql != def.sql);
        if changed {
            tracing::warn!(view = %def.name, file = %label, "the view's SQL changed: its stored rows are dropped and it starts afresh");
        }
        let stored_def = crate::output::store::views::Def {
            name: def.name.clone(),
            sql: def.sql.clone(),
            created: old.filter(|_| !changed).map_or(now, |d| d.created),
            from_file: true,
        };
        let put = old.is_none() || changed;
        let def = stored_def.clone();
        tables
            .off_runtime(move |t| {
                if put {
                    t.put_def(&def, changed)
                } else {
                    t.prepare(&def.name)
                }
            })
            .await
            .map_err(|e| BadSetting::key("views.dir", format!("{label}: {e}")))?;
        registry
            .add(Arc::new(LiveView::new(plan, true, stored_def.created)))
            .map_err(|e| BadSetting::key("views.dir", e))?;
    }
    for def in stored {
        if registry.get(&def.name).is_some() {
            continue;
        }
        if def.from_file {
            tracing::warn!(view = %def.name, "a view defined by a file no longer in views.dir: not computed; its rows stay in the store (DELETE /api/views/NAME removes them)");
            continue;
        }
        let planned = match crate::view::plan::parse(&def.sql) {
            Ok(parsed) => ViewPlan::new(parsed).await.map_err(|e| e.message),
            Err(r) => Err(r.to_string()),
        };
        let name = def.name.clone();
        if let Err(e) = tables.off_runtime(move |t| t.prepare(&name)).await {
            tracing::error!(view = %def.name, error = %e, "a stored view's table cannot be used: not computed");
            continue;
        }
        match planned {
            Ok(plan) => {
                if let Err(e) = registry.add(Arc::new(LiveView::new(plan, false, def.created))) {
                    tracing::error!(view = %def.name, error = %e, "a stored view is not computed");
                }
            }
            Err(e) => {
                tracing::error!(view = %def.name, error = %e, "a stored view can no longer be planned: not computed (DELETE /api/views/NAME and define it again)");
            }
        }
    }
    Ok(())
}

/// What is known of one window and key of a view.
struct Entry {
    /// Each partition's latest partial: one row of the plan's partial schema in its row
    /// format ([`ViewPlan::partial_rows`]), tagged ([`ROW_FORMAT`]) as stored.
    partials: BTreeMap<Arc<str>, Box<[u8]>>,
    /// The row as last written, without `revision`, and its revision.
    row: Option<(String, u64)>,
    /// The stored version this entry was read at, plus the writes since.
    version: u64,
}

type Slot = (Arc<str>, String, Millis);

/// A map with foldhash: slots are hashed several times per partial row.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What the merger knows is not stored of a view, so that a window it is the first to see
/// is not read back key by key (a minute's close is hundreds of thousands of new keys).
#[derive(Default)]
struct Known {
    /// Nothing of a window after this was stored when the merger first saw the view, nor
    /// written since except in `fresh` windows.
    floor: Millis,
    /// Windows after `floor` first seen by this merger: every slot of theirs it wrote is
    /// cached (a window leaves this set, and `floor` rises past it, when its slots leave the
    /// cache).
    fresh: std::collections::BTreeSet<Millis>,
}

impl Known {
    /// Whether the slot of window `start`, not cached, is certainly not stored (a window first
    /// seen now becomes fresh).
    fn absent(&mut self, start: Millis) -> bool {
        if self.fresh.contains(&start) {
            return true;
        }
        if start > self.floor {
            self.fresh.insert(start);
            return true;
        }
        false
    }

    /// Windows before `cut` (all, for `Millis::MAX`) leave the cache.
    fn dropped(&mut self, cut: Millis) {
        let kept = self.fresh.split_off(&cut);
        if let Some(last) = self.fresh.last() {
            self.floor = self.floor.max(*last);
        }
        self.fresh = kept;
    }
}

/// A batch of partial rows a partition handed on, read once.
struct Read {
    partition: Arc<str>,
    view: Arc<LiveView>,
    name: Arc<str>,
    /// The rows in the plan's row format.
    rows: Rows,
    /// Each row's key, window start and whether it stands.
    places: Vec<(String, Millis, bool)>,
}

/// Each partition's partial written to a slot (`None`: withdrawn).
type Writes = Vec<(Arc<str>, Option<Vec<u8>>)>;

struct Merger {
    registry: Arc<Registry>,
    tables: ViewTables,
    hub: Option<mpsc::Sender<HubInput>>,
    keep_ms: Millis,
    cache: Map<Slot, Entry>,
    /// Per view, what is known not to be stored.
    known: HashMap<Arc<str>, Known>,
    /// Per view name, the view its cached slots are of.
    owners: HashMap<Arc<str>, Arc<LiveView>>,
    /// Per view, the newest window start seen (its partials' garbage collection follows it).
    newest: HashMap<Arc<str>, Millis>,
    /// Per view, where partials were last dropped up to.
    forgotten: HashMap<Arc<str>, Millis>,
}

impl Merger {
    fn run(mut self, mut rx: mpsc::Receiver<Item>, health: &Health, give_up: &CancellationToken) {
        while let Some(first) = rx.blocking_recv() {
            let mut items = vec![first];
            while let Ok(item) = rx.try_recv() {
                items.push(item);
            }
            let mut barriers = Vec::new();
            let mut handed: Vec<(Arc<str>, Arc<[Handed]>)> = Vec::new();
            for item in items {
                match item {
                    Item::Views {
                        partition,
                        handed: h,
                    } => handed.push((partition, h)),
                    Item::Barrier(b) => barriers.push(b),
                    _ => {}
                }
            }
            if !handed.is_empty() {
                health.busy(true);
                let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
                loop {
                    match self.merge(&handed) {
                        Ok(()) => {
                            health.set(true);
                            break;
                        }
                        Err(e) if e.conflict => {
                            // Another instance merged a window meanwhile: read it again.
                            tracing::debug!(error = %e, "views: merging again");
                            if give_up.is_cancelled() {
                                return;
                            }
                            self.forget_cache();
                            backoff.wait_blocking();
                        }
                        Err(e) => {
                            health.failed(super::ErrorKind::Transient, &e);
                            health.down(&e);
                            tracing::error!(error = %e, "views: rows not stored; retrying");
                            if give_up.is_cancelled() {
                                // Unanswered barriers: nothing after them is committed.
                                return;
                            }
                            // What was merged in memory is read back from the store.
                            self.forget_cache();
                            backoff.wait_blocking();
                        }
                    }
                }
                health.busy(false);
            }
            for barrier in barriers {
                barrier.done();
            }
        }
    }

    /// Merges what the partitions handed on, stores what changed, tells the hub.
    fn merge(&mut self, handed: &[(Arc<str>, Arc<[Handed]>)]) -> Result<(), MergeError> {
        let reads = self.read(handed)?;
        self.load_missing(&reads)?;
        // Partials written per slot, in order; the slots touched.
        let mut written: Map<Slot, Writes> = Map::default();
        let mut touched: Vec<(Slot, Arc<LiveView>)> = Vec::new();
        for read in &reads {
            for (row, (key, start, live)) in read.places.iter().enumerate() {
                let slot: Slot = (Arc::clone(&read.name), key.clone(), *start);
                let newest = self.newest.entry(Arc::clone(&read.name)).or_insert(*start);
                *newest = (*newest).max(*start);
                let Some(entry) = self.cache.get_mut(&slot) else {
                    continue;
                };
                let partial = if *live {
                    let bytes = tagged(read.rows.row(row).as_ref());
                    entry
                        .partials
                        .insert(Arc::clone(&read.partition), bytes.clone().into());
                    Some(bytes)
                } else {
                    entry.partials.remove(&read.partition);
                    None
                };
                let writes = written.entry(slot.clone()).or_default();
                if writes.is_empty() {
                    touched.push((slot, Arc::clone(&read.view)));
                }
                writes.push((Arc::clone(&read.partition), partial));
            }
        }
        if touched.is_empty() {
            return Ok(());
        }
        // Each touched slot's row, a view at a time: one merge, one HAVING and select, one
        // rendering per view and batch, not per slot.
        let mut by_view: Vec<(Arc<LiveView>, Vec<Slot>)> = Vec::new();
        for (slot, view) in &touched {
            match by_view.iter_mut().find(|(v, _)| Arc::ptr_eq(v, view)) {
                Some((_, slots)) => slots.push(slot.clone()),
                None => by_view.push((Arc::clone(view), vec![slot.clone()])),
            }
        }
        let mut computed: HashMap<Slot, Option<String>> = HashMap::with_capacity(touched.len());
        for (view, slots) in by_view {
            let entries: Vec<Option<&Entry>> = slots.iter().map(|s| self.cache.get(s)).collect();
            match finished(&view.plan, &entries) {
                Ok(rows) => computed.extend(slots.into_iter().zip(rows)),
                Err(Failed::View(e)) => {
                    // A HAVING or select expression that fails on these values (a division by
                    // zero, say): the view stops; the others and the partials go on.
                    view.fail(e.message);
                    for (slot, entry) in slots.into_iter().zip(entries) {
                        let kept = entry.and_then(|e| e.row.as_ref().map(|(row, _)| row.clone()));
                        computed.insert(slot, kept);
                    }
                }
                Err(Failed::Arrow(e)) => return Err(e.into()),
            }
        }
        let mut changes = Vec::with_capacity(touched.len());
        let mut frames: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        let mut updates: Vec<(Slot, Option<(String, u64)>)> = Vec::new();
        for (slot, view) in touched {
            let Some(entry) = self.cache.get(&slot) else {
                continue;
            };
            let row = computed.remove(&slot).flatten();
            let old = entry.row.as_ref();
            let (row_change, new) = match (row, old) {
                (Some(row), Some((was, _))) if row == *was => (None, entry.row.clone()),
                (Some(row), old) => {
                    let revision = old.map_or(0, |(_, r)| r + 1);
                    let json = with_revision(&row, revision);
                    frames
                        .entry(Arc::clone(&slot.0))
                        .or_default()
                        .push(json.clone());
                    (Some(Some(json)), Some((row, revision)))
                }
                (None, Some(_)) => (Some(None), None),
                (None, None) => (None, None),
            };
            if let Some(Some(_)) = &row_change {
                view.rows.fetch_add(1, Relaxed);
            }
            let partials = written.remove(&slot).unwrap_or_default();
            changes.push(Change {
                view: Arc::clone(&slot.0),
                start: slot.2,
                key: slot.1.clone(),
                partials,
                row: row_change,
                version: entry.version,
            });
            updates.push((slot, new));
        }
        let forget = self.to_forget();
        self.tables.write(&changes, &forget)?;
        for (slot, row) in updates {
            if let Some(entry) = self.cache.get_mut(&slot) {
                entry.row = row;
                entry.version += 1;
            }
        }
        for (view, before) in forget {
            self.cache
                .retain(|(v, _, start), _| *v != view || *start >= before);
            if let Some(known) = self.known.get_mut(&view) {
                known.dropped(before);
            }
            self.forgotten.insert(view, before);
        }
        if self.cache.len() > CACHED {
            self.shrink();
        }
        if let Some(hub) = &self.hub {
            for (view, rows) in frames {
                let _ = hub.try_send(HubInput::ViewRows {
                    view,
                    rows: rows.into(),
                });
            }
        }
        Ok(())
    }

    /// Each batch handed on, read once: its rows in row format and each row's place. A view
    /// deleted meanwhile is skipped (its partials are of no use); a view that cannot read its
    /// keys is failed (the view, not the output).
    fn read(&self, handed: &[(Arc<str>, Arc<[Handed]>)]) -> Result<Vec<Read>, MergeError> {
        let mut reads = Vec::new();
        for (partition, handed) in handed {
            for h in handed.iter() {
                let current = self.registry.get(h.view.name());
                if !current.is_some_and(|c| Arc::ptr_eq(&c, &h.view)) {
                    continue;
                }
                let plan = &h.view.plan;
                let keys = match plan.partial_keys(&h.partials) {
                    Ok(keys) => keys,
                    Err(e) => {
                        h.view.fail(e.message);
                        continue;
                    }
                };
                let places = keys
                    .into_iter()
                    .enumerate()
                    .map(|(row, key)| {
                        let (start, _, live) = plan.partial_window(&h.partials, row);
                        (key, start, live)
                    })
                    .collect();
                reads.push(Read {
                    partition: Arc::clone(partition),
                    view: Arc::clone(&h.view),
                    name: h.view.name().into(),
                    rows: plan.partial_rows().convert_columns(h.partials.columns())?,
                    places,
                });
            }
        }
        Ok(reads)
    }

    /// Reads what is stored of every slot `reads` touch that is not cached, in one go.
    fn load_missing(&mut self, reads: &[Read]) -> Result<(), MergeError> {
        let mut missing: Vec<(Slot, Arc<LiveView>)> = Vec::new();
        let mut seen: std::collections::HashSet<Slot, foldhash::fast::RandomState> =
            std::collections::HashSet::default();
        for read in reads {
            // A view deleted and defined again under its name: what was cached of the old one
            // answers another question.
            let owner = self.owners.get(&read.name);
            if !owner.is_some_and(|o| Arc::ptr_eq(o, &read.view)) {
                if owner.is_some() {
                    self.cache.retain(|(v, _, _), _| *v != read.name);
                    self.known.remove(&read.name);
                    self.newest.remove(&read.name);
                    self.forgotten.remove(&read.name);
                }
                self.owners
                    .insert(Arc::clone(&read.name), Arc::clone(&read.view));
            }
            if !self.known.contains_key(&read.name) {
                let floor = self.tables.newest_start(&read.name)?.unwrap_or(Millis::MIN);
                self.known.insert(
                    Arc::clone(&read.name),
                    Known {
                        floor,
                        ..Known::default()
                    },
                );
            }
            for (key, start, _) in &read.places {
                let slot: Slot = (Arc::clone(&read.name), key.clone(), *start);
                if self.cache.contains_key(&slot) {
                    continue;
                }
                let absent = self
                    .known
                    .get_mut(&read.name)
                    .is_some_and(|k| k.absent(*start));
                if absent {
                    self.cache.insert(
                        slot,
                        Entry {
                            partials: BTreeMap::new(),
                            row: None,
                            version: 0,
                        },
                    );
                } else if seen.insert(slot.clone()) {
                    missing.push((slot, Arc::clone(&read.view)));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let refs: Vec<SlotRef<'_>> = missing
            .iter()
            .map(|((view, key, start), _)| (&**view, *start, key.as_str()))
            .collect();
        let stored = self.tables.load(&refs)?;
        for ((slot, view), stored) in missing.into_iter().zip(stored) {
            let mut partials = BTreeMap::new();
            for (partition, bytes) in stored.partials {
                match row_of(&view.plan, bytes) {
                    Some(row) => {
                        partials.insert(Arc::from(partition.as_str()), row);
                    }
                    // Unreadable, or of another definition of the view: nothing to merge with.
                    None => {
                        tracing::warn!(view = %slot.0, %partition, "views: a stored partial row could not be read; ignored")
                    }
                }
            }
            let row = stored.row.and_then(|json| without_revision(&json));
            let version = stored.version;
            self.cache.insert(
                slot,
                Entry {
                    partials,
                    row,
                    version,
                },
            );
        }
        Ok(())
    }

    /// Per view, the window start before which partials can go (none twice).
    fn to_forget(&self) -> Vec<(Arc<str>, Millis)> {
        self.newest
            .iter()
            .filter_map(|(view, newest)| {
                let before = newest.saturating_sub(self.keep_ms);
                let last = self.forgotten.get(view).copied().unwrap_or(Millis::MIN);
                // Once an hour of windows at most.
                (before > last.saturating_add(3_600_000)).then(|| (Arc::clone(view), before))
            })
            .collect()
    }

    /// Lets the oldest half of the cached windows go.
    fn shrink(&mut self) {
        let mut starts: Vec<Millis> = self.cache.keys().map(|s| s.2).collect();
        let mid = starts.len() / 2;
        let (_, cut, _) = starts.select_nth_unstable(mid);
        let cut = *cut;
        self.cache.retain(|s, _| s.2 >= cut);
        for known in self.known.values_mut() {
            known.dropped(cut);
        }
    }

    /// Lets every cached window go (what was merged in memory is read back from the store).
    fn forget_cache(&mut self) {
        self.cache.clear();
        for known in self.known.values_mut() {
            known.dropped(Millis::MAX);
        }
    }
}

/// Why a slot's row could not be made.
enum Failed {
    /// The view's expressions failed.
    View(crate::view::compile::EngineError),
    /// The partials could not be put together.
    Arrow(datafusion::arrow::error::ArrowError),
}

/// The rows of slots of one view from their partials, without `revision`, in order: `None`
/// for a slot not cached, with no partial standing, or whose row `HAVING` refuses.
fn finished(plan: &ViewPlan, entries: &[Option<&Entry>]) -> Result<Vec<Option<String>>, Failed> {
    let parser = plan.partial_rows().parser();
    let mut parts = Vec::new();
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for entry in entries.iter().flatten() {
        if entry.partials.is_empty() {
            continue;
        }
        let from = parts.len();
        for partial in entry.partials.values() {
            parts.push(parser.parse(&partial[1..]));
        }
        groups.push(from..parts.len());
    }
    if groups.is_empty() {
        return Ok(vec![None; entries.len()]);
    }
    let columns = plan
        .partial_rows()
        .convert_rows(parts)
        .map_err(Failed::Arrow)?;
    let merged = RecordBatch::try_new(plan.partial_schema(), columns).map_err(Failed::Arrow)?;
    let (rows, kept) = plan.finish(&merged, &groups).map_err(Failed::View)?;
    let schema = rows.schema();
    let mut lines = crate::view::json::json_rows(&schema, &[rows]).into_iter();
    let mut kept = kept.into_iter();
    Ok(entries
        .iter()
        .map(|entry| {
            let standing = entry.is_some_and(|e| !e.partials.is_empty());
            if standing && kept.next().unwrap_or(false) {
                lines.next()
            } else {
                None
            }
        })
        .collect())
}

/// `{…}` with `"revision":N` last.
fn with_revision(row: &str, revision: u64) -> String {
    match row.strip_suffix('}') {
        Some("{") | None => format!("{{\"revision\":{revision}}}"),
        Some(head) => format!("{head},\"revision\":{revision}}}"),
    }
}

/// A stored row back as (row without `revision`, revision).
fn without_revision(json: &str) -> Option<(String, u64)> {
    let at = json.rfind(",\"revision\":")?;
    let revision = json[at + 12..].trim_end_matches('}').parse().ok()?;
    Some((format!("{}}}", &json[..at]), revision))
}

/// The first byte of a stored partial in the plan's row format (one written before it was
/// kept so, in Arrow IPC, starts with 0xFF).
const ROW_FORMAT: u8 = b'R';

/// `row` (in a plan's row format) as stored: tagged.
fn tagged(row: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(row.len() + 1);
    bytes.push(ROW_FORMAT);
    bytes.extend_from_slice(row);
    bytes
}

/// A stored partial as kept (tagged row format); `None` if it is not one of `plan`'s.
fn row_of(plan: &ViewPlan, bytes: Vec<u8>) -> Option<Box<[u8]>> {
    if bytes.first() == Some(&ROW_FORMAT) {
        // Read back once here, so that a damaged one is refused rather than trusted later.
        let (codec, schema) = (plan.partial_rows(), plan.partial_schema());
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            codec
                .convert_rows([codec.parser().parse(&bytes[1..])])
                .ok()
                .and_then(|columns| RecordBatch::try_new(schema, columns).ok())
        }));
        return match read {
            Ok(Some(batch)) if batch.num_rows() == 1 => Some(bytes.into()),
            _ => None,
        };
    }
    // Arrow IPC, as an earlier version stored partials.
    let mut r = StreamReader::try_new(std::io::Cursor::new(bytes), None).ok()?;
    let batch = r.next()?.ok()?;
    if batch.schema() != plan.partial_schema() || batch.num_rows() != 1 {
        return None;
    }
    let rows = plan.partial_rows().convert_columns(batch.columns()).ok()?;
    Some(tagged(rows.row(0).as_ref()).into())
}

/// Why a batch of partials could not be merged and stored.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct MergeError {
    message: String,
    /// Another writer changed a slot since it was read.
    conflict: bool,
}

impl MergeError {
    fn new(message: impl std::fmt::Display) -> MergeError {
        MergeError {
            message: message.to_string(),
            conflict: false,
        }
    }
}

impl From<ViewsError> for MergeError {
    fn from(e: ViewsError) -> Self {
        MergeError {
            message: e.message,
            conflict: e.conflict,
        }
    }
}

impl From<datafusion::arrow::error::ArrowError> for MergeError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        MergeError::new(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_go_on_the_end_and_come_back() {
        let row = r#"{"name":"Shadowfax","n":3}"#;
        let json = with_revision(row, 4);
        assert_eq!(json, r#"{"name":"Shadowfax","n":3,"revision":4}"#);
        assert_eq!(without_revision(&json), Some((row.to_owned(), 4)));
    }
}
