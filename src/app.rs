//! Assembly: builds every part from the config, wires the channels, and runs the ordered
//! shutdown. The only module that knows every other; `main` and the tests both call [`start`].
//!
//! Outputs are registered here and nowhere else: the store (embedded or DynamoDB), the summary
//! stream (Kafka or Kinesis, whatever the source), the dead-letter stream (on the source's own
//! transport) and the live hub; the engines see them only through one `output::Fanout`.
//!
//! Shutdown (DESIGN decision 7): stop the sources (ingest answers 503), let the engines drain
//! their queues and flush every open window, let every output finish what it was sent, let the
//! hub take in the last summaries and send its last frames, close the WebSockets, stop the
//! server. Every step runs even when one before it failed, and the error names those that did.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::archive::target::Target;
use crate::backoff::Backoff;
use crate::config::{ArchiveKind, Config, SourceKind, StoreKind, StreamKind};
use crate::hub::{Hub, HubSettings};
use crate::kafka::Observed;
use crate::kinesis::ShardsError;
use crate::output::dead_letter_table::DeadLetterTable;
use crate::output::dynamodb::DynamoStore;
use crate::output::embedded::Store;
use crate::output::kafka::{KafkaSink, KafkaTopic};
use crate::output::kinesis::KinesisSink;
use crate::output::store::{Backend, Stores};
use crate::output::{Health, Interest, Outputs};
use crate::pipeline::{self, Batch, PartitionSpec};
use crate::source::kafka::{KafkaSource, KafkaSourceConfig};
use crate::web::{router, WebState};
use crate::window::WindowConfig;

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
}

