//! Kinesis client plumbing shared by the Kinesis source and outputs and the `produce` /
//! `consume` commands: `kinesis://STREAM` addresses, the SDK client (region, credential chain and
//! `AWS_ENDPOINT_URL` by the SDK's conventions), shard listing, and the service's limits.

use aws_sdk_kinesis::error::ProvideErrorMetadata;

pub use crate::aws::describe;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Shard};
use aws_sdk_kinesis::Client;

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
