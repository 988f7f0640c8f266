//! The batch path's input, cut into chunks of whole lines and decoded on every core.
//!
//! The calling thread reads each input in [`CHUNK_BYTES`] pieces, cut after the last newline (a
//! memrchr per MiB, no per-line work), and hands them out; decoding threads split the lines and
//! decode them; the calling thread takes the decoded chunks back in the order they were read and
//! feeds the one window engine. The engine therefore sees exactly the sequence a serial read
//! gives, so the output is the same byte for byte whatever the number of threads. With one
//! thread the same chunks are decoded inline: one code path, so the comparison is honest.
//!
//! When nothing needs the records one by one ([`Folding`]), a decoding thread folds a chunk
//! with no late record per (unicorn, window) ([`crate::window::fold`]), and the engine takes
//! the groups: the same summaries, in a few steps a chunk.
//!
//! A decoded record keeps its strings as ranges into its chunk's bytes (only a name with JSON
//! escapes is owned, as in the decoder), so a chunk of ~5,000 records costs a handful of
//! allocations, not one per record.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::ops::Range;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::decode::{decode_at, is_blank, Detached};
use crate::record::{Reject, RejectReason, Telemetry, MAX_RECORD_BYTES};
use crate::window::fold::{Folder, Folds};
use crate::window::WindowConfig;

/// Bytes read per chunk: about 5,000 records, so handing one over costs nothing beside decoding
/// it, and small enough that every thread has work from the first milliseconds.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Chunks read ahead per decoding thread: enough that no thread waits for the reader, few enough
/// that memory stays at a few MiB.
const AHEAD_PER_THREAD: usize = 4;

/// Whole lines of one input, read in order.
pub struct Chunk {
    /// Index of the input it came from.
    input: usize,
    /// Lines, each ended by `\n` but possibly the last (an input's end, or see `oversized`).
    bytes: Vec<u8>,
    /// The text after the last `\n` is the first [`MAX_RECORD_BYTES`] of a line too large to
    /// read; the rest of that line was skipped.
    oversized: bool,
}

/// Cuts inputs into [`Chunk`]s. Lines longer than [`MAX_RECORD_BYTES`] are never held whole:
/// their first bytes travel as the chunk's oversized tail, the rest is skipped.
pub struct Chunker<R> {
    inputs: std::vec::IntoIter<(usize, R)>,
    current: Option<(usize, R)>,
    /// The unfinished line after the last chunk's last newline.
    carry: Vec<u8>,
    /// Discarding the tail of an oversized line, up to its newline.
    skipping: bool,
}

/// An input failed to read.
pub struct ReadFailed {
    /// Index of the input.
    pub input: usize,
    /// Why.
    pub error: io::Error,
}

impl<R: Read> Chunker<R> {
    /// Reads `inputs` in order.
    pub fn new(inputs: Vec<R>) -> Self {
        let mut inputs = inputs
            .into_iter()
            .enumerate()
            .collect::<Vec<_>>()
            .into_iter();
        let current = inputs.next();
        Chunker {
            inputs,
            current,
            carry: Vec::new(),
            skipping: false,
        }
    }

    /// The next chunk, or `None` after the last input.
    ///
    /// # Errors
    /// A read error of an input (interrupted reads are retried).
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, ReadFailed> {
        loop {
            let Some((input, reader)) = self.current.as_mut() else {
                return Ok(None);
            };
            let input = *input;
            // Room for the whole chunk at once: growing the buffer as it fills would copy it.
            let mut buf = Vec::with_capacity(CHUNK_BYTES.max(self.carry.len() + 1));
            buf.append(&mut self.carry);
            let want = CHUNK_BYTES.saturating_sub(buf.len()).max(1);
            let read = reader
                .take(want as u64)
                .read_to_end(&mut buf)
                .map_err(|error| ReadFailed { input, error })?;
            // `take` stops at `want`; fewer bytes means the input is exhausted.
            let eof = read < want;
            if self.skipping {
                match memchr::memchr(b'\n', &buf) {
                    Some(nl) => {
                        buf.drain(..=nl);
                        self.skipping = false;
                    }
                    None => buf.clear(),
                }
            }
            if eof {
                self.current = self.inputs.next();
                self.skipping = false;
                if buf.is_empty() {
                    continue;
                }
                return Ok(Some(Chunk {
                    input,
                    bytes: buf,
                    oversized: false,
                }));
            }
            let whole = memchr::memrchr(b'\n', &buf).map_or(0, |nl| nl + 1);
            if buf.len() - whole > MAX_RECORD_BYTES {
                // The line after the last newline is already too large: keep its head only.
                buf.truncate(whole + MAX_RECORD_BYTES);
                self.skipping = true;
                return Ok(Some(Chunk {
                    input,
                    bytes: buf,
                    oversized: true,
                }));
            }
            self.carry = buf[whole..].to_vec();
            buf.truncate(whole);
            if !buf.is_empty() {
                return Ok(Some(Chunk {
                    input,
                    bytes: buf,
                    oversized: false,
                }));
            }
        }
    }
}

