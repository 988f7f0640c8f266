//! Watches a running `stampede serve` carrying a fleet and prints its figures: ingest rate,
//! freshness of the records browsers get, window close → stored latency, store write rate,
//! server CPU and memory. Asserts nothing; `scripts/bench-fleet` runs it beside
//! `stampede produce --unicorns N --rate 1 --to http://…/ingest`.
//!
//! ```text
//! cargo run --release --example fleet_watch -- --url http://127.0.0.1:18090 --server-pid PID \
//!     [--producer-pid PID] [--seconds 60] [--clients 1] [--token T] [--view S,W,N,E]
//! ```
//!
//! `--view` subscribes the clients to part of the map, as the dashboard does (`/ws?view=`).
//!
//! Freshness is measured on every record of every telemetry frame each client receives: now −
//! its `StatusTime` (the producer stamps a record with the second it is due, so this covers the
//! producer's sending, HTTP, decode, window, hub and WebSocket). The client finds the times with
//! a byte search, no JSON parse, so that it stays cheap beside the server. The store and window
//! figures are the differences of the server's `/metrics` between the start and the end, so a
//! warm-up before the start is not counted; their latencies are read off the histogram's
//! buckets (a quantile is reported as the bucket bound it falls under).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stampede::time::{now_ms, parse_status_time};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[path = "support/proc.rs"]
mod proc;
use proc::proc_usage;

struct Args {
    url: String,
    server_pid: Option<u32>,
    producer_pid: Option<u32>,
    seconds: u64,
    clients: usize,
    token: Option<String>,
    view: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        server_pid: None,
        producer_pid: None,
        seconds: 60,
        clients: 1,
        token: None,
        view: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val(),
            "--server-pid" => a.server_pid = Some(val().parse().expect("--server-pid PID")),
            "--producer-pid" => a.producer_pid = Some(val().parse().expect("--producer-pid PID")),
            "--seconds" => a.seconds = val().parse().expect("--seconds N"),
            "--clients" => a.clients = val().parse().expect("--clients N"),
            "--token" => a.token = Some(val()),
            "--view" => a.view = Some(val()),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

const TIME_KEY: &[u8] = b"\"StatusTime\":\"";
/// Freshness histogram: 1 ms buckets up to two minutes, the last one past that.
const FRESH_BUCKETS: usize = 120_001;

/// The server's metrics as (name with labels → value).
async fn metrics(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
) -> BTreeMap<String, f64> {
    let uri: hyper::Uri = format!("{url}/metrics").parse().expect("url");
    let res = client.get(uri).await.expect("GET /metrics");
    let body = res
        .into_body()
        .collect()
        .await
        .expect("metrics body")
        .to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn delta(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, key: &str) -> f64 {
    b.get(key).copied().unwrap_or(0.0) - a.get(key).copied().unwrap_or(0.0)
}

/// The bucket bound under which quantile `q` of a Prometheus histogram's increase falls.
fn histogram_quantile(
    a: &BTreeMap<String, f64>,
    b: &BTreeMap<String, f64>,
    name: &str,
    q: f64,
) -> String {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = b
        .keys()
        .filter_map(|k| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, delta(a, b, k)))
        })
        .collect();
    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return "n/a (no windows closed)".into();
    }
    let bound = buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::INFINITY, |b| b.0);
    if bound.is_infinite() {
        "> 60 s".into()
    } else {
        format!("≤ {} ms", bound * 1_000.0)
    }
}

fn quantile(hist: &[u64], q: f64) -> String {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return "n/a".into();
    }
    let want = (q * total as f64).ceil() as u64;
    let mut seen = 0;
    for (ms, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            return if ms + 1 == hist.len() {
                "> 120 s".into()
            } else {
                format!("{ms} ms")
            };
        }
    }
    "n/a".into()
}

