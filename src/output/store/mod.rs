//! The store output: summaries and dead letters into the configured store, embedded (redb) or
//! DynamoDB (the summary table and the dead-letter table: nothing local); and [`Stores`], what
//! the API reads them back from.
//!
//! One writer thread per service drains whatever is queued, writes it in one go (one
//! transaction, or one round of DynamoDB calls), and answers the barriers that came with it only
//! after the write succeeded. A failed write is retried with backoff until it succeeds — the
//! engines wait behind the bounded queue, nothing is dropped — and marks the output unhealthy
//! for `/readyz` meanwhile.

pub mod dead_letters;
pub mod dynamodb;
pub mod embedded;
pub mod notification_log;
pub mod subscriptions;
pub mod views;

use crate::backoff::Backoff;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::dead_letters::DeadLetterTable;
use self::dynamodb::DynamoStore;
use self::embedded::EmbeddedStore;
use crate::metrics::METRICS;
use crate::output::{Classify, ErrorKind, Health, Item};
use crate::record::{DeadLetter, DeadLetterView, Summary, SummaryQuery};
use crate::time::Millis;
use tokio_util::sync::CancellationToken;

/// Where summaries and dead letters are kept (`[store]`).
pub enum Settings {
    /// The embedded database in `path`, keeping the newest `dead_letter_retention` dead letters.
    Embedded {
        /// Its directory.
        path: std::path::PathBuf,
        /// Dead letters kept.
        dead_letter_retention: u64,
    },
    /// DynamoDB: the summary table and the dead-letter table (nothing kept on this host).
    DynamoDb {
        /// The summary table.
        table: String,
        /// The dead-letter table.
        dead_letter_table: String,
        /// Create missing tables.
        create_tables: bool,
    },
}

/// Registers the store output as `settings` say; returns what the API reads summaries and dead
/// letters back from.
///
/// # Errors
/// The store cannot be opened or a table is missing; the message names the key.
pub async fn build(
    settings: Settings,
    aws: &crate::clients::aws::Aws,
    outputs: &mut crate::output::Outputs,
) -> anyhow::Result<Stores> {
    use anyhow::Context as _;
    let (backend, stores) = match settings {
        Settings::DynamoDb {
            table,
            dead_letter_table,
            create_tables,
        } => {
            let aws = aws.config().await;
            let summaries = open_dynamo(aws, &table, create_tables).await?;
            let dead_letters = DeadLetterTable::open(aws, &dead_letter_table, create_tables)
                .await
                .context(
                    "store.dead_letter_table (store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)",
                )?;
            let backend = Backend::DynamoDb {
                runtime: tokio::runtime::Handle::current(),
                summaries: summaries.clone(),
                dead_letters: dead_letters.clone(),
            };
            (
                backend,
                Stores::DynamoDb {
                    summaries,
                    dead_letters,
                },
            )
        }
        Settings::Embedded {
            path,
            dead_letter_retention,
        } => {
            let embedded = tokio::task::spawn_blocking(move || {
                EmbeddedStore::open(&path, dead_letter_retention)
            })
            .await
            .context("store open panicked")??;
            (
                Backend::Embedded(embedded.clone()),
                Stores::Embedded(embedded),
            )
        }
    };
    let rx = outputs.add(
        "store",
        crate::output::Interest {
            summaries: true,
            dead_letters: true,
            ..crate::output::Interest::default()
        },
    );
    let health = Health::new("store");
    outputs.run(
        "store",
        spawn(backend, rx, health.clone(), outputs.give_up())
            .map_err(|e| anyhow::anyhow!("cannot start the store's writer thread: {e}"))?,
        health,
    );
    Ok(stores)
}

/// The DynamoDB summary table, retried for a minute while DynamoDB cannot be reached; a missing
/// table (without `create_tables`) fails at once, naming it.
async fn open_dynamo(
    aws: &aws_config::SdkConfig,
    table: &str,
    create: bool,
) -> anyhow::Result<DynamoStore> {
    use anyhow::Context as _;
    let mut wait = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match DynamoStore::with_config(aws, table, create).await {
            Ok(store) => return Ok(store),
            Err(e) if e.permanent || tokio::time::Instant::now() > deadline => {
                return Err(e).context("store.kind = \"dynamodb\" (store.table, store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)");
            }
            Err(e) => {
                tracing::warn!(error = %e, "DynamoDB not reachable; retrying");
                wait.wait().await;
            }
        }
    }
}

