//! Notification latency, record to mailbox: for a running `stampede serve` mailing through an
//! SMTP server that writes a Maildir (aiosmtpd, as `scripts/components/mail` starts it),
//! subscribes an address (following the confirmation link as a person would), then posts
//! `--changes` records that each make one alert fire, one at a time and spaced past the
//! service's `alerts.group_interval_secs` (so each is the first of its round and goes at
//! once), and takes, for each, the time from posting the record to the mail file's
//! modification time. Prints the median, p90, p99 and maximum. Asserts nothing.
//!
//! ```text
//! scripts/components/mail start
//! cargo build --release --bin stampede --example alert_latency
//! STAMPEDE_WEB_LISTEN=127.0.0.1:18092 STAMPEDE_ALERTS_SMTP_SERVER=smtp://127.0.0.1:8025 \
//!   STAMPEDE_ALERTS_GROUP_INTERVAL_SECS=1 STAMPEDE_STORE_PATH=/tmp/latency-store \
//!   ./target/release/stampede serve &
//! ./target/release/examples/alert_latency --url http://127.0.0.1:18092 \
//!   --maildir ~/.cache/stampede/maildir --changes 200 --spacing-ms 1100
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

struct Args {
    url: String,
    maildir: PathBuf,
    changes: usize,
    spacing_ms: u64,
    token: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        maildir: PathBuf::from("maildir"),
        changes: 200,
        spacing_ms: 1_100,
        token: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val(),
            "--maildir" => a.maildir = val().into(),
            "--changes" => a.changes = val().parse().expect("--changes N"),
            "--spacing-ms" => a.spacing_ms = val().parse().expect("--spacing-ms MS"),
            "--token" => a.token = Some(val()),
            "--help" | "-h" => {
                println!("alert_latency --url URL --maildir DIR [--changes N] [--spacing-ms MS] [--token T]");
                std::process::exit(0);
            }
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn post(http: &Http, url: &str, body: String, token: Option<&str>) -> (u16, String) {
    let mut req = hyper::Request::post(url).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = http
        .request(req.body(Full::new(Bytes::from(body))).expect("a request"))
        .await
        .expect("the service answers");
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.expect("a body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// New mail files for `to` since `seen`, with their text and modification time.
fn new_mails(maildir: &Path, to: &str, seen: &mut HashSet<PathBuf>) -> Vec<(String, SystemTime)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(maildir.join("new")) else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if seen.contains(&path) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        seen.insert(path);
        if text.contains(to) {
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or_else(|_| SystemTime::now());
            out.push((text.replace("=\n", "").replace("=3D", "="), modified));
        }
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let base = a.url.trim_end_matches('/');
    let to = format!("latency-{}@example.com", std::process::id());
    let mut seen: HashSet<PathBuf> = HashSet::new();
    new_mails(&a.maildir, "\u{0}", &mut seen);
    let (status, body) = post(
        &http,
        &format!("{base}/api/subscriptions"),
        format!(r#"{{"email":"{to}"}}"#),
        a.token.as_deref(),
    )
    .await;
    assert_eq!(status, 202, "subscribe: {body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let link = loop {
        let found = new_mails(&a.maildir, &to, &mut seen)
            .into_iter()
            .find_map(|(text, _)| {
                text.split_whitespace()
                    .find(|w| w.contains("/subscriptions/confirm?token="))
                    .map(str::to_owned)
            });
        if let Some(link) = found {
            break link;
        }
        assert!(
            Instant::now() < deadline,
            "no confirmation mail in {}",
            a.maildir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, _) = post(&http, &link.replace("\r", ""), String::new(), None).await;
    assert_eq!(status, 200, "confirm");
    println!(
        "subscribed {to}; {} changes, one every {} ms",
        a.changes, a.spacing_ms
    );

    let now = stampede::time::now_ms();
    let mut latencies = Vec::with_capacity(a.changes);
    for i in 0..a.changes {
        // Names new to the service (a firing alert does not fire again).
        let name = format!("latency-{}-{i}", std::process::id());
        let record = format!(
            r#"{{"Name":"{name}","StatusTime":"{}","Latitude":40.75,"Longitude":-73.98,"Distance":1.0,"HealthPoints":50,"MagicPoints":150}}"#,
            stampede::time::format_status_time(now)
        );
        let sent = SystemTime::now();
        let started = Instant::now();
        let (status, body) =
            post(&http, &format!("{base}/ingest"), record, a.token.as_deref()).await;
        assert_eq!(status, 200, "ingest: {body}");
        let id = format!("low-health/{name}/");
        let arrived = loop {
            let hit = new_mails(&a.maildir, &to, &mut seen)
                .into_iter()
                .find(|(text, _)| text.contains(&id));
            if let Some((_, at)) = hit {
                break at;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no mail for {name}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push(arrived.duration_since(sent).unwrap_or_default());
        let rest = Duration::from_millis(a.spacing_ms).saturating_sub(started.elapsed());
        tokio::time::sleep(rest).await;
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "record → mail in the SMTP server's Maildir, {} changes: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
    );
}
