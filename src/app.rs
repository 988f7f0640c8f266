//! Assembly: builds every part from the config, wires the channels, and runs the ordered
//! shutdown. The only module that knows every other; the `serve` and `demo` commands and the
//! tests all call [`start`].
//!
//! Each part builds itself from its settings (`build()` beside it); this file only says which
//! parts the config asks for and in what order: the hub, the outputs (the store, the summary
//! stream, the dead-letter stream on the source's own transport, alerts, the archive), the
//! sources, then the web server. The engines see the outputs only through one `output::Fanout`.
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

use crate::clients::aws::Aws;
use crate::config::{ArchiveKind, Config, ConfigError, SourceKind, StoreKind, StreamKind};
use crate::hub::{Hub, HubSettings};
use crate::output::stream::Carries;
use crate::output::{archive, notify, store, stream, Health, Outputs};
use crate::pipeline::{Batch, Steps};
use crate::setting::BadSetting;
use crate::source::{self, Sources};
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
}

/// Builds and starts the service described by `config`.
///
/// # Errors
/// The store cannot be opened, a configured stream or table is missing, or the address cannot
/// be bound; the message says which and why.
pub async fn start(config: Config) -> anyhow::Result<App> {
    // A setting a part refused is a config error like any other (exit status 2).
    assemble(config)
        .await
        .map_err(|e| match e.downcast::<BadSetting>() {
            Ok(bad) => ConfigError::from(bad).into(),
            Err(e) => e,
        })
}

async fn assemble(config: Config) -> anyhow::Result<App> {
    let steps = Steps {
        window: config.window_config()?,
        rules: config.alert_rules()?.into(),
    };
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
    let aws = Aws::new();
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
    let stores = store::build(store_settings(&config), &aws, &mut outputs).await?;
    if let Some(settings) = summary_stream_settings(&config) {
        stream::build(Carries::Summaries, settings, &aws, &mut outputs).await?;
    }
    if let Some(settings) = dead_letter_stream_settings(&config) {
        stream::build(Carries::DeadLetters, settings, &aws, &mut outputs).await?;
    }
    let alerts_web = if steps.rules.is_empty() {
        None
    } else {
        let settings = notify_settings(&config, local, tls.is_some());
        let mail = notify::build(settings, &aws, &stores, &mut outputs).await?;
        Some(crate::web::alerts::AlertsWeb {
            rules: Arc::clone(&steps.rules),
            smtp: mail,
        })
    };
    let archive = match archive_place(&config) {
        Some(place) => {
            let settings = archive_settings(&config);
            Some(archive::build(place, settings, &aws, &mut outputs).await?)
        }
        None => None,
    };
    let fanout = outputs.fanout();
    let mut connections: Vec<(&'static str, Health)> = outputs.health();

    let source_stop = CancellationToken::new();
    let sources = Sources::start(
        source_settings(&config),
        &steps,
        &fanout,
        &source_stop,
        &aws,
    )
    .await?;
    drop(fanout);
    if let Some(health) = &sources.health {
        connections.push(("source", health.clone()));
    }

    let guard = Arc::new(crate::web::guard::Guard {
        loopback: addr.ip().is_loopback(),
        allowed_hosts: lower(&config.web.allowed_hosts),
        allowed_origins: lower(&config.web.allowed_origins),
        token: config.web.token.as_str().into(),
        read_token: config.web.read_token.as_str().into(),
        tls: tls.is_some(),
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let ingest = sources.ingest.clone();
    let state = WebState {
        ingest: sources.ingest.clone(),
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
        let mut failed: Vec<String> = sources.stopped().await;
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
        ingest,
        cancel,
        done,
    })
}

/// `[store]` as the store output's settings.
fn store_settings(config: &Config) -> store::Settings {
    let s = &config.store;
    match s.kind {
        StoreKind::DynamoDb => store::Settings::DynamoDb {
            table: s.table.clone(),
            dead_letter_table: s.dead_letter_table.clone(),
            create_tables: s.create_tables,
        },
        StoreKind::Embedded => store::Settings::Embedded {
            path: s.path.clone(),
            dead_letter_retention: s.dead_letter_retention,
        },
    }
}

/// `[summary_stream]`, when it names one: Kafka or Kinesis, whatever the source.
fn summary_stream_settings(config: &Config) -> Option<stream::Settings<'_>> {
    let s = &config.summary_stream;
    match s.kind {
        StreamKind::Kafka => Some(stream::Settings::Kafka {
            brokers: (config.summary_brokers(), "summary_stream.brokers"),
            options: &config.source.kafka_options,
            topic: &s.topic,
        }),
        StreamKind::Kinesis => Some(stream::Settings::Kinesis {
            stream: (&s.stream, "summary_stream.stream"),
            optional: false,
        }),
        StreamKind::None => None,
    }
}

/// The dead-letter stream of a stream source, on the source's own transport, when
/// `source.dead_letters` names one. A Kafka topic is created by the broker when missing; a
/// missing Kinesis stream stops the start when it was configured, and is skipped with a warning
/// when it is only the default (the user never asked for one, and dead letters are kept in the
/// store anyway).
fn dead_letter_stream_settings(config: &Config) -> Option<stream::Settings<'_>> {
    let name = config.source.dead_letters.as_str();
    if name.is_empty() {
        return None;
    }
    match config.source.kind {
        SourceKind::Kafka => Some(stream::Settings::Kafka {
            brokers: (&config.source.brokers, "source.brokers"),
            options: &config.source.kafka_options,
            topic: name,
        }),
        SourceKind::Kinesis => Some(stream::Settings::Kinesis {
            stream: (name, "source.dead_letters"),
            optional: name == crate::config::DEFAULT_DEAD_LETTERS,
        }),
        SourceKind::Http | SourceKind::File => None,
    }
}

