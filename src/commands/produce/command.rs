//! `stampede produce`: its flags, their checks (into [`ProduceOptions`]), and the command that
//! writes the fleet to stdout, a service, a Kafka topic or a Kinesis stream.

use std::io::{self, Write as _};

use anyhow::Context as _;
use clap::ValueEnum;
use stampede_producers::{fleet_name, FaultRates, FleetConfig};

use super::{
    produce, produce_http, produce_kafka, produce_kinesis, Destination, HttpTarget, ProduceOptions,
    Rate,
};
use crate::commands::UsageError;
use crate::record::MAX_NAME_BYTES;
use crate::time::parse_status_time;

/// The largest fleet `--unicorns` makes.
const MAX_UNICORNS: u32 = 5_000_000;

/// `stampede produce`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One unicorn with this name.
    #[arg(long, conflicts_with = "unicorns")]
    pub name: Option<String>,
    /// A fleet of N unicorns (at most 5,000,000): Shadowfax, Bucephalus, Rocinante, then more
    /// names.
    #[arg(long, value_name = "N")]
    pub unicorns: Option<u32>,
    /// Where to write: `-` (NDJSON on stdout), http://HOST:PORT/ingest (batched POSTs) or
    /// kafka://HOST:PORT/TOPIC (one message per record, keyed by Name; the topic must exist) or
    /// kinesis://STREAM (PutRecords, partition key Name; AWS settings as the SDK reads them).
    #[arg(long, default_value = "-", value_name = "TARGET")]
    pub to: String,
    /// Bearer token for an HTTP target.
    #[arg(long, env = "STAMPEDE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Records per HTTP request (at most 1 MiB of them).
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    pub batch: usize,
    /// HTTP requests in flight at once (batches may then arrive out of order by this many).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub connections: usize,
    /// Stop after N records in all (default: run until interrupted).
    #[arg(long, value_name = "N")]
    pub msgs: Option<u64>,
    /// Records per unicorn per second, or `max` for as fast as possible (event time then
    /// advances one simulated second per record of a unicorn).
    #[arg(long, default_value = "1", value_name = "R")]
    pub rate: String,
    /// `yes`: every 5th record carries InputData "Unicornerror" (the others "Unicorn").
    #[arg(long, value_enum, default_value_t = YesNo::No)]
    pub error: YesNo,
    /// Event time of the first record, e.g. "2018-03-18 03:20:00" (default: now).
    #[arg(long, value_name = "TIME")]
    pub start_time: Option<String>,
    /// Seed for reproducible output (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Inject faults, e.g. "malformed=0.01,out-of-order=0.05,late=0.01,too-late=0.001"
    /// (probability per record; late ones are calibrated for the default windows).
    #[arg(long, value_name = "SPEC")]
    pub faults: Option<String>,
    /// Mean change of health and magic points per second, e.g. -0.5 to make alerts fire.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "POINTS",
        allow_negative_numbers = true
    )]
    pub drift: f64,
    /// Start the fleet spread evenly over a disc of this radius around HQ (kilometres) instead
    /// of all at HQ: a fleet across a city or a country, for load runs.
    #[arg(long, default_value_t = 0.0, value_name = "KM")]
    pub spread_km: f64,
    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum YesNo {
    /// On.
    Yes,
    /// Off.
    No,
}