/// Builds and starts the service described by `config`.
///
/// # Errors
/// The store cannot be opened, a configured stream or table is missing, or the address cannot
/// be bound; the message says which and why.
pub async fn start(config: Config) -> anyhow::Result<App> {
    let window = config.window_config()?;
    let rules: Arc<[crate::alert::Rule]> = config.alert_rules()?.into();
    let addr = config.listen_addr()?;
    // First: a bad certificate is a config error, not a half-started service.
    let tls = if config.web.tls_cert.is_empty() {
        None
    } else {
        Some(crate::web::tls::server_config(
            std::path::Path::new(&config.web.tls_cert),
            std::path::Path::new(&config.web.tls_key),
        )?)
    };
    let aws = AwsConfig::new();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (web.listen)"))?;
    let local = listener.local_addr().context("no local address")?;

    let hub_stop = CancellationToken::new();
    let settings = HubSettings {
        queue_frames: usize::try_from(config.web.ws_queue_frames).unwrap_or(16_384),
        queue_bytes: usize::try_from(config.web.ws_queue_bytes).unwrap_or(8 << 20),
        silent_after: std::time::Duration::from_secs(config.web.silent_after_secs),
        table_budget: crate::hub::TABLE_BUDGET,
    };
    let (hub, hub_task) = Hub::start(settings, hub_stop.clone());

    // Every output, registered once: the engines see only the fan-out.
    let mut outputs = Outputs::new(Some(hub.input()));
    let stores = store_output(&config, &aws, &mut outputs).await?;
    summary_stream_output(&config, &aws, &mut outputs).await?;
    dead_letter_output(&config, &aws, &mut outputs).await?;
    let alerts_web = alert_output(
        &config,
        &aws,
        &stores,
        rules,
        &mut outputs,
        public_url(&config, local, tls.is_some()),
    )
    .await?;
    let archive = archive_output(&config, &aws, &mut outputs).await?;
    let fanout = outputs.fanout();
    let mut connections: Vec<(&'static str, Health)> = outputs.health();

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
        fanout.clone(),
        source_stop.clone(),
    ));

    let kafka_source = if config.source.kind == SourceKind::Kafka {
        let source = KafkaSource::start(
            KafkaSourceConfig {
                brokers: config.source.brokers.clone(),
                topic: config.source.topic.clone(),
                group: config.source.group.clone(),
                options: config.source.kafka_options.clone(),
                checkpoint_topic: config.source.checkpoint_topic.clone(),
                window,
            },
            fanout.clone(),
            source_stop.clone(),
        )
        .map_err(|e| kafka_start_error(e, "cannot start the Kafka source (source.brokers)"))?;
        connections.push((
            "source",
            Health::from_flag("source", Arc::clone(&source.connected)),
        ));
        Some(source)
    } else {
        None
    };

    let kinesis_source = if config.source.kind == SourceKind::Kinesis {
        let aws = aws_config(&aws).await;
        let client = aws_sdk_kinesis::Client::new(aws);
        require_stream(&client, "source.stream", &config.source.stream).await?;
        let source = crate::source::kinesis::KinesisSource::start(
            aws,
            crate::source::kinesis::KinesisSourceConfig {
                stream: config.source.stream.clone(),
                lease_table: config.source.lease_table.clone(),
                create_tables: config.store.create_tables,
                window,
            },
            fanout.clone(),
            source_stop.clone(),
        )
        .await
        .context("cannot start the Kinesis source (source.lease_table, store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)")?;
        connections.push((
            "source",
            Health::from_flag("source", Arc::clone(&source.connected)),
        ));
        Some(source)
    } else {
        None
    };

    // The file source is a partition of its own; it flushes its windows when the file ends.
    let file_partition = if config.source.kind == SourceKind::File {
        let path = std::path::PathBuf::from(&config.source.path);
        let (tx, rx) = mpsc::channel::<Batch>(8);
        let task = tokio::spawn(pipeline::run(
            PartitionSpec {
                // A file is history: no wall-clock rule.
                window: WindowConfig {
                    max_future_ms: None,
                    ..window
                },
                source: "file",
                name: config.source.path.clone(),
                durable: None,
            },
            rx,
            fanout.clone(),
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
    drop(fanout);

    let guard = Arc::new(crate::web::guard::Guard {
        loopback: addr.ip().is_loopback(),
        allowed_hosts: lower(&config.web.allowed_hosts),
        allowed_origins: lower(&config.web.allowed_origins),
        token: config.web.token.as_str().into(),
        read_token: config.web.read_token.as_str().into(),
        tls: tls.is_some(),
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let state = WebState {
        ingest: ingest_tx.clone(),
        hub,
        stores,
        token: config.web.token.as_str().into(),
        max_body_bytes: usize::try_from(config.web.max_body_bytes).unwrap_or(usize::MAX),
        stopping: Arc::clone(&stopping),
        dashboard_config: serde_json::json!({
            "tile_url": config.web.tile_url,
            "tile_attribution": config.web.tile_attribution,
            "tile_attribution_url": config.web.tile_attribution_url,
        })
        .to_string()
        .into(),
        connections: connections.into(),
        ws_slots: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.web.max_ws_clients).unwrap_or(10_000),
        )),
        alerts: alerts_web,
        query: crate::web::query::QueryWeb::new(archive, crate::web::query::LIMITS),
    };
    let web_stop = CancellationToken::new();
    let routes = router(state, guard);
    let server = match tls {
        Some(tls) => {
            let stop = web_stop.clone();
            tokio::spawn(async move {
                crate::web::tls::serve(listener, tls, routes, stop).await;
                Ok(())
            })
        }
        None => tokio::spawn(std::future::IntoFuture::into_future(
            axum::serve(listener, routes)
                .with_graceful_shutdown(web_stop.clone().cancelled_owned()),
        )),
    };
    tracing::info!(%local, https = !config.web.tls_cert.is_empty(), "listening");

    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let done = tokio::spawn(async move {
        trigger.cancelled().await;
        tracing::info!("stopping: sources");
        stopping.store(true, Ordering::Relaxed);
        source_stop.cancel();
        // Each step runs even when one before it failed; the error names every failed step.
        let mut failed: Vec<String> = Vec::new();
        if engine.await.is_err() {
            failed.push("http partition".into());
        }
        if let Some(source) = kafka_source {
            source.stopped().await;
        }
        if let Some(source) = kinesis_source {
            source.stopped().await;
        }
        if let Some(task) = file_partition {
            if task.await.is_err() {
                failed.push("file partition".into());
            }
        }
        tracing::info!("stopping: windows flushed; outputs");
        if let Err(e) = outputs.close(crate::output::CLOSE_DEADLINE).await {
            failed.push(e.to_string());
        }
        tracing::info!("stopping: outputs flushed; live clients");
        hub_stop.cancel();
        if hub_task.await.is_err() {
            failed.push("hub".into());
        }
        web_stop.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("web server: {e}")),
            Err(_) => failed.push("web server".into()),
        }
        if !failed.is_empty() {
            anyhow::bail!("shutdown: {} failed", failed.join("; "));
        }
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

/// The store output: summaries and dead letters into the embedded store, or into DynamoDB (the
/// summary and dead-letter tables; then nothing is kept on this host). Returns what the API
/// reads them back from.
async fn store_output(
    config: &Config,
    aws: &AwsConfig,
    outputs: &mut Outputs,
) -> anyhow::Result<Stores> {
    let (backend, stores) = if config.store.kind == StoreKind::DynamoDb {
        let aws = aws_config(aws).await;
        let summaries = open_dynamo(aws, &config.store.table, config.store.create_tables).await?;
        let dead_letters = DeadLetterTable::open(
            aws,
            &config.store.dead_letter_table,
            config.store.create_tables,
        )
        .await
        .context("store.dead_letter_table (store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)")?;
        let backend = Backend::DynamoDb {
            runtime: tokio::runtime::Handle::current(),
            summaries: summaries.clone(),
            dead_letters: dead_letters.clone(),
        };
        (
            backend,
            Stores::DynamoDb {
                summaries,
                dead_letters,
            },
        )
    } else {
        let store_dir = config.store.path.clone();
        let retention = config.store.dead_letter_retention;
        let embedded = tokio::task::spawn_blocking(move || Store::open(&store_dir, retention))
            .await
            .context("store open panicked")??;
        (
            Backend::Embedded(embedded.clone()),
            Stores::Embedded(embedded),
        )
    };
    let rx = outputs.add(
        "store",
        Interest {
            summaries: true,
            dead_letters: true,
            ..Interest::default()
        },
    );
    let health = Health::new("store");
    outputs.run(
        "store",
        crate::output::store::spawn(backend, rx, health.clone(), outputs.give_up()),
        health,
    );
    Ok(stores)
}

/// The archive output (CONTRACT §8), when `archive.kind` is not `none`; returns where it writes
/// (for queries). Fails at start when the directory cannot be made or the bucket reached.
async fn archive_output(
    config: &Config,
    aws: &AwsConfig,
    outputs: &mut Outputs,
) -> anyhow::Result<Option<Target>> {
    let section = &config.archive;
    let (target, key) = match section.kind {
        ArchiveKind::None => return Ok(None),
        ArchiveKind::Dir => (
            Target::Dir(std::path::PathBuf::from(&section.path)),
            "archive.path",
        ),
        ArchiveKind::S3 => {
            let store = crate::archive::target::s3_store(aws_config(aws).await, &section.bucket)
                .context(
                    "cannot make an S3 client (archive.bucket; AWS_REGION, AWS_ENDPOINT_URL_S3)",
                )?;
            let target = Target::S3 {
                store,
                bucket: section.bucket.clone(),
                prefix: section.prefix.clone(),
            };
            (target, "archive.bucket")
        }
    };
    target
        .prepare()
        .await
        .with_context(|| format!("cannot write the archive at {} ({key})", target.describe()))?;
    let rx = outputs.add(
        "archive",
        Interest {
            records: true,
            ..Interest::default()
        },
    );
    let health = Health::new("archive");
    let settings = crate::archive::output::Settings {
        layout: section.layout,
        format: section.format,
        buffer_bytes: usize::try_from(section.buffer_bytes).unwrap_or(usize::MAX),
        buffer_age: std::time::Duration::from_secs(section.buffer_secs),
    };
    let output = crate::archive::output::ArchiveOutput::new(
        target.clone(),
        settings,
        health.clone(),
        outputs.give_up(),
    );
    outputs.run("archive", tokio::spawn(output.run(rx)), health);
    tracing::info!(target = %target.describe(), layout = ?section.layout, format = ?section.format, "archive: on");
    Ok(Some(target))
}

/// The base of the links in alert mails: `alerts.smtp.public_url`, else this service's own
/// address (its port when `web.listen` asks for any).
fn public_url(config: &Config, addr: SocketAddr, tls: bool) -> String {
    if !config.alerts.smtp.public_url.is_empty() {
        return config.alerts.smtp.public_url.clone();
    }
    format!("{}://{addr}", if tls { "https" } else { "http" })
}

/// Registers the alert output when alerts are on (`rules` not empty), with its channels:
/// SNS when `alerts.sns.topic_arn` is set, the built-in e-mail when `alerts.smtp.server` is.
async fn alert_output(
    config: &Config,
    aws: &AwsConfig,
    stores: &Stores,
    rules: Arc<[crate::alert::Rule]>,
    outputs: &mut Outputs,
    public_url: String,
) -> anyhow::Result<Option<crate::web::alerts::AlertsWeb>> {
    use crate::alert::notify::{Channel, NotifySettings};
    if rules.is_empty() {
        return Ok(None);
    }
    let a = &config.alerts;
    let mut channels = Vec::new();
    if !a.sns.topic_arn.is_empty() {
        let client = aws_sdk_sns::Client::new(aws_config(aws).await);
        client
            .get_topic_attributes()
            .topic_arn(&a.sns.topic_arn)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "alerts.sns.topic_arn: cannot use topic {:?}: {} (AWS_REGION, AWS_ENDPOINT_URL_SNS)",
                    a.sns.topic_arn,
                    aws_sdk_sns::error::DisplayErrorContext(&e)
                )
            })?;
        channels.push(Channel::Sns(crate::alert::sns::SnsChannel::new(
            client,
            &a.sns.topic_arn,
        )));
    }
    let mut smtp = None;
    if !a.smtp.server.is_empty() {
        // A bad server or sender is a config error.
        let url = public_url.clone();
        let mailer = crate::alert::smtp::Mailer::new(&a.smtp.server, &a.smtp.from, &url).map_err(
            |message| crate::config::ConfigError::Invalid {
                origin: String::new(),
                message,
            },
        )?;
        let max = usize::try_from(a.max_subscriptions).unwrap_or(usize::MAX);
        let subs = match stores {
            Stores::Embedded(store) => {
                crate::alert::subscriptions::Subscriptions::embedded(store.database(), max)
                    .await
                    .context("cannot read the alert subscriptions (store.path)")?
            }
            Stores::DynamoDb { .. } => crate::alert::subscriptions::Subscriptions::dynamodb(
                aws_config(aws).await,
                &config.store.subscription_table,
                config.store.create_tables,
                max,
            )
            .await
            .context(
                "store.subscription_table (store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)",
            )?,
        };
        let second = crate::alert::smtp::Mailer::new(&a.smtp.server, &a.smtp.from, &url).map_err(
            |message| crate::config::ConfigError::Invalid {
                origin: String::new(),
                message,
            },
        )?;
        channels.push(Channel::Smtp(Box::new(
            crate::alert::smtp::SmtpChannel::new(mailer, subs.clone()),
        )));
        smtp = Some((subs, Arc::new(second)));
        tracing::info!(server = %a.smtp.server, links = %url, "alert e-mail through SMTP");
    }
    outputs.evaluate_alerts(Arc::clone(&rules));
    let rx = outputs.add(
        "alerts",
        Interest {
            alerts: true,
            ..Interest::default()
        },
    );
    let health = Health::new("alerts");
    let settings = NotifySettings {
        group_interval: std::time::Duration::from_secs(a.group_interval_secs),
        channels,
    };
    outputs.run(
        "alerts",
        crate::alert::notify::spawn(settings, rx, health.clone(), outputs.give_up()),
        health,
    );
    Ok(Some(crate::web::alerts::AlertsWeb { rules, smtp }))
}

