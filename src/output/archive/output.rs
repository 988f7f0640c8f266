//! The archive output: buffers each partition's accepted records per hour of `StatusTime`, and
//! writes them as objects at size or age, answering barriers as the module docs of
//! [`archive`](super) say (that is what makes it exactly once).
//!
//! Writing never holds up the intake: a partition's objects are written by a task of their own
//! while its next records are buffered, and the barrier they end at is answered by that task
//! once they are durable. A partition has at most one such write under way (the next waits for
//! it), so its objects are written in order and a replay's skips carry from one to the next.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::PutPayload;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lines::Lines;
use super::target::Target;
use super::{ArchiveFormat, ArchiveLayout};
use crate::backoff::Backoff;
use crate::metrics::METRICS;
use crate::output::{Barrier, Classify, ErrorKind, Fields, Health, Item, Records};
use crate::record::SourceKind;
use crate::time::Millis;

const MS_PER_HOUR: Millis = 3_600_000;

/// A due buffer of a checkpointing partition with no barrier held waits this long past its age
/// for one to write at; then it is written anyway (a quiet partition may send none for a while).
const BARRIER_GRACE: Duration = Duration::from_secs(5);

/// A run of records shorter than this is copied rather than kept as a slice of its payload.
const MIN_SLICE: usize = 4 << 10;

/// A checkpointing partition's buffer is written whole at this multiple of `buffer_bytes` even
/// with no barrier to end its objects at, so that memory stays bounded if barriers stop coming.
const HARD_LIMIT_FACTOR: usize = 4;

/// How the archive writes.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Prefix scheme.
    pub layout: ArchiveLayout,
    /// Object format.
    pub format: ArchiveFormat,
    /// An object is due at this many bytes of records...
    pub buffer_bytes: usize,
    /// ... or when its oldest record has waited this long.
    pub buffer_age: Duration,
}

/// The archive output; [`ArchiveOutput::run`] is its task.
pub struct ArchiveOutput {
    writer: Arc<Writer>,
    settings: Settings,
    parts: HashMap<Arc<str>, Part>,
}

/// What the write tasks share.
struct Writer {
    target: Target,
    settings: Settings,
    health: Health,
    give_up: CancellationToken,
    /// Names the objects of sources without stable positions (HTTP, file) apart from those of
    /// earlier runs.
    run: String,
}

/// At most this many records' room is set aside for a partition's next hour (~84 bytes each,
/// not counted against `buffer_bytes`): about what an object of the default 5 MiB holds.
const MAX_RESERVED: usize = 1 << 15;

/// One partition's buffered records, held barriers and write under way.
struct Part {
    source: SourceKind,
    /// It sends barriers (Kafka, Kinesis): objects are written at barriers.
    durable: bool,
    hours: Vec<Hour>,
    bytes: usize,
    /// When the oldest buffered record arrived.
    since: Option<Instant>,
    /// Barriers that arrived while records were buffered and the buffer was not due, oldest
    /// first, each with how many records each hour held when it came.
    held: Vec<Held>,
    /// Per hour, records still to drop: they are in an object a replay found already written
    /// (applied when the next objects are written).
    skip: Vec<(i64, u64)>,
    /// The write under way; it hands back the skips left after it.
    writing: Option<JoinHandle<Result<Skips, GaveUp>>>,
    /// Records in the largest hour of the last write.
    last_written: usize,
    /// The records come with their fields (a Parquet archive).
    fields: bool,
}

/// Per hour, records still to skip (a replay found them written).
type Skips = Vec<(i64, u64)>;

/// A barrier waiting for the records before it to be written.
struct Held {
    barrier: Barrier,
    /// (hour, records buffered for it) when the barrier came: objects cut there end at it.
    marks: Vec<(i64, usize)>,
}

/// Which of a partition's buffered records a write takes.
#[derive(Debug)]
enum Cut {
    /// All of them; then the barrier given (if any) is the one they end at.
    All(Option<Barrier>),
    /// Those before the newest barrier held, which they end at.
    AtHeld,
}

/// The writer gave up (shutdown past its deadline): what it held is re-read from the last commit.
#[derive(Debug)]
struct GaveUp;

/// The records of one partition and one hour, as one object will hold them.
#[derive(Default)]
struct Hour {
    hour: i64,
    /// The records, each followed by a newline.
    lines: Lines,
    /// Where each record's line ends (after its newline).
    ends: Vec<u32>,
    /// Each record's `StatusTime`.
    times: Vec<Millis>,
    positions: Vec<u64>,
    /// Kinesis sequence numbers, else empty.
    sequences: Vec<String>,
    /// Each record's decoded fields (for Parquet), else empty.
    fields: Vec<Fields>,
    /// With `fields`, the records' names back to back.
    names: Vec<u8>,
    /// Some record came without its fields or name: the encoder decodes every record again.
    unknown: bool,
}

impl Hour {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Drops what the pipeline decoded, for good: the records are decoded again.
    fn forget_fields(&mut self) {
        self.unknown = true;
        self.fields = Vec::new();
        self.names = Vec::new();
    }

    /// The bytes of the first `n` records' names in `names`.
    fn name_bytes(&self, n: usize) -> usize {
        let n = n.min(self.fields.len());
        self.fields[..n].iter().map(|f| f.name_len as usize).sum()
    }

    /// Room for `records` more, with their fields if `fields`.
    fn reserve(&mut self, records: usize, fields: bool) {
        self.ends.reserve(records);
        self.times.reserve(records);
        self.positions.reserve(records);
        if fields {
            self.fields.reserve(records);
            self.names.reserve(records * 16);
        }
    }

