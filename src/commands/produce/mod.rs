//! `stampede produce`: the simulated fleet written to a target, at the workshop's pace or as fast
//! as possible.
//!
//! The start of the flow in demos, tests and load runs. The fleet model lives in the
//! `stampede-producers` crate; this module renders its readings with the record writer of
//! [`crate::record`] (so producer and service agree on the wire format by construction), paces
//! them, injects written faults, and shows progress.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use stampede_producers::{Fleet, FleetConfig, Malformation, Reading};

use crate::record::Telemetry;

mod command;
pub(crate) mod http;
mod kafka;
mod kinesis;
pub use command::{run, Args, YesNo};
pub use http::{produce_http, HttpError, HttpReport};
pub use kafka::{produce_kafka, KafkaProduceError};
pub use kinesis::{produce_kinesis, KinesisProduceError};

/// Records per unicorn per second, or as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Paced in real time; event time advances `1 / rate` s per record of a unicorn.
    PerSecond(f64),
    /// As fast as possible; event time advances one simulated second per record of a unicorn.
    Max,
}

/// Where the records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// NDJSON on standard output.
    Stdout,
    /// Batched `POST`s to a Stampede `/ingest` endpoint.
    Http(HttpTarget),
    /// One message per record to a Kafka topic, keyed by `Name`.
    Kafka(crate::clients::kafka::KafkaUrl),
    /// `PutRecords` to a Kinesis stream, partition key `Name`.
    Kinesis(String),
}

/// `--to http://HOST:PORT/ingest` and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// The endpoint.
    pub uri: hyper::Uri,
    /// Bearer token, if the server wants one.
    pub token: Option<String>,
    /// Records per request at most.
    pub batch_records: usize,
    /// Requests in flight at once.
    pub connections: usize,
}

/// A checked `produce` command line.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// The fleet (names, seed, start, faults, drift).
    pub fleet: FleetConfig,
    /// Where to write.
    pub target: Destination,
    /// Stop after this many records (all unicorns together); `None` runs until interrupted.
    pub msgs: Option<u64>,
    /// Pace.
    pub rate: Rate,
    /// Show a progress line on stderr.
    pub progress: bool,
}

impl ProduceOptions {
    /// Whether a progress line suits this run: on a terminal, when stdout is a terminal or the
    /// target is not stdout (NDJSON piped elsewhere stays silent).
    pub fn progress_by_default(target: &Destination) -> bool {
        io::stderr().is_terminal() && (*target != Destination::Stdout || io::stdout().is_terminal())
    }
}

/// The fleet as a stream of NDJSON chunks, paced in real time unless the rate is `max`.
struct Generator {
    fleet: Fleet,
    names: Vec<String>,
    rate: Rate,
    limit: u64,
    started: Instant,
    fleet_start: i64,
    drained: bool,
    written: u64,
}

impl Generator {
    fn new(opts: &ProduceOptions) -> Self {
        let fleet = Fleet::new(opts.fleet.clone());
        let fleet_start = fleet.now_ms();
        Generator {
            fleet,
            names: opts.fleet.names.clone(),
            rate: opts.rate,
            limit: opts.msgs.unwrap_or(u64::MAX),
            started: Instant::now(),
            fleet_start,
            drained: false,
            written: 0,
        }
    }

    /// Appends records to `buf` until it holds `max_records` or `max_bytes`, or the next record
    /// is not due yet (a paced run returns what it has, or waits when it has nothing), or the run
    /// ends. Returns how many were appended: 0 only at the end.
    fn fill(&mut self, buf: &mut String, max_records: usize, max_bytes: usize) -> usize {
        let mut n = 0;
        loop {
            if n >= max_records || buf.len() >= max_bytes {
                break;
            }
            if self.fleet.produced() >= self.limit || self.names.is_empty() {
                if !self.drained {
                    // Held-back (out-of-order, late) readings of a bounded run go out at the end.
                    self.drained = true;
                    for reading in self.fleet.drain_held() {
                        render(&self.names, &reading, buf);
                        n += 1;
                    }
                }
                break;
            }
            if let Rate::PerSecond(_) = self.rate {
                let due =
                    Duration::from_millis((self.fleet.now_ms() - self.fleet_start).max(0) as u64);
                let elapsed = self.started.elapsed();
                if due > elapsed {
                    if n > 0 {
                        break;
                    }
                    std::thread::sleep(due - elapsed);
                }
            }
            if let Some(reading) = self.fleet.poll() {
                render(&self.names, &reading, buf);
                n += 1;
            }
        }
        self.written += n as u64;
        n
    }
}

/// Runs the producer to completion (or forever without `msgs`) and returns how many records
/// were written.
///
/// # Errors
/// A write error of the target. A closed pipe (`produce | head`) ends the run quietly instead.
pub fn produce(opts: ProduceOptions, out: &mut dyn Write) -> io::Result<u64> {
    let mut generator = Generator::new(&opts);
    let mut progress = Progress::new(opts.progress);
    let mut buf = String::with_capacity(1 << 16);
    let result = (|| -> io::Result<()> {
        loop {
            buf.clear();
            if generator.fill(&mut buf, usize::MAX, 60_000) == 0 {
                return out.flush();
            }
            out.write_all(buf.as_bytes())?;
            if let Rate::PerSecond(_) = opts.rate {
                out.flush()?;
            }
            progress.show(generator.written, generator.started, "");
        }
    })();
    progress.finish(generator.written, generator.started, "");
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(generator.written),
        Err(e) => Err(e),
        Ok(()) => Ok(generator.written),
    }
}