/// Where the store output writes.
pub enum Backend {
    /// Summaries and dead letters in the embedded database.
    Embedded(EmbeddedStore),
    /// Summaries and dead letters in DynamoDB (driven on `runtime`).
    DynamoDb {
        /// The runtime the writer thread drives the SDK on.
        runtime: tokio::runtime::Handle,
        /// The summary table.
        summaries: DynamoStore,
        /// The dead-letter table.
        dead_letters: DeadLetterTable,
    },
}

/// Where the API reads stored summaries and dead letters.
#[derive(Clone)]
pub enum Stores {
    /// The embedded database.
    Embedded(EmbeddedStore),
    /// The DynamoDB tables.
    DynamoDb {
        /// The summary table.
        summaries: DynamoStore,
        /// The dead-letter table.
        dead_letters: DeadLetterTable,
    },
}

impl Stores {
    /// Stored summaries, newest first.
    ///
    /// # Errors
    /// The read failed (in words).
    pub async fn summaries(&self, query: SummaryQuery) -> Result<Vec<Summary>, String> {
        match self {
            Stores::Embedded(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.summaries(&query))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            Stores::DynamoDb { summaries, .. } => {
                summaries.summaries(&query).await.map_err(|e| e.to_string())
            }
        }
    }

    /// The newest dead letters, newest first.
    ///
    /// # Errors
    /// The read failed (in words).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterView>, String> {
        match self {
            Stores::Embedded(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.dead_letters(limit))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            Stores::DynamoDb { dead_letters, .. } => {
                dead_letters.newest(limit).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Whether the store can be written to now, answered within `wait` (a store that hangs is
    /// not writable): why not, in words.
    ///
    /// # Errors
    /// It cannot be written now.
    pub async fn writable(&self, wait: Duration) -> Result<(), String> {
        let answer = async {
            match self {
                Stores::Embedded(store) => {
                    let store = store.clone();
                    tokio::task::spawn_blocking(move || store.writable())
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                }
                Stores::DynamoDb {
                    summaries,
                    dead_letters,
                } => {
                    summaries.writable().await?;
                    dead_letters.writable().await
                }
            }
        };
        tokio::time::timeout(wait, answer)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the store did not answer within {} s",
                    wait.as_secs()
                ))
            })
    }
}

/// Starts the writer thread; it ends once `rx` closes and everything queued is written, or
/// `give_up` fires (shutdown past its deadline: the batch at hand is abandoned, its barriers
/// unanswered).
///
/// # Errors
/// The thread could not be started.
pub fn spawn(
    backend: Backend,
    rx: mpsc::Receiver<Item>,
    health: Health,
    give_up: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    // A thread of its own, named for `top -H` and `perf`: it lives as long as the service.
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let writer = std::thread::Builder::new()
        .name("stampede-store".into())
        .spawn(move || {
            run(&backend, rx, (&health, &give_up));
            // The store closes before the output counts as ended: a service started again
            // on the same path right after must find it unlocked.
            drop(backend);
            let _ = done.send(());
        });
    writer?;
    Ok(tokio::spawn(async move {
        // The sender is dropped unsent only when the writer panicked.
        assert!(ended.await.is_ok(), "the store's writer thread panicked");
    }))
}

/// At most this many summaries go into one transaction of the embedded store. A big fleet's
/// minute is a million rows: written in one transaction it held the writer (and its `busy`
/// mark, which `/readyz` reads) for 7–12 s; in pieces of this size each takes about 0.1 s, and
/// the minute goes through in key order all the same.
pub const ROWS_PER_TRANSACTION: usize = 10_000;

