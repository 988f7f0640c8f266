//! The `stampede` binary: parse the command line, run the command, map errors to exit codes
//! (0 success, 2 bad usage with a message saying what to fix, 1 runtime failure).

use std::fs::File;
use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use stampede::aggregate::{
    aggregate, aggregate_with_alerts, write_changes, write_summaries, Input, Report,
};
use stampede::cli::{AggregateArgs, Cli, Command, ConsumeArgs, DemoArgs, ProduceArgs, UsageError};
use stampede::config::{Config, ConfigError, DEFAULT_TOML};
use stampede::produce::{produce, produce_http, produce_kafka, produce_kinesis, Target};
use stampede::record::RejectReason;

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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Aggregate(args) => run_aggregate(&args),
        Command::Produce(args) => run_produce(&args),
        Command::Consume(args) => run_consume(&args),
        Command::Serve(args) => run_service(args.config.as_deref(), None),
        Command::Demo(args) => run_demo(&args),
        Command::Subscribe(args) => Config::load(args.config.as_deref(), std::env::vars())
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                let action = stampede::alert::manage::Action::Subscribe {
                    email: &args.email,
                    names: &args.names,
                    rules: &args.rules,
                };
                stampede::alert::manage::run(&config, args.url.as_deref(), &action)
            })
            .map(|said| println!("{said}")),
        Command::Unsubscribe(args) => Config::load(args.config.as_deref(), std::env::vars())
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                let action = stampede::alert::manage::Action::Unsubscribe { email: &args.email };
                stampede::alert::manage::run(&config, args.url.as_deref(), &action)
            })
            .map(|said| println!("{said}")),
        Command::Query(args) => Config::load(args.config.as_deref(), std::env::vars())
            .map_err(anyhow::Error::from)
            .and_then(|config| stampede::query::command(&config, &args)),
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
    let threads = args
        .threads
        .map_or_else(stampede::aggregate::default_threads, usize::from);
    let mut on_reject = |r: &stampede::aggregate::Rejected<'_>| {
        if verbose {
            eprintln!("{}:{}: rejected: {}", r.input, r.line, r.reject);
        }
    };
    let mut stdout = io::stdout().lock();
    let written = if args.alerts {
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

fn run_produce(args: &ProduceArgs) -> anyhow::Result<()> {
    let opts = args.to_options()?;
    init_tracing("warn");
    match opts.target.clone() {
        Target::Stdout => {
            let mut stdout = io::stdout().lock();
            produce(opts, &mut stdout).context("cannot write records")?;
            stdout.flush().ok();
        }
        Target::Http(target) => {
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
        Target::Kinesis(stream) => {
            let progress = opts.progress;
            let sent = produce_kinesis(opts, &stream)?;
            if !progress {
                eprintln!("produced {sent} records to kinesis stream {stream}");
            }
        }
        Target::Kafka(url) => {
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

fn run_consume(args: &ConsumeArgs) -> anyhow::Result<()> {
    let source = args.source()?;
    init_tracing("warn");
    let mut stdout = io::stdout().lock();
    stampede::consume::consume(&source, args.from_beginning, args.count, &mut stdout)?;
    Ok(())
}

fn init_tracing(default_level: &str) {
    // STAMPEDE_LOG (e.g. "debug", "stampede=trace"); STAMPEDE_LOG_FORMAT=json for JSON lines.
    let filter = tracing_subscriber::EnvFilter::try_from_env("STAMPEDE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    if std::env::var("STAMPEDE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run_demo(args: &DemoArgs) -> anyhow::Result<()> {
    if args.unicorns == 0 || args.unicorns > 100_000 {
        return Err(UsageError("--unicorns must be between 1 and 100000".into()).into());
    }
    if !(0.01..=50.0).contains(&args.drift) {
        return Err(
            UsageError("--drift must be between 0.01 and 50 points a second".into()).into(),
        );
    }
    run_service(args.config.as_deref(), Some(args))
}

fn run_service(config: Option<&std::path::Path>, demo: Option<&DemoArgs>) -> anyhow::Result<()> {
    let mut config = Config::load(config, std::env::vars())?;
    if let Some(smtp) = demo.and_then(|d| d.smtp.as_ref()) {
        config.alerts.smtp.server = smtp.clone();
    }
    if let Some(dir) = demo.and_then(|d| d.archive.as_ref()) {
        config.archive.kind = stampede::config::ArchiveKind::Dir;
        config.archive.path = dir.display().to_string();
    }
    let web = config.clone();
    init_tracing("info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let scheme = if config.web.tls_cert.is_empty() {
        "http"
    } else {
        "https"
    };
    runtime.block_on(async move {
        let app = stampede::app::start(config).await?;
        let url = format!("{scheme}://{}/", app.addr);
        let fleet_stop = tokio_util::sync::CancellationToken::new();
        if let Some(demo) = demo {
            let n = demo.unicorns as usize;
            tokio::spawn(stampede::demo::run_fleet(
                app.ingest.clone(),
                n,
                demo.drift,
                fleet_stop.clone(),
            ));
            println!("Stampede demo: {n} simulated unicorns. Dashboard: {url}  (Ctrl-C to stop)");
            if let Some(email) = &demo.email {
                let action = stampede::alert::manage::Action::Subscribe {
                    email,
                    names: &[],
                    rules: &[],
                };
                let base = url.trim_end_matches('/');
                match stampede::alert::manage::run_async(&web, Some(base), &action).await {
                    Ok(said) => println!("Alert mails: {said}"),
                    Err(e) => eprintln!("stampede: alert mails to {email}: {e:#}"),
                }
            }
        } else {
            println!("Stampede serving on {url}  (Ctrl-C to stop)");
        }
        io::stdout().flush().ok();
        shutdown_signal().await;
        eprintln!("stopping: flushing windows and the store (Ctrl-C again to force)");
        fleet_stop.cancel();
        tokio::select! {
            result = tokio::time::timeout(std::time::Duration::from_secs(30), app.stop()) => {
                result.context("shutdown took longer than 30 s")?
            }
            () = shutdown_signal() => {
                eprintln!("forced exit");
                std::process::exit(130);
            }
        }
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
