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
use crate::config::{Config, ConfigError};
use crate::hub::{Hub, HubSettings};
use crate::output::stream::Carries;
use crate::output::{archive, notify, store, stream, views, Health, Outputs};
use crate::pipeline::{Batch, Steps};
use crate::setting::BadSetting;
use crate::source::Sources;
use crate::view::registry::Registry;
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
    let mut steps = Steps {
        window: config.window_config()?,
        rules: config.alert_rules()?.into(),
        views: None,
    };
    // Views' files are checked first: a refused view is a config error (exit 2).
    let view_files = if config.views.dir.trim().is_empty() {
        Vec::new()
    } else {
        crate::view::registry::read_dir(std::path::Path::new(&config.views.dir))
            .map_err(|e| BadSetting::key("views.dir", e))?
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
    if !local.ip().is_loopback() && config.web.token.is_empty() {
        tracing::warn!(%local, "listening beyond this host without a token: anyone who reaches it can ingest, query every record and manage subscriptions (set web.token, or web.listen = \"127.0.0.1:8080\")");
    }

    let hub_stop = CancellationToken::new();
    let settings = HubSettings {
        queue_frames: usize::try_from(config.web.ws_queue_frames).unwrap_or(16_384),
        queue_bytes: usize::try_from(config.web.ws_queue_bytes).unwrap_or(8 << 20),
        silent_after: std::time::Duration::from_secs(config.web.silent_after_secs),
        table_budget: crate::hub::TABLE_BUDGET,
    };
    let (hub, hub_task) = Hub::start_on_own_thread(settings, hub_stop.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the live hub's thread: {e}"))?;

    // Every output, registered once: the engines see only the fan-out.
    let mut outputs = Outputs::new(Some(hub.input()));
    outputs.limit_unwritten(config.web.max_unwritten_records);
    let stores = store::build(config.store_settings(), &aws, &mut outputs).await?;
    let tables = match &stores {
        store::Stores::Embedded(embedded) => Some(
            store::views::ViewTables::embedded(embedded)
                .map_err(|e| BadSetting::invalid(format!("views: {e}")))?,
        ),
        store::Stores::DynamoDb { .. } => {
            let opened = store::views::dynamodb::Dynamo::open(
                aws.config().await,
                config.store.create_tables,
            )
            .await;
            match opened {
                Ok(tables) => Some(store::views::ViewTables::DynamoDb(tables)),
                // A deployment that keeps no views need not have their table.
                Err(e) if view_files.is_empty() && e.permanent => {
                    tracing::warn!(error = %e, "views cannot be defined: their DynamoDB table is missing");
                    None
                }
                Err(e) => {
                    return Err(
                        BadSetting::key("views.dir", format!("{e} (store.create_tables)")).into(),
                    )
                }
            }
        }
    };
    let views = match tables {
        Some(tables) => {
            let registry = Arc::new(Registry::default());
            views::restore(&registry, &tables, view_files).await?;
            views::build(
                Arc::clone(&registry),
                tables.clone(),
                steps.window.allowed_lateness_ms,
                &mut outputs,
                Some(hub.input()),
            );
            steps.views = Some(Arc::clone(&registry));
            Some((registry, tables))
        }
        None => None,
    };
    if let Some(settings) = config.summary_stream_settings() {
        stream::build(Carries::Summaries, settings, &aws, &mut outputs).await?;
    }
    if let Some(settings) = config.dead_letter_stream_settings() {
        stream::build(Carries::DeadLetters, settings, &aws, &mut outputs).await?;
    }
    let alerts_web = if steps.rules.is_empty() {
        None
    } else {
        let settings = config.notify_settings(local, tls.is_some());
        let mail = notify::build(settings, &aws, &stores, &mut outputs).await?;
        Some(crate::web::alerts::AlertsWeb {
            rules: Arc::clone(&steps.rules),
            smtp: mail,
        })
    };
    let archive = match config.archive_place() {
        Some(place) => {
            let settings = config.archive_settings();
            Some(archive::build(place, settings, &aws, &mut outputs).await?)
        }
        None => None,
    };
    let fanout = outputs.fanout();
    let backlog = fanout.backlog().clone();
    let backfill = match (&archive, &views) {
        (Some(target), Some(_)) => Some(crate::query::backfill::Backfill {
            archive: target.clone(),
            fanout: Arc::new(std::sync::Mutex::new(Some(fanout.clone()))),
            window: steps.window,
            buffer: std::time::Duration::from_secs(config.archive.buffer_secs),
            stop: CancellationToken::new(),
        }),
        _ => None,
    };
    let views = views.map(|(registry, tables)| crate::web::views::ViewsWeb {
        registry,
        tables,
        backfill: backfill.clone(),
    });
    let mut connections: Vec<(&'static str, Health)> = outputs.health();

    let source_stop = CancellationToken::new();
    let sources = Sources::start(
        config.source_settings(),
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
        backlog: backlog.clone(),
        dashboard_config: serde_json::json!({
            "tile_url": config.web.tile_url,
            "tile_attribution": config.web.tile_attribution,
            "tile_attribution_url": config.web.tile_attribution_url,
        })
        .to_string()
        .into(),
        connections: connections.into(),
        // Each WebSocket holds a connection too: never more than connections may be open.
        ws_slots: crate::web::server::Slots::new(
            usize::try_from(config.web.max_ws_clients)
                .unwrap_or(10_000)
                .min(crate::web::server::max_connections()),
            crate::web::server::Refusals {
                all: "too many WebSocket clients: web.max_ws_clients are connected; try again later",
                one_address: "too many WebSocket clients from one address: a quarter of the slots (web.max_ws_clients) at most",
            },
        ),
        alerts: alerts_web,
        views,
        query: crate::web::query::QueryWeb::new(archive, crate::web::query::LIMITS),
    };
    let web_stop = CancellationToken::new();
    let routes = router(state, guard);
    let server = {
        let stop = web_stop.clone();
        tokio::spawn(async move {
            crate::web::server::serve(listener, tls, routes, stop).await;
            Ok::<(), std::io::Error>(())
        })
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
        if let Some(backfill) = &backfill {
            // Backfills under way stop; their hold on the outputs goes.
            backfill.close();
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
        ingest,
        cancel,
        done,
    })
}

/// Lower-cased copies (host names and origins compare case-insensitively).
fn lower(list: &[String]) -> Vec<String> {
    list.iter().map(|s| s.trim().to_ascii_lowercase()).collect()
}
