//! Assembly: builds every part from the config, wires the channels, and runs the ordered
//! shutdown. The only module that knows every other; `main` and the tests both call [`start`].
//!
//! Shutdown (DESIGN decision 7): stop the sources (ingest answers 503), let the engine drain its
//! queue and flush every open window, let the store writer commit what it was sent, let the hub
//! take in the last summaries and send its last frames, close the WebSockets, stop the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hub::{Hub, HubSettings};
use crate::kafka::Observed;
use crate::pipeline::{self, Batch, Outputs, PartitionSpec};
use crate::sink::kafka::{KafkaSink, KafkaTopic};
use crate::sink::store::{run_writer, Store};
use crate::sink::stream::{StreamItem, StreamSink};
use crate::source::kafka::{KafkaSource, KafkaSourceConfig};
use crate::web::{router, WebState};

/// A running service.
pub struct App {
    /// Where it listens (the real port when the config said 0).
    pub addr: SocketAddr,
    /// Feeds the HTTP partition directly (the demo fleet uses it).
    pub ingest: mpsc::Sender<Batch>,
    cancel: CancellationToken,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl App {
    /// Starts the ordered shutdown and waits for it.
    ///
    /// # Errors
    /// A stage failed while stopping.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        drop(self.ingest);
        self.done.await.context("shutdown task panicked")?
    }

