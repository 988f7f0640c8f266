//! The `stampede` binary: parse the command line, run the command, map errors to exit codes
//! (0 success, 2 bad usage with a message saying what to fix, 1 runtime failure).

use std::fs::File;
use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use stampede::aggregate::{aggregate, write_summaries, Input, Report};
use stampede::cli::{AggregateArgs, Cli, Command, ProduceArgs, UsageError};
use stampede::produce::produce;
use stampede::record::RejectReason;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Aggregate(args) => run_aggregate(&args),
        Command::Produce(args) => run_produce(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<UsageError>() => {
            eprintln!("stampede: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("stampede: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_aggregate(args: &AggregateArgs) -> anyhow::Result<()> {
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
    let (summaries, report) = aggregate(inputs, cfg, &mut |r| {
        if verbose {
            eprintln!("{}:{}: rejected: {}", r.input, r.line, r.reject);
        }
    })?;
    let mut stdout = io::stdout().lock();
    match write_summaries(&mut stdout, &summaries) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot write summaries")?,
    }
    eprint!("{}", describe(&report));
    Ok(())
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

fn run_produce(args: &ProduceArgs) -> anyhow::Result<()> {
    let opts = args.to_options()?;
    let mut stdout = io::stdout().lock();
    produce(opts, &mut stdout).context("cannot write records")?;
    stdout.flush().ok();
    Ok(())
}
