//! Kinesis client plumbing shared by the Kinesis source and outputs and the `produce` /
//! `consume` commands: `kinesis://STREAM` addresses, the SDK client (region, credential chain and
//! `AWS_ENDPOINT_URL` by the SDK's conventions), shard listing, and the service's limits.

use aws_sdk_kinesis::error::ProvideErrorMetadata;

pub use crate::clients::aws::describe;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Shard};
use aws_sdk_kinesis::Client;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// Records per `PutRecords` call, at most.
pub const PUT_RECORDS_MAX: usize = 500;
/// Bytes per `PutRecords` call, at most (data and partition keys).
pub const PUT_RECORDS_MAX_BYTES: usize = 5 << 20;
/// Bytes of one record's data and partition key, at most.
pub const RECORD_MAX_BYTES: usize = 1 << 20;

/// Groups `entries`, in order, into `PutRecords` calls within the service's limits: at most
/// [`PUT_RECORDS_MAX`] records and [`PUT_RECORDS_MAX_BYTES`] bytes each.
pub fn put_records_calls(
    entries: impl IntoIterator<Item = PutRecordsRequestEntry>,
) -> Vec<Vec<PutRecordsRequestEntry>> {
    let mut calls: Vec<Vec<PutRecordsRequestEntry>> = Vec::new();
    let mut bytes = 0;
    for e in entries {
        let size = e.data().as_ref().len() + e.partition_key().map_or(0, str::len);
        match calls.last_mut() {
            Some(call) if call.len() < PUT_RECORDS_MAX && bytes + size <= PUT_RECORDS_MAX_BYTES => {
                bytes += size;
                call.push(e);
            }
            _ => {
                bytes = size;
                calls.push(vec![e]);
            }
        }
    }
    calls
}

/// Parses `kinesis://STREAM` into the stream name.
///
/// # Errors
/// What is wrong with it, in words.
pub fn parse_url(url: &str) -> Result<String, String> {
    let name = url
        .strip_prefix("kinesis://")
        .ok_or("expected kinesis://STREAM")?;
    check_stream(name)?;
    Ok(name.to_owned())
}

/// Checks a stream name as Kinesis does: 1 to 128 of `[a-zA-Z0-9_.-]`.
///
/// # Errors
/// Why the name is not a stream name.
pub fn check_stream(name: &str) -> Result<(), String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 128 || !name.chars().all(legal) {
        return Err(format!(
            "{name:?} is not a Kinesis stream name (1 to 128 of a-z A-Z 0-9 . _ -)"
        ));
    }
    Ok(())
}

/// A client configured by the SDK's conventions.
pub async fn client() -> Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Client::new(&config)
}

/// Why the shards of a stream could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ShardsError {
    /// The stream does not exist: retrying will not help.
    #[error("stream {0:?} does not exist; create it first")]
    Missing(String),
    /// Kinesis could not be reached or refused the call (in words).
    #[error("cannot list the shards of {stream}: {detail}")]
    Failed {
        /// The stream.
        stream: String,
        /// What went wrong.
        detail: String,
    },
}

/// Every shard of `stream`, through all pages of `ListShards`.
///
/// # Errors
/// The stream is missing or Kinesis cannot be reached.
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<Shard>, ShardsError> {
    let mut shards = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let request = match &next {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let page = request.send().await.map_err(|e| {
            if e.code() == Some("ResourceNotFoundException") {
                ShardsError::Missing(stream.to_owned())
            } else {
                ShardsError::Failed {
                    stream: stream.to_owned(),
                    detail: describe(&e),
                }
            }
        })?;
        shards.extend(page.shards.unwrap_or_default());
        next = page.next_token;
        if next.is_none() {
            return Ok(shards);
        }
    }
}

/// Where Kinesis puts a record: the MD5 of its partition key as a 128-bit big-endian number.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(md5::compute(partition_key.as_bytes()).0)
}

/// A shard's hash key range, both ends included.
pub fn hash_range(shard: &Shard) -> Option<(u128, u128)> {
    let range = shard.hash_key_range()?;
    Some((
        range.starting_hash_key().parse().ok()?,
        range.ending_hash_key().parse().ok()?,
    ))
}

/// Give up after this long without a record accepted.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Nothing was accepted by `PutRecords` for a minute.
#[derive(Debug, thiserror::Error)]
#[error("cannot deliver to {stream}: {last} (retried for a minute)")]
pub struct PutStalled {
    /// The stream.
    pub stream: String,
    /// The last error.
    pub last: String,
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
    client: &Client,
    stream: &str,
    entries: &mut Vec<PutRecordsRequestEntry>,
    order: KeyOrder,
) -> Result<u64, PutStalled> {
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
            return Err(PutStalled {
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

/// Whether a Kinesis stream exists. An unreachable Kinesis counts as "exists" with a warning
/// (naming the config `key`), as the parts that use it retry.
pub async fn stream_exists(client: &Client, key: &str, stream: &str) -> bool {
    match list_shards(client, stream).await {
        Ok(_) => true,
        Err(ShardsError::Missing(_)) => false,
        Err(e) => {
            tracing::warn!(key, error = %e, "Kinesis not reachable yet; retrying");
            true
        }
    }
}

/// A Kinesis stream the config names (by `key`) must exist: a missing one stops the start.
///
/// # Errors
/// The stream does not exist.
pub async fn require_stream(client: &Client, key: &str, stream: &str) -> anyhow::Result<()> {
    if stream_exists(client, key, stream).await {
        Ok(())
    } else {
        anyhow::bail!("{key}: {}", ShardsError::Missing(stream.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_are_the_md5_of_the_partition_key() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e; MD5("a") = 0cc175b9c0f1b6a831c399e269772661.
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
        assert_eq!(hash_key("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn put_records_calls_keep_to_the_count_and_byte_limits() {
        let record = |n: usize| {
            PutRecordsRequestEntry::builder()
                .data(aws_sdk_kinesis::primitives::Blob::new(vec![b'x'; n]))
                .partition_key("k")
                .build()
                .unwrap()
        };
        let sizes =
            |calls: &[Vec<PutRecordsRequestEntry>]| calls.iter().map(Vec::len).collect::<Vec<_>>();
        // 1,201 small records: 500 + 500 + 201.
        let calls = put_records_calls((0..1201).map(|_| record(100)));
        assert_eq!(sizes(&calls), [500, 500, 201]);
        // 64 KiB dead letters: 79 fit in 5 MiB (79 × 65,537 = 5,177,423 ≤ 5,242,880).
        let calls = put_records_calls((0..200).map(|_| record(64 << 10)));
        assert_eq!(sizes(&calls), [79, 79, 42]);
        assert!(put_records_calls(std::iter::empty()).is_empty());
    }

    #[test]
    fn parses_kinesis_urls() {
        assert_eq!(parse_url("kinesis://wildrydes"), Ok("wildrydes".into()));
        for bad in [
            "kinesis://",
            "kinesis://a/b",
            "kafka://x",
            "kinesis://sp ace",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
