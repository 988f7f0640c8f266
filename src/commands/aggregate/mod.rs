//! Batch mode (`stampede aggregate`): NDJSON files in order, as one partition, through the same
//! decode and window code as the service; the final summary of every window out.
//!
//! Sits at the end of the flow for files: file source → decode → window engine → here, where the
//! emitted summaries are reduced to the last revision of each (`StatusTime`, `Name`) and sorted.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::alert::{Alerts, Change, Rule};
use crate::record::{Reject, RejectReason, Summary};
use crate::time::Millis;
use crate::view::engine::{final_rows, Batcher, EngineError, Records, ViewEngine};
use crate::window::{Accepted, Engine, TimeMode, WindowConfig};
use datafusion::arrow::array::RecordBatch;

mod chunks;
mod command;

pub use command::run as command;
pub use command::{Args, TimeArg, WindowArgs};

/// The decoding threads `stampede aggregate` uses by default: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// How often (in records) the engine is asked to emit and evict.
const ADVANCE_EVERY: u64 = 4_096;

/// One input: a name for messages and the bytes.
pub struct Input<'a> {
    /// File path, or `-` for stdin.
    pub label: String,
    /// The NDJSON.
    pub reader: Box<dyn Read + 'a>,
}

/// What one run read and produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Inputs read.
    pub inputs: usize,
    /// Non-blank lines read.
    pub records: u64,
    /// Records accepted into a window.
    pub accepted: u64,
    /// Of those, late ones that restated a closed window.
    pub late: u64,
    /// Of the accepted, the records the engine took folded per (unicorn, window) by the decoding
    /// threads (never late ones): the same summaries, fewer steps on the engine's thread (see
    /// `window::fold`).
    pub folded: u64,
    /// Rejects by reason, indexed by [`RejectReason::index`].
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Final summaries.
    pub summaries: usize,
}

impl Report {
    /// All rejects.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

/// A rejected line, for the caller to report.
pub struct Rejected<'a> {
    /// The input's label.
    pub input: &'a str,
    /// 1-based line number within the input.
    pub line: u64,
    /// Why.
    pub reject: Reject,
    /// The raw bytes, cut at 64 KiB.
    pub raw: &'a [u8],
}