    /// Splits off and returns the records from the `n`th on.
    fn split_off(&mut self, n: usize) -> Hour {
        let n = n.min(self.len());
        let cut = if n == 0 { 0 } else { self.ends[n - 1] };
        let names = self.name_bytes(n).min(self.names.len());
        let mut rest = Hour {
            hour: self.hour,
            lines: self.lines.split_off(cut as usize),
            ends: self.ends.split_off(n),
            times: self.times.split_off(n),
            positions: self.positions.split_off(n),
            sequences: self.sequences.split_off(n.min(self.sequences.len())),
            fields: self.fields.split_off(n.min(self.fields.len())),
            names: self.names.split_off(names),
            unknown: self.unknown,
        };
        for end in &mut rest.ends {
            *end -= cut;
        }
        rest
    }

    /// Drops the first `n` records.
    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len());
        if n == 0 {
            return;
        }
        let cut = self.ends[n - 1];
        let names = self.name_bytes(n).min(self.names.len());
        self.names.drain(..names);
        self.lines.drop_front(cut as usize);
        self.ends.drain(..n);
        for end in &mut self.ends {
            *end -= cut;
        }
        self.times.drain(..n);
        self.positions.drain(..n);
        self.sequences.drain(..n.min(self.sequences.len()));
        self.fields.drain(..n.min(self.fields.len()));
    }
}

/// Adds `more` to the records of `hour` still to skip, and drops as many as it holds.
fn skip_front(skip: &mut Vec<(i64, u64)>, hour: &mut Hour, more: u64) {
    let i = match skip.iter().position(|(h, _)| *h == hour.hour) {
        Some(i) => i,
        None => {
            skip.push((hour.hour, 0));
            skip.len() - 1
        }
    };
    let entry = &mut skip[i].1;
    *entry += more;
    let n = usize::try_from(*entry)
        .unwrap_or(usize::MAX)
        .min(hour.len());
    hour.drop_front(n);
    *entry -= n as u64;
}

fn replaying(skip: &[(i64, u64)]) -> bool {
    skip.iter().any(|(_, n)| *n > 0)
}

