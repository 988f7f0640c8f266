//! The command line of CONTRACT §4: clap definitions, then a check that turns raw flags into the
//! options each command runs with. Usage errors say what to fix and exit 2 (see `main`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use stampede_producers::{fleet_name, FaultRates, FleetConfig};

use crate::produce::{HttpTarget, ProduceOptions, Rate, Target};
use crate::record::MAX_NAME_BYTES;
use crate::time::{parse_status_time, Millis};
use crate::window::{TimeMode, WindowConfig};

/// Stampede: live analytics for the Wild Rydes unicorn fleet.
#[derive(Debug, Parser)]
#[command(name = "stampede", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: a simulated fleet, the pipeline, the embedded store under
    /// ./stampede-data and the live dashboard. Ctrl-C flushes and exits.
    Demo(DemoArgs),
    /// The service, wired as the configuration says (sources, store, web).
    Serve(ServeArgs),
    /// The default configuration as TOML, every key commented.
    PrintConfig,
    /// Batch mode: per-minute summaries of NDJSON telemetry files (or stdin).
    ///
    /// Reads the files in order as one partition through the same decoding and windowing as the
    /// service, flushes every window at the end, and writes the final summary of each window
    /// (its last revision) to stdout as NDJSON ordered by (StatusTime, Name). Rejected records
    /// are counted by reason on stderr.
    Aggregate(AggregateArgs),
    /// The workshop's consumer: prints every record of a stream as indented JSON.
    Consume(ConsumeArgs),
    /// The simulated fleet producer (the workshop's movement and vitals model).
    ///
    /// One record per unicorn per second by default, as NDJSON on stdout, posted to a running
    /// service (--to http://HOST:PORT/ingest) or written to a Kafka topic
    /// (--to kafka://HOST:PORT/TOPIC).
    Produce(ProduceArgs),
    /// Subscribe an e-mail address to alert notifications.
    ///
    /// With [alerts.sns] in the configuration: an SNS e-mail subscription to the topic, the
    /// filter as a FilterPolicy (SNS mails a confirmation link). Otherwise: the built-in
    /// subscriptions of a running service (web.listen or --url, admin token from web.token),
    /// which mails the confirmation link itself.
    Subscribe(SubscribeArgs),
    /// Remove an e-mail address's alert subscription (SNS or built-in, as for subscribe).
    Unsubscribe(UnsubscribeArgs),
    /// Ad-hoc SQL over the archive (table wildrydes) and the stored summaries (table summaries).
    ///
    /// wildrydes has the workshop's Athena columns: name, statustime (a timestamp), latitude,
    /// longitude, distance, healthpoints, magicpoints; summaries has name, statustime (window
    /// start), windowend, distance, minmagicpoints, maxmagicpoints, minhealthpoints,
    /// maxhealthpoints, records, revision. Unquoted names are case-insensitive, as in Athena.
    /// Only queries run: nothing can be created, changed or written. The workshop's queries are
    /// in queries/*.sql.
    ///
    /// Example: stampede query "SELECT name, SUM(distance) AS TotalDistance FROM wildrydes
    /// GROUP BY name"
    Query(QueryArgs),
}

/// `stampede query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL to run (or --file).
    #[arg(
        value_name = "SQL",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    pub sql: Option<String>,
    /// Read the SQL from this file, e.g. queries/total-distance.sql.
    #[arg(long, short, value_name = "FILE.sql")]
    pub file: Option<PathBuf>,
    /// The archive: a directory, or s3://BUCKET/PREFIX (AWS_REGION, AWS_ENDPOINT_URL_S3).
    /// Default: the configuration's archive section, else ./stampede-archive.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub archive: Option<String>,
    /// How to print the rows: an aligned table, CSV, or JSON (one object per row).
    #[arg(long, value_enum, default_value = "table")]
    pub format: crate::query::Format,
    /// The service's configuration (its archive and store sections), as for serve.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `stampede subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The address to notify.
    #[arg(long, value_name = "ADDR")]
    pub email: String,
    /// Only this unicorn's alerts (repeat for several; none: every unicorn).
    #[arg(long = "name", value_name = "UNICORN")]
    pub names: Vec<String>,
    /// Only this rule's alerts (repeat for several; none: every rule).
    #[arg(long = "rule", value_name = "RULE")]
    pub rules: Vec<String>,
    /// The service's configuration, as for `serve`.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The running service (built-in subscriptions), e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// `stampede unsubscribe`.
