//! `stampede demo`: a simulated fleet fed straight into the running service, one record per
//! unicorn per second in real time. Every fourth unicorn's vitals drift down until they are
//! well below the alert threshold, then recover past its clear level, and again: the demo's
//! alerts fire and resolve. Records go through the same partition, decoder and engine as HTTP
//! ingest.

use std::time::Duration;

use bytes::Bytes;
use stampede_producers::{fleet_name, Fleet, FleetConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::decode::split_record_ranges;
use crate::pipeline::Batch;
use crate::produce::render;

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
            })
            .await
            .is_err()
        {
            return;
        }
    }
}
