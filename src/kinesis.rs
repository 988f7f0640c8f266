//! Kinesis client plumbing shared by the summary-stream sink and the `produce` / `consume`
//! commands: `kinesis://STREAM` addresses, the SDK client (region, credential chain and
//! `AWS_ENDPOINT_URL` by the SDK's conventions), shard listing, and the service's limits.

use aws_sdk_kinesis::error::ProvideErrorMetadata;

pub use crate::aws::describe;
use aws_sdk_kinesis::types::Shard;
use aws_sdk_kinesis::Client;

/// Records per `PutRecords` call, at most.
pub const PUT_RECORDS_MAX: usize = 500;
/// Bytes per `PutRecords` call, at most (data and partition keys).
pub const PUT_RECORDS_MAX_BYTES: usize = 5 << 20;
/// Bytes of one record's data and partition key, at most.
pub const RECORD_MAX_BYTES: usize = 1 << 20;

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

/// Every shard of `stream`, through all pages of `ListShards`.
///
/// # Errors
/// The stream is missing or Kinesis cannot be reached (in words).
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<Shard>, String> {
    let mut shards = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let request = match &next {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let page = request.send().await.map_err(|e| {
            if e.code() == Some("ResourceNotFoundException") {
                format!("stream {stream:?} does not exist; create it first")
            } else {
                format!("cannot list the shards of {stream}: {}", describe(&e))
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
