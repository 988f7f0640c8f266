//! `stampede demo`: a simulated fleet fed straight into the running service, one record per
//! unicorn per second in real time. Every fourth unicorn's vitals drift down until they are
//! well below the alert threshold, then recover past its clear level, and again: the demo's
//! alerts fire and resolve. Records go through the same partition, decoder and engine as HTTP
//! ingest.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use stampede_producers::{fleet_name, Fleet, FleetConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{serve, subscribe, UsageError};
use crate::commands::produce::render;
use crate::config::Config;
use crate::decode::split_record_ranges;
use crate::pipeline::Batch;

/// `stampede demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Optional configuration file, as for `serve` (the demo's defaults otherwise).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Simulated unicorns.
    #[arg(long, default_value_t = 12, value_name = "N")]
    pub unicorns: u32,
    /// Vitals points a second that every fourth unicorn loses (then regains 2.5 times as
    /// fast): at 0.4 its alerts fire after about two minutes and resolve a minute later.
    #[arg(long, default_value_t = 0.4, value_name = "POINTS")]
    pub drift: f64,
    /// Mail the alerts through this SMTP server (smtp://HOST:PORT or smtps://HOST:PORT).
    #[arg(long, value_name = "URL")]
    pub smtp: Option<String>,
    /// With --smtp: subscribe this address (a confirmation mail comes first).
    #[arg(long, value_name = "ADDR", requires = "smtp")]
    pub email: Option<String>,
    /// Keep every record in an NDJSON archive in this directory (Firehose's layout, written
    /// every 60 s or 5 MiB; default ./stampede-archive), for `stampede query` and the
    /// dashboard's trips.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "./stampede-archive")]
    pub archive: Option<PathBuf>,
}

/// Runs `stampede demo`: the service on the demo's defaults (or `--config`), a simulated fleet
/// fed straight into its HTTP partition, and optionally alert mails and an archive.
///
/// # Errors
/// A flag out of range (usage error), bad configuration, or as [`super::serve::run`].
pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.unicorns == 0 || args.unicorns > 100_000 {
        return Err(UsageError("--unicorns must be between 1 and 100000".into()).into());
    }
    if !(0.01..=50.0).contains(&args.drift) {
        return Err(
            UsageError("--drift must be between 0.01 and 50 points a second".into()).into(),
        );
    }
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(smtp) = &args.smtp {
        config.alerts.smtp.server = smtp.clone();
    }
    if let Some(dir) = &args.archive {
        config.archive.kind = crate::config::ArchiveKind::Dir;
        config.archive.path = dir.display().to_string();
    }
    if config.views.dir.trim().is_empty() {
        // The example views (queries/views/), written beside the store for the user to read.
        let dir = config.store.path.join("demo-views");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (file, sql) in crate::view::EXAMPLES {
            std::fs::write(dir.join(file), sql)
                .with_context(|| format!("cannot write {}", dir.join(file).display()))?;
        }
        config.views.dir = dir.display().to_string();
    }
    super::init_tracing("info");
    serve::runtime()?.block_on(async move {
        let app = crate::app::start(config.clone()).await?;
        let url = serve::url(&app, &config);
        let fleet_stop = CancellationToken::new();
        let n = args.unicorns as usize;
        tokio::spawn(run_fleet(
            app.ingest.clone(),
            n,
            args.drift,
            fleet_stop.clone(),
        ));
        println!("Stampede demo: {n} simulated unicorns. Dashboard: {url}  (Ctrl-C to stop)");
        if let Some(email) = &args.email {
            let action = subscribe::Action::Subscribe {
                email,
                names: &[],
                rules: &[],
            };
            let base = url.trim_end_matches('/');
            match subscribe::run_async(&config, Some(base), &action).await {
                Ok(said) => println!("Alert mails: {said}"),
                Err(e) => eprintln!("stampede: alert mails to {email}: {e:#}"),
            }
        }
        io::stdout().flush().ok();
        serve::until_signal(app, || fleet_stop.cancel()).await
    })
}

/// A drifting unicorn turns back up below this (both vitals).
const LOW_TURN: i64 = 80;
/// And down again above this.
const HIGH_TURN: i64 = 130;
/// How much faster it recovers than it falls.
const RECOVERY: f64 = 2.5;

/// Feeds `unicorns` simulated unicorns into `ingest` until `stop` fires. Every fourth unicorn
/// loses `drift` vitals points a second (0.4 by default: below 100 after about two minutes)
/// until it is under 80, then recovers 2.5 times as fast until it is over 130.
pub async fn run_fleet(
    ingest: mpsc::Sender<Batch>,
    unicorns: usize,
    drift: f64,
    stop: CancellationToken,
) {
    let names: Vec<String> = (0..unicorns).map(fleet_name).collect();
    let now = crate::time::now_ms();
    let mut cfg = FleetConfig::new(names.clone(), now as u64, now);
    let drifting = |i: usize| i % 4 == 3;
    cfg.drift_per_sec = (0..unicorns)
        .map(|i| if drifting(i) { -drift } else { 0.0 })
        .collect();
    let mut fleet = Fleet::new(cfg);
    let mut recovering = vec![false; unicorns];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut text = String::with_capacity(unicorns * 220);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        text.clear();
        let target = fleet.produced() + unicorns as u64;
        while fleet.produced() < target {
            if let Some(reading) = fleet.poll() {
                render(&names, &reading, &mut text);
                let i = reading.unicorn;
                if drifting(i) {
                    let low = reading.health_points.min(reading.magic_points);
                    let high = reading.health_points.max(reading.magic_points);
                    if !recovering[i] && low < LOW_TURN {
                        recovering[i] = true;
                        fleet.set_drift(i, drift * RECOVERY);
                    } else if recovering[i] && high > HIGH_TURN {
                        recovering[i] = false;
                        fleet.set_drift(i, -drift);
                    }
                }
            }
        }
        let payload = Bytes::from(text.clone());
        let records = split_record_ranges(&payload);
        if ingest
            .send(Batch {
                payload,
                records,
                positions: Vec::new(),
                sequences: Vec::new(),
                reply: None,
                decoded: Vec::new(),
                plain_lines: false,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}