/// One non-blank line of a chunk.
struct Item {
    /// 1-based line number within the chunk.
    line: u64,
    /// The line's bytes within the chunk (at most [`MAX_RECORD_BYTES`] of an oversized one).
    raw: Range<usize>,
    outcome: Result<Detached, Reject>,
}

/// A chunk's bytes, checked as UTF-8 whole when they are (then its records' strings are read
/// back without checking each again).
enum Text {
    Checked(String),
    Unchecked(Vec<u8>),
}

impl Text {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Checked(s) => s.as_bytes(),
            Text::Unchecked(b) => b,
        }
    }
}

/// A chunk with its lines decoded.
pub struct Decoded {
    input: usize,
    text: Text,
    /// Lines in the chunk, blank ones included (line numbers continue across chunks).
    lines: u64,
    /// Non-blank lines.
    nonblank: u64,
    /// Every non-blank line; only the rejected ones when the records are folded.
    items: Vec<Item>,
    folds: Option<Folds>,
    /// As [`Chunk::oversized`].
    oversized: bool,
}

/// One line of a decoded chunk, as the engine takes it.
pub struct Line<'a> {
    /// Index of the input.
    pub input: usize,
    /// 1-based line number within the chunk.
    pub line: u64,
    /// The line's bytes, cut at [`MAX_RECORD_BYTES`].
    pub raw: &'a [u8],
    /// The record, or why it was rejected.
    pub outcome: Result<Telemetry<'a>, Reject>,
}

impl Decoded {
    /// Lines in the chunk, blank ones included.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Non-blank lines in the chunk: the source positions it takes.
    pub fn nonblank(&self) -> u64 {
        self.nonblank
    }

    /// Index of the input the chunk came from.
    pub fn input(&self) -> usize {
        self.input
    }

    /// The non-blank lines, in order; only the rejected ones when the records are folded.
    pub fn records(&self) -> impl Iterator<Item = Line<'_>> {
        let bytes = self.text.bytes();
        self.items.iter().map(move |item| Line {
            input: self.input,
            line: item.line,
            raw: &bytes[item.raw.clone()],
            outcome: match (&item.outcome, &self.text) {
                (Ok(record), Text::Checked(text)) => Ok(record.telemetry_in(text)),
                (Ok(record), Text::Unchecked(bytes)) => Ok(record.telemetry(bytes)),
                (Err(reject), _) => Err(*reject),
            },
        })
    }

    /// The records folded per (unicorn, window), with the text their names lie in, when the
    /// decoding thread folded them.
    pub fn folds(&self) -> Option<(&Folds, &str)> {
        match (&self.folds, &self.text) {
            (Some(folds), Text::Checked(text)) => Some((folds, text)),
            _ => None,
        }
    }

    /// Decodes the folded records again one by one (on the calling thread): some are late
    /// against the engine's watermark, which the decoding thread could not know.
    pub fn unfold(&mut self) {
        if self.folds.take().is_some() {
            let (items, _, _) = decode_items(&self.text, self.oversized);
            self.items = items;
        }
    }
}

/// How decoding threads fold their chunks' records per (unicorn, window) for the engine
/// ([`crate::window::fold`]): batch runs in event time with neither alerts nor views, which
/// need every record.
pub struct Folding {
    /// The windows.
    pub cfg: WindowConfig,
    /// The engine's watermark after the last chunk it took: a chunk with a record in a window
    /// that ends by it is not folded (the record is late there). It lags the engine, so the
    /// engine checks again.
    pub watermark: AtomicI64,
}

