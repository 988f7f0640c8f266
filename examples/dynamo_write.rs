//! Stampede's DynamoDB write path on its own: N summaries (1,000 unicorns × N/1,000 minutes)
//! through `DynamoStore::write` in batches as the store writer sends them, timed, with the items
//! per request. `scripts/bench-aws` compares it with boto3's `batch_writer` on the same emulator.
//!
//! ```text
//! AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:4568 cargo run --release --example dynamo_write -- TABLE 20000
//! ```

use std::time::Instant;

use stampede::output::store::dynamodb::DynamoStore;
use stampede::record::Summary;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let table = args.next().expect("TABLE");
    let n: i64 = args.next().expect("N").parse().expect("N is a number");
    let store = DynamoStore::open(&table, true).await.expect("table");
    let summaries: Vec<Summary> = (0..n)
        .map(|i| {
            let start = 1_521_331_200_000 + (i / 1_000) * 60_000;
            Summary {
                name: format!("u{:05}", i % 1_000),
                window_start: start,
                window_end: start + 60_000,
                distance: 1798.4,
                min_magic_points: 170,
                max_magic_points: 172,
                min_health_points: 146,
                max_health_points: 149,
                records: 60,
                revision: 0,
            }
        })
        .collect();
    let started = Instant::now();
    let (mut written, mut requests) = (0, 0);
    for batch in summaries.chunks(1_000) {
        let stats = store.write(batch).await.expect("write");
        written += stats.written;
        requests += stats.requests;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "stampede: {written} items in {secs:.2} s = {:.0} items/s; {requests} requests ({:.2} items per request)",
        written as f64 / secs,
        written as f64 / requests as f64
    );
}