/// What a stream output carries.
#[derive(Clone, Copy)]
enum Carries {
    Summaries,
    DeadLetters,
}

impl Carries {
    /// Its output's name (logs, `/readyz`).
    fn name(self) -> &'static str {
        match self {
            Carries::Summaries => "summary_stream",
            Carries::DeadLetters => "dead_letter_stream",
        }
    }

    fn interest(self) -> Interest {
        Interest {
            summaries: matches!(self, Carries::Summaries),
            dead_letters: matches!(self, Carries::DeadLetters),
            ..Interest::default()
        }
    }
}

/// Registers a Kafka output carrying `carries` to `topic` on `brokers` (named by `key`).
fn kafka_output(
    outputs: &mut Outputs,
    carries: Carries,
    (brokers, key): (&str, &str),
    options: &toml::Table,
    topic: &str,
) -> anyhow::Result<()> {
    let observed = Observed::default();
    let health = Health::from_flag(carries.name(), Arc::clone(&observed.connected));
    let topic = KafkaTopic::new(brokers, options, topic, observed).map_err(|e| {
        kafka_start_error(
            e,
            &format!(
                "cannot create the Kafka producer of the {} ({key})",
                carries.name()
            ),
        )
    })?;
    let sink = match carries {
        Carries::Summaries => KafkaSink::new(Some(topic), None, health.clone()),
        Carries::DeadLetters => KafkaSink::new(None, Some(topic), health.clone()),
    };
    let rx = outputs.add(carries.name(), carries.interest());
    outputs.run(carries.name(), tokio::spawn(sink.run(rx)), health);
    Ok(())
}

