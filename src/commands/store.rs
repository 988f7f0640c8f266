//! `stampede store check [--repair]`: whether the embedded store's file is whole, and its
//! repair when it is not.
//!
//! The service refuses a damaged store at start (exit 1, naming the file), never starting
//! afresh over it. redb checks a file page by page and can repair one whose last transactions
//! were torn (a crash mid-write, a full disk): `check` does that on a copy, changing nothing,
//! and says what it found; `--repair` first keeps the file as it is beside it
//! (`stampede.redb.damaged-<epoch ms>`), then repairs it in place. A file beyond repair is
//! said so, with what to do. The views' file (`stampede-views.redb`) is checked the same way.

use std::path::PathBuf;

use super::UsageError;
use crate::config::{Config, StoreKind};
use crate::output::store::embedded::{check, Health, VIEWS_FILE};

/// `stampede store`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// The subcommands of `stampede store`.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Check the embedded store's file (`store.path`/stampede.redb) page by page; exit 1 if it
    /// is damaged. Stop the service first: the file is one process's at a time.
    Check(CheckArgs),
}

/// `stampede store check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Repair a damaged file in place, keeping a copy of it as it was beside it first.
    #[arg(long)]
    pub repair: bool,
    /// The service's configuration (its store section).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `stampede store`.
///
/// # Errors
/// Bad arguments or configuration (usage errors); a damaged file (exit 1, after the report).
pub fn run_command(args: &Args) -> anyhow::Result<()> {
    match &args.command {
        StoreCommand::Check(c) => check_command(c),
    }
}

fn check_command(args: &CheckArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    if config.store.kind != StoreKind::Embedded {
        return Err(UsageError(
            "store check is for the embedded store (store.kind = \"embedded\"); DynamoDB checks its own tables".into(),
        )
        .into());
    }
    let dir = &config.store.path;
    if !dir.join("stampede.redb").exists() {
        return Err(UsageError(format!(
            "no store at {} (store.path)",
            dir.join("stampede.redb").display()
        ))
        .into());
    }
    // The summaries' file, and the views' beside it when there is one.
    let mut failed = Vec::new();
    for file in ["stampede.redb", VIEWS_FILE] {
        let path = dir.join(file);
        if file == VIEWS_FILE && !path.exists() {
            continue;
        }
        if let Err(e) = check_file(&path, args.repair) {
            failed.push(e.to_string());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", failed.join("; "))
    }
}

fn check_file(path: &std::path::Path, repair: bool) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let stamp = crate::time::now_ms();
    let probe = path.with_file_name(format!(".{name}.check-{stamp}"));
    // First a check of a copy (the check repairs what it checks).
    copy(path, &probe)?;
    let checked = check(&probe).map_err(|e| anyhow::anyhow!("{e}"));
    let _ = std::fs::remove_file(&probe);
    let (health, counts) = checked?;
    // What it counts are summaries and dead letters: the views' file has none.
    let counts = counts.filter(|_| name != VIEWS_FILE);
    if !repair || matches!(health, Health::Whole | Health::Recovered) {
        return report(path, health, counts, false);
    }
    let kept = path.with_file_name(format!("{name}.damaged-{stamp}"));
    copy(path, &kept)?;
    println!("{}: kept as it was in {}", path.display(), kept.display());
    let (health, counts) = check(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    report(path, health, counts.filter(|_| name != VIEWS_FILE), true)
}

fn copy(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::copy(from, to).map_err(|e| {
        anyhow::anyhow!(
            "cannot copy {} to {}: {e} (it needs as much free space as the file)",
            from.display(),
            to.display()
        )
    })?;
    Ok(())
}

fn report(
    path: &std::path::Path,
    health: Health,
    counts: Option<(u64, u64)>,
    repaired: bool,
) -> anyhow::Result<()> {
    let holds = counts.map_or(String::new(), |(s, d)| {
        format!(" ({s} summaries, {d} dead letters)")
    });
    match health {
        Health::Whole => {
            println!("{}: whole{holds}", path.display());
            Ok(())
        }
        Health::Recovered => {
            println!(
                "{}: whole{holds}; it was not closed cleanly (a crash), and recovers on open as \
                 the service's does",
                path.display()
            );
            Ok(())
        }
        Health::Repaired if repaired => {
            println!("{}: was damaged, and is repaired{holds}", path.display());
            Ok(())
        }
        Health::Repaired => {
            println!(
                "{}: damaged, and can be repaired{holds}: run `stampede store check --repair`",
                path.display()
            );
            anyhow::bail!("{} is damaged", path.display())
        }
        Health::Lost(why) => {
            println!(
                "{}: damaged beyond repair ({why}). Move it away to start afresh: a Kafka or \
                 Kinesis source re-reads from its last commit; the summaries, views and dead \
                 letters it held are lost (an archive keeps the records: `stampede views verify` \
                 and `stampede query` read them)",
                path.display()
            );
            anyhow::bail!("{} is damaged beyond repair", path.display())
        }
    }
}
