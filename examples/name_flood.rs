//! Memory under a flood of names, for a running `stampede serve`: posts `--names` distinct
//! unicorn names (one record each, stamped now) spread over `--seconds`, then waits until the
//! service has forgotten them (issue 11, guard 2) and prints the server's resident memory
//! before, at the end of the flood, and after forgetting. Prints figures; asserts nothing.
//!
//! ```text
//! cargo build --release --bin stampede --example name_flood
//! ./target/release/stampede serve --config flood.toml &     # [web] listen = "127.0.0.1:18091"
//! ./target/release/examples/name_flood --url http://127.0.0.1:18091 --server-pid $! \
//!     --names 1000000 --seconds 60
//! ```
//!
//! Forgetting needs the flood's windows to be final (window end + allowed lateness behind the
//! watermark) and its unicorns silent for `web.silent_after_secs`: on the defaults about three
//! minutes after the flood; `--wait` bounds how long to wait for it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stampede::time::{format_status_time, now_ms};

#[path = "support/proc.rs"]
mod proc;
use proc::proc_usage;

struct Args {
    url: String,
    server_pid: u32,
    names: u64,
    seconds: u64,
    batch: u64,
    wait: u64,
    token: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        server_pid: 0,
        names: 1_000_000,
        seconds: 60,
        batch: 1_000,
        wait: 600,
        token: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val(),
            "--server-pid" => a.server_pid = val().parse().expect("--server-pid PID"),
            "--names" => a.names = val().parse().expect("--names N"),
            "--seconds" => a.seconds = val().parse().expect("--seconds N"),
            "--batch" => a.batch = val().parse().expect("--batch N"),
            "--wait" => a.wait = val().parse().expect("--wait SECONDS"),
            "--token" => a.token = Some(val()),
            "--help" | "-h" => {
                println!("name_flood --url URL --server-pid PID [--names N] [--seconds S] [--batch N] [--wait S] [--token T]");
                std::process::exit(0);
            }
            other => panic!("unknown flag {other} (--help)"),
        }
    }
    assert!(a.server_pid > 0, "--server-pid PID is needed");
    a
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn call(http: &Http, a: &Args, method: &str, path: &str, body: Bytes) -> String {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", a.url));
    if let Some(t) = &a.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = http
        .request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("the service answers");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The sum of the `stampede_unicorns` gauges: unicorns the engines still track.
async fn tracked(http: &Http, a: &Args) -> u64 {
    call(http, a, "GET", "/metrics", Bytes::new())
        .await
        .lines()
        .filter(|l| l.starts_with("stampede_unicorns{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

#[tokio::main]
async fn main() {
    let a = args();
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let (_, rss0) = proc_usage(a.server_pid);
    println!("baseline: RSS {:.1} MiB", mib(rss0));

    let started = Instant::now();
    let batches = a.names.div_ceil(a.batch);
    let every = Duration::from_secs(a.seconds).div_f64(batches as f64);
    let mut next = tokio::time::Instant::now();
    let mut accepted = 0u64;
    let mut body = String::with_capacity(a.batch as usize * 200);
    for b in 0..batches {
        body.clear();
        let now = format_status_time(now_ms());
        for i in b * a.batch..((b + 1) * a.batch).min(a.names) {
            body.push_str(&format!(
                "{{\"Name\":\"flood-{i:07}\",\"StatusTime\":\"{now}\",\"Latitude\":40.7,\"Longitude\":-73.9,\"Distance\":1.0,\"HealthPoints\":150,\"MagicPoints\":150}}\n"
            ));
        }
        let reply = call(&http, &a, "POST", "/ingest", Bytes::from(body.clone())).await;
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
        accepted += v["accepted"].as_u64().unwrap_or(0);
        if b % (batches / 10).max(1) == 0 {
            eprintln!(
                "  {:>3}%  {} names posted, RSS {:.1} MiB",
                b * 100 / batches,
                b * a.batch,
                mib(proc_usage(a.server_pid).1)
            );
        }
        next += every;
        tokio::time::sleep_until(next).await;
    }
    let posted_in = started.elapsed();
    let peak_tracked = tracked(&http, &a).await;
    let (_, rss1) = proc_usage(a.server_pid);
    println!(
        "flood: {} names in {:.1} s, {accepted} accepted; engines track {peak_tracked}; RSS {:.1} MiB",
        a.names,
        posted_in.as_secs_f64(),
        mib(rss1)
    );

    let deadline = Instant::now() + Duration::from_secs(a.wait);
    let mut last_report = Instant::now();
    loop {
        let left = tracked(&http, &a).await;
        let fleet = call(&http, &a, "GET", "/api/unicorns", Bytes::new()).await;
        if left == 0 && fleet.trim() == "[]" {
            break;
        }
        if Instant::now() > deadline {
            println!("gave up after {} s: engines still track {left}", a.wait);
            return;
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "  waiting: engines track {left}, RSS {:.1} MiB",
                mib(proc_usage(a.server_pid).1)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let forgotten_after = started.elapsed();
    // A sweep or two more, so that what was freed at the last one is counted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, rss2) = proc_usage(a.server_pid);
    println!(
        "forgotten: all of them {:.0} s after the flood began; RSS {:.1} MiB",
        forgotten_after.as_secs_f64(),
        mib(rss2)
    );
    println!(
        "RSS: baseline {:.1} MiB → flood {:.1} MiB (+{:.0} bytes a name) → forgotten {:.1} MiB ({:.2}× baseline)",
        mib(rss0),
        mib(rss1),
        rss1.saturating_sub(rss0) as f64 / a.names as f64,
        mib(rss2),
        rss2 as f64 / rss0 as f64
    );
}