/// Registers a Kinesis output carrying `carries` to `stream`.
fn kinesis_output(
    outputs: &mut Outputs,
    carries: Carries,
    client: aws_sdk_kinesis::Client,
    stream: &str,
) {
    let health = Health::new(carries.name());
    let sink = match carries {
        Carries::Summaries => KinesisSink::new(client, Some(stream), None, health.clone()),
        Carries::DeadLetters => KinesisSink::new(client, None, Some(stream), health.clone()),
    };
    let rx = outputs.add(carries.name(), carries.interest());
    outputs.run(carries.name(), tokio::spawn(sink.run(rx)), health);
}

/// The summary stream, when `[summary_stream]` names one: Kafka or Kinesis, whatever the source.
async fn summary_stream_output(
    config: &Config,
    aws: &AwsConfig,
    outputs: &mut Outputs,
) -> anyhow::Result<()> {
    match config.summary_stream.kind {
        StreamKind::Kafka => kafka_output(
            outputs,
            Carries::Summaries,
            (config.summary_brokers(), "summary_stream.brokers"),
            &config.source.kafka_options,
            &config.summary_stream.topic,
        )?,
        StreamKind::Kinesis => {
            let client = aws_sdk_kinesis::Client::new(aws_config(aws).await);
            let stream = &config.summary_stream.stream;
            require_stream(&client, "summary_stream.stream", stream).await?;
            kinesis_output(outputs, Carries::Summaries, client, stream);
        }
        StreamKind::None => {}
    }
    Ok(())
}