impl Part {
    fn new(source: SourceKind) -> Part {
        Part {
            source,
            durable: source.is_durable(),
            hours: Vec::new(),
            bytes: 0,
            since: None,
            held: Vec::new(),
            skip: Vec::new(),
            writing: None,
            last_written: 0,
            fields: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.hours.iter().all(|h| h.ends.is_empty())
    }

    fn due(&self, settings: &Settings, now: Instant) -> bool {
        self.bytes >= settings.buffer_bytes
            || self
                .since
                .is_some_and(|s| now.duration_since(s) >= settings.buffer_age)
    }

    /// Waits for the write under way, if any; its skips are the partition's again.
    async fn settle(&mut self) -> Result<(), GaveUp> {
        if let Some(writing) = self.writing.take() {
            self.skip = writing.await.map_err(|_| GaveUp)??;
        }
        Ok(())
    }

    /// Takes in the accepted records of `r`.
    ///
    /// Records that were adjacent lines of the payload (an NDJSON body: each ends where the next
    /// begins but for its `\n`) are kept as one run, a slice of the payload whose own line
    /// breaks end their lines: not copied at all, unless the run is a small part of its payload
    /// (then it is copied, so as not to keep the rest alive).
    fn take(&mut self, r: &Records) {
        let before = self.bytes;
        self.fields = !r.fields.is_empty();
        let mut run = Run::default();
        // Every accepted record has its time (the pipeline pushes both together).
        let n = r.ranges.len().min(r.times.len());
        let in_payload = |i: usize| r.payload.get(r.ranges[i].clone());
        // What the pipeline decoded comes with every record, names adding up, or is not used:
        // one misplaced name would put every later one on the wrong record.
        let with_fields = !r.fields.is_empty();
        let known = r.fields.len() == r.ranges.len()
            && r.fields.iter().map(|f| f.name_len as usize).sum::<usize>() == r.names.len();
        // Where the `i`th record's name begins in `r.names`.
        let mut name_at = 0;
        let name_len = |k: usize| r.fields.get(k).map_or(0, |f| f.name_len as usize);
        let mut i = 0;
        while i < n {
            if in_payload(i).is_none() {
                name_at += name_len(i);
                i += 1;
                continue;
            }
            let hour = r.times[i].div_euclid(MS_PER_HOUR);
            let at = self.hour_index(hour);
            // The stretch of records from the `i`th on in the same hour: their lines join runs
            // one by one, their times, positions and fields are moved together.
            let mut j = i;
            while j < n && r.times[j].div_euclid(MS_PER_HOUR) == hour {
                let Some(bytes) = in_payload(j) else {
                    break;
                };
                let range = r.ranges[j].clone();
                let adjacent = run.hour == Some(at)
                    && range.start == run.end + 1
                    && r.payload.get(run.end) == Some(&b'\n');
                if !adjacent {
                    self.keep_run(r, &mut run);
                    run.hour = Some(at);
                    run.start = range.start;
                }
                run.end = range.end;
                run.ends.push(range.end);
                self.bytes += bytes.strip_suffix(b"\r").unwrap_or(bytes).len() + 1;
                j += 1;
            }
            let h = &mut self.hours[at];
            h.times.extend_from_slice(&r.times[i..j]);
            match r.positions.get(i..j) {
                Some(positions) => h.positions.extend_from_slice(positions),
                None => h
                    .positions
                    .extend((i..j).map(|k| r.positions.get(k).copied().unwrap_or(0))),
            }
            if let Some(sequences) = r.sequences.get(i..j.min(r.sequences.len())) {
                h.sequences.extend_from_slice(sequences);
            }
            let names: usize = (i..j).map(name_len).sum();
            if with_fields {
                match (r.fields.get(i..j), r.names.get(name_at..name_at + names)) {
                    (Some(fields), Some(names)) if known && !h.unknown => {
                        h.fields.extend_from_slice(fields);
                        h.names.extend_from_slice(names);
                    }
                    _ => h.forget_fields(),
                }
            }
            name_at += names;
            i = j;
        }
        self.keep_run(r, &mut run);
        METRICS
            .archive_buffered
            .fetch_add(i64::try_from(self.bytes - before).unwrap_or(0), Relaxed);
        if self.bytes > 0 && self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// The index of `hour` among the buffered hours, added if new.
    fn hour_index(&mut self, hour: i64) -> usize {
        match self.hours.iter().rposition(|h| h.hour == hour) {
            Some(at) => at,
            None => {
                let mut h = Hour {
                    hour,
                    ..Hour::default()
                };
                // The partition's first hour since its last write will most likely hold as
                // many records as that write did: its buffers start that large instead of
                // growing through doublings (each a copy, on memory touched for the first time).
                if self.hours.is_empty() {
                    h.reserve(self.last_written.min(MAX_RESERVED), self.fields);
                }
                self.hours.push(h);
                self.hours.len() - 1
            }
        }
    }

    /// Appends the lines of `run` (in the payload of `r`) to its hour, and empties it.
    fn keep_run(&mut self, r: &Records, run: &mut Run) {
        let Some(at) = run.hour.take() else {
            return;
        };
        let payload = &r.payload;
        let h = &mut self.hours[at];
        let lines = payload.get(run.start..run.end).unwrap_or_default();
        // A line of the archive is exactly one record, for line-based readers (Athena, jq).
        // The run's line breaks are the `\n`s between its records, unless a record holds one
        // or a CR (an array's element spanning lines, a CRLF line end): then record by record.
        // Plain lines hold neither, as the framing found on its pass.
        let one_per_line = r.plain_lines
            || memchr::memchr2_iter(b'\n', b'\r', lines).count() + 1 == run.ends.len();
        if one_per_line {
            let base = h.lines.len();
            h.ends.extend(
                run.ends
                    .iter()
                    .map(|&end| u32::try_from(base + (end - run.start) + 1).unwrap_or(u32::MAX)),
            );
            // A slice keeps the whole payload alive: only a run that is most of it is kept so
            // (memory stays within twice what is counted); a small one is copied.
            if lines.len() < MIN_SLICE || lines.len() * 2 < payload.len() {
                h.lines.push_line(lines);
            } else if payload.get(run.end) == Some(&b'\n') {
                h.lines.push_piece(payload.slice(run.start..=run.end));
            } else {
                // The payload's last line has no `\n` of its own: the lines before it are a
                // slice, it is copied with one.
                let last = run
                    .ends
                    .len()
                    .checked_sub(2)
                    .map_or(run.start, |i| run.ends[i] + 1);
                if last > run.start {
                    h.lines.push_piece(payload.slice(run.start..last));
                }
                h.lines
                    .push_line(payload.get(last..run.end).unwrap_or_default());
            }
        } else {
            let mut start = run.start;
            for &end in &run.ends {
                push_line(h, payload.get(start..end).unwrap_or_default());
                start = end + 1;
            }
        }
        run.ends.clear();
    }
}

/// Records of one hour that were adjacent lines of a payload, not yet copied.
#[derive(Default)]
struct Run {
    /// Index of their hour; `None` when the run is empty.
    hour: Option<usize>,
    /// Where the first begins and the last ends in the payload.
    start: usize,
    end: usize,
    /// Where each ends in the payload.
    ends: Vec<usize>,
}

/// Appends one record to `h` as one line. An NDJSON record holds no line break (payloads are
/// split at them) but may end in CR; an element of a JSON array may span lines. Either way a
/// line break in an accepted record is whitespace between tokens (a string cannot hold one
/// unescaped), so it becomes a space and the record means the same.
fn push_line(h: &mut Hour, bytes: &[u8]) {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if memchr::memchr2(b'\n', b'\r', bytes).is_none() {
        h.lines.push_line(bytes);
    } else {
        let flat = |&b: &u8| if b == b'\n' || b == b'\r' { b' ' } else { b };
        h.lines
            .push_line(&bytes.iter().map(flat).collect::<Vec<u8>>());
    }
    h.ends
        .push(u32::try_from(h.lines.len()).unwrap_or(u32::MAX));
}

impl ArchiveOutput {
    /// An archive writing to `target`; `give_up` fires when shutdown passes its deadline.
    pub fn new(
        target: Target,
        settings: Settings,
        health: Health,
        give_up: CancellationToken,
    ) -> ArchiveOutput {
        ArchiveOutput {
            writer: Arc::new(Writer {
                target,
                settings,
                health,
                give_up,
                run: format!("{}.{}", crate::time::now_ms(), std::process::id()),
            }),
            settings,
            parts: HashMap::new(),
        }
    }

    /// Runs until its input closes (then writes whatever is buffered) or it gives up.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Item>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => self.take(item).await,
                    None => break,
                },
                _ = tick.tick() => self.tick().await,
            };
            if result.is_err() {
                return;
            }
        }
        if self.finish().await.is_ok() {
            tracing::info!(target = %self.writer.target.describe(), "archive: everything written");
        }
    }

    /// Writes what every partition holds and waits for every write.
    async fn finish(&mut self) -> Result<(), GaveUp> {
        let names: Vec<Arc<str>> = self.parts.keys().cloned().collect();
        for name in names {
            self.write_part(&name, Cut::All(None)).await?;
            if let Some(part) = self.parts.get_mut(&name) {
                part.settle().await?;
            }
        }
        Ok(())
    }

    async fn take(&mut self, item: Item) -> Result<(), GaveUp> {
        match item {
            Item::Records(r) => {
                let part = self
                    .parts
                    .entry(Arc::clone(&r.partition))
                    .or_insert_with(|| Part::new(r.source));
                part.take(&r);
                let (bytes, held) = (part.bytes, !part.held.is_empty());
                if !part.durable {
                    if bytes >= self.settings.buffer_bytes {
                        self.write_part(&r.partition, Cut::All(None)).await?;
                    }
                } else if bytes >= self.settings.buffer_bytes && held {
                    // Busy: the objects end at the newest barrier held, which commits.
                    self.write_part(&r.partition, Cut::AtHeld).await?;
                } else if bytes >= self.settings.buffer_bytes * HARD_LIMIT_FACTOR {
                    self.write_part(&r.partition, Cut::All(None)).await?;
                }
            }
            Item::Barrier(barrier) => self.barrier(barrier).await?,
            Item::Summaries(..)
            | Item::DeadLetters(_)
            | Item::Alerts { .. }
            | Item::Views { .. } => {}
        }
        Ok(())
    }

    async fn barrier(&mut self, barrier: Barrier) -> Result<(), GaveUp> {
        let name = Arc::clone(&barrier.partition);
        let Some(part) = self.parts.get_mut(&name) else {
            // Nothing was ever buffered for it here.
            barrier.done();
            return Ok(());
        };
        part.durable = true;
        if part.is_empty() {
            // What came before it is in the write under way, if any.
            part.settle().await?;
            if replaying(&part.skip) {
                barrier.skip();
            } else {
                barrier.done();
                if part.held.is_empty() {
                    // A hand-off or a quiet partition: nothing left to keep.
                    self.parts.remove(&name);
                }
            }
        } else if barrier.last || part.due(&self.settings, Instant::now()) {
            self.write_part(&name, Cut::All(Some(barrier))).await?;
        } else {
            let marks = part.hours.iter().map(|h| (h.hour, h.len())).collect();
            part.held.push(Held { barrier, marks });
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), GaveUp> {
        let now = Instant::now();
        let settings = self.settings;
        let due: Vec<(Arc<str>, Cut)> = self
            .parts
            .iter()
            .filter_map(|(name, p)| {
                let age = now.duration_since(p.since?);
                let cut = if !p.durable {
                    (age >= settings.buffer_age).then_some(Cut::All(None))
                } else if !p.held.is_empty() {
                    (age >= settings.buffer_age).then_some(Cut::AtHeld)
                } else {
                    (age >= settings.buffer_age + BARRIER_GRACE).then_some(Cut::All(None))
                };
                Some((Arc::clone(name), cut?))
            })
            .collect();
        for (name, cut) in due {
            self.write_part(&name, cut).await?;
        }
        Ok(())
    }

    /// Starts writing partition `name`'s records as `cut` says (once its write under way is
    /// done). The barrier the objects end at is answered by the write, once they are durable:
    /// durable, unless a replay is still passing objects found; those held before it fell
    /// inside the objects and are skipped now.
    async fn write_part(&mut self, name: &Arc<str>, cut: Cut) -> Result<(), GaveUp> {
        let Some(part) = self.parts.get_mut(name) else {
            return Ok(());
        };
        part.settle().await?;
        let mut hours = std::mem::take(&mut part.hours);
        let mut at = None;
        let mut kept = Vec::new();
        match cut {
            Cut::All(barrier) => at = barrier,
            Cut::AtHeld => {
                if let Some(newest) = part.held.pop() {
                    for hour in &mut hours {
                        let n = newest
                            .marks
                            .iter()
                            .find(|(h, _)| *h == hour.hour)
                            .map_or(0, |(_, n)| *n);
                        let rest = hour.split_off(n);
                        if rest.len() > 0 {
                            kept.push(rest);
                        }
                    }
                    at = Some(newest.barrier);
                }
            }
        }
        for held in part.held.drain(..) {
            held.barrier.skip();
        }
        let left: usize = kept.iter().map(|h| h.lines.len()).sum();
        METRICS.archive_buffered.fetch_sub(
            i64::try_from(part.bytes - left).unwrap_or(i64::MAX),
            Relaxed,
        );
        part.bytes = left;
        part.since = (left > 0).then(Instant::now);
        part.hours = kept;
        hours.retain(|h| h.len() > 0);
        part.last_written = hours.iter().map(Hour::len).max().unwrap_or(0);
        let writer = Arc::clone(&self.writer);
        let (source, partition, skip) = (
            part.source,
            Arc::clone(name),
            std::mem::take(&mut part.skip),
        );
        let durable = part.durable;
        part.writing = Some(tokio::spawn(async move {
            let mut skip = skip;
            for mut hour in hours {
                writer
                    .write_hour(source, durable, &partition, &mut skip, &mut hour)
                    .await?;
            }
            skip.retain(|(_, n)| *n > 0);
            if let Some(barrier) = at {
                if replaying(&skip) {
                    barrier.skip();
                } else {
                    barrier.done();
                }
            }
            Ok(skip)
        }));
        Ok(())
    }
}

