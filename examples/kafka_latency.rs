//! The broker's own produce → consume latency, without Stampede: a producer sends RATE records a
//! second in a batch every 10 ms (`linger.ms=0`, as `ws_load --kafka` does), each carrying its
//! send time, and a plain
//! consumer (every partition from the end, `fetch.wait.max.ms=WAIT`) reads them back. Prints the
//! percentiles of receive − send. `ws_load --kafka` measures the same way through Stampede and a
//! WebSocket: the difference is Stampede's.
//!
//! ```text
//! cargo run --release --example kafka_latency -- 127.0.0.1:19092 TOPIC 5000 20 50
//! ```

#[path = "support/kafka.rs"]
mod kafka;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::Offset;
use rdkafka::{ClientConfig, Message};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut next = |what: &str| args.next().unwrap_or_else(|| panic!("{what}"));
    let brokers = next("BROKERS");
    let topic = next("TOPIC");
    let rate: u64 = next("RATE").parse().expect("RATE is records per second");
    let seconds: u64 = next("SECONDS").parse().expect("SECONDS is a number");
    let wait = next("WAIT");
    let consumer = kafka::assigned(&brokers, &topic, "stampede-latency", &wait, Offset::End);
    let producer = std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        // Let the consumer's first fetches go out before the first record.
        std::thread::sleep(Duration::from_secs(1));
        // As `ws_load` does: a batch every 10 ms.
        let per_batch = (rate / 100).max(1);
        let start = Instant::now();
        let mut sent = 0u64;
        let mut batches = 0u32;
        while start.elapsed() < Duration::from_secs(seconds) {
            for _ in 0..per_batch {
                let payload = now_us().to_string();
                let key = (sent % 1_000).to_string();
                let _ = producer.send(BaseRecord::to(&topic).key(&key).payload(&payload));
                sent += 1;
            }
            producer.poll(Duration::ZERO);
            batches += 1;
            if let Some(sleep) = (Duration::from_millis(10) * batches).checked_sub(start.elapsed())
            {
                std::thread::sleep(sleep);
            }
        }
        let _ = producer.flush(Duration::from_secs(10));
        sent
    });
    let mut latencies: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds + 3);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let sent: u64 = m
                .payload()
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            latencies.push(now_us().saturating_sub(sent));
        }
    }
    let sent = producer.join().expect("producer");
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).map_or(0.0, |us| *us as f64 / 1_000.0)
    };
    println!(
        "broker alone, fetch.wait.max.ms={wait}: {} of {sent} records back; produce → consume p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}