fn run(
    backend: &Backend,
    mut rx: mpsc::Receiver<Item>,
    (health, give_up): (&Health, &CancellationToken),
) {
    let mut summaries: Vec<std::sync::Arc<[Summary]>> = Vec::new();
    let mut dead: Vec<DeadLetter> = Vec::new();
    let mut barriers = Vec::new();
    // (when emitted, how many first summaries): for the window-closed → stored latency.
    let mut closed: Vec<(Millis, u64)> = Vec::new();
    // A batch was abandoned at the shutdown deadline: no later barrier is answered either.
    let mut abandoned = false;
    while let Some(first) = rx.blocking_recv() {
        let mut take = |item| match item {
            Item::Summaries(s, at) => {
                closed.push((at, s.iter().filter(|s| s.revision == 0).count() as u64));
                summaries.push(s);
            }
            Item::DeadLetters(d) => dead.extend_from_slice(&d),
            Item::Records(_) | Item::Alerts { .. } | Item::Views { .. } => {}
            Item::Barrier(b) => barriers.push(b),
        };
        take(first);
        while let Ok(item) = rx.try_recv() {
            take(item);
        }
        METRICS.queue_store.store(rx.len() as i64, Relaxed);
        let count = summaries.iter().map(|s| s.len()).sum::<usize>();
        // `None`: shutdown passed its deadline while a write kept failing (see `until_written`).
        let written: Option<usize> = match backend {
            Backend::Embedded(store) => {
                // In key order: a minute's close of a big fleet is a summary per unicorn, and in
                // the order they closed each would land on another page of both tables. The
                // sort is stable, so revisions of one window keep their order.
                let mut ordered: Vec<&Summary> = summaries.iter().flat_map(|s| s.iter()).collect();
                ordered.sort_by(|a, b| (&a.name, a.window_start).cmp(&(&b.name, b.window_start)));
                // The dead letters go with the last piece: a batch abandoned before it stores
                // none of them (its positions are re-read, and they are dead-lettered again).
                let mut pieces: Vec<&[&Summary]> = ordered.chunks(ROWS_PER_TRANSACTION).collect();
                if pieces.is_empty() && !dead.is_empty() {
                    pieces.push(&[]);
                }
                let last = pieces.len().saturating_sub(1);
                let mut written = Some(0);
                for (i, piece) in pieces.into_iter().enumerate() {
                    let Some(so_far) = written else { break };
                    let dead_letters = if i == last { dead.as_slice() } else { &[] };
                    health.busy(true);
                    written = until_written("store", piece.len(), (health, give_up), || {
                        store.write(piece, dead_letters)
                    })
                    .map(|n| so_far + n);
                    health.busy(false);
                }
                written
            }
            Backend::DynamoDb {
                runtime,
                summaries: table,
                dead_letters,
            } => {
                health.busy(true);
                let mut written = Some(0);
                if count > 0 {
                    let all: Vec<Summary> =
                        summaries.iter().flat_map(|s| s.iter().cloned()).collect();
                    written = until_written("DynamoDB", count, (health, give_up), || {
                        runtime.block_on(table.write(&all)).map(|s| s.written)
                    });
                }
                if written.is_some() && !dead.is_empty() {
                    written = until_written("DynamoDB dead-letter", 0, (health, give_up), || {
                        runtime.block_on(dead_letters.write(&dead))
                    })
                    .and(written);
                }
                health.busy(false);
                written
            }
        };
        if written.is_none() {
            abandoned = true;
        }
        let Some(written) = written.filter(|_| !abandoned) else {
            // Abandoned (and so is everything after it): its barriers go unanswered, so nothing
            // after them is committed.
            barriers.clear();
            closed.clear();
            summaries.clear();
            dead.clear();
            continue;
        };
        METRICS.store_writes.fetch_add(written as u64, Relaxed);
        if written > 0 {
            let now = crate::time::now_ms();
            for (at, n) in closed.drain(..) {
                METRICS
                    .store_latency
                    .observe_n(now.saturating_sub(at).max(0) as u64, n);
            }
        }
        closed.clear();
        summaries.clear();
        dead.clear();
        for barrier in barriers.drain(..) {
            barrier.done();
        }
    }
}

/// Runs `write` until it succeeds, counting each failure by kind and backing off up to 5 s: the
/// pipeline waits behind the writer, nothing is dropped — unless `give_up` fires (shutdown past
/// its deadline), when the batch is abandoned and its barriers go unanswered, so that nothing
/// after it is committed. A permanent error marks the store down at once (and is logged once a
/// minute); a transient one is a warning, and an error that marks it down from the third try.
fn until_written<E: std::fmt::Display + Classify>(
    target: &str,
    summaries: usize,
    (health, give_up): (&Health, &CancellationToken),
    mut write: impl FnMut() -> Result<usize, E>,
) -> Option<usize> {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match write() {
            Ok(n) => {
                health.set(true);
                if attempt > 1 {
                    tracing::info!(summaries, attempt, "{target} written again");
                }
                return Some(n);
            }
            Err(e) => {
                METRICS.store_errors.fetch_add(1, Relaxed);
                let kind = e.kind();
                health.failed(kind, &e);
                if kind == ErrorKind::Transient {
                    if attempt < 3 {
                        tracing::warn!(error = %e, summaries, attempt, "{target} write failed; retrying");
                    } else {
                        health.down(&e);
                        tracing::error!(error = %e, summaries, attempt, "{target} write failed; retrying");
                    }
                }
                if give_up.is_cancelled() {
                    tracing::error!(summaries, "{target}: shutdown deadline passed; this batch is not stored (its positions stay uncommitted)");
                    return None;
                }
                backoff.wait_blocking();
            }
        }
    }
}