#[tokio::main]
async fn main() {
    let a = args();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut ws_url = a.url.replacen("http://", "ws://", 1) + "/ws";
    if let Some(view) = &a.view {
        ws_url = format!("{ws_url}?view={view}");
    }
    let mut sockets = Vec::with_capacity(a.clients);
    for _ in 0..a.clients {
        let mut req = ws_url.as_str().into_client_request().expect("ws url");
        if let Some(token) = &a.token {
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("token"),
            );
        }
        // No size limits: a snapshot of a big fleet is one message of tens of megabytes.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
            .await
            .expect("connect /ws");
        sockets.push(ws);
    }
    let frames = Arc::new(AtomicU64::new(0));
    let bytes_in = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut readers = Vec::new();
    for mut ws in sockets {
        let (frames, bytes_in) = (Arc::clone(&frames), Arc::clone(&bytes_in));
        readers.push(tokio::spawn(async move {
            let mut hist = vec![0u64; FRESH_BUCKETS];
            // The oldest record seen in each wall-clock second (epoch seconds).
            let mut worst: BTreeMap<i64, i64> = BTreeMap::new();
            let finder = memchr::memmem::Finder::new(TIME_KEY);
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline.into(), ws.next()).await
            {
                let data = msg.into_data();
                frames.fetch_add(1, Relaxed);
                bytes_in.fetch_add(data.len() as u64, Relaxed);
                if !data.starts_with(b"{\"type\":\"telemetry\"") {
                    continue;
                }
                let now = now_ms();
                for at in finder.find_iter(&data) {
                    let start = at + TIME_KEY.len();
                    if let Some(t) = data
                        .get(start..start + 23)
                        .and_then(|t| parse_status_time(t).ok())
                    {
                        let age = (now - t).clamp(0, FRESH_BUCKETS as i64 - 1) as usize;
                        hist[age] += 1;
                        let second = worst.entry(now / 1_000).or_default();
                        *second = (*second).max(age as i64);
                    }
                }
            }
            (hist, worst)
        }));
    }
    let m0 = metrics(&client, &a.url).await;
    let started = Instant::now();
    let server0 = a.server_pid.map(proc_usage);
    let producer0 = a.producer_pid.map(proc_usage);
    let mut max_rss = 0u64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(pid) = a.server_pid {
            max_rss = max_rss.max(proc_usage(pid).1);
        }
    }
    let m1 = metrics(&client, &a.url).await;
    let elapsed = started.elapsed().as_secs_f64();
    let server1 = a.server_pid.map(proc_usage);
    let producer1 = a.producer_pid.map(proc_usage);
    let mut hist = vec![0u64; FRESH_BUCKETS];
    let mut worst: BTreeMap<i64, i64> = BTreeMap::new();
    for r in readers {
        let (h, w) = r.await.unwrap_or_default();
        for (i, n) in h.iter().enumerate() {
            hist[i] += n;
        }
        for (second, age) in w {
            let e = worst.entry(second).or_default();
            *e = (*e).max(age);
        }
    }
    let records = delta(&m0, &m1, "stampede_records_in_total");
    let rejected: f64 = m1
        .keys()
        .filter(|k| k.starts_with("stampede_records_rejected_total"))
        .map(|k| delta(&m0, &m1, k))
        .sum();
    println!(
        "ingest: {:.0} records/s over {elapsed:.0} s ({rejected:.0} rejected)",
        records / elapsed
    );
    println!(
        "freshness (StatusTime → WebSocket frame), {} records seen by {} client(s) in {} frames ({:.1} MB): p50 {}, p99 {}, max {}",
        hist.iter().sum::<u64>(),
        a.clients,
        frames.load(Relaxed),
        bytes_in.load(Relaxed) as f64 / 1e6,
        quantile(&hist, 0.50),
        quantile(&hist, 0.99),
        quantile(&hist, 1.0),
    );
    // Where the tail is: the seconds whose oldest record was oldest, with the second of the
    // minute (a minute's close falls just after :00 plus the watermark's delay).
    let mut slow: Vec<(i64, i64)> = worst.into_iter().collect();
    slow.sort_by_key(|&(second, age)| (std::cmp::Reverse(age), second));
    let slow: Vec<String> = slow
        .iter()
        .take(5)
        .map(|(second, age)| format!("{age} ms at :{:02}", second % 60))
        .collect();
    println!(
        "slowest seconds (oldest record a frame carried): {}",
        slow.join(", ")
    );
    let emitted = delta(&m0, &m1, "stampede_window_store_latency_seconds_count");
    println!(
        "windows closed and stored: {emitted:.0}; close → stored p50 {}, p99 {}; window end → close p99 {}",
        histogram_quantile(&m0, &m1, "stampede_window_store_latency_seconds", 0.50),
        histogram_quantile(&m0, &m1, "stampede_window_store_latency_seconds", 0.99),
        histogram_quantile(&m0, &m1, "stampede_window_emit_latency_seconds", 0.99),
    );
    println!(
        "store: {:.0} summaries written/s",
        delta(&m0, &m1, "stampede_store_writes_total") / elapsed
    );
    if let (Some((cpu0, _)), Some((cpu1, rss1))) = (server0, server1) {
        println!(
            "server: {:.2} cores; RSS {:.0} MiB at the end, {:.0} MiB at most",
            (cpu1 - cpu0) / elapsed,
            rss1 as f64 / 1048576.0,
            max_rss.max(rss1) as f64 / 1048576.0
        );
    }
    if let (Some((cpu0, _)), Some((cpu1, _))) = (producer0, producer1) {
        println!("producer: {:.2} cores", (cpu1 - cpu0) / elapsed);
    }
}