    /// A token that stops the service when cancelled (for signal handlers).
    pub fn stopper(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// Builds and starts the service described by `config`.
///
/// # Errors
/// The store cannot be opened or the address cannot be bound; the message says which and why.
pub async fn start(config: Config) -> anyhow::Result<App> {
    let window = config.window_config()?;
    let addr = config.listen_addr()?;
    let store_dir = config.store.path.clone();
    let retention = config.store.dead_letter_retention;
    let store = tokio::task::spawn_blocking(move || Store::open(&store_dir, retention))
        .await
        .context("store open panicked")??;

    let aws = AwsConfig::new();
    let dynamo = if config.store.kind == "dynamodb" {
        Some(
            open_dynamo(
                aws_config(&aws).await,
                &config.store.table,
                config.store.create_tables,
            )
            .await?,
        )
    } else {
        None
    };
    let (store_tx, store_rx) = mpsc::channel(256);
    let writer_store = store.clone();
    let writer_dynamo = dynamo
        .clone()
        .map(|d| (tokio::runtime::Handle::current(), d));
    let writer =
        tokio::task::spawn_blocking(move || run_writer(&writer_store, store_rx, writer_dynamo));

    let hub_stop = CancellationToken::new();
    let settings = HubSettings {
        queue_frames: usize::try_from(config.web.ws_queue_frames).unwrap_or(16_384),
        queue_bytes: usize::try_from(config.web.ws_queue_bytes).unwrap_or(8 << 20),
        silent_after: std::time::Duration::from_secs(config.web.silent_after_secs),
    };
    let (hub, hub_task) = Hub::start(settings, hub_stop.clone());

    let mut connections: Vec<(&'static str, Arc<AtomicBool>)> = Vec::new();
    let (stream_tx, stream_task) = match stream_sink(&config, &aws, &mut connections).await? {
        Some(sink) => {
            let (tx, rx) = mpsc::channel::<StreamItem>(256);
            (Some(tx), Some(tokio::spawn(sink.run(rx))))
        }
        None => (None, None),
    };
    let outputs = Outputs {
        store: store_tx.clone(),
        hub: hub.input(),
        stream: stream_tx.clone(),
    };

    let (ingest_tx, ingest_rx) = mpsc::channel::<Batch>(64);
    let source_stop = CancellationToken::new();
    let engine = tokio::spawn(pipeline::run(
        PartitionSpec {
            window,
            source: "http",
            name: "0".into(),
            durable: None,
        },
        ingest_rx,
        outputs.clone(),
        source_stop.clone(),
    ));

    let kafka_source = if config.source.kind == "kafka" {
        let source = KafkaSource::start(
            KafkaSourceConfig {
                brokers: config.source.brokers.clone(),
                topic: config.source.topic.clone(),
                group: config.source.group.clone(),
                options: config.source.kafka_options.clone(),
                checkpoint_topic: config.source.checkpoint_topic.clone(),
                window,
            },
            outputs.clone(),
            source_stop.clone(),
        )
        .map_err(|e| {
            crate::kafka::start_error(e, "cannot start the Kafka source (source.brokers)")
        })?;
        connections.push(("source", Arc::clone(&source.connected)));
        Some(source)
    } else {
        None
    };

    let kinesis_source = if config.source.kind == "kinesis" {
        let aws = aws_config(&aws).await;
        let client = aws_sdk_kinesis::Client::new(aws);
        kinesis_streams_exist(&client, &[("source.stream", Some(&config.source.stream))]).await?;
        let source = crate::source::kinesis::KinesisSource::start(
            aws,
            crate::source::kinesis::KinesisSourceConfig {
                stream: config.source.stream.clone(),
                lease_table: config.source.lease_table.clone(),
                create_tables: config.store.create_tables,
                window,
            },
            outputs.clone(),
            source_stop.clone(),
        )
        .await
        .context("cannot start the Kinesis source (source.lease_table, store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)")?;
        connections.push(("source", Arc::clone(&source.connected)));
        Some(source)
    } else {
        None
    };

    // The file source is a partition of its own; it flushes its windows when the file ends.
    let file_partition = if config.source.kind == "file" {
        let path = std::path::PathBuf::from(&config.source.path);
        let (tx, rx) = mpsc::channel::<Batch>(8);
        let task = tokio::spawn(pipeline::run(
            PartitionSpec {
                window,
                source: "file",
                name: config.source.path.clone(),
                durable: None,
            },
            rx,
            outputs.clone(),
            source_stop.clone(),
        ));
        tokio::task::spawn_blocking(move || {
            match crate::source::file::read_into(&path, 1_000, &tx) {
                Ok(n) => {
                    tracing::info!(path = %path.display(), records = n, "file source read to the end")
                }
                Err(e) => tracing::error!(path = %path.display(), error = %e, "file source failed"),
            }
        });
        Some(task)
    } else {
        None
    };

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (web.listen)"))?;
    let local = listener.local_addr().context("no local address")?;
    let stopping = Arc::new(AtomicBool::new(false));
    let state = WebState {
        ingest: ingest_tx.clone(),
        hub,
        store,
        token: config.web.token.as_str().into(),
        max_body_bytes: usize::try_from(config.web.max_body_bytes).unwrap_or(usize::MAX),
        stopping: Arc::clone(&stopping),
        dashboard_config: serde_json::json!({ "tile_url": config.web.tile_url })
            .to_string()
            .into(),
        connections: connections.into(),
        dynamo,
    };
    let web_stop = CancellationToken::new();
    let server = tokio::spawn(std::future::IntoFuture::into_future(
        axum::serve(listener, router(state))
            .with_graceful_shutdown(web_stop.clone().cancelled_owned()),
    ));
    tracing::info!(%local, "listening");

    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let done = tokio::spawn(async move {
        trigger.cancelled().await;
        tracing::info!("stopping: sources");
        stopping.store(true, Ordering::Relaxed);
        source_stop.cancel();
        engine.await.context("engine task panicked")?;
        if let Some(source) = kafka_source {
            source.stopped().await;
        }
        if let Some(source) = kinesis_source {
            source.stopped().await;
        }
        if let Some(task) = file_partition {
            task.await.context("file partition panicked")?;
        }
        drop(outputs);
        drop(stream_tx);
        if let Some(task) = stream_task {
            tracing::info!("stopping: summary stream");
            task.await.context("summary stream panicked")?;
        }
        drop(store_tx);
        tracing::info!("stopping: windows flushed; store");
        writer.await.context("store writer panicked")?;
        tracing::info!("stopping: store flushed; live clients");
        hub_stop.cancel();
        hub_task.await.context("hub panicked")?;
        web_stop.cancel();
        server
            .await
            .context("web server panicked")?
            .context("web server failed")?;
        tracing::info!("stopped");
        Ok(())
    });
    Ok(App {
        addr: local,
        ingest: ingest_tx,
        cancel,
        done,
    })
}

/// The AWS settings (region, credential chain, endpoints), resolved once for every AWS part and
/// only if one is configured.
type AwsConfig = tokio::sync::OnceCell<aws_config::SdkConfig>;

async fn aws_config(cell: &AwsConfig) -> &aws_config::SdkConfig {
    cell.get_or_init(|| aws_config::load_defaults(aws_config::BehaviorVersion::latest()))
        .await
}

/// A clear error at start for a stream that does not exist (named by its config key); an
/// unreachable Kinesis is only a warning, as the parts that use it retry.
async fn kinesis_streams_exist(
    client: &aws_sdk_kinesis::Client,
    streams: &[(&str, Option<&str>)],
) -> anyhow::Result<()> {
    for (key, stream) in streams {
        let Some(stream) = stream else { continue };
        match crate::kinesis::list_shards(client, stream).await {
            Ok(_) => {}
            Err(e) if e.contains("does not exist") => anyhow::bail!("{key}: {e}"),
            Err(e) => tracing::warn!(error = %e, "Kinesis not reachable yet; retrying"),
        }
    }
    Ok(())
}

/// The summary / dead-letter stream the config asks for, if any: summaries when
/// `[summary_stream]` names one, dead letters when the source is a stream with
/// `source.dead_letters` set (to the source's own cluster).
async fn stream_sink(
    config: &Config,
    aws: &AwsConfig,
    connections: &mut Vec<(&'static str, Arc<AtomicBool>)>,
) -> anyhow::Result<Option<StreamSink>> {
    let kinesis_dlq = (config.source.kind == "kinesis" && !config.source.dead_letters.is_empty())
        .then_some(config.source.dead_letters.as_str());
    let kinesis_summaries =
        (config.summary_stream.kind == "kinesis").then_some(config.summary_stream.stream.as_str());
    if kinesis_summaries.is_some() || kinesis_dlq.is_some() {
        let client = aws_sdk_kinesis::Client::new(aws_config(aws).await);
        kinesis_streams_exist(
            &client,
            &[
                ("summary_stream.stream", kinesis_summaries),
                ("source.dead_letters", kinesis_dlq),
            ],
        )
        .await?;
        return Ok(Some(StreamSink::Kinesis(
            crate::sink::kinesis::KinesisSink::new(client, kinesis_summaries, kinesis_dlq),
        )));
    }
    let options = &config.source.kafka_options;
    let summaries = if config.summary_stream.kind == "kafka" {
        let observed = Observed::default();
        connections.push(("summary_stream", Arc::clone(&observed.connected)));
        Some(
            KafkaTopic::new(
                config.summary_brokers(),
                options,
                &config.summary_stream.topic,
                observed,
            )
            .map_err(|e| {
                crate::kafka::start_error(
                    e,
                    "cannot create the Kafka summary producer (summary_stream.brokers)",
                )
            })?,
        )
    } else {
        None
    };
    let dead_letters = if config.source.kind == "kafka" && !config.source.dead_letters.is_empty() {
        let topic = &config.source.dead_letters;
        match &summaries {
            Some(s) if config.summary_brokers() == config.source.brokers => {
                Some(s.with_topic(topic))
            }
            _ => Some(
                KafkaTopic::new(&config.source.brokers, options, topic, Observed::default())
                    .map_err(|e| {
                        crate::kafka::start_error(
                            e,
                            "cannot create the Kafka dead-letter producer (source.brokers)",
                        )
                    })?,
            ),
        }
    } else {
        None
    };
    if summaries.is_none() && dead_letters.is_none() {
        return Ok(None);
    }
    Ok(Some(StreamSink::Kafka(KafkaSink::new(
        summaries,
        dead_letters,
    ))))
}

/// The DynamoDB summary table, retried for a minute while DynamoDB cannot be reached; a missing
/// table (without `create_tables`) fails at once, naming it.
async fn open_dynamo(
    aws: &aws_config::SdkConfig,
    table: &str,
    create: bool,
) -> anyhow::Result<crate::sink::dynamodb::DynamoStore> {
    let mut wait = std::time::Duration::from_millis(500);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match crate::sink::dynamodb::DynamoStore::with_config(aws, table, create).await {
            Ok(store) => return Ok(store),
            Err(e) if e.permanent || tokio::time::Instant::now() > deadline => {
                return Err(e).context("store.kind = \"dynamodb\" (store.table, store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)");
            }
            Err(e) => {
                tracing::warn!(error = %e, "DynamoDB not reachable; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}
