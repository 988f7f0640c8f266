//! `stampede produce --to kinesis://STREAM`: the fleet as Kinesis records, partition key `Name`
//! (so that a unicorn stays in one shard, in order), up to 500 records per `PutRecords` call.
//! Entries the service refuses (throughput exceeded, internal failure) are sent again with
//! jittered exponential backoff until they succeed or a minute passes without progress.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use super::{Generator, ProduceOptions, Progress};
use crate::clients::kinesis::{
    put_all, KeyOrder, PutStalled, PUT_RECORDS_MAX, PUT_RECORDS_MAX_BYTES, RECORD_MAX_BYTES,
};
use crate::decode::decode;

/// Why a Kinesis run failed.
#[derive(Debug, thiserror::Error)]
pub enum KinesisProduceError {
    /// The stream is missing or unreachable.
    #[error("{0}")]
    Stream(String),
    /// Nothing was accepted for a minute.
    #[error(transparent)]
    Stalled(#[from] PutStalled),
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
    let client = crate::clients::kinesis::client().await;
    // A clear error now rather than a minute of retries: is the stream there?
    crate::clients::kinesis::list_shards(&client, stream)
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
