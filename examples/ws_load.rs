//! Load figures for the live path of a running `stampede serve`: WebSocket clients, ingest rate,
//! frame freshness, server CPU and memory. Prints figures; asserts nothing.
//!
//! ```text
//! cargo run --release --example ws_load -- --url http://127.0.0.1:8080 --server-pid PID \
//!     --clients 100 --rate 50000 --unicorns 1000 --seconds 20
//! cargo run --release --example ws_load -- --url … --server-pid PID --clients 1000 --idle
//! ```
//!
//! The driver posts `--rate` records a second (a batch every `--interval-ms`, default 10, names
//! round-robin over `--unicorns`) plus a probe record stamped with its send time, so a frame's
//! probe is up to one interval old when the frame is cut. Each client looks for the probe
//! in every telemetry frame (a byte search, no JSON parse, so that the tool stays cheap) and
//! records now − probe time: how old the freshest data in a frame is when a browser gets it.
//! `--idle` only connects the clients and reports the server's resident memory per client.
//! `--kafka HOST:PORT/TOPIC` writes the records to that topic instead of posting them (one
//! message each, keyed by name, `linger.ms=0`), for a server whose source is that topic: the
//! probe's age then covers produce → broker → consumer → engine → hub → WebSocket.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stampede::time::{format_status_time, now_ms, parse_status_time};

#[path = "support/proc.rs"]
mod proc;
use proc::proc_usage;

struct Args {
    url: String,
    clients: usize,
    rate: u64,
    unicorns: u64,
    seconds: u64,
    idle: bool,
    server_pid: Option<u32>,
    interval_ms: u64,
    kafka: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        clients: 100,
        rate: 50_000,
        unicorns: 1_000,
        seconds: 20,
        idle: false,
        server_pid: None,
        interval_ms: 10,
        kafka: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val(),
            "--clients" => a.clients = val().parse().expect("--clients N"),
            "--rate" => a.rate = val().parse().expect("--rate N"),
            "--unicorns" => a.unicorns = val().parse().expect("--unicorns N"),
            "--seconds" => a.seconds = val().parse().expect("--seconds N"),
            "--server-pid" => a.server_pid = Some(val().parse().expect("--server-pid PID")),
            "--idle" => a.idle = true,
            "--interval-ms" => a.interval_ms = val().parse().expect("--interval-ms N"),
            "--kafka" => a.kafka = Some(val()),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

const PROBE: &[u8] = b"\"Name\":\"~probe\",\"StatusTime\":\"";

#[tokio::main]
async fn main() {
    let a = args();
    let ws_url = a.url.replacen("http://", "ws://", 1) + "/ws";
    let before = a.server_pid.map(proc_usage);
    let frames = Arc::new(AtomicU64::new(0));
    let bytes_in = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(a.clients);
    for _ in 0..a.clients {
        let (ws, _) = tokio_tungstenite::connect_async(&ws_url)
            .await
            .expect("connect");
        clients.push(ws);
    }
    eprintln!("{} clients connected", clients.len());
    if a.idle {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let (Some(pid), Some((_, rss0))) = (a.server_pid, before) {
            let (_, rss1) = proc_usage(pid);
            println!(
                "idle clients: {}; server RSS {:.1} MiB → {:.1} MiB: {:.1} KiB per idle client",
                a.clients,
                rss0 as f64 / 1048576.0,
                rss1 as f64 / 1048576.0,
                (rss1.saturating_sub(rss0)) as f64 / 1024.0 / a.clients as f64
            );
        }
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(a.seconds) + Duration::from_secs(2);
    let mut readers = Vec::new();
    for mut ws in clients {
        let (frames, bytes_in) = (Arc::clone(&frames), Arc::clone(&bytes_in));
        readers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let finder = memchr::memmem::Finder::new(PROBE);
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline.into(), ws.next()).await
            {
                let data = msg.into_data();
                frames.fetch_add(1, Relaxed);
                bytes_in.fetch_add(data.len() as u64, Relaxed);
                if data.starts_with(b"{\"type\":\"telemetry\"") {
                    if let Some(at) = finder.find(&data) {
                        let start = at + PROBE.len();
                        if let Some(t) = data
                            .get(start..start + 23)
                            .and_then(|t| parse_status_time(t).ok())
                        {
                            samples.push((now_ms() - t) as u32);
                        }
                    }
                }
            }
            samples
        }));
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let kafka = a.kafka.as_deref().map(|spec| {
        let (brokers, topic) = spec.split_once('/').expect("--kafka HOST:PORT/TOPIC");
        let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "0")
            .create()
            .expect("kafka producer");
        (producer, topic.to_owned())
    });
    let ingest: hyper::Uri = format!("{}/ingest", a.url).parse().expect("url");
    let per_batch = (a.rate * a.interval_ms / 1_000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(a.interval_ms.max(1)));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut next_unicorn = 0u64;
    while started.elapsed() < Duration::from_secs(a.seconds) {
        tick.tick().await;
        let t = format_status_time(now_ms());
        let mut body = String::with_capacity(per_batch as usize * 200 + 200);
        for _ in 0..per_batch {
            let u = next_unicorn % a.unicorns;
            next_unicorn += 1;
            body.push_str(&format!(
                "{{\"Name\":\"u{u:05}\",\"StatusTime\":\"{t}\",\"Latitude\":40.75,\"Longitude\":-73.98,\"Distance\":30.1,\"HealthPoints\":150,\"MagicPoints\":150}}\n"
            ));
        }
        body.push_str(&format!(
            "{{\"Name\":\"~probe\",\"StatusTime\":\"{t}\",\"Latitude\":40.75,\"Longitude\":-73.98,\"Distance\":0,\"HealthPoints\":1,\"MagicPoints\":1}}\n"
        ));
        if let Some((producer, topic)) = &kafka {
            for line in body.lines() {
                let key = &line[9..line[9..].find('"').map_or(9, |n| n + 9)];
                let record = rdkafka::producer::BaseRecord::to(topic)
                    .key(key)
                    .payload(line);
                if producer.send(record).is_ok() {
                    sent += 1;
                }
            }
            producer.poll(Duration::ZERO);
            continue;
        }
        let req = hyper::Request::post(ingest.clone())
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        if let Ok(res) = client.request(req).await {
            if res.status().is_success() {
                sent += per_batch + 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = a.server_pid.map(proc_usage);
    let mut samples: Vec<u32> = Vec::new();
    for r in readers {
        samples.extend(r.await.unwrap_or_default());
    }
    samples.sort_unstable();
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "ingest: {sent} records in {elapsed:.1} s = {:.0} records/s; {} WebSocket clients; {} frames, {:.1} MB received",
        sent as f64 / elapsed,
        a.clients,
        frames.load(Relaxed),
        bytes_in.load(Relaxed) as f64 / 1e6
    );
    println!(
        "frame freshness (now − newest probe record in each telemetry frame), {} samples: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        samples.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        samples.last().copied().unwrap_or(0)
    );
    if let (Some((cpu0, rss0)), Some((cpu1, rss1))) = (before, after) {
        println!(
            "server: {:.2} cores busy on average; RSS {:.1} MiB → {:.1} MiB",
            (cpu1 - cpu0) / elapsed,
            rss0 as f64 / 1048576.0,
            rss1 as f64 / 1048576.0
        );
    }
}
