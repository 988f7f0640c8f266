//! The store output: summaries and dead letters into the configured store, embedded (redb) or
//! DynamoDB.
//!
//! One writer thread per service drains whatever is queued, writes it in one go (one
//! transaction, or one round of DynamoDB calls), and answers the barriers that came with it only
//! after the write succeeded. A failed write is retried with backoff until it succeeds — the
//! engines wait behind the bounded queue, nothing is dropped — and marks the output unhealthy
//! for `/readyz` meanwhile.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::dynamodb::DynamoStore;
use super::embedded::Store;
use super::{Health, Item};
use crate::metrics::METRICS;
use crate::record::{DeadLetter, Summary};

/// Where the store output writes.
pub enum Backend {
    /// Summaries and dead letters in the embedded database.
    Embedded(Store),
    /// Summaries in DynamoDB (driven on `runtime`), dead letters in the embedded database.
    DynamoDb {
        /// The runtime the writer thread drives the SDK on.
        runtime: tokio::runtime::Handle,
        /// The summary table.
        summaries: DynamoStore,
        /// Where dead letters are kept.
        dead_letters: Store,
    },
}

/// Starts the writer thread; it ends once `rx` closes and everything queued is written.
pub fn spawn(backend: Backend, rx: mpsc::Receiver<Item>, health: Health) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || run(&backend, rx, &health))
}

fn run(backend: &Backend, mut rx: mpsc::Receiver<Item>, health: &Health) {
    let mut summaries: Vec<Summary> = Vec::new();
    let mut dead: Vec<DeadLetter> = Vec::new();
    let mut barriers = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut take = |item| match item {
            Item::Summaries(s) => summaries.extend_from_slice(&s),
            Item::DeadLetters(d) => dead.extend_from_slice(&d),
            Item::Records(_) => {}
            Item::Barrier(b) => barriers.push(b),
        };
        take(first);
        while let Ok(item) = rx.try_recv() {
            take(item);
        }
        METRICS.queue_store.store(rx.len() as i64, Relaxed);
        health.busy(true);
        let written = match backend {
            Backend::Embedded(store) => {
                if summaries.is_empty() && dead.is_empty() {
                    0
                } else {
                    until_written("store", summaries.len(), health, || {
                        store.write(&summaries, &dead)
                    })
                }
            }
            Backend::DynamoDb {
                runtime,
                summaries: table,
                dead_letters,
            } => {
                let mut written = 0;
                if !summaries.is_empty() {
                    written = until_written("DynamoDB", summaries.len(), health, || {
                        runtime.block_on(table.write(&summaries)).map(|s| s.written)
                    });
                }
                if !dead.is_empty() {
                    until_written("dead-letter store", 0, health, || {
                        dead_letters.write(&[], &dead)
                    });
                }
                written
            }
        };
        health.busy(false);
        METRICS.store_writes.fetch_add(written as u64, Relaxed);
        summaries.clear();
        dead.clear();
        for barrier in barriers.drain(..) {
            barrier.done();
        }
    }
}

/// Runs `write` until it succeeds, counting and logging each failure, backing off up to 5 s:
/// the pipeline waits behind the writer, nothing is dropped. A failure or two (throttling) is a
/// warning; one that lasts is an error and marks the store unhealthy until a write succeeds.
fn until_written<E: std::fmt::Display>(
    target: &str,
    summaries: usize,
    health: &Health,
    mut write: impl FnMut() -> Result<usize, E>,
) -> usize {
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match write() {
            Ok(n) => {
                health.set(true);
                return n;
            }
            Err(e) => {
                METRICS.store_errors.fetch_add(1, Relaxed);
                if attempt < 3 {
                    tracing::warn!(error = %e, summaries, attempt, "{target} write failed; retrying");
                } else {
                    health.set(false);
                    tracing::error!(error = %e, summaries, attempt, "{target} write failed; retrying");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
