//! `stampede produce --to kinesis://STREAM`: the fleet as Kinesis records, partition key `Name`
//! (so that a unicorn stays in one shard, in order), up to 500 records per `PutRecords` call.
//! Entries the service refuses (throughput exceeded, internal failure) are sent again with
//! jittered exponential backoff until they succeed or a minute passes without progress.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use super::{Generator, ProduceOptions, Progress};
use crate::backoff::Backoff;
use crate::decode::decode;
use crate::kinesis::{describe, PUT_RECORDS_MAX, PUT_RECORDS_MAX_BYTES, RECORD_MAX_BYTES};

/// Give up after this long without a record accepted.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Why a Kinesis run failed.
#[derive(Debug, thiserror::Error)]
pub enum KinesisProduceError {
    /// The stream is missing or unreachable.
    #[error("{0}")]
    Stream(String),
    /// Nothing was accepted for a minute.
    #[error("cannot deliver to {stream}: {last} (retried for a minute)")]
    Stalled {
        /// The stream.
        stream: String,
        /// The last error.
        last: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Produces the fleet to `stream` and returns how many records were sent.
///
/// # Errors
/// The stream is missing or unreachable, or records could not be delivered for a minute.
pub fn produce_kinesis(opts: ProduceOptions, stream: &str) -> Result<u64, KinesisProduceError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(KinesisProduceError::Runtime)?;
    runtime.block_on(run(opts, stream))
}

async fn run(opts: ProduceOptions, stream: &str) -> Result<u64, KinesisProduceError> {
    let client = crate::kinesis::client().await;
    // A clear error now rather than a minute of retries: is the stream there?
    crate::kinesis::list_shards(&client, stream)
        .await
        .map_err(|e| KinesisProduceError::Stream(e.to_string()))?;
    let mut generator = Generator::new(&opts);
    let mut progress = Progress::new(opts.progress);
    let mut buf = String::with_capacity(1 << 20);
    let mut sent = 0u64;
    let extra = format!(" to {stream}");
    loop {
        buf.clear();
        if generator.fill(
            &mut buf,
            PUT_RECORDS_MAX,
            PUT_RECORDS_MAX_BYTES - RECORD_MAX_BYTES,
        ) == 0
        {
            break;
        }
        let mut entries = Vec::with_capacity(PUT_RECORDS_MAX);
        for line in buf.lines() {
            // Malformed records have no name to key by: they still go, keyed by their content.
            let key = decode(line.as_bytes())
                .map(|t| t.name.into_owned())
                .unwrap_or_else(|_| format!("unkeyed-{}", line.len()));
            let entry = PutRecordsRequestEntry::builder()
                .data(Blob::new(line.as_bytes()))
                .partition_key(key)
                .build()
                .map_err(|e| KinesisProduceError::Stream(e.to_string()))?;
            entries.push(entry);
        }
        sent += put_all(&client, stream, &mut entries, KeyOrder::Loose).await?;
        progress.show(sent, generator.started, &extra);
    }
    progress.finish(sent, generator.started, &extra);
    Ok(sent)
}

/// How [`put_all`] keeps the order of records that share a partition key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// Strictly: a call carries at most one record per key, so a refused record never lets a
    /// later one of its key in first (outputs: one unicorn's summaries stay in order). Costs a
    /// call per record of a key that repeats within a batch.
    Kept,
    /// As `PutRecords` does: a refused record is sent again after later ones of its key that
    /// were accepted (the producer: a simulated fleet, whose records may come out of order
    /// anyway, at full batch size).
    Loose,
}

/// Sends `entries` with `PutRecords` calls until all are in, each refused record again (never
/// an accepted one), in order per partition key as `order` says; `entries` is left holding
/// those not yet accepted (empty on success), so that a caller that tries again never sends an
/// accepted record twice.
///
/// # Errors
/// A minute without progress.
pub async fn put_all(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: &mut Vec<PutRecordsRequestEntry>,
    order: KeyOrder,
) -> Result<u64, KinesisProduceError> {
    let total = entries.len() as u64;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut progress_at = Instant::now();
    while !entries.is_empty() {
        let in_call = match order {
            KeyOrder::Kept => first_of_each_key(entries),
            KeyOrder::Loose => vec![true; entries.len()],
        };
        let call: Vec<PutRecordsRequestEntry> = entries
            .iter()
            .zip(&in_call)
            .filter(|(_, sent)| **sent)
            .map(|(e, _)| e.clone())
            .collect();
        let sent = call.len();
        let result = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(call))
            .send()
            .await;
        let last = match result {
            Ok(out) => {
                let refused = out.failed_record_count.unwrap_or(0).max(0) as usize;
                // Some got in: the stream is taking records, so the rest go again soon.
                if refused < sent {
                    backoff.reset();
                    progress_at = Instant::now();
                }
                let mut outcomes = out.records.into_iter();
                let mut reason = String::new();
                let mut left = Vec::with_capacity(entries.len() - sent + refused);
                for (entry, sent) in std::mem::take(entries).into_iter().zip(in_call) {
                    if !sent {
                        left.push(entry);
                    } else if let Some(code) = outcomes.next().and_then(|r| r.error_code) {
                        reason = code;
                        left.push(entry);
                    }
                }
                *entries = left;
                if refused == 0 {
                    continue;
                }
                reason
            }
            Err(e) => describe(&e),
        };
        if progress_at.elapsed() > GIVE_UP_AFTER {
            return Err(KinesisProduceError::Stalled {
                stream: stream.to_owned(),
                last,
            });
        }
        tracing::debug!(left = entries.len(), reason = %last, "PutRecords: sending again");
        backoff.wait().await;
    }
    Ok(total)
}

/// Marks the first entry of each partition key: those go in the next call, the rest wait.
fn first_of_each_key(entries: &[PutRecordsRequestEntry]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    entries
        .iter()
        .map(|e| seen.insert(e.partition_key()))
        .collect()
}
