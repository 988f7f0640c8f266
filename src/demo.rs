//! `stampede demo`: a simulated fleet fed straight into the running service, one record per
//! unicorn per second in real time, some unicorns with vitals drifting down so that low vitals
//! show. Records go through the same partition, decoder and engine as HTTP ingest.

use std::time::Duration;

use bytes::Bytes;
use stampede_producers::{fleet_name, Fleet, FleetConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::decode::split_record_ranges;
use crate::pipeline::Batch;
use crate::produce::render;

/// Feeds `unicorns` simulated unicorns into `ingest` until `stop` fires. Every fourth unicorn
/// loses about 24 vitals points a minute.
pub async fn run_fleet(ingest: mpsc::Sender<Batch>, unicorns: usize, stop: CancellationToken) {
    let names: Vec<String> = (0..unicorns).map(fleet_name).collect();
    let now = crate::time::now_ms();
    let mut cfg = FleetConfig::new(names.clone(), now as u64, now);
    cfg.drift_per_sec = (0..unicorns)
        .map(|i| if i % 4 == 3 { -0.4 } else { 0.0 })
        .collect();
    let mut fleet = Fleet::new(cfg);
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
            }
        }
        let payload = Bytes::from(text.clone());
        let records = split_record_ranges(&payload);
        if ingest
            .send(Batch {
                payload,
                records,
                positions: Vec::new(),
                reply: None,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}
