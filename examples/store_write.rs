//! The embedded store's write path on its own, as a big fleet's minute closes it: N unicorns'
//! summaries of one minute in one `EmbeddedStore::write`, for several minutes in turn, each timed.
//! The unicorns close in the order they were first seen (`u0`, `u1`, … `u999999`), which is
//! not the order of their names.
//!
//! ```text
//! cargo run --release --example store_write -- 1000000 3
//! ```

use std::time::Instant;

use stampede::output::store::embedded::EmbeddedStore;
use stampede::record::Summary;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("N is a number"));
    let minutes: i64 = args
        .next()
        .map_or(3, |a| a.parse().expect("MINUTES is a number"));
    let dir = std::env::temp_dir().join(format!("stampede-store-write-{}", std::process::id()));
    let store = EmbeddedStore::open(&dir, 0).expect("a store");
    let names: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
    for minute in 0..minutes {
        let start = 1_521_331_200_000 + minute * 60_000;
        let summaries: Vec<Summary> = names
            .iter()
            .map(|name| Summary {
                name: name.clone(),
                window_start: start,
                window_end: start + 60_000,
                distance: 1798.4,
                min_magic_points: 170,
                max_magic_points: 172,
                min_health_points: 146,
                max_health_points: 149,
                records: 60,
                revision: 0,
            })
            .collect();
        let began = Instant::now();
        let written = store.write(&summaries, &[]).expect("written");
        let secs = began.elapsed().as_secs_f64();
        println!(
            "minute {minute}: {written} summaries in {secs:.2} s = {:.0} summaries/s",
            written as f64 / secs
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
