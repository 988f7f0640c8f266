//! `stampede store check [--repair]`: whether the embedded store's file is whole, and its
//! repair when it is not.
//!
//! The service refuses a damaged store at start (exit 1, naming the file), never starting
//! afresh over it. redb checks a file page by page and can repair one whose last transactions
//! were torn (a crash mid-write, a full disk): `check` does that on a copy, changing nothing,
//! and says what it found; `--repair` first keeps the file as it is beside it
//! (`stampede.redb.damaged-<epoch ms>`), then repairs it in place. A file beyond repair is
//! said so, with what to do.

use std::path::PathBuf;

use super::UsageError;
use crate::config::{Config, StoreKind};
use crate::output::store::embedded::{check, Health};

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
    let path = config.store.path.join("stampede.redb");
    if !path.exists() {
        return Err(UsageError(format!("no store at {} (store.path)", path.display())).into());
    }
    let stamp = crate::time::now_ms();
    // Checked where it is only when it may be repaired; a copy otherwise (the check repairs).
    let (target, kept) = if args.repair {
        let kept = path.with_file_name(format!("stampede.redb.damaged-{stamp}"));
        (path.clone(), Some(kept))
    } else {
        (
            path.with_file_name(format!(".stampede.redb.check-{stamp}")),
            None,
        )
    };
    if let Some(kept) = &kept {
        // Only kept when something is to be repaired: first a check of a copy.
        let probe = path.with_file_name(format!(".stampede.redb.check-{stamp}"));
        copy(&path, &probe)?;
        let checked = check(&probe).map_err(|e| anyhow::anyhow!("{e}"));
        let _ = std::fs::remove_file(&probe);
        let (health, counts) = checked?;
        if matches!(health, Health::Whole | Health::Recovered) {
            return report(&path, health, counts, false);
        }
        copy(&path, kept)?;
        println!("{}: kept as it was in {}", path.display(), kept.display());
    } else {
        copy(&path, &target)?;
    }
    let checked = check(&target).map_err(|e| anyhow::anyhow!("{e}"));
    if !args.repair {
        let _ = std::fs::remove_file(&target);
    }
    let (health, counts) = checked?;
    report(&path, health, counts, args.repair)
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