/// Calls `each` with every line of `bytes` that is not blank or is too large: its 1-based line
/// number, its bytes' range (cut at [`MAX_RECORD_BYTES`]) and whether it is too large; returns
/// the number of lines, blank ones included, or `None` as soon as `each` says to stop (false).
/// `oversized`: the text after the last newline is the head of a line too large to read.
fn each_line(
    bytes: &[u8],
    oversized: bool,
    mut each: impl FnMut(u64, Range<usize>, bool) -> bool,
) -> Option<u64> {
    let mut line = |start: usize, end: usize, forced_large: bool, number: u64| {
        let len = end - start;
        if forced_large || len > MAX_RECORD_BYTES {
            each(number, start..start + len.min(MAX_RECORD_BYTES), true)
        } else {
            is_blank(&bytes[start..end]) || each(number, start..end, false)
        }
    };
    let (mut lines, mut start) = (0, 0);
    for nl in memchr::memchr_iter(b'\n', bytes) {
        lines += 1;
        if !line(start, nl, false, lines) {
            return None;
        }
        start = nl + 1;
    }
    if start < bytes.len() {
        lines += 1;
        if !line(start, bytes.len(), oversized, lines) {
            return None;
        }
    }
    Some(lines)
}

/// Every non-blank line decoded: the items, the lines and the non-blank ones.
fn decode_items(text: &Text, oversized: bool) -> (Vec<Item>, u64, u64) {
    let (bytes, checked) = match text {
        Text::Checked(s) => (s.as_bytes(), Some(s.as_str())),
        Text::Unchecked(b) => (&b[..], None),
    };
    let mut items = Vec::with_capacity(bytes.len() / 160 + 1);
    let lines = each_line(bytes, oversized, |line, raw, too_large| {
        let outcome = if too_large {
            Err(Reject::new(RejectReason::TooLarge))
        } else {
            decode_at(bytes, checked, raw.clone()).map(|t| Detached::new(t, bytes))
        };
        items.push(Item { line, raw, outcome });
        true
    })
    .unwrap_or_default();
    let nonblank = items.len() as u64;
    (items, lines, nonblank)
}

/// The records of `text` folded, with the rejected lines as items, the lines and the non-blank
/// ones; `None` when a record is late against those before it or the engine's last watermark
/// (refused at that record), or has a name with escapes.
fn fold_items(
    text: &str,
    oversized: bool,
    folding: &Folding,
) -> Option<(Folds, Vec<Item>, u64, u64)> {
    let bytes = text.as_bytes();
    let watermark = folding.watermark.load(Ordering::Relaxed);
    let mut folder = Folder::new(folding.cfg, text, watermark);
    let mut rejects = Vec::new();
    let mut nonblank = 0;
    let lines = each_line(bytes, oversized, |line, raw, too_large| {
        nonblank += 1;
        let outcome = if too_large {
            Err(Reject::new(RejectReason::TooLarge))
        } else {
            decode_at(bytes, Some(text), raw.clone())
        };
        match outcome {
            Ok(record) => folder.push(&record).is_ok(),
            Err(reject) => {
                folder.skip();
                rejects.push(Item {
                    line,
                    raw,
                    outcome: Err(reject),
                });
                true
            }
        }
    })?;
    Some((folder.finish(), rejects, lines, nonblank))
}

/// Splits and decodes one chunk; folds its records when `folding` says so and they can be.
pub fn decode_chunk(chunk: Chunk, folding: Option<&Folding>) -> Decoded {
    // Checked whole, the chunk's lines need no check each (a chunk with a line that is not UTF-8
    // is checked line by line, as the decoder does).
    let text = match String::from_utf8(chunk.bytes) {
        Ok(text) => Text::Checked(text),
        Err(e) => Text::Unchecked(e.into_bytes()),
    };
    let folded = match (&text, folding) {
        (Text::Checked(s), Some(folding)) => fold_items(s, chunk.oversized, folding),
        _ => None,
    };
    let (items, lines, nonblank, folds) = match folded {
        Some((folds, rejects, lines, nonblank)) => (rejects, lines, nonblank, Some(folds)),
        None => {
            let (items, lines, nonblank) = decode_items(&text, chunk.oversized);
            (items, lines, nonblank, None)
        }
    };
    Decoded {
        input: chunk.input,
        text,
        lines,
        nonblank,
        items,
        folds,
        oversized: chunk.oversized,
    }
}