#[derive(Debug, Args)]
pub struct UnsubscribeArgs {
    /// The address.
    #[arg(long, value_name = "ADDR")]
    pub email: String,
    /// The service's configuration, as for `serve`.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The running service (built-in subscriptions).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// `stampede consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// kafka://HOST:PORT/TOPIC or kinesis://STREAM.
    #[arg(long, value_name = "SOURCE")]
    pub from: String,
    /// Start at the oldest record instead of the end.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records (by default it runs until interrupted).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

impl ConsumeArgs {
    /// The checked source.
    ///
    /// # Errors
    /// An address that is not a stream, or a source not part of this build.
    pub fn source(&self) -> Result<crate::consume::ConsumeSource, UsageError> {
        let scheme = self.from.split("://").next().unwrap_or_default();
        match scheme {
            "kafka" => crate::kafka::KafkaUrl::parse(&self.from)
                .map(crate::consume::ConsumeSource::Kafka)
                .map_err(|e| usage(format!("--from {}: {e}", self.from))),
            "kinesis" => crate::kinesis::parse_url(&self.from)
                .map(crate::consume::ConsumeSource::Kinesis)
                .map_err(|e| usage(format!("--from {}: {e}", self.from))),
            _ => Err(usage(format!(
                "--from {}: expected kafka://HOST:PORT/TOPIC or kinesis://STREAM",
                self.from
            ))),
        }
    }
}

/// `stampede serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file (see `stampede print-config`); environment variables such as
    /// STAMPEDE_WEB_LISTEN (one per key) override it.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `stampede demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Optional configuration file, as for `serve` (the demo's defaults otherwise).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Simulated unicorns.
    #[arg(long, default_value_t = 12, value_name = "N")]
    pub unicorns: u32,
    /// Vitals points a second that every fourth unicorn loses (then regains 2.5 times as
    /// fast): at 0.4 its alerts fire after about two minutes and resolve a minute later.
    #[arg(long, default_value_t = 0.4, value_name = "POINTS")]
    pub drift: f64,
    /// Mail the alerts through this SMTP server (smtp://HOST:PORT or smtps://HOST:PORT).
    #[arg(long, value_name = "URL")]
    pub smtp: Option<String>,
    /// With --smtp: subscribe this address (a confirmation mail comes first).
    #[arg(long, value_name = "ADDR", requires = "smtp")]
    pub email: Option<String>,
    /// Keep every record in an NDJSON archive in this directory (Firehose's layout, written
    /// every 60 s or 5 MiB; default ./stampede-archive), for `stampede query` and the
    /// dashboard's trips.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "./stampede-archive")]
    pub archive: Option<PathBuf>,
}

/// `stampede aggregate`.
#[derive(Debug, Args)]
pub struct AggregateArgs {
    /// NDJSON files, read in order as one partition; none or `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Window settings.
    #[command(flatten)]
    pub window: WindowArgs,
    /// Print every rejected line (file, line number, reason) on stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// Print the alert state changes (firing, resolved) instead of the summaries, one JSON
    /// object a line, in the order the records caused them.
    #[arg(long)]
    pub alerts: bool,
    /// With --alerts: take the rules from this config file's alerts section (default:
    /// low-health and low-magic, below 100, resolving at 105).
    #[arg(long, value_name = "FILE", requires = "alerts")]
    pub config: Option<PathBuf>,
    /// Threads that decode (default: one per core). The window engine stays on one thread and
    /// takes the records in input order, so the output is the same for any number.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

/// The `[window]` settings as flags.
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// Window on the record's StatusTime (event) or on arrival (ingest, the workshop's way).
    #[arg(long, value_enum, default_value_t = TimeArg::Event)]
    pub time: TimeArg,
    /// Window length in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub window_secs: u32,
    /// How far event time may run backwards before records count as late.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub out_of_orderness_secs: u32,
    /// How long a closed window still takes late records (and restates itself).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub allowed_lateness_secs: u32,
}

/// `--time`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TimeArg {
    /// The record's StatusTime.
    Event,
    /// Arrival time.
    Ingest,
}

/// `--error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum YesNo {
    /// On.
    Yes,
    /// Off.
    No,
}

/// `stampede produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// One unicorn with this name.
    #[arg(long, conflicts_with = "unicorns")]
    pub name: Option<String>,
    /// A fleet of N unicorns: Shadowfax, Bucephalus, Rocinante, then more names.
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

