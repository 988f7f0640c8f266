//! The file source: NDJSON from a file or stdin, cut into records with bounded memory.
//!
//! Used by `stampede aggregate` and `[source] kind = "file"`. Lines are handed out as
//! slices of one reused buffer, so a record costs no copy and no allocation. A line longer than
//! the record limit is never held whole: its first [`MAX_RECORD_BYTES`] are handed out marked
//! too large (they become the dead letter's raw bytes) and the rest is skipped as it streams by.

use std::io::{self, Read};

use crate::record::MAX_RECORD_BYTES;

const CHUNK: usize = 1 << 20;

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line without its `\n`; for an oversized line, its first [`MAX_RECORD_BYTES`].
    pub bytes: &'a [u8],
    /// The line was longer than [`MAX_RECORD_BYTES`].
    pub too_large: bool,
    /// 1-based line number within this input.
    pub number: u64,
}

/// Reads newline-separated records from any reader.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Discarding the tail of an oversized line.
    skipping: bool,
    line: u64,
}

impl<R: Read> LineReader<R> {
    /// Wraps `inner`; reads it in 1 MiB chunks.
    pub fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: vec![0; CHUNK + MAX_RECORD_BYTES + 1],
            start: 0,
            end: 0,
            eof: false,
            skipping: false,
            line: 0,
        }
    }

    /// The next line, including blank ones (the caller skips those), or `None` at the end.
    ///
    /// # Errors
    /// Any read error of the underlying reader (interrupted reads are retried).
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        loop {
            let pending = &self.buf[self.start..self.end];
            if let Some(nl) = memchr::memchr(b'\n', pending) {
                let (s, e) = (self.start, self.start + nl);
                self.start = e + 1;
                if self.skipping {
                    self.skipping = false;
                    continue;
                }
                self.line += 1;
                return Ok(Some(Line {
                    bytes: &self.buf[s..e],
                    too_large: false,
                    number: self.line,
                }));
            }
            if self.skipping {
                // Drop everything read so far of the oversized line's tail.
                self.start = self.end;
            } else if pending.len() > MAX_RECORD_BYTES {
                let s = self.start;
                self.start = self.end;
                self.skipping = true;
                self.line += 1;
                return Ok(Some(Line {
                    bytes: &self.buf[s..s + MAX_RECORD_BYTES],
                    too_large: true,
                    number: self.line,
                }));
            }
            if self.eof {
                if self.start == self.end || self.skipping {
                    self.skipping = false;
                    self.start = self.end;
                    return Ok(None);
                }
                let s = self.start;
                self.start = self.end;
                self.line += 1;
                return Ok(Some(Line {
                    bytes: &self.buf[s..self.end],
                    too_large: false,
                    number: self.line,
                }));
            }
            self.fill()?;
        }
    }

    /// Moves the unread tail to the front and reads more after it.
    fn fill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// `[source] kind = "file"`: reads `path` once, in batches of up to `batch` records, into a
/// partition's engine task, then closes the channel so the partition flushes its windows (end
/// of input). Blocks: run it on a blocking thread. Sending waits when the engine is busy, so the
/// file is read no faster than it is processed.
///
/// # Errors
/// The file cannot be opened or read.
pub fn read_into(
    path: &std::path::Path,
    batch: usize,
    tx: &tokio::sync::mpsc::Sender<crate::pipeline::Batch>,
) -> io::Result<u64> {
    let mut lines = LineReader::new(std::fs::File::open(path)?);
    let mut payload: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut records = Vec::with_capacity(batch);
    let mut total = 0;
    loop {
        let line = lines.next_line()?;
        let end = line.is_none();
        if let Some(line) = line {
            if line.too_large || !crate::decode::is_blank(line.bytes) {
                let start = payload.len();
                payload.extend_from_slice(line.bytes);
                if line.too_large {
                    // Past the limit by one byte: decoding rejects it as too_large, unparsed.
                    payload.push(b' ');
                }
                records.push(start..payload.len());
            }
        }
        if records.len() >= batch || (end && !records.is_empty()) {
            total += records.len() as u64;
            let b = crate::pipeline::Batch {
                payload: bytes::Bytes::from(std::mem::take(&mut payload)),
                records: std::mem::take(&mut records),
                positions: Vec::new(),
                sequences: Vec::new(),
                reply: None,
                decoded: Vec::new(),
                plain_lines: false,
            };
            if tx.blocking_send(b).is_err() {
                return Ok(total);
            }
            payload.reserve(1 << 20);
        }
        if end {
            return Ok(total);
        }
    }
}

/// Starts the file source: a partition of its own, fed by a thread that reads `path` to its end;
/// the partition then flushes its windows. A file is history: no wall-clock rule applies.
pub fn start(
    path: std::path::PathBuf,
    steps: crate::pipeline::Steps,
    fanout: crate::output::Fanout,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<crate::pipeline::Batch>(8);
    let spec = crate::pipeline::PartitionSpec {
        steps: crate::pipeline::Steps {
            window: crate::window::WindowConfig {
                max_future_ms: None,
                ..steps.window
            },
            rules: steps.rules,
            views: steps.views,
        },
        source: crate::record::SourceKind::File,
        name: path.display().to_string(),
        durable: None,
    };
    let task = tokio::spawn(crate::pipeline::run(spec, rx, fanout, stop));
    tokio::task::spawn_blocking(move || match read_into(&path, 1_000, &tx) {
        Ok(n) => tracing::info!(path = %path.display(), records = n, "file source read to the end"),
        Err(e) => tracing::error!(path = %path.display(), error = %e, "file source failed"),
    });
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read, to cross every boundary.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lines(data: &[u8], step: usize) -> Vec<(Vec<u8>, bool, u64)> {
        let mut r = LineReader::new(Trickle { data, step });
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push((l.bytes.to_vec(), l.too_large, l.number));
        }
        out
    }

    #[test]
    fn splits_lines_at_any_read_size() {
        let data = b"a\nbb\n\nccc";
        for step in [1, 2, 3, 100] {
            assert_eq!(
                lines(data, step),
                vec![
                    (b"a".to_vec(), false, 1),
                    (b"bb".to_vec(), false, 2),
                    (b"".to_vec(), false, 3),
                    (b"ccc".to_vec(), false, 4)
                ]
            );
        }
        assert!(lines(b"", 1).is_empty());
        assert_eq!(lines(b"x\n", 1).len(), 1);
    }

    #[test]
    fn oversized_lines_are_cut_and_skipped() {
        let mut data = b"first\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 3 * CHUNK));
        data.extend(b"\nlast\n");
        data.extend(std::iter::repeat_n(b'y', MAX_RECORD_BYTES + 1)); // unterminated
        for step in [CHUNK, 7_777] {
            let got = lines(&data, step);
            assert_eq!(got.len(), 4);
            assert_eq!(got[0], (b"first".to_vec(), false, 1));
            assert_eq!(got[1].0.len(), MAX_RECORD_BYTES);
            assert!(got[1].1);
            assert_eq!(got[2], (b"last".to_vec(), false, 3));
            assert_eq!(
                (got[3].0.len(), got[3].1, got[3].2),
                (MAX_RECORD_BYTES, true, 4)
            );
        }
        // Exactly the limit is fine.
        let mut data = vec![b'z'; MAX_RECORD_BYTES];
        data.push(b'\n');
        let got = lines(&data, 4096);
        assert_eq!((got[0].0.len(), got[0].1), (MAX_RECORD_BYTES, false));
    }
}