/// Reads every chunk of `chunker`, decodes them on `threads` threads (inline for one), and
/// hands them to `consume` in the order they were read.
///
/// # Errors
/// The first read error; chunks read before it have been consumed.
pub fn decode_in_order<R: Read>(
    mut chunker: Chunker<R>,
    threads: usize,
    folding: Option<&Folding>,
    consume: &mut dyn FnMut(Decoded),
) -> Result<(), ReadFailed> {
    if threads <= 1 {
        while let Some(chunk) = chunker.next_chunk()? {
            consume(decode_chunk(chunk, folding));
        }
        return Ok(());
    }
    let ahead = threads * AHEAD_PER_THREAD;
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = mpsc::sync_channel::<(usize, Chunk)>(ahead);
        let (done_tx, done_rx) = mpsc::sync_channel::<(usize, Decoded)>(ahead);
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..threads {
            let (jobs, done) = (Arc::clone(&job_rx), done_tx.clone());
            scope.spawn(move || loop {
                // The lock is held only to take the next chunk (once per MiB).
                let job = match jobs.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((seq, chunk)) = job else { return };
                if done.send((seq, decode_chunk(chunk, folding))).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        // Chunks sent and not yet consumed never exceed `ahead`, so neither channel blocks a
        // decoding thread for long, and `done` always has room.
        let (mut sent, mut next) = (0usize, 0usize);
        let mut early: BTreeMap<usize, Decoded> = BTreeMap::new();
        let mut reading = true;
        loop {
            while reading && sent - next < ahead {
                match chunker.next_chunk()? {
                    Some(chunk) => {
                        if job_tx.send((sent, chunk)).is_err() {
                            // A decoding thread died (it panicked): the scope reports it.
                            reading = false;
                            break;
                        }
                        sent += 1;
                    }
                    None => reading = false,
                }
            }
            if next == sent {
                return Ok(());
            }
            let decoded = match early.remove(&next) {
                Some(d) => d,
                None => loop {
                    match done_rx.recv() {
                        Ok((seq, d)) if seq == next => break d,
                        Ok((seq, d)) => {
                            early.insert(seq, d);
                        }
                        // Every decoding thread is gone: one panicked, and the scope says so.
                        Err(_) => return Ok(()),
                    }
                },
            };
            next += 1;
            consume(decoded);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use std::borrow::Cow;

    /// A reader that hands out at most `step` bytes a call, to move chunk borders around.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn record(i: usize) -> Vec<u8> {
        format!(
            r#"{{"Name":"u{}","StatusTime":"2018-03-18 03:20:{:02}","Latitude":1,"Longitude":2,"Distance":1.5,"HealthPoints":150,"MagicPoints":150}}"#,
            i % 7,
            i % 60
        )
        .into_bytes()
    }

    /// (line number, first bytes, too large) of every non-blank line, by a plain split.
    fn expected(inputs: &[Vec<u8>]) -> Vec<(usize, usize, Vec<u8>, bool)> {
        let mut out = Vec::new();
        for (input, data) in inputs.iter().enumerate() {
            let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
            if data.ends_with(b"\n") {
                lines.pop();
            }
            for (i, line) in lines.into_iter().enumerate() {
                let large = line.len() > MAX_RECORD_BYTES;
                if large || !is_blank(line) {
                    let head = line[..line.len().min(MAX_RECORD_BYTES)].to_vec();
                    out.push((input, i + 1, head, large));
                }
            }
        }
        out
    }

    fn chunked(
        inputs: &[Vec<u8>],
        step: usize,
        threads: usize,
    ) -> Vec<(usize, usize, Vec<u8>, bool)> {
        let readers: Vec<Trickle> = inputs
            .iter()
            .map(|data| Trickle {
                data: data.clone(),
                at: 0,
                step,
            })
            .collect();
        let mut out = Vec::new();
        let (mut input, mut before) = (0, 0u64);
        decode_in_order(Chunker::new(readers), threads, None, &mut |chunk| {
            if chunk.input() != input {
                (input, before) = (chunk.input(), 0);
            }
            for line in chunk.records() {
                let large = matches!(&line.outcome, Err(r) if r.reason == RejectReason::TooLarge);
                let number = usize::try_from(before + line.line).unwrap();
                out.push((line.input, number, line.raw.to_vec(), large));
            }
            before += chunk.lines();
        })
        .map_err(|f| f.error)
        .unwrap();
        out
    }

    /// Lines of every kind, with oversized ones (one just past the limit, one several chunks
    /// long) and blank ones, in two inputs, the second without a final newline.
    fn inputs() -> Vec<Vec<u8>> {
        let mut a = Vec::new();
        for i in 0..30_000 {
            match i {
                100 => a.extend(vec![b'x'; MAX_RECORD_BYTES + 1]),
                7_000 => a.extend(vec![b' '; MAX_RECORD_BYTES + 5]),
                9_000 => a.extend(vec![b'y'; 3 * CHUNK_BYTES + 17]),
                9_001 => a.extend_from_slice(b"  \r"),
                9_002 => a.extend(vec![b'z'; MAX_RECORD_BYTES]),
                _ => a.extend(record(i)),
            }
            a.push(b'\n');
        }
        let mut b = Vec::new();
        for i in 0..9_000 {
            b.extend(record(i));
            b.extend_from_slice(b"\r\n");
        }
        b.extend(vec![b'w'; MAX_RECORD_BYTES + 3]);
        vec![a, Vec::new(), b"\n\n".to_vec(), b]
    }

    #[test]
    fn chunks_hold_every_line_once_in_order_with_its_number() {
        let inputs = inputs();
        let want = expected(&inputs);
        assert!(
            want.iter().filter(|l| l.3).count() >= 4,
            "oversized lines in the test"
        );
        for (step, threads) in [(usize::MAX, 1), (4_093, 1), (usize::MAX, 2), (65_537, 3)] {
            let got = chunked(&inputs, step, threads);
            assert_eq!(got.len(), want.len(), "step {step}, threads {threads}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    (g.0, g.1, g.3),
                    (w.0, w.1, w.3),
                    "step {step}, threads {threads}"
                );
                assert!(g.2 == w.2, "line {} of input {}: bytes", w.1, w.0);
            }
        }
    }

    /// (line, raw, outcome) of every line a decoded chunk holds.
    fn lines_of(d: &Decoded) -> Vec<(u64, Vec<u8>, Result<Telemetry<'_>, Reject>)> {
        d.records()
            .map(|l| (l.line, l.raw.to_vec(), l.outcome))
            .collect()
    }

    /// A folded chunk keeps only its rejects as lines; unfolded again (the engine found a late
    /// record), it holds what decoding without folding gives, an oversized tail included.
    #[test]
    fn a_folded_chunk_unfolds_into_what_decoding_gives() {
        let mut bytes = Vec::new();
        for i in 0..50 {
            match i {
                7 => bytes.extend_from_slice(b"{oops"),
                8 => bytes.extend_from_slice(b"   "),
                _ => bytes.extend(record(i)),
            }
            bytes.push(b'\n');
        }
        bytes.extend(vec![b'x'; MAX_RECORD_BYTES + 3]);
        bytes.truncate(bytes.len() - 3);
        let chunk = || Chunk {
            input: 0,
            bytes: bytes.clone(),
            oversized: true,
        };
        let folding = Folding {
            cfg: WindowConfig::default(),
            watermark: AtomicI64::new(crate::time::Millis::MIN),
        };
        let plain = decode_chunk(chunk(), None);
        let mut folded = decode_chunk(chunk(), Some(&folding));
        let (folds, _) = folded.folds().expect("in order: folded");
        assert_eq!(folds.records(), 48);
        let rejects: Vec<_> = lines_of(&folded).iter().map(|l| l.0).collect();
        assert_eq!(rejects, vec![8, 51]);
        folded.unfold();
        assert!(folded.folds().is_none());
        assert_eq!(
            (folded.lines(), folded.nonblank()),
            (plain.lines(), plain.nonblank())
        );
        assert_eq!((plain.lines(), plain.nonblank()), (51, 50));
        assert_eq!(lines_of(&folded), lines_of(&plain));
        // Against a watermark past its first window, the decoding thread does not fold it.
        folding
            .watermark
            .store(1_521_343_260_000, Ordering::Relaxed);
        assert!(decode_chunk(chunk(), Some(&folding)).folds().is_none());
    }

    #[test]
    fn records_keep_their_fields_and_escaped_names() {
        let line = br#"{"Name":"Sh\u0061dowfax","StatusTime":"2018-03-18 03:20:00","Latitude":1.25,"Longitude":-2,"Distance":3.5,"HealthPoints":150,"MagicPoints":120,"InputData":"x"}"#;
        let plain = br#"{"Name":"Rocinante","StatusTime":"2018-03-18 03:20:01","Latitude":0,"Longitude":0,"Distance":0,"HealthPoints":1,"MagicPoints":2}"#;
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        bytes.extend_from_slice(plain);
        let decoded = decode_chunk(
            Chunk {
                input: 0,
                bytes,
                oversized: false,
            },
            None,
        );
        let got: Vec<Telemetry<'_>> = decoded.records().map(|l| l.outcome.unwrap()).collect();
        assert_eq!(got[0], decode(line).unwrap());
        assert_eq!(got[1], decode(plain).unwrap());
        assert!(matches!(got[1].name, Cow::Borrowed("Rocinante")));
    }
}
