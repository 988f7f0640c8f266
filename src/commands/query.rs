//! `stampede query`: ad-hoc SQL over the archive (table `wildrydes`) and the stored summaries
//! (table `summaries`), from the command line. The engine is [`crate::query`]; this file finds
//! the archive and the store the configuration names, runs the SQL on every core, and prints.

use std::path::PathBuf;

use super::UsageError;
use crate::config::Config;
use crate::output::archive::target::Target;
use crate::query::{context, render, run, wants_summaries, Format, Limits, QueryError, Tables};
use crate::record::Summary;

/// `stampede query`.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    pub format: Format,
    /// The service's configuration (its archive and store sections), as for serve.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `stampede query`.
///
/// # Errors
/// Bad configuration or SQL (usage errors), or the archive or store cannot be read.
pub fn run_command(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    command(&config, args)
}

/// The archive `stampede query` reads: `--archive` (a directory or `s3://BUCKET/PREFIX`), else
/// the configuration's `[archive]`, else `./stampede-archive` if it exists.
pub(crate) async fn archive_target(
    config: &Config,
    flag: Option<&str>,
) -> anyhow::Result<Option<Target>> {
    use crate::config::ArchiveKind;
    match flag {
        Some(url) if url.starts_with("s3://") => {
            let rest = &url["s3://".len()..];
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            crate::output::archive::check_bucket(bucket)
                .map_err(|m| UsageError(format!("--archive {url}: {m}")))?;
            let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                prefix.to_owned()
            } else {
                format!("{prefix}/")
            };
            Ok(Some(s3_target(bucket, &prefix).await?))
        }
        Some(dir) => {
            if !std::path::Path::new(dir).is_dir() {
                return Err(UsageError(format!("--archive {dir}: no such directory")).into());
            }
            Ok(Some(Target::Dir(dir.into())))
        }
        None => match config.archive.kind {
            ArchiveKind::Dir => Ok(Some(Target::Dir(config.archive.path.clone().into()))),
            ArchiveKind::S3 => Ok(Some(
                s3_target(&config.archive.bucket, &config.archive.prefix).await?,
            )),
            ArchiveKind::None => {
                let default = crate::config::ArchiveConfig::default().path;
                if std::path::Path::new(&default).is_dir() {
                    Ok(Some(Target::Dir(default.into())))
                } else {
                    eprintln!("stampede: note: no archive (archive.kind is \"none\" and {default} does not exist): wildrydes is empty; see --archive");
                    Ok(None)
                }
            }
        },
    }
}

/// An S3 archive with the AWS SDK's settings.
async fn s3_target(bucket: &str, prefix: &str) -> anyhow::Result<Target> {
    use anyhow::Context as _;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Target::s3(&aws, bucket, prefix)
        .context("cannot make an S3 client (AWS_REGION, AWS_ENDPOINT_URL_S3)")
}

/// Every stored summary, from the store the configuration names.
async fn load_summaries(config: &Config) -> anyhow::Result<Vec<Summary>> {
    use crate::config::StoreKind;
    let all = crate::record::SummaryQuery {
        name: None,
        from: None,
        to: None,
        limit: usize::MAX,
    };
    match config.store.kind {
        StoreKind::Embedded => {
            let dir = PathBuf::from(&config.store.path);
            if !dir.join("stampede.redb").exists() {
                eprintln!(
                    "stampede: note: no store at {} (store.path): summaries is empty",
                    dir.display()
                );
                return Ok(Vec::new());
            }
            let retention = config.store.dead_letter_retention;
            tokio::task::spawn_blocking(move || {
                open_embedded(&dir, retention)?
                    .summaries(&all)
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .await?
        }
        StoreKind::DynamoDb => {
            let store =
                crate::output::store::dynamodb::DynamoStore::open(&config.store.table, false)
                    .await
                    .map_err(|e| anyhow::anyhow!("store.table: {e}"))?;
            store
                .summaries(&all)
                .await
                .map_err(|e| anyhow::anyhow!("store.table: {e}"))
        }
    }
}

/// The stored rows of every view the SQL names, from the store `config` names.
async fn load_views(config: &Config, sql: &str) -> anyhow::Result<Vec<crate::query::ViewRows>> {
    use super::views::open_tables;
    let Some(tables) = open_tables(config).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for def in tables.off_runtime(|t| t.defs()).await? {
        if crate::query::names_view(sql, &def.name) {
            let name = def.name.clone();
            let rows = tables
                .off_runtime(move |t| t.rows(&name, i64::MIN, i64::MAX, usize::MAX))
                .await?;
            out.push(crate::query::ViewRows { sql: def.sql, rows });
        }
    }
    Ok(out)
}

/// `stampede query`: runs the SQL of `args` over the archive and the store `config` names,
/// on every core, and prints the rows; the row count and time go to stderr.
///
/// # Errors
/// The SQL is wrong (a usage error), or the archive or store cannot be read.
fn command(config: &Config, args: &Args) -> anyhow::Result<()> {
    let sql = match (&args.sql, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--file {}: {e}", path.display())))?,
        (None, None) => return Err(UsageError("give the SQL, or --file FILE.sql".into()).into()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = std::time::Instant::now();
        let archive = archive_target(config, args.archive.as_deref()).await?;
        let summaries = if wants_summaries(&sql) {
            Some(load_summaries(config).await?)
        } else {
            None
        };
        let limits = Limits {
            partitions: std::thread::available_parallelism().map_or(1, usize::from),
            memory_bytes: None,
        };
        let views = load_views(config, &sql).await?;
        let tables = Tables {
            archive,
            summaries,
            views,
        };
        let ctx = context(&tables, limits).await?;
        let answer = match run(&ctx, &sql, None).await {
            Ok(a) => a,
            Err(QueryError::Sql(m)) => return Err(UsageError(m).into()),
            Err(e) => return Err(e.into()),
        };
        let text = render(&answer, args.format);
        let mut out = std::io::stdout().lock();
        match std::io::Write::write_all(&mut out, text.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
        eprintln!(
            "({} row{}, {:.3} s)",
            answer.rows(),
            if answer.rows() == 1 { "" } else { "s" },
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

/// The embedded store in `dir`, for a command run beside the service (which holds it while it
/// runs: the error says where to ask it instead).
///
/// # Errors
/// The store cannot be opened.
pub(crate) fn open_embedded(
    dir: &std::path::Path,
    retention: u64,
) -> anyhow::Result<crate::output::store::embedded::EmbeddedStore> {
    crate::output::store::embedded::EmbeddedStore::open(dir, retention).map_err(|e| {
        anyhow::anyhow!("{e}; a running service answers the same SQL at POST /api/query")
    })
}
