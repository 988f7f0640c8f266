//! The Kinesis outputs: the summary stream (`[summary_stream] kind = "kinesis"`, summaries as
//! CONTRACT §2 JSON, partition key `Name`: one unicorn's summaries stay in one shard, in order)
//! and the dead-letter stream of a Kinesis source, each an output of its own; up to 500 records
//! and 5 MiB per `PutRecords` call. A barrier is answered once every record sent before it is in
//! the stream:
//! the calls are awaited in order, and refused entries are sent again until they are accepted
//! (see [`crate::clients::kinesis::put_all`]); nothing is dropped.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use tokio::sync::mpsc;

use crate::metrics::METRICS;
use crate::output::{Health, Item};

/// A Kinesis output: publishes summaries to one stream, dead letters to another, or both.
pub struct KinesisStream {
    client: Client,
    summaries: Option<String>,
    dead_letters: Option<String>,
    health: Health,
}

impl KinesisStream {
    /// Publishes summaries to `summaries` and dead letters to `dead_letters` (each optional);
    /// `health` goes down while calls keep failing.
    pub fn new(
        client: Client,
        summaries: Option<&str>,
        dead_letters: Option<&str>,
        health: Health,
    ) -> KinesisStream {
        KinesisStream {
            client,
            summaries: summaries.map(str::to_owned),
            dead_letters: dead_letters.map(str::to_owned),
            health,
        }
    }

    /// Publishes until `rx` closes.
    pub async fn run(self, mut rx: mpsc::Receiver<Item>) {
        while let Some(item) = rx.recv().await {
            match item {
                Item::Summaries(summaries, _) => {
                    let Some(stream) = &self.summaries else {
                        continue;
                    };
                    let entries = summaries.iter().filter_map(|s| {
                        let mut json = String::with_capacity(256);
                        s.write_json(&mut json);
                        entry(json.into_bytes(), s.name.clone())
                    });
                    for call in crate::clients::kinesis::put_records_calls(entries) {
                        self.publish(stream, call).await;
                    }
                }
                // Raw bytes; the reason and origin travel in a JSON envelope, Kinesis records
                // having no headers. Up to 64 KiB each, so calls are bounded by bytes too.
                Item::DeadLetters(dead) => {
                    let Some(stream) = &self.dead_letters else {
                        continue;
                    };
                    let entries = dead.iter().filter_map(|d| {
                        let envelope = serde_json::json!({
                            "reason": d.reason.as_str(),
                            "field": d.field.map(|f| f.as_str()),
                            "origin": d.origin(),
                            "raw": String::from_utf8_lossy(&d.raw),
                        });
                        entry(envelope.to_string().into_bytes(), d.partition.clone())
                    });
                    for call in crate::clients::kinesis::put_records_calls(entries) {
                        self.publish(stream, call).await;
                    }
                }
                // Everything before it has been awaited.
                Item::Barrier(barrier) => barrier.done(),
                Item::Records(_) | Item::Alerts { .. } | Item::Views { .. } => {}
            }
        }
    }

    /// Sends `entries` until every one is in; after a failure only those not yet accepted go
    /// again (an accepted record is never sent twice).
    async fn publish(&self, stream: &str, mut entries: Vec<PutRecordsRequestEntry>) {
        let count = entries.len() as u64;
        loop {
            let order = crate::clients::kinesis::KeyOrder::Kept;
            match crate::clients::kinesis::put_all(&self.client, stream, &mut entries, order).await
            {
                Ok(_) => {
                    METRICS
                        .stream_published
                        .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                    self.health.set(true);
                    return;
                }
                Err(e) => {
                    self.health.failed(crate::output::ErrorKind::Transient, &e);
                    self.health.down(&e);
                    METRICS
                        .stream_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(stream, error = %e, "kinesis output: PutRecords failed; still retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn entry(data: Vec<u8>, key: String) -> Option<PutRecordsRequestEntry> {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(data))
        .partition_key(key)
        .build()
        .map_err(|e| tracing::error!(error = %e, "cannot build a Kinesis record"))
        .ok()
}