/// The dead-letter stream of a stream source, on the source's own transport, when
/// `source.dead_letters` names one. A Kafka topic is created by the broker when missing; a
/// missing Kinesis stream stops the start when it was configured, and is skipped with a warning
/// when it is only the default (the user never asked for one, and dead letters are kept in the
/// store anyway).
async fn dead_letter_output(
    config: &Config,
    aws: &AwsConfig,
    outputs: &mut Outputs,
) -> anyhow::Result<()> {
    let name = config.source.dead_letters.as_str();
    if name.is_empty() {
        return Ok(());
    }
    match config.source.kind {
        SourceKind::Kafka => kafka_output(
            outputs,
            Carries::DeadLetters,
            (&config.source.brokers, "source.brokers"),
            &config.source.kafka_options,
            name,
        )?,
        SourceKind::Kinesis => {
            let client = aws_sdk_kinesis::Client::new(aws_config(aws).await);
            if !kinesis_stream_exists(&client, "source.dead_letters", name).await {
                if name == crate::config::DEFAULT_DEAD_LETTERS {
                    tracing::warn!(stream = name, "the default dead-letter stream does not exist: dead letters are kept in the store only (create the stream, or set source.dead_letters = \"\" to silence this)");
                    return Ok(());
                }
                anyhow::bail!(
                    "source.dead_letters: {}",
                    ShardsError::Missing(name.to_owned())
                );
            }
            kinesis_output(outputs, Carries::DeadLetters, client, name);
        }
        SourceKind::Http | SourceKind::File => {}
    }
    Ok(())
}

