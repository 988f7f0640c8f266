//! The broker's own consume ceiling: a plain librdkafka consume loop (the crate's `BaseConsumer`,
//! no group, every partition from the beginning, no processing beyond touching each payload),
//! timed from the first message to the last, with the fetch settings Stampede's consumer uses
//! (`fetch.wait.max.ms=10`, `fetch.queue.backoff.ms=10`; tansu holds a fetch for the whole wait,
//! so librdkafka's default of 500 ms makes the loop several times slower). `scripts/bench-kafka` compares Stampede's
//! consume → window → summary-topic throughput with it.
//!
//! ```text
//! cargo run --release --example kafka_ceiling -- 127.0.0.1:9092 wildrydes-bench 1000000 [WAIT_MS]
//! ```

#[path = "support/kafka.rs"]
mod kafka;

use std::time::{Duration, Instant};

use rdkafka::topic_partition_list::Offset;
use rdkafka::Message;

fn main() {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().expect("BROKERS");
    let topic = args.next().expect("TOPIC");
    let count: u64 = args
        .next()
        .expect("COUNT")
        .parse()
        .expect("COUNT is a number");
    // The consumer's fetch.wait.max.ms, Stampede's by default.
    let wait = args.next().unwrap_or_else(|| "10".into());
    let consumer = kafka::assigned(
        &brokers,
        &topic,
        "stampede-ceiling",
        &wait,
        Offset::Beginning,
    );
    let mut n = 0u64;
    let mut bytes = 0usize;
    let mut first = None;
    while n < count {
        if let Some(Ok(m)) = consumer.poll(Duration::from_secs(1)) {
            first.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, <[u8]>::len);
            n += 1;
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!(
        "ceiling: {n} messages ({:.1} MB) in {secs:.2} s = {:.0} messages/s",
        bytes as f64 / 1e6,
        n as f64 / secs
    );
}
