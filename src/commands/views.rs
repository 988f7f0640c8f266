//! `stampede views verify`: the live answer checked against an independent run (CONTRACT §9).
//!
//! For each view kept in the store, its closed windows are computed again in batch over the
//! archive — the view's SQL over `wildrydes`, its window written as plain SQL (`view::batch`),
//! run by DataFusion's planner and executor rather than the view engine's accumulators — and
//! compared with the rows the service stored. Every difference is printed; the exit status is
//! 1 if there is any.
//!
//! Only windows the service has closed are compared: those ending no later than the newest
//! stored window's end. The archive writes its objects every `archive.buffer_secs`: on a running
//! service, verify up to a time (`--to`) the archive has passed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

use super::UsageError;
use crate::config::{Config, StoreKind};
use crate::output::store::views::{Def, ViewTables};
use crate::query::{context, json_rows, run, Limits, Tables};
use crate::time::{parse_status_time, Millis};

/// `stampede views`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: ViewsCommand,
}

/// The subcommands of `stampede views`.
#[derive(Debug, clap::Subcommand)]
pub enum ViewsCommand {
    /// Recompute views' closed windows in batch over the archive and compare them with the
    /// stored rows; print every difference, exit 1 if any.
    ///
    /// Reads the store and the archive the configuration names (stop the service first: the
    /// embedded store is one process's at a time).
    Verify(VerifyArgs),
}

/// `stampede views verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The views to verify (all kept in the store when none is named).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Only windows starting at or after this time ("YYYY-MM-DD HH:MM:SS", UTC).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Only windows starting before this time.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// The archive: a directory, or s3://BUCKET/PREFIX; default as for `stampede query`.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub archive: Option<String>,
    /// The service's configuration (its store and archive sections).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `stampede views`.