/// Appends one reading as an NDJSON line, broken as its malformation says.
pub fn render(names: &[String], reading: &Reading, out: &mut String) {
    let record = Telemetry {
        name: Cow::Borrowed(names.get(reading.unicorn).map_or("", String::as_str)),
        status_time: reading.status_time_ms,
        latitude: reading.latitude,
        longitude: reading.longitude,
        distance: reading.distance,
        health_points: reading.health_points,
        magic_points: reading.magic_points,
        input_data: reading.input_data.map(Cow::Borrowed),
    };
    let start = out.len();
    record.write_json(out);
    if let Some(kind) = reading.malformation {
        let line = out.split_off(start);
        out.push_str(&malform(&line, kind));
    }
    out.push('\n');
}

/// `line` (a record as written by [`Telemetry::write_json`]) broken in the way `kind` names.
fn malform(line: &str, kind: Malformation) -> String {
    match kind {
        Malformation::Truncated => {
            let mut cut = line.len() / 2;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line[..cut].to_owned()
        }
        Malformation::MissingField => match line.find(",\"StatusTime\"") {
            Some(at) => format!("{}}}", &line[..at]),
            None => line.to_owned(),
        },
        Malformation::BadType => replace_value(line, "\"Distance\":", |v| format!("\"{v}\"")),
        Malformation::OutOfRange => replace_value(line, "\"Latitude\":", |_| "123.4".to_owned()),
    }
}

/// Replaces the number after `key` (up to the next `,`).
fn replace_value(line: &str, key: &str, with: impl Fn(&str) -> String) -> String {
    let Some(at) = line.find(key) else {
        return line.to_owned();
    };
    let from = at + key.len();
    let to = line[from..]
        .find([',', '}'])
        .map_or(line.len(), |n| from + n);
    format!("{}{}{}", &line[..from], with(&line[from..to]), &line[to..])
}

/// A one-line progress display on stderr, redrawn at most five times a second.
struct Progress {
    enabled: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Progress {
            enabled,
            last: None,
        }
    }

    fn show(&mut self, written: u64, started: Instant, extra: &str) {
        if !self.enabled
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        eprint!("\r\x1b[Kproduced {}{extra}", figures(written, started));
    }

    fn finish(&mut self, written: u64, started: Instant, extra: &str) {
        if self.enabled {
            eprintln!("\r\x1b[Kproduced {}{extra}", figures(written, started));
        }
    }
}

fn figures(written: u64, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 {
        written as f64 / secs
    } else {
        0.0
    };
    format!("{written} records in {secs:.1} s ({rate:.0} records/s)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::record::RejectReason;
    use stampede_producers::FaultRates;

    fn reading() -> Reading {
        Reading {
            unicorn: 0,
            status_time_ms: 1_521_343_201_189,
            latitude: 40.75,
            longitude: -73.98,
            distance: 29.5,
            health_points: 150,
            magic_points: 149,
            input_data: None,
            malformation: None,
        }
    }

    #[test]
    fn renders_the_workshop_record() {
        let mut s = String::new();
        render(&["Shadowfax".to_owned()], &reading(), &mut s);
        assert_eq!(
            s,
            "{\"Distance\":29.5,\"HealthPoints\":150,\"Latitude\":40.75,\"Longitude\":-73.98,\"MagicPoints\":149,\"Name\":\"Shadowfax\",\"StatusTime\":\"2018-03-18 03:20:01.189\"}\n"
        );
    }

    #[test]
    fn each_malformation_gets_its_reject_reason() {
        let names = ["Shadowfax".to_owned()];
        for (kind, reason) in [
            (Malformation::Truncated, RejectReason::MalformedJson),
            (Malformation::MissingField, RejectReason::MissingField),
            (Malformation::BadType, RejectReason::BadType),
            (Malformation::OutOfRange, RejectReason::OutOfRange),
        ] {
            let mut s = String::new();
            render(
                &names,
                &Reading {
                    malformation: Some(kind),
                    ..reading()
                },
                &mut s,
            );
            assert_eq!(
                decode(s.trim_end().as_bytes()).unwrap_err().reason,
                reason,
                "{s}"
            );
        }
    }

    #[test]
    fn bounded_runs_write_exactly_msgs_records() {
        let mut fleet = FleetConfig::new(vec!["a".into(), "b".into()], 5, 0);
        fleet.faults = FaultRates {
            malformed: 0.1,
            out_of_order: 0.1,
            late: 0.05,
            too_late: 0.05,
        };
        let opts = ProduceOptions {
            fleet,
            target: Destination::Stdout,
            msgs: Some(1_000),
            rate: Rate::Max,
            progress: false,
        };
        let mut out = Vec::new();
        let n = produce(opts, &mut out).unwrap();
        assert_eq!(n, out.iter().filter(|&&b| b == b'\n').count() as u64);
        assert_eq!(n, 1_000, "held-back records count toward --msgs");
    }
}
