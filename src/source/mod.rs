//! Sources: where telemetry comes from. Each hands raw payloads, tagged with their partition
//! and position, to decoding and a window engine per partition. The stream sources (Kafka,
//! Kinesis) share one partition lifecycle, [`durable`]: each only reads, commits and keeps its
//! ownership.
//!
//! [`Sources`] is the one start and stop of them all: the HTTP partition (`POST /ingest`, and
//! the demo fleet) always runs; `[source]` may add a file, a Kafka consumer group or Kinesis
//! shards.

pub mod durable;
pub mod file;
pub mod http;
pub mod kafka;
pub mod kinesis;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clients::aws::Aws;
use crate::output::{Fanout, Health};
use crate::pipeline::{Batch, Steps};

/// The configured source beside the HTTP partition (`[source]`).
pub enum Settings {
    /// `POST /ingest` only.
    Http,
    /// One NDJSON file, read once.
    File(std::path::PathBuf),
    /// A Kafka consumer group.
    Kafka(kafka::KafkaSourceConfig),
    /// A Kinesis stream, shards shared through leases.
    Kinesis(kinesis::KinesisSourceConfig),
}

/// One running source.
enum Running {
    /// A partition task of its own (HTTP, a file).
    Partition(&'static str, JoinHandle<()>),
    Kafka(kafka::KafkaSource),
    Kinesis(kinesis::KinesisSource),
}

/// Every running source.
pub struct Sources {
    /// Feeds the HTTP partition (ingest and the demo fleet).
    pub ingest: mpsc::Sender<Batch>,
    /// The stream source's connection, for `/readyz`.
    pub health: Option<Health>,
    running: Vec<Running>,
}

impl Sources {
    /// Starts the HTTP partition and the source `settings` name, each partition computing
    /// `steps` and sending down `fanout`; they stop (flushing, or handing their partitions off)
    /// when `stop` is cancelled.
    ///
    /// # Errors
    /// A stream source cannot start: librdkafka refused a setting (a config error), the
    /// Kinesis stream or lease table is missing.
    pub async fn start(
        settings: Settings,
        steps: &Steps,
        fanout: &Fanout,
        stop: &CancellationToken,
        aws: &Aws,
    ) -> anyhow::Result<Sources> {
        let (ingest, task) = http::start(steps.clone(), fanout.clone(), stop.clone());
        let mut running = vec![Running::Partition("http partition", task)];
        let mut health = None;
        match settings {
            Settings::Http => {}
            Settings::File(path) => {
                let task = file::start(path, steps.clone(), fanout.clone(), stop.clone());
                running.push(Running::Partition("file partition", task));
            }
            Settings::Kafka(cfg) => {
                let source =
                    kafka::KafkaSource::start(cfg, steps.clone(), fanout.clone(), stop.clone())
                        .map_err(|e| {
                            crate::clients::kafka::start_error(
                                e,
                                "cannot start the Kafka source (source.brokers)",
                            )
                        })?;
                health = Some(
                    Health::from_flag("source", Arc::clone(&source.connected))
                        .with_reason(Arc::clone(&source.last_error)),
                );
                running.push(Running::Kafka(source));
            }
            Settings::Kinesis(cfg) => {
                let aws = aws.config().await;
                let client = aws_sdk_kinesis::Client::new(aws);
                crate::clients::kinesis::require_stream(&client, "source.stream", &cfg.stream)
                    .await?;
                let source = kinesis::KinesisSource::start(aws, cfg, steps.clone(), fanout.clone(), stop.clone())
                    .await
                    .context("cannot start the Kinesis source (source.lease_table, store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)")?;
                health = Some(source.health.clone());
                running.push(Running::Kinesis(source));
            }
        }
        Ok(Sources {
            ingest,
            health,
            running,
        })
    }

    /// Waits until every source has stopped (after `stop` was cancelled and the ingest senders
    /// dropped): each partition flushed or handed off. Returns the names of those that failed.
    pub async fn stopped(self) -> Vec<String> {
        drop(self.ingest);
        let mut failed = Vec::new();
        for source in self.running {
            match source {
                Running::Partition(name, task) => {
                    if task.await.is_err() {
                        failed.push(name.to_owned());
                    }
                }
                Running::Kafka(source) => source.stopped().await,
                Running::Kinesis(source) => source.stopped().await,
            }
        }
        failed
    }
}