/// A Kinesis stream the config names (by `key`) must exist: a missing one stops the start.
async fn require_stream(
    client: &aws_sdk_kinesis::Client,
    key: &str,
    stream: &str,
) -> anyhow::Result<()> {
    if kinesis_stream_exists(client, key, stream).await {
        Ok(())
    } else {
        anyhow::bail!("{key}: {}", ShardsError::Missing(stream.to_owned()))
    }
}

/// Whether a Kinesis stream exists. An unreachable Kinesis counts as "exists" with a warning,
/// as the parts that use it retry.
async fn kinesis_stream_exists(client: &aws_sdk_kinesis::Client, key: &str, stream: &str) -> bool {
    match crate::kinesis::list_shards(client, stream).await {
        Ok(_) => true,
        Err(ShardsError::Missing(_)) => false,
        Err(e) => {
            tracing::warn!(key, error = %e, "Kinesis not reachable yet; retrying");
            true
        }
    }
}

/// The DynamoDB summary table, retried for a minute while DynamoDB cannot be reached; a missing
/// table (without `create_tables`) fails at once, naming it.
async fn open_dynamo(
    aws: &aws_config::SdkConfig,
    table: &str,
    create: bool,
) -> anyhow::Result<DynamoStore> {
    let mut wait = Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(10),
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match DynamoStore::with_config(aws, table, create).await {
            Ok(store) => return Ok(store),
            Err(e) if e.permanent || tokio::time::Instant::now() > deadline => {
                return Err(e).context("store.kind = \"dynamodb\" (store.table, store.create_tables; AWS_REGION, AWS_ENDPOINT_URL)");
            }
            Err(e) => {
                tracing::warn!(error = %e, "DynamoDB not reachable; retrying");
                wait.wait().await;
            }
        }
    }
}

/// Why a Kafka client could not be built, as an error for the user: a setting librdkafka refuses
/// is bad config naming its `[source.kafka_options]` key (exit 2); anything else says `what`.
fn kafka_start_error(e: rdkafka::error::KafkaError, what: &str) -> anyhow::Error {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, description, key, _) => {
            crate::config::ConfigError::Value {
                key: format!("source.kafka_options.\"{key}\""),
                message: description,
            }
            .into()
        }
        other => anyhow::Error::new(other).context(what.to_owned()),
    }
}

/// Lower-cased copies (host names and origins compare case-insensitively).
fn lower(list: &[String]) -> Vec<String> {
    list.iter().map(|s| s.trim().to_ascii_lowercase()).collect()
}
