//! The Kinesis summary stream (`[summary_stream] kind = "kinesis"`): summaries as CONTRACT §2
//! JSON, partition key `Name` (one unicorn's summaries stay in one shard, in order), up to 500
//! records and 5 MiB per `PutRecords` call. A barrier is answered once every record sent before it is in the stream:
//! the calls are awaited in order, and refused entries are sent again until they are accepted
//! (see [`crate::produce::put_all`]); nothing is dropped.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use tokio::sync::mpsc;

use crate::metrics::METRICS;
use crate::sink::stream::StreamItem;

/// The summary stream's producer.
pub struct KinesisSink {
    client: Client,
    summaries: Option<String>,
    dead_letters: Option<String>,
}

impl KinesisSink {
    /// Publishes summaries to `summaries` and dead letters to `dead_letters` (each optional).
    pub fn new(client: Client, summaries: Option<&str>, dead_letters: Option<&str>) -> KinesisSink {
        KinesisSink {
            client,
            summaries: summaries.map(str::to_owned),
            dead_letters: dead_letters.map(str::to_owned),
        }
    }

    /// Publishes until `rx` closes.
    pub async fn run(self, mut rx: mpsc::Receiver<StreamItem>) {
        while let Some(item) = rx.recv().await {
            match item {
                StreamItem::Summaries(summaries) => {
                    let Some(stream) = &self.summaries else {
                        continue;
                    };
                    let entries = summaries.iter().filter_map(|s| {
                        let mut json = String::with_capacity(256);
                        s.write_json(&mut json);
                        entry(json.into_bytes(), s.name.clone())
                    });
                    for call in crate::kinesis::put_records_calls(entries) {
                        self.publish(stream, call).await;
                    }
                }
                // Raw bytes; the reason and origin travel in a JSON envelope, Kinesis records
                // having no headers. Up to 64 KiB each, so calls are bounded by bytes too.
                StreamItem::DeadLetters(dead) => {
                    let Some(stream) = &self.dead_letters else {
                        continue;
                    };
                    let entries = dead.iter().filter_map(|d| {
                        let envelope = serde_json::json!({
                            "reason": d.reason.as_str(),
                            "field": d.field.map(|f| f.as_str()),
                            "origin": format!("{}:{}@{}", d.source, d.partition, d.position),
                            "raw": String::from_utf8_lossy(&d.raw),
                        });
                        entry(envelope.to_string().into_bytes(), d.partition.clone())
                    });
                    for call in crate::kinesis::put_records_calls(entries) {
                        self.publish(stream, call).await;
                    }
                }
                // Everything before it has been awaited.
                StreamItem::Barrier(ack) => {
                    let _ = ack.send(());
                }
            }
        }
    }

    async fn publish(&self, stream: &str, entries: Vec<PutRecordsRequestEntry>) {
        let count = entries.len() as u64;
        loop {
            match crate::produce::put_all(&self.client, stream, entries.clone()).await {
                Ok(_) => {
                    METRICS
                        .stream_published
                        .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    METRICS
                        .stream_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(stream, error = %e, "summary stream: still retrying");
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