/// An input could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {input}: {source}")]
pub struct AggregateError {
    /// The input's label.
    pub input: String,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

/// Runs `inputs` through decode and one window engine, flushes at the end, and returns the final
/// summary of every window ordered by (`StatusTime`, `Name`), with the counts. `on_reject` sees
/// every rejected line, in input order.
///
/// Lines are decoded on `threads` threads (inline for 0 or 1) and fed to the engine in input
/// order, so the answer is the same for any number of threads.
///
/// # Errors
/// The first input that cannot be read; what was read before is lost with it.
pub fn aggregate<'a>(
    inputs: impl IntoIterator<Item = Input<'a>>,
    cfg: WindowConfig,
    threads: usize,
    on_reject: &mut dyn FnMut(&Rejected<'_>),
) -> Result<(Vec<Summary>, Report), AggregateError> {
    run(inputs, cfg, threads, None, None, on_reject)
}

/// As [`aggregate`], also evaluating `rules` on every accepted record (CONTRACT §7): the alert
/// state changes, in the order the records caused them (`stampede aggregate --alerts`).
///
/// # Errors
/// As [`aggregate`].
pub fn aggregate_with_alerts<'a>(
    inputs: impl IntoIterator<Item = Input<'a>>,
    cfg: WindowConfig,
    threads: usize,
    rules: Arc<[Rule]>,
    on_reject: &mut dyn FnMut(&Rejected<'_>),
) -> Result<(Vec<Summary>, Vec<Change>, Report), AggregateError> {
    let mut alerts = Alerts::new(rules);
    let mut changes = Vec::new();
    let (summaries, report) = run(
        inputs,
        cfg,
        threads,
        Some((&mut alerts, &mut changes)),
        None,
        on_reject,
    )?;
    Ok((summaries, changes, report))
}

/// Runs `view` over the inputs: the records the built-in windows accept (too-late ones are not
/// counted, as in the service) go to the view's engine in micro-batches, on a thread of its own
/// beside the decoders and the window engine; its final rows come back, ordered by window then
/// key, with the summaries' report.
///
/// # Errors
/// An input cannot be read, or the view's engine failed on a batch.
pub fn aggregate_view<'a>(
    inputs: impl IntoIterator<Item = Input<'a>>,
    cfg: WindowConfig,
    threads: usize,
    view: &mut ViewEngine,
    on_reject: &mut dyn FnMut(&Rejected<'_>),
) -> Result<(Option<RecordBatch>, Report), AggregateViewError> {
    let name = view.plan().view().name.clone();
    let engine_of_thread = &mut *view;
    let report = std::thread::scope(|scope| {
        // Two batches in flight at most: the feeder waits for a busy engine, never piles up.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Records>(2);
        let engine = scope.spawn(move || -> Result<(), EngineError> {
            for (batch, positions, closed) in rx {
                engine_of_thread.push(&batch, &positions, &closed)?;
            }
            Ok(())
        });
        let mut feed = ViewFeed {
            tx: Some(tx),
            batcher: Batcher::default(),
            failed: None,
            name: name.clone(),
        };
        let ran = run(inputs, cfg, threads, None, Some(&mut feed), on_reject);
        feed.send();
        drop(feed.tx.take());
        let kept = engine.join().map_err(|_| EngineError {
            view: name.clone(),
            message: "the view's thread panicked".into(),
        })?;
        let (_, report) = ran?;
        kept?;
        if let Some(e) = feed.failed {
            return Err(AggregateViewError::from(e));
        }
        Ok(report)
    })?;
    Ok((final_rows(view)?, report))
}

/// Why a view's batch run failed.
#[derive(Debug, thiserror::Error)]
pub enum AggregateViewError {
    /// An input could not be read.
    #[error(transparent)]
    Input(#[from] AggregateError),
    /// The view's engine failed.
    #[error(transparent)]
    View(#[from] EngineError),
}

/// Accepted records on their way to a view's engine (on its own thread).
struct ViewFeed {
    tx: Option<std::sync::mpsc::SyncSender<Records>>,
    batcher: Batcher,
    failed: Option<EngineError>,
    name: String,
}

impl ViewFeed {
    /// Records a micro-batch holds: the more records each window and key gets per batch, the
    /// fewer accumulator calls per record (a unicorn's minute is 60 records).
    const BATCH: usize = 65_536;

    fn push(&mut self, record: &crate::record::Telemetry<'_>, position: u64, closed: Millis) {
        self.batcher.push(record, position, closed);
        if self.batcher.len() >= Self::BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        if self.batcher.is_empty() || self.failed.is_some() {
            return;
        }
        match self.batcher.take() {
            Ok(records) => {
                // A closed channel: the engine's thread stopped on an error, said at the end.
                if let Some(tx) = &self.tx {
                    let _ = tx.send(records);
                }
            }
            Err(e) => {
                self.failed = Some(EngineError {
                    view: self.name.clone(),
                    message: e.to_string(),
                });
            }
        }
    }
}

fn run<'a>(
    inputs: impl IntoIterator<Item = Input<'a>>,
    cfg: WindowConfig,
    threads: usize,
    mut alerts: Option<(&mut Alerts, &mut Vec<Change>)>,
    mut view: Option<&mut ViewFeed>,
    on_reject: &mut dyn FnMut(&Rejected<'_>),
) -> Result<(Vec<Summary>, Report), AggregateError> {
    let mut engine = Engine::new(WindowConfig {
        idle_timeout_ms: None,
        ..cfg
    });
    let (labels, readers): (Vec<String>, Vec<_>) =
        inputs.into_iter().map(|i| (i.label, i.reader)).unzip();
    let mut report = Report {
        inputs: labels.len(),
        ..Report::default()
    };
    let mut emitted = Vec::new();
    let mut position: u64 = 0;
    let mut arrival = wall_clock(cfg.time);
    // Lines of the current input before the chunk at hand.
    let (mut input, mut lines_before) = (0, 0);
    // Decoding threads fold the records per (unicorn, window) when nothing needs them one by one.
    let folding = (alerts.is_none() && view.is_none() && cfg.time == TimeMode::Event).then(|| {
        chunks::Folding {
            cfg,
            watermark: AtomicI64::new(Millis::MIN),
        }
    });
    let mut consume = |mut chunk: chunks::Decoded| {
        if chunk.input() != input {
            (input, lines_before) = (chunk.input(), 0);
        }
        if chunk
            .folds()
            .is_some_and(|(folds, _)| folds.earliest_end() <= engine.watermark())
        {
            chunk.unfold();
        }
        if let Some((folds, text)) = chunk.folds() {
            let first = position;
            let n = chunk.nonblank();
            for g in folds.groups() {
                engine.push_group(
                    &text[g.name.clone()],
                    g.start,
                    g.vitals,
                    folds.distances(g),
                    first + g.first as u64 + 1,
                    arrival,
                );
            }
            engine.raise_watermark_through(folds.watermark(), first + n);
            // An advance where record by record would have made one or more: when windows are
            // closed changes when they are emitted, not what they hold.
            if (first + n) / ADVANCE_EVERY > first / ADVANCE_EVERY {
                arrival = wall_clock(cfg.time);
                engine.advance(arrival, &mut emitted);
            }
            position = first + n;
            report.records += n;
            report.accepted += folds.records() as u64;
            report.folded += folds.records() as u64;
            // Only the rejected lines are left as lines.
            for line in chunk.records() {
                if let Err(reject) = line.outcome {
                    let (input, number) = (&labels[line.input], lines_before + line.line);
                    count_reject(&mut report, on_reject, input, number, line.raw, reject);
                }
            }
        } else {
            for line in chunk.records() {
                report.records += 1;
                position += 1;
                if position.is_multiple_of(ADVANCE_EVERY) {
                    arrival = wall_clock(cfg.time);
                    engine.advance(arrival, &mut emitted);
                }
                let outcome = line.outcome.and_then(|record| {
                    let closed = engine.accepted_after();
                    let accepted = engine
                        .push(&record, position, arrival)
                        .map_err(|_| Reject::new(RejectReason::TooLate))?;
                    if let Some((alerts, changes)) = alerts.as_mut() {
                        alerts.evaluate(engine.last_unicorn(), &record, changes);
                    }
                    if let Some(view) = view.as_mut() {
                        view.push(&record, position, closed);
                    }
                    Ok(accepted)
                });
                match outcome {
                    Ok(accepted) => {
                        report.accepted += 1;
                        report.late += u64::from(accepted == Accepted::Late);
                    }
                    Err(reject) => {
                        let (input, number) = (&labels[line.input], lines_before + line.line);
                        count_reject(&mut report, on_reject, input, number, line.raw, reject);
                    }
                }
            }
        }
        lines_before += chunk.lines();
        if let Some(folding) = &folding {
            folding
                .watermark
                .store(engine.watermark(), Ordering::Relaxed);
        }
    };
    chunks::decode_in_order(
        chunks::Chunker::new(readers),
        threads,
        folding.as_ref(),
        &mut consume,
    )
    .map_err(|failed| AggregateError {
        input: labels[failed.input].clone(),
        source: failed.error,
    })?;
    engine.flush(&mut emitted);
    let finals = final_summaries(emitted);
    report.summaries = finals.len();
    Ok((finals, report))
}

/// Counts a rejected line (`line` of `input`) and hands it to `on_reject`.
fn count_reject(
    report: &mut Report,
    on_reject: &mut dyn FnMut(&Rejected<'_>),
    input: &str,
    line: u64,
    raw: &[u8],
    reject: Reject,
) {
    report.rejected[reject.reason.index()] += 1;
    on_reject(&Rejected {
        input,
        line,
        reject,
        raw,
    });
}

/// The last emission of every (`StatusTime`, `Name`), ordered by that key. Emissions of one key
/// come in rising revision order, so the last is the newest.
pub fn final_summaries(mut emitted: Vec<Summary>) -> Vec<Summary> {
    // Stable: among equal keys the emission order survives.
    emitted
        .sort_by(|a, b| (a.window_start, a.name.as_str()).cmp(&(b.window_start, b.name.as_str())));
    let mut finals: Vec<Summary> = Vec::with_capacity(emitted.len());
    for s in emitted {
        match finals.last_mut() {
            Some(last) if last.window_start == s.window_start && last.name == s.name => *last = s,
            _ => finals.push(s),
        }
    }
    finals
}

/// Writes summaries as NDJSON.
///
/// # Errors
/// Any write error.
pub fn write_summaries(out: &mut dyn Write, summaries: &[Summary]) -> io::Result<()> {
    write_ndjson(out, summaries, Summary::write_json)
}

/// Writes alert state changes as NDJSON.
///
/// # Errors
/// Any write error.
pub fn write_changes(out: &mut dyn Write, changes: &[Change]) -> io::Result<()> {
    write_ndjson(out, changes, Change::write_json)
}

fn write_ndjson<T>(
    out: &mut dyn Write,
    items: &[T],
    write: impl Fn(&T, &mut String),
) -> io::Result<()> {
    let mut buf = String::with_capacity(1 << 16);
    for item in items {
        write(item, &mut buf);
        buf.push('\n');
        if buf.len() >= 60_000 {
            out.write_all(buf.as_bytes())?;
            buf.clear();
        }
    }
    out.write_all(buf.as_bytes())?;
    out.flush()
}

fn wall_clock(mode: TimeMode) -> Millis {
    match mode {
        // Event time needs no clock in batch mode (idle advancement is off).
        TimeMode::Event => 0,
        TimeMode::Ingest => crate::time::now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (Vec<Summary>, Report, Vec<(u64, RejectReason)>) {
        let mut rejects = Vec::new();
        let input = Input {
            label: "t".into(),
            reader: Box::new(io::Cursor::new(text.as_bytes().to_vec())),
        };
        let (s, r) = aggregate([input], WindowConfig::default(), 1, &mut |r| {
            rejects.push((r.line, r.reject.reason))
        })
        .unwrap();
        (s, r, rejects)
    }

    fn line(name: &str, time: &str, health: i64) -> String {
        format!(
            r#"{{"Name":"{name}","StatusTime":"{time}","Latitude":1,"Longitude":2,"Distance":10.5,"HealthPoints":{health},"MagicPoints":7}}"#
        )
    }

    #[test]
    fn counts_lines_rejects_and_orders_output() {
        let text = [
            line("b", "2020-01-01 00:00:10", 5),
            String::new(),
            "{oops".into(),
            line("a", "2020-01-01 00:00:20", 6),
            line("a", "2020-01-01 00:01:20", 6),
        ]
        .join("\n");
        let (s, r, rejects) = run(&text);
        assert_eq!(
            (r.records, r.accepted, r.rejected_total(), r.summaries),
            (4, 3, 1, 3)
        );
        assert_eq!(rejects, vec![(3, RejectReason::MalformedJson)]);
        let keys: Vec<_> = s
            .iter()
            .map(|s| (s.window_start % 3_600_000, s.name.as_str()))
            .collect();
        assert_eq!(keys, vec![(0, "a"), (0, "b"), (60_000, "a")]);
    }

    /// A fleet of 500 in event-time order with trouble that lets a chunk fold (rejects, blank
    /// lines, records a little out of order, vitals past 32 bits), then with every kind of
    /// trouble: late and too late records and escaped names besides. Ten chunks or so.
    fn troubled_fleet() -> Vec<u8> {
        let mut rng = stampede_producers::Rng::new(5);
        let mut text = String::new();
        for i in 0..64_000i64 {
            let troubled = i >= 40_000;
            let name = format!("u{}", i % 500);
            let mut t = 1_521_343_200_000 + (i / 500) * 1_000 + (i % 500) * 2;
            let mut health = 100 + (i % 37);
            let mut draw = rng.below(if troubled { 400 } else { 200 });
            if !troubled && matches!(draw, 2 | 3 | 6) {
                draw = 7;
            }
            let line = match draw {
                0 => String::from("{oops"),
                1 => String::new(),
                2 => {
                    t -= 70_000;
                    String::new()
                }
                3 => {
                    t -= 3_600_000;
                    String::new()
                }
                4 => {
                    t -= 3_000;
                    String::new()
                }
                5 => {
                    health = 1 << 40;
                    String::new()
                }
                6 => String::from("{\"Name\":\"u\\u0031\",\"StatusTime\":\"2018-03-18 03:21:00\",\"Latitude\":1,\"Longitude\":2,\"Distance\":0.5,\"HealthPoints\":1,\"MagicPoints\":2}"),
                _ => String::new(),
            };
            if line.is_empty() {
                let time = crate::time::format_status_time(t);
                let distance = f64::from(u32::try_from(rng.below(1 << 20)).unwrap()) / 7.0;
                text.push_str(&format!(
                    r#"{{"Name":"{name}","StatusTime":"{time}","Latitude":1.5,"Longitude":2.5,"Distance":{distance},"HealthPoints":{health},"MagicPoints":{}}}"#,
                    -health
                ));
            } else {
                text.push_str(&line);
            }
            text.push('\n');
        }
        text.into_bytes()
    }

    /// Folding changes nothing: the same summaries, counts and rejects as the records taken one
    /// by one (as they are when alerts are evaluated), for any number of threads.
    #[test]
    fn folded_chunks_give_what_records_one_by_one_give() {
        let text = troubled_fleet();
        // Two inputs (line numbers start again), cut at a line's end.
        let cut = text[..text.len() / 3]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        let (one, two) = text.split_at(cut);
        let inputs = || {
            [("one", one), ("two", two)].map(|(label, bytes)| Input {
                label: label.into(),
                reader: Box::new(io::Cursor::new(bytes.to_vec())),
            })
        };
        let mut want_rejects = Vec::new();
        let (want, _, want_report) = aggregate_with_alerts(
            inputs(),
            WindowConfig::default(),
            1,
            Arc::from(Vec::new()),
            &mut |r| want_rejects.push((r.input.to_owned(), r.line, r.reject.reason)),
        )
        .unwrap();
        assert_eq!(want_report.folded, 0);
        assert!(want_report.late > 0 && want_report.rejected_total() > 0);
        for threads in [1, 2, 3] {
            let mut rejects = Vec::new();
            let (got, report) = aggregate(inputs(), WindowConfig::default(), threads, &mut |r| {
                rejects.push((r.input.to_owned(), r.line, r.reject.reason))
            })
            .unwrap();
            assert!(
                report.folded > 0 && report.folded < report.accepted,
                "both ways taken: {report:?}"
            );
            assert_eq!(
                Report {
                    folded: 0,
                    ..report
                },
                want_report
            );
            assert_eq!(rejects, want_rejects);
            assert_eq!(got, want, "threads {threads}");
        }
    }

    #[test]
    fn keeps_the_last_revision() {
        let mk = |name: &str, start, revision| Summary {
            name: name.into(),
            window_start: start,
            window_end: start + 60_000,
            distance: 0.0,
            min_magic_points: 0,
            max_magic_points: 0,
            min_health_points: 0,
            max_health_points: 0,
            records: revision + 1,
            revision,
        };
        let got = final_summaries(vec![
            mk("b", 0, 0),
            mk("a", 0, 0),
            mk("b", 0, 1),
            mk("a", 60_000, 0),
            mk("b", 0, 2),
        ]);
        let keys: Vec<_> = got
            .iter()
            .map(|s| (s.name.as_str(), s.window_start, s.revision))
            .collect();
        assert_eq!(keys, vec![("a", 0, 0), ("b", 0, 2), ("a", 60_000, 0)]);
    }
}