impl Writer {
    /// Writes one hour's records as one object, or — when a replay finds objects already
    /// written from the same first record — skips the records they hold. Records a replay
    /// found before (`skip`) are dropped first.
    async fn write_hour(
        &self,
        source: SourceKind,
        durable: bool,
        partition: &str,
        skip: &mut Vec<(i64, u64)>,
        hour: &mut Hour,
    ) -> Result<(), GaveUp> {
        let parquet = self.settings.format == ArchiveFormat::Parquet;
        skip_front(skip, hour, 0);
        while hour.len() > 0 {
            let id = match hour.sequences.first() {
                Some(sequence) => sequence.clone(),
                None if durable => hour.positions[0].to_string(),
                None => format!("{}-{}", self.run, hour.positions[0]),
            };
            let uuid = super::object_uuid(source.as_str(), partition, &id);
            let key = super::object_key(
                self.settings.layout,
                self.settings.format,
                hour.times[0],
                &uuid,
            );
            let body = if parquet {
                let (lines, ends, times, fields, names) = (
                    std::mem::take(&mut hour.lines),
                    std::mem::take(&mut hour.ends),
                    std::mem::take(&mut hour.times),
                    std::mem::take(&mut hour.fields),
                    std::mem::take(&mut hour.names),
                );
                let encoded = tokio::task::spawn_blocking(move || {
                    let known = super::columns::Known {
                        times: &times,
                        fields: &fields,
                        names: &names,
                    };
                    let out = super::columns::encode(&lines, &ends, &known);
                    (out, lines, ends, times, fields, names)
                })
                .await;
                match encoded {
                    Ok((out, lines, ends, times, fields, names)) => {
                        hour.lines = lines;
                        hour.ends = ends;
                        hour.times = times;
                        hour.fields = fields;
                        hour.names = names;
                        match out {
                            Ok(bytes) => PutPayload::from(bytes),
                            Err(e) => {
                                // Accepted records always decode: a bug. Keep them as NDJSON.
                                tracing::error!(error = %e, "archive: cannot encode Parquet; this object is NDJSON");
                                PutPayload::from_iter(hour.lines.pieces())
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "archive: the Parquet encoder failed");
                        return Err(GaveUp);
                    }
                }
            } else {
                // The pieces as they lie, uncopied.
                PutPayload::from_iter(hour.lines.pieces())
            };
            let size = body.content_length();
            let written = self
                .retry(&key, || self.target.put_new(&key, body.clone()))
                .await?;
            if written {
                METRICS.archive_objects.fetch_add(1, Relaxed);
                METRICS
                    .archive_records
                    .fetch_add(hour.len() as u64, Relaxed);
                METRICS.archive_bytes.fetch_add(size as u64, Relaxed);
                tracing::debug!(%key, records = hour.len(), bytes = size, "archive: object written");
                return Ok(());
            }
            // Written before, by a run that did not commit after it: its records are ours.
            let existing = self.retry(&key, || self.target.get(&key)).await?;
            let held = match super::columns::count_records(existing, parquet) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(%key, error = %e, "archive: an object in the way cannot be read; writing nothing more for this hour until it is removed");
                    return Err(GaveUp);
                }
            };
            METRICS.archive_found.fetch_add(1, Relaxed);
            tracing::info!(%key, records = held, "archive: object already written by an earlier run; not writing its records again");
            skip_front(skip, hour, held);
        }
        Ok(())
    }
    /// Runs `attempt` until it succeeds, backing off and reporting health, or until shutdown
    /// gives up on it.
    async fn retry<T, F, Fut>(&self, key: &str, mut attempt: F) -> Result<T, GaveUp>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, super::target::TargetError>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut failures = 0u32;
        loop {
            self.health.busy(true);
            let result = attempt().await;
            self.health.busy(false);
            match result {
                Ok(v) => {
                    if failures > 0 {
                        tracing::info!(target = %self.target.describe(), "archive: writing again");
                    }
                    self.health.set(true);
                    return Ok(v);
                }
                Err(e) => {
                    failures += 1;
                    let kind = e.kind();
                    self.health
                        .failed(kind, &format_args!("{}: {e}", self.target.describe()));
                    if kind == ErrorKind::Transient {
                        tracing::warn!(%key, error = %e, attempt = failures, "archive: write failed; retrying");
                        if failures >= 3 {
                            self.health.down(&e);
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_wait()) => {}
                        () = self.give_up.cancelled() => {
                            tracing::error!(target = %self.target.describe(), "archive: giving up; what it held is re-read from the last commit");
                            return Err(GaveUp);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Answer, Answered};
    use bytes::Bytes;
    use std::collections::BTreeMap;

    const HOUR: Millis = 3_600_000;

    /// A JSON array's element that spans lines is one line of the archive, and reads back as
    /// the record that was accepted (a line-based reader saw a forged record in its lines).
    #[test]
    fn a_record_that_spans_lines_is_archived_on_one() {
        let text = "{\"Name\":\"a\",\n\"Latitude\":999,\r\n\"StatusTime\":\"2018-03-18 03:20:00.000\",\n\"Longitude\":2,\"Distance\":1,\"HealthPoints\":150,\"MagicPoints\":150,\"Latitude\":1}";
        let accepted = crate::decode::decode(text.as_bytes()).unwrap();
        let records = Records {
            source: SourceKind::Http,
            partition: "0".into(),
            payload: Bytes::from(text),
            ranges: std::iter::once(0..text.len()).collect(),
            positions: vec![0],
            times: vec![accepted.status_time],
            sequences: Vec::new(),
            plain_lines: false,
            fields: Vec::new(),
            names: Vec::new(),
        };
        let mut part = Part::new(SourceKind::Http);
        part.take(&records);
        let lines = part.hours[0].lines.to_vec();
        assert_eq!(lines.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(lines.ends_with(b"\n"));
        let read = crate::decode::decode(&lines[..lines.len() - 1]).unwrap();
        assert_eq!(read, accepted);
    }

    /// A run that is most of its payload is kept as a slice of it, uncopied; a small part of a
    /// payload (the rest rejected, say) is copied, so that a buffer never keeps alive much more
    /// than it counts.
    #[test]
    fn big_runs_are_slices_of_their_payload_and_small_ones_copies() {
        let payload: String = (0..200)
            .map(|i| format!("{{\"line\":{i:050}}}\n"))
            .collect();
        let ranges: Vec<_> = payload
            .match_indices('\n')
            .scan(0, |start, (nl, _)| {
                let range = *start..nl;
                *start = nl + 1;
                Some(range)
            })
            .collect();
        let body = Bytes::from(payload.clone());
        let records = |ranges: Vec<std::ops::Range<usize>>| Records {
            source: SourceKind::Http,
            partition: "0".into(),
            payload: body.clone(),
            positions: (0..ranges.len() as u64).collect(),
            times: vec![0; ranges.len()],
            ranges,
            sequences: Vec::new(),
            plain_lines: false,
            fields: Vec::new(),
            names: Vec::new(),
        };
        let mut whole = Part::new(SourceKind::Http);
        whole.take(&records(ranges.clone()));
        let pieces = whole.hours[0].lines.pieces();
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].as_ptr(), body.as_ptr(), "kept uncopied");
        assert_eq!(whole.hours[0].lines.to_vec(), payload.as_bytes());
        // Three records of two hundred: copied.
        let mut few = Part::new(SourceKind::Http);
        few.take(&records(ranges[10..13].to_vec()));
        let pieces = few.hours[0].lines.pieces();
        assert!(pieces
            .iter()
            .all(|p| !body.as_ptr_range().contains(&p.as_ptr())));
        let want: Vec<u8> = ranges[10..13]
            .iter()
            .flat_map(|r| payload.as_bytes()[r.clone()].iter().chain(b"\n"))
            .copied()
            .collect();
        assert_eq!(few.hours[0].lines.to_vec(), want);
    }

    /// Adjacent lines are taken as runs; a blank line, another hour or a rejected record
    /// between them starts a new run, a run with a record ending in CR is copied record by
    /// record, and every record still ends its own line.
    #[test]
    fn runs_of_adjacent_lines_keep_one_record_per_line() {
        let payload = "a1\na2\n\na3\na4\r\nb1\na5\nbad\na6\na7";
        let find = |text: &str| {
            let start = payload.find(text).unwrap();
            start..start + text.len()
        };
        let accepted = [
            ("a1", 0),
            ("a2", 0),
            ("a3", 0),
            ("a4\r", 0),
            ("b1", HOUR),
            ("a5", 0),
            ("a6", 0),
            ("a7", 0),
        ];
        let records = Records {
            source: SourceKind::Http,
            partition: "0".into(),
            payload: Bytes::from(payload),
            ranges: accepted.iter().map(|(text, _)| find(text)).collect(),
            positions: (0..8).collect(),
            times: accepted.iter().map(|&(_, t)| t).collect(),
            sequences: Vec::new(),
            plain_lines: false,
            fields: Vec::new(),
            names: Vec::new(),
        };
        let mut part = Part::new(SourceKind::Http);
        part.take(&records);
        assert_eq!(part.hours.len(), 2);
        let (first, second) = (&part.hours[0], &part.hours[1]);
        assert_eq!(first.hour, 0);
        assert_eq!(first.lines.to_vec(), b"a1\na2\na3\na4\na5\na6\na7\n");
        assert_eq!(first.ends, [3, 6, 9, 12, 15, 18, 21]);
        assert_eq!(first.positions, [0, 1, 2, 3, 5, 6, 7]);
        assert_eq!(second.hour, 1);
        assert_eq!(second.lines.to_vec(), b"b1\n");
        assert_eq!(
            (&second.ends[..], &second.positions[..]),
            (&[3][..], &[4][..])
        );
        assert_eq!(part.bytes, 24);
        // A second batch into the same hour goes on where the first ended.
        let more = Records {
            payload: Bytes::from("a8\na9"),
            ranges: vec![0..2, 3..5],
            positions: vec![8, 9],
            times: vec![0, 0],
            ..records
        };
        part.take(&more);
        assert_eq!(
            part.hours[0].lines.to_vec(),
            b"a1\na2\na3\na4\na5\na6\na7\na8\na9\n"
        );
        assert_eq!(part.hours[0].ends[7..], [24, 27]);
        let read: Vec<&[u8]> = part.hours[0].lines.each(&part.hours[0].ends).collect();
        assert_eq!(
            read,
            [
                &b"a1"[..],
                b"a2",
                b"a3",
                b"a4",
                b"a5",
                b"a6",
                b"a7",
                b"a8",
                b"a9"
            ]
        );
    }

    /// Record `i`: minutes apart, so that 600 records span ten hours and every object boundary
    /// meets hour prefixes; every fifth one late by an hour (it goes to the previous prefix).
    fn line(i: u64) -> (String, Millis) {
        let base = 1_521_342_000_000 + i as Millis * 60_000;
        let t = if i % 5 == 4 { base - HOUR } else { base };
        let text = format!(
            r#"{{"Name":"u{}","StatusTime":"{}","Latitude":1,"Longitude":2,"Distance":{i},"HealthPoints":150,"MagicPoints":150}}"#,
            i % 7,
            crate::time::format_status_time(t)
        );
        (text, t)
    }

    fn records(from: u64, to: u64) -> Records {
        let mut payload = Vec::new();
        let (mut ranges, mut positions, mut times) = (Vec::new(), Vec::new(), Vec::new());
        for i in from..to {
            let (text, t) = line(i);
            let start = payload.len();
            payload.extend_from_slice(text.as_bytes());
            ranges.push(start..payload.len());
            payload.push(b'\n');
            positions.push(i);
            times.push(t);
        }
        Records {
            source: SourceKind::Kafka,
            partition: "t/0".into(),
            payload: Bytes::from(payload),
            ranges,
            positions,
            times,
            sequences: Vec::new(),
            plain_lines: false,
            fields: Vec::new(),
            names: Vec::new(),
        }
    }

    fn archive(root: &std::path::Path) -> ArchiveOutput {
        let settings = Settings {
            layout: ArchiveLayout::Firehose,
            format: ArchiveFormat::Ndjson,
            // Small objects: a few barriers' worth each.
            buffer_bytes: 4_096,
            buffer_age: Duration::from_secs(3_600),
        };
        ArchiveOutput::new(
            Target::Dir(root.to_owned()),
            settings,
            Health::new("archive"),
            CancellationToken::new(),
        )
    }

    /// Feeds records `from..to` in batches of `batch`, a barrier after each (the last one
    /// `last`); returns (last position before the barrier, its answer) per barrier.
    async fn feed(
        a: &mut ArchiveOutput,
        from: u64,
        to: u64,
        batch: u64,
        last: bool,
    ) -> Vec<(u64, Option<Answer>)> {
        let mut answers: Vec<(u64, Answered)> = Vec::new();
        let mut at = from;
        while at < to {
            let end = (at + batch).min(to);
            assert!(a
                .take(Item::Records(Arc::new(records(at, end))))
                .await
                .is_ok());
            let (barrier, rx) = Barrier::new("t/0".into(), last && end == to);
            assert!(a.take(Item::Barrier(barrier)).await.is_ok());
            answers.push((end - 1, rx));
            at = end;
        }
        settle(a).await;
        answers
            .into_iter()
            .map(|(p, mut rx)| (p, rx.try_recv().ok()))
            .collect()
    }

    /// Waits for every write under way.
    async fn settle(a: &mut ArchiveOutput) {
        for part in a.parts.values_mut() {
            assert!(part.settle().await.is_ok());
        }
    }

    /// Every line of every object under `root`, counted.
    fn archived(root: &std::path::Path) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        let mut dirs = vec![root.to_owned()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    for l in std::fs::read_to_string(&path).unwrap().lines() {
                        *counts.entry(l.to_owned()).or_default() += 1;
                    }
                }
            }
        }
        counts
    }

    /// With fields (a Parquet archive), each hour keeps its records' names in step with them:
    /// taken across two hours, split as at a barrier and dropped at the front as in a replay.
    #[test]
    fn names_stay_with_their_records_through_hours_splits_and_drops() {
        let mut r = records(0, 0);
        let mut payload = Vec::new();
        for i in 0..20u64 {
            // Names of 2 to 5 bytes, so that a cut in the wrong place shows.
            let (text, t) = line(i);
            let text = text.replace("\"u", &format!("\"{}u", "x".repeat(i as usize % 4)));
            let start = payload.len();
            payload.extend_from_slice(text.as_bytes());
            r.ranges.push(start..payload.len());
            payload.push(b'\n');
            r.positions.push(i);
            r.times.push(t);
            let record = crate::decode::decode(text.as_bytes()).unwrap();
            r.fields.push(Fields::of(&record));
            r.names.extend_from_slice(record.name.as_bytes());
        }
        r.payload = Bytes::from(payload);
        // A record whose range lies outside the payload is skipped, and its name with it.
        let at: usize = r.fields[..7].iter().map(|f| f.name_len as usize).sum();
        let text = line(99).0.replace("u1", "Bogus");
        let bogus = crate::decode::decode(text.as_bytes()).unwrap();
        r.ranges.insert(7, 1 << 20..(1 << 20) + 1);
        r.positions.insert(7, 99);
        r.times.insert(7, r.times[7]);
        r.fields.insert(7, Fields::of(&bogus));
        r.names.splice(at..at, b"Bogus".iter().copied());
        // The names an hour holds, cut by their lengths; and those of its records' lines.
        let held = |h: &Hour| -> Vec<String> {
            let mut at = 0;
            h.fields
                .iter()
                .map(|f| {
                    at += f.name_len as usize;
                    String::from_utf8(h.names[at - f.name_len as usize..at].to_vec()).unwrap()
                })
                .collect()
        };
        let read = |h: &Hour| -> Vec<String> {
            h.lines
                .each(&h.ends)
                .map(|l| crate::decode::decode(l).unwrap().name.into_owned())
                .collect()
        };
        let mut part = Part::new(SourceKind::Kafka);
        part.take(&r);
        assert_eq!(part.hours.len(), 2);
        for h in &part.hours {
            assert_eq!(held(h), read(h));
            assert_eq!(h.names.len(), h.name_bytes(h.len()));
        }
        let mut hour = part.hours.swap_remove(0);
        assert_eq!(hour.len(), 16);
        let mut rest = hour.split_off(5);
        assert_eq!((hour.len(), rest.len()), (5, 11));
        assert_eq!(held(&hour), read(&hour));
        assert_eq!(held(&rest), read(&rest));
        rest.drop_front(4);
        assert_eq!(rest.len(), 7);
        assert_eq!(held(&rest), read(&rest));
        assert_eq!(rest.names.len(), rest.name_bytes(rest.len()));
        assert!(!rest.unknown);
        // A batch whose names do not add up to its fields' lengths: the hour forgets what the
        // pipeline decoded, now and for the records after, and the encoder decodes them again.
        let mut short = records(20, 25);
        for text in (20..25).map(|i| line(i).0) {
            let record = crate::decode::decode(text.as_bytes()).unwrap();
            short.fields.push(Fields::of(&record));
            short.names.extend_from_slice(record.name.as_bytes());
        }
        short.names.pop();
        part.hours = vec![rest];
        part.take(&short);
        let hour = &part.hours[0];
        assert!(hour.unknown && hour.fields.is_empty() && hour.names.is_empty());
        part.take(&r);
        let hour = &part.hours[0];
        assert!(hour.unknown && hour.fields.is_empty() && hour.names.is_empty());
    }

    async fn take(a: &mut ArchiveOutput, from: u64, to: u64) {
        let item = Item::Records(Arc::new(records(from, to)));
        assert!(a.take(item).await.is_ok());
    }

    /// A busy partition whose buffer fills between barriers still commits: its objects end at
    /// the newest barrier held, which is answered durable; what came after it stays buffered.
    #[tokio::test]
    async fn a_busy_partition_cuts_its_objects_at_the_newest_barrier_held() {
        let root =
            std::env::temp_dir().join(format!("stampede-archive-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut a = archive(&root);
        // ~190 bytes a record: 10 records are under the 4 KiB of an object, 30 over it.
        take(&mut a, 0, 10).await;
        let (first, mut first_rx) = Barrier::new("t/0".into(), false);
        assert!(a.take(Item::Barrier(first)).await.is_ok());
        let (second, mut second_rx) = Barrier::new("t/0".into(), false);
        take(&mut a, 10, 12).await;
        assert!(a.take(Item::Barrier(second)).await.is_ok());
        assert!(
            first_rx.try_recv().is_err() && second_rx.try_recv().is_err(),
            "held"
        );
        take(&mut a, 12, 40).await;
        settle(&mut a).await;
        assert_eq!(first_rx.try_recv(), Ok(Answer::Skip), "inside the objects");
        assert_eq!(
            second_rx.try_recv(),
            Ok(Answer::Durable),
            "the objects end at it"
        );
        let want: BTreeMap<String, u32> = (0..12).map(|i| (line(i).0, 1)).collect();
        assert_eq!(archived(&root), want);
        let part = &a.parts["t/0"];
        assert_eq!(
            part.hours.iter().map(Hour::len).sum::<usize>(),
            28,
            "the rest is buffered"
        );
        assert_eq!(
            part.bytes,
            part.hours.iter().map(|h| h.lines.len()).sum::<usize>()
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A run writes objects past its last commit and dies; the next run replays from that commit
    /// in batches of another size: each record is archived once, and only objects' edges are
    /// commit points.
    #[tokio::test]
    async fn a_replay_after_a_crash_writes_every_record_once() {
        let root =
            std::env::temp_dir().join(format!("stampede-archive-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut first = archive(&root);
        first.writer.target.prepare().await.unwrap();
        let answers = feed(&mut first, 0, 400, 10, false).await;
        let durable: Vec<u64> = answers
            .iter()
            .filter(|(_, a)| *a == Some(Answer::Durable))
            .map(|(p, _)| *p)
            .collect();
        assert!(
            answers.iter().any(|(_, a)| *a == Some(Answer::Skip)),
            "some barriers fall inside objects"
        );
        assert!(durable.len() >= 3, "objects end at barriers: {durable:?}");
        // The crash: the newest durable checkpoint was not committed; the one before was.
        let committed = durable[durable.len() - 2];
        drop(first);
        let before = archived(&root);
        assert!(before.values().all(|n| *n == 1));

        let found = METRICS.archive_found.load(Relaxed);
        let mut second = archive(&root);
        let answers = feed(&mut second, committed + 1, 600, 33, true).await;
        assert!(
            METRICS.archive_found.load(Relaxed) > found,
            "the replay met the objects written after the commit"
        );
        assert_eq!(
            answers.last().unwrap().1,
            Some(Answer::Durable),
            "the last barrier commits"
        );
        let after = archived(&root);
        let want: BTreeMap<String, u32> = (0..600).map(|i| (line(i).0, 1)).collect();
        assert_eq!(after.len(), want.len(), "every record archived");
        assert_eq!(after, want, "each exactly once");
        let _ = std::fs::remove_dir_all(&root);
    }
}
