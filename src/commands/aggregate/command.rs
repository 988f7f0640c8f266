//! `stampede aggregate`: its flags, their checks, and the command that runs the batch path over
//! files (or stdin) and prints the summaries, or the alert state changes, as NDJSON.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::ValueEnum;

use super::{aggregate, aggregate_with_alerts, write_changes, write_summaries, Input, Report};
use crate::commands::UsageError;
use crate::config::Config;
use crate::record::RejectReason;
use crate::time::Millis;
use crate::window::{TimeMode, WindowConfig};

/// `stampede aggregate`.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    /// Print the final rows of this view (CONTRACT §9: CREATE VIEW … FROM TUMBLE or HOP over
    /// wildrydes) instead of the summaries, ordered by window then key, one JSON object a row.
    /// The records it counts are those the summaries accept.
    #[arg(long, value_name = "FILE.sql", conflicts_with = "alerts")]
    pub view: Option<PathBuf>,
    /// Threads that decode (default: one per core). The window engine stays on one thread and
    /// takes the records in input order, so the output is the same for any number.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

/// The `[window]` settings as flags.
#[derive(Debug, clap::Args)]
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
            UsageError::new(format!(
                "{flag} must be {}, got {} s",
                e.rule,
                e.value_ms / 1_000
            ))
        })?;
        Ok(cfg)
    }
}

/// Runs `stampede aggregate`.
///
/// # Errors
/// A bad flag or config (usage errors), an input that cannot be read, or stdout closed.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let cfg = args.window.to_config()?;
    let mut inputs = Vec::new();
    if args.files.is_empty() {
        inputs.push(Input {
            label: "-".into(),
            reader: Box::new(io::stdin().lock()),
        });
    }
    for path in &args.files {
        let label = path.display().to_string();
        if label == "-" {
            inputs.push(Input {
                label,
                reader: Box::new(io::stdin().lock()),
            });
        } else {
            // Open every file before reading any, so a typo fails fast.
            let file = File::open(path).with_context(|| format!("cannot open {label}"))?;
            inputs.push(Input {
                label,
                reader: Box::new(file),
            });
        }
    }
    let verbose = args.verbose;
    let threads = args
        .threads
        .map_or_else(crate::commands::aggregate::default_threads, usize::from);
    let mut on_reject = |r: &crate::commands::aggregate::Rejected<'_>| {
        if verbose {
            eprintln!("{}:{}: rejected: {}", r.input, r.line, r.reject);
        }
    };
    let mut stdout = io::stdout().lock();
    let written = if let Some(path) = &args.view {
        let label = path.display().to_string();
        let sql = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--view {label}: {e}")))?;
        let def = crate::view::plan::parse(&sql).map_err(|refused| {
            UsageError(format!(
                "{label}:{}:{}: {}: {}",
                refused.line, refused.column, refused.construct, refused.message
            ))
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .context("cannot start the planner's runtime")?;
        let plan = runtime
            .block_on(crate::view::compile::ViewPlan::new(def))
            .map_err(|e| UsageError(format!("{label}: {}", e.message)))?;
        let mut engine = crate::view::engine::ViewEngine::new(std::sync::Arc::new(plan))
            .map_err(|e| UsageError(format!("{label}: {}", e.message)))?;
        let (rows, report) =
            super::aggregate_view(inputs, cfg, threads, &mut engine, &mut on_reject)?;
        eprint!("{}", describe(&report));
        let rows = rows.map(|r| crate::query::Answer {
            schema: r.schema(),
            batches: vec![r],
            truncated: false,
        });
        let lines = rows
            .as_ref()
            .map(crate::query::json_rows)
            .unwrap_or_default();
        eprintln!("  view {}: {} rows", engine.plan().view().name, lines.len());
        lines.iter().try_for_each(|line| writeln!(stdout, "{line}"))
    } else if args.alerts {
        let rules = match &args.config {
            Some(path) => Config::load(Some(path), std::env::vars())?.alert_rules()?,
            None => Config::default().alert_rules()?,
        };
        let (_, changes, report) =
            aggregate_with_alerts(inputs, cfg, threads, rules.into(), &mut on_reject)?;
        eprint!("{}", describe(&report));
        eprintln!("  alert state changes: {}", changes.len());
        write_changes(&mut stdout, &changes)
    } else {
        let (summaries, report) = aggregate(inputs, cfg, threads, &mut on_reject)?;
        eprint!("{}", describe(&report));
        write_summaries(&mut stdout, &summaries)
    };
    match written {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write the output"),
    }
}

/// The stderr report of an aggregate run: totals, then one line per reject reason seen.
fn describe(r: &Report) -> String {
    let mut s = format!(
        "aggregate: {} records from {} input(s): {} accepted ({} late, restating their windows), {} rejected; {} summaries\n",
        r.records,
        r.inputs,
        r.accepted,
        r.late,
        r.rejected_total(),
        r.summaries
    );
    for reason in RejectReason::ALL {
        let n = r.rejected[reason.index()];
        if n > 0 {
            s.push_str(&format!("  rejected {reason}: {n}\n"));
        }
    }
    s
}