///
/// # Errors
/// Bad arguments (usage errors), the store or the archive cannot be read; differences found
/// are an error too (exit 1), after they are printed.
pub fn run_command(args: &Args) -> anyhow::Result<()> {
    match &args.command {
        ViewsCommand::Verify(v) => verify(v),
    }
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let time = |flag: &str, v: &Option<String>, default: Millis| -> anyhow::Result<Millis> {
        match v {
            None => Ok(default),
            Some(t) => parse_status_time(t.as_bytes()).map_err(|_| {
                UsageError(format!(
                    "--{flag} {t:?}: expected \"YYYY-MM-DD HH:MM:SS\" (UTC)"
                ))
                .into()
            }),
        }
    };
    let (from, to) = (
        time("from", &args.from, Millis::MIN)?,
        time("to", &args.to, Millis::MAX)?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut differences = 0usize;
    runtime.block_on(async {
        let tables = open_tables(&config).await?.ok_or_else(|| {
            UsageError(format!(
                "no views kept in the store ({})",
                where_kept(&config)
            ))
        })?;
        let defs: Vec<Def> = tables.off_runtime(ViewTables::defs).await?;
        for name in &args.names {
            if !defs.iter().any(|d| &d.name == name) {
                return Err(UsageError(format!("no view named {name:?} in the store")).into());
            }
        }
        let chosen: Vec<&Def> = defs
            .iter()
            .filter(|d| args.names.is_empty() || args.names.contains(&d.name))
            .collect();
        let archive = super::query::archive_target(&config, args.archive.as_deref()).await?;
        if archive.is_none() {
            return Err(
                UsageError("verify needs the archive (archive.kind, or --archive)".into()).into(),
            );
        }
        let tables_ = Tables {
            archive,
            summaries: None,
            views: Vec::new(),
        };
        let limits = Limits {
            partitions: std::thread::available_parallelism().map_or(1, usize::from),
            memory_bytes: None,
        };
        let ctx = context(&tables_, limits).await?;
        for def in chosen {
            let view = crate::view::plan::parse(&def.sql)
                .map_err(|e| anyhow::anyhow!("view {}: {e}", def.name))?;
            let name = def.name.clone();
            let stored: Vec<Value> = tables
                .off_runtime(move |t| t.rows(&name, from, to, usize::MAX))
                .await?
                .iter()
                .filter_map(|r| serde_json::from_str(r).ok())
                .collect();
            let answer = run(&ctx, &crate::view::batch::sql(&view), None)
                .await
                .with_context(|| format!("view {}: the batch query failed", def.name))?;
            let batch: Vec<Value> = json_rows(&answer)
                .iter()
                .filter_map(|r| serde_json::from_str(r).ok())
                .collect();
            let found = compare(&def.name, &stored, &batch, (from, to));
            println!(
                "view {}: {} stored rows checked, {} differences",
                def.name,
                stored.len(),
                found
            );
            differences += found;
        }
        anyhow::Ok(())
    })?;
    if differences > 0 {
        anyhow::bail!("{differences} differences between the stored rows and the batch answer");
    }
    Ok(())
}

/// Where `config` keeps views, in words.
fn where_kept(config: &Config) -> String {
    match config.store.kind {
        StoreKind::Embedded => format!("store.path {}", config.store.path.display()),
        StoreKind::DynamoDb => format!(
            "DynamoDB table {}",
            crate::output::store::views::dynamodb::DEFS_TABLE
        ),
    }
}

/// The views' tables of the store `config` names, as they are (nothing created); `None` when
/// it keeps none (no embedded store yet, or no DynamoDB definitions table).
///
/// # Errors
/// The store cannot be opened (the embedded one is locked by a running service, say).
pub(crate) async fn open_tables(config: &Config) -> anyhow::Result<Option<ViewTables>> {
    match config.store.kind {
        StoreKind::Embedded => {
            let dir = config.store.path.clone();
            if !dir.join("stampede.redb").exists() {
                return Ok(None);
            }
            let retention = config.store.dead_letter_retention;
            tokio::task::spawn_blocking(move || {
                let store = super::query::open_embedded(&dir, retention)?;
                Ok(Some(
                    ViewTables::embedded(&store).map_err(|e| anyhow::anyhow!("{e}"))?,
                ))
            })
            .await?
        }
        StoreKind::DynamoDb => {
            let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            match crate::output::store::views::dynamodb::Dynamo::open(&aws, false).await {
                Ok(tables) => Ok(Some(ViewTables::DynamoDb(tables))),
                Err(e) if e.permanent => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// The columns that place a row: every one but floating-point numbers and `revision`.
fn place(row: &Value) -> String {
    let mut parts: Vec<String> = row
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, v)| *k != "revision" && !v.is_f64())
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts.join(" ")
}

fn time_of(row: &Value, column: &str) -> Option<Millis> {
    row[column]
        .as_str()
        .and_then(|t| parse_status_time(t.as_bytes()).ok())
}

/// Prints every difference between `stored` and `batch` in the windows the service closed
/// (ending by the newest stored end) within `from..to`; returns how many.
fn compare(view: &str, stored: &[Value], batch: &[Value], (from, to): (Millis, Millis)) -> usize {
    let newest_end = stored.iter().filter_map(|r| time_of(r, "window_end")).max();
    let newest_start = stored
        .iter()
        .filter_map(|r| time_of(r, "window_start"))
        .max();
    let closed = |row: &Value| match (time_of(row, "window_end"), newest_end) {
        (Some(end), Some(newest)) => end <= newest,
        _ => match (time_of(row, "window_start"), newest_start) {
            (Some(start), Some(newest)) => start <= newest,
            _ => false,
        },
    };
    let in_range = |row: &Value| time_of(row, "window_start").is_none_or(|s| s >= from && s < to);
    let mut want: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for row in batch.iter().filter(|r| closed(r) && in_range(r)) {
        want.entry(place(row)).or_default().push(row);
    }
    let mut differences = 0;
    for row in stored {
        let key = place(row);
        match want.get_mut(&key).and_then(|rows| {
            let i = rows.iter().position(|w| same(row, w))?;
            Some(rows.swap_remove(i))
        }) {
            Some(_) => {}
            None => {
                differences += 1;
                let batch_row = want.get(&key).and_then(|rows| rows.first());
                match batch_row {
                    Some(w) => println!("view {view}: differs: stored {row}, batch {w}"),
                    None => println!("view {view}: stored but not in the batch answer: {row}"),
                }
            }
        }
    }
    for rows in want.values() {
        for row in rows {
            if !stored.iter().any(|s| place(s) == place(row)) {
                differences += 1;
                println!("view {view}: in the batch answer but not stored: {row}");
            }
        }
    }
    differences
}

/// The same row, sums within a rounding (added in another order), `revision` aside.
fn same(stored: &Value, batch: &Value) -> bool {
    let Some(b) = batch.as_object() else {
        return false;
    };
    b.iter()
        .all(|(k, v)| match (stored[k].as_f64(), v.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * y.abs().max(1.0),
            _ => &stored[k] == v,
        })
}