impl Args {
    /// The checked producer options.
    ///
    /// # Errors
    /// The first flag that cannot work, with what to use instead.
    pub fn to_options(&self) -> Result<ProduceOptions, UsageError> {
        let target = match self.to.as_str() {
            "-" => Destination::Stdout,
            other if other.starts_with("http://") || other.starts_with("https://") => {
                let uri: hyper::Uri = other
                    .parse()
                    .ok()
                    .filter(|u: &hyper::Uri| u.authority().is_some())
                    .ok_or_else(|| {
                        UsageError::new(format!(
                            "--to {other}: expected http://HOST:PORT/ingest or https://HOST:PORT/ingest"
                        ))
                    })?;
                if !(1..=100_000).contains(&self.batch) {
                    return Err(UsageError::new("--batch is 1 to 100000 records"));
                }
                if !(1..=64).contains(&self.connections) {
                    return Err(UsageError::new("--connections is 1 to 64"));
                }
                Destination::Http(HttpTarget {
                    uri,
                    token: self.token.clone().filter(|t| !t.is_empty()),
                    batch_records: self.batch,
                    connections: self.connections,
                })
            }
            other if other.starts_with("kafka://") => crate::clients::kafka::KafkaUrl::parse(other)
                .map(Destination::Kafka)
                .map_err(|e| UsageError::new(format!("--to {other}: {e}")))?,
            other if other.starts_with("kinesis://") => crate::clients::kinesis::parse_url(other)
                .map(Destination::Kinesis)
                .map_err(|e| UsageError::new(format!("--to {other}: {e}")))?,
            other => {
                return Err(UsageError::new(format!(
                    "--to {other}: expected -, http(s)://HOST:PORT/ingest, kafka://HOST:PORT/TOPIC or kinesis://STREAM"
                )));
            }
        };
        let names = match (&self.name, self.unicorns) {
            (Some(name), _) => {
                if name.is_empty()
                    || name.len() > MAX_NAME_BYTES
                    || name.chars().any(char::is_control)
                {
                    return Err(UsageError::new(format!(
                        "--name {name:?}: a name is 1 to {MAX_NAME_BYTES} bytes without control characters"
                    )));
                }
                vec![name.clone()]
            }
            (None, Some(0)) => return Err(UsageError::new("--unicorns must be at least 1")),
            // A bound on the names held (~30 bytes each), high enough to find where the service
            // stops keeping up on one machine.
            (None, Some(n)) if n > MAX_UNICORNS => {
                return Err(UsageError::new(format!(
                    "--unicorns is at most {MAX_UNICORNS}"
                )))
            }
            (None, Some(n)) => (0..n as usize).map(fleet_name).collect(),
            (None, None) => vec!["Shadowfax".to_owned()],
        };
        let rate = match self.rate.as_str() {
            "max" => Rate::Max,
            r => match r.parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 1_000.0 => Rate::PerSecond(v),
                _ => {
                    return Err(UsageError::new(format!(
                        "--rate {r}: expected records per unicorn per second (0 < R ≤ 1000) or max"
                    )))
                }
            },
        };
        let now = crate::time::now_ms();
        let start_ms = match &self.start_time {
            Some(t) => parse_status_time(t.as_bytes()).map_err(|_| {
                UsageError::new(format!(
                    "--start-time {t:?}: expected \"YYYY-MM-DD HH:MM:SS[.fff]\" (UTC) or RFC 3339"
                ))
            })?,
            None => now,
        };
        let seed = self.seed.unwrap_or_else(|| {
            (now as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id())
        });
        let faults = match &self.faults {
            Some(spec) => spec
                .parse::<FaultRates>()
                .map_err(|e| UsageError::new(format!("--faults {spec:?}: {e}")))?,
            None => FaultRates::default(),
        };
        if !self.drift.is_finite() || self.drift.abs() > 100.0 {
            return Err(UsageError::new(
                "--drift is points per second, between -100 and 100",
            ));
        }
        let mut fleet = FleetConfig::new(names, seed, start_ms);
        fleet.step_ms = match rate {
            Rate::PerSecond(r) => ((1_000.0 / r).round() as i64).max(1),
            Rate::Max => 1_000,
        };
        if !self.spread_km.is_finite() || !(0.0..=20_000.0).contains(&self.spread_km) {
            return Err(UsageError::new(
                "--spread-km is a radius in kilometres, between 0 and 20000",
            ));
        }
        fleet.spread_km = self.spread_km;
        fleet.drift_per_sec = vec![self.drift; fleet.names.len()];
        fleet.error_every_5th = self.error == YesNo::Yes;
        fleet.faults = faults;
        let progress = !self.quiet && ProduceOptions::progress_by_default(&target);
        Ok(ProduceOptions {
            fleet,
            target,
            msgs: self.msgs,
            rate,
            progress,
        })
    }
}
/// Runs `stampede produce`.
///
/// # Errors
/// A bad flag (usage error), or the target refused or could not be reached.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let opts = args.to_options()?;
    crate::commands::init_tracing("warn");
    match opts.target.clone() {
        Destination::Stdout => {
            let mut stdout = io::stdout().lock();
            produce(opts, &mut stdout).context("cannot write records")?;
            stdout.flush().ok();
        }
        Destination::Http(target) => {
            let progress = opts.progress;
            let report = produce_http(opts, &target)?;
            if !progress {
                eprintln!(
                    "produced {} records to {}: server accepted {}, rejected {}",
                    report.sent, target.uri, report.accepted, report.rejected
                );
            }
            if report.oversized > 0 {
                eprintln!("{} records were over the server's body limit even alone and were not delivered", report.oversized);
            }
        }
        Destination::Kinesis(stream) => {
            let progress = opts.progress;
            let sent = produce_kinesis(opts, &stream)?;
            if !progress {
                eprintln!("produced {sent} records to kinesis stream {stream}");
            }
        }
        Destination::Kafka(url) => {
            let progress = opts.progress;
            let sent = produce_kafka(opts, &url)?;
            if !progress {
                eprintln!(
                    "produced {sent} records to kafka topic {} at {}",
                    url.topic, url.brokers
                );
            }
        }
    }
    Ok(())
}
