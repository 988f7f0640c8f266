//! `stampede serve`: the service as the configuration says, until Ctrl-C or SIGTERM, then the
//! ordered shutdown of [`crate::app`] (a second signal, or 30 s, forces the exit). `demo` runs
//! the same way with a fleet inside.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::app::App;
use crate::config::Config;

/// `stampede serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (see `stampede print-config`); environment variables such as
    /// STAMPEDE_WEB_LISTEN (one per key) override it.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `stampede serve`.
///
/// # Errors
/// Bad configuration (exit 2), a part that cannot start, or a failed shutdown.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    super::init_tracing("info");
    runtime()?.block_on(async move {
        let app = crate::app::start(config.clone()).await?;
        println!(
            "Stampede serving on {}  (Ctrl-C to stop)",
            url(&app, &config)
        );
        io::stdout().flush().ok();
        until_signal(app, || {}).await
    })
}

/// The multi-threaded runtime the service runs on.
///
/// # Errors
/// The runtime cannot start.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The dashboard's address.
pub fn url(app: &App, config: &Config) -> String {
    let scheme = if config.web.tls_cert.is_empty() {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{}/", app.addr)
}

/// Waits for Ctrl-C or SIGTERM, calls `stopping`, then stops `app` in order; a second signal or
/// 30 s forces the exit.
///
/// # Errors
/// A stage failed while stopping, or the stop took too long.
pub async fn until_signal(app: App, stopping: impl FnOnce()) -> anyhow::Result<()> {
    shutdown_signal().await;
    eprintln!("stopping: flushing windows and the store (Ctrl-C again to force)");
    stopping();
    tokio::select! {
        result = tokio::time::timeout(std::time::Duration::from_secs(30), app.stop()) => {
            result.context("shutdown took longer than 30 s")?
        }
        () = shutdown_signal() => {
            eprintln!("forced exit");
            std::process::exit(130);
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
