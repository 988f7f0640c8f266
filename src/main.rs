//! The `stampede` binary: parse the command line, run the command, map errors to exit codes
//! (0 success, 2 bad usage or configuration with a message saying what to fix, 1 runtime
//! failure). Every command's body lives in [`stampede::commands`].

use std::process::ExitCode;

use clap::Parser as _;
use stampede::cli::{Cli, Command};
use stampede::commands::{self, UsageError};
use stampede::config::{ConfigError, DEFAULT_TOML};

/// jemalloc rather than glibc's malloc: it gives freed memory back to the system. After a
/// million names were forgotten, glibc kept ~210 MiB of freed memory in its free lists
/// (`examples/name_flood`: RSS 284 MiB against jemalloc's 114 MiB); `aggregate` runs at the
/// same speed with either (174.7 vs 177.0 ms for 500,000 records, hyperfine, 15 runs).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Two rustls providers are built (aws-lc-rs for ours and the AWS SDK's, ring for the S3
    // client's); a library asking for the process default gets ours.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // The service runs each of its queries in a worker: this binary again (see
    // stampede::query::worker).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == stampede::query::worker::WORKER_ARG)
    {
        return stampede::query::worker::serve_stdio();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Aggregate(args) => commands::aggregate::command(&args),
        Command::Produce(args) => commands::produce::run(&args),
        Command::Consume(args) => commands::consume::run(&args),
        Command::Serve(args) => commands::serve::run(&args),
        Command::Demo(args) => commands::demo::run(&args),
        Command::Subscribe(args) => commands::subscribe::subscribe(&args),
        Command::Unsubscribe(args) => commands::subscribe::unsubscribe(&args),
        Command::Query(args) => commands::query::run_command(&args),
        Command::Views(args) => commands::views::run_command(&args),
        Command::Store(args) => commands::store::run_command(&args),
        Command::PrintConfig => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<UsageError>() || e.is::<ConfigError>() => {
            eprintln!("stampede: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("stampede: {e:#}");
            ExitCode::FAILURE
        }
    }
}