/// `[alerts]` as the alert output's settings. The links in mails start at
/// `alerts.smtp.public_url`, else at this service's own address (its port when `web.listen`
/// asks for any).
fn notify_settings(config: &Config, addr: SocketAddr, tls: bool) -> notify::Settings {
    let a = &config.alerts;
    let public_url = if a.smtp.public_url.is_empty() {
        format!("{}://{addr}", if tls { "https" } else { "http" })
    } else {
        a.smtp.public_url.clone()
    };
    notify::Settings {
        sns_topic: a.sns.topic_arn.clone(),
        smtp: (!a.smtp.server.is_empty()).then(|| notify::SmtpSettings {
            server: a.smtp.server.clone(),
            from: a.smtp.from.clone(),
            public_url,
            max_subscriptions: usize::try_from(a.max_subscriptions).unwrap_or(usize::MAX),
            subscription_table: config.store.subscription_table.clone(),
            create_tables: config.store.create_tables,
        }),
        group_interval: std::time::Duration::from_secs(a.group_interval_secs),
    }
}

/// Where `[archive]` writes, unless `archive.kind` is `none`.
fn archive_place(config: &Config) -> Option<archive::Place> {
    let a = &config.archive;
    match a.kind {
        ArchiveKind::None => None,
        ArchiveKind::Dir => Some(archive::Place::Dir(a.path.clone().into())),
        ArchiveKind::S3 => Some(archive::Place::S3 {
            bucket: a.bucket.clone(),
            prefix: a.prefix.clone(),
        }),
    }
}

/// `[archive]` as the archive output's settings.
fn archive_settings(config: &Config) -> archive::output::Settings {
    let a = &config.archive;
    archive::output::Settings {
        layout: a.layout,
        format: a.format,
        buffer_bytes: usize::try_from(a.buffer_bytes).unwrap_or(usize::MAX),
        buffer_age: std::time::Duration::from_secs(a.buffer_secs),
    }
}

/// `[source]` as the sources' settings.
fn source_settings(config: &Config) -> source::Settings {
    let s = &config.source;
    match s.kind {
        SourceKind::Http => source::Settings::Http,
        SourceKind::File => source::Settings::File(s.path.clone().into()),
        SourceKind::Kafka => source::Settings::Kafka(source::kafka::KafkaSourceConfig {
            brokers: s.brokers.clone(),
            topic: s.topic.clone(),
            group: s.group.clone(),
            options: s.kafka_options.clone(),
            checkpoint_topic: s.checkpoint_topic.clone(),
        }),
        SourceKind::Kinesis => source::Settings::Kinesis(source::kinesis::KinesisSourceConfig {
            stream: s.stream.clone(),
            lease_table: s.lease_table.clone(),
            create_tables: config.store.create_tables,
        }),
    }
}

/// Lower-cased copies (host names and origins compare case-insensitively).
fn lower(list: &[String]) -> Vec<String> {
    list.iter().map(|s| s.trim().to_ascii_lowercase()).collect()
}