/// A command line that parsed but cannot run: exit 2 with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

impl WindowArgs {
    /// The checked window settings (batch mode: no idle timeout).
    ///
    /// # Errors
    /// A setting out of range, named.
    pub fn to_config(&self) -> Result<WindowConfig, UsageError> {
        let cfg = WindowConfig {
            time: match self.time {
                TimeArg::Event => TimeMode::Event,
                TimeArg::Ingest => TimeMode::Ingest,
            },
            size_ms: Millis::from(self.window_secs) * 1_000,
            out_of_orderness_ms: Millis::from(self.out_of_orderness_secs) * 1_000,
            allowed_lateness_ms: Millis::from(self.allowed_lateness_secs) * 1_000,
            idle_timeout_ms: None,
            max_future_ms: None,
            forget_after_ms: None,
        };
        cfg.validate().map_err(|e| {
            let flag = match e.key {
                "size_secs" => "--window-secs",
                "out_of_orderness_secs" => "--out-of-orderness-secs",
                _ => "--allowed-lateness-secs",
            };
            usage(format!(
                "{flag} must be {}, got {} s",
                e.rule,
                e.value_ms / 1_000
            ))
        })?;
        Ok(cfg)
    }
}

impl ProduceArgs {
    /// The checked producer options.
    ///
    /// # Errors
    /// The first flag that cannot work, with what to use instead.
    pub fn to_options(&self) -> Result<ProduceOptions, UsageError> {
        let target = match self.to.as_str() {
            "-" => Target::Stdout,
            other if other.starts_with("http://") || other.starts_with("https://") => {
                let uri: hyper::Uri = other
                    .parse()
                    .ok()
                    .filter(|u: &hyper::Uri| u.authority().is_some())
                    .ok_or_else(|| {
                        usage(format!(
                            "--to {other}: expected http://HOST:PORT/ingest or https://HOST:PORT/ingest"
                        ))
                    })?;
                if !(1..=100_000).contains(&self.batch) {
                    return Err(usage("--batch is 1 to 100000 records"));
                }
                if !(1..=64).contains(&self.connections) {
                    return Err(usage("--connections is 1 to 64"));
                }
                Target::Http(HttpTarget {
                    uri,
                    token: self.token.clone().filter(|t| !t.is_empty()),
                    batch_records: self.batch,
                    connections: self.connections,
                })
            }
            other if other.starts_with("kafka://") => crate::kafka::KafkaUrl::parse(other)
                .map(Target::Kafka)
                .map_err(|e| usage(format!("--to {other}: {e}")))?,
            other if other.starts_with("kinesis://") => crate::kinesis::parse_url(other)
                .map(Target::Kinesis)
                .map_err(|e| usage(format!("--to {other}: {e}")))?,
            other => {
                return Err(usage(format!(
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
                    return Err(usage(format!(
                        "--name {name:?}: a name is 1 to {MAX_NAME_BYTES} bytes without control characters"
                    )));
                }
                vec![name.clone()]
            }
            (None, Some(0)) => return Err(usage("--unicorns must be at least 1")),
            (None, Some(n)) if n > 1_000_000 => return Err(usage("--unicorns is at most 1000000")),
            (None, Some(n)) => (0..n as usize).map(fleet_name).collect(),
            (None, None) => vec!["Shadowfax".to_owned()],
        };
        let rate = match self.rate.as_str() {
            "max" => Rate::Max,
            r => match r.parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 1_000.0 => Rate::PerSecond(v),
                _ => {
                    return Err(usage(format!(
                        "--rate {r}: expected records per unicorn per second (0 < R ≤ 1000) or max"
                    )))
                }
            },
        };
        let now = crate::time::now_ms();
        let start_ms = match &self.start_time {
            Some(t) => parse_status_time(t.as_bytes()).map_err(|_| {
                usage(format!(
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
                .map_err(|e| usage(format!("--faults {spec:?}: {e}")))?,
            None => FaultRates::default(),
        };
        if !self.drift.is_finite() || self.drift.abs() > 100.0 {
            return Err(usage("--drift is points per second, between -100 and 100"));
        }
        let mut fleet = FleetConfig::new(names, seed, start_ms);
        fleet.step_ms = match rate {
            Rate::PerSecond(r) => ((1_000.0 / r).round() as i64).max(1),
            Rate::Max => 1_000,
        };
        if !self.spread_km.is_finite() || !(0.0..=20_000.0).contains(&self.spread_km) {
            return Err(usage(
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
