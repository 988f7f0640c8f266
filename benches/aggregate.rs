//! The batch path on the benchmark fleet file (500,000 records, 1,000 unicorns × 500 s), side by
//! side with a bare serde_json parse of the same lines into the seven fields.
//!
//! `cargo bench --bench aggregate`. The target: the whole path ≤ 1.25× the bare parse.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{criterion_main, Criterion, Throughput};
use stampede::commands::aggregate::{aggregate, write_summaries, Input};
use stampede::decode::decode;
use stampede::window::WindowConfig;

mod support;

fn bench(c: &mut Criterion) {
    let file = support::fleet_file();
    let lines = support::lines(&file);
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(20);
    g.bench_function("bare_serde_json_parse", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for l in &lines {
                let r: support::Bare<'_> = serde_json::from_slice(l).expect("valid");
                sum = sum.wrapping_add(r.HealthPoints);
            }
            black_box(sum)
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for l in &lines {
                sum = sum.wrapping_add(decode(l).expect("valid").health_points);
            }
            black_box(sum)
        })
    });
    g.bench_function("aggregate_whole_path", |b| {
        b.iter(|| {
            let input = Input {
                label: "bench".into(),
                reader: Box::new(Cursor::new(file.as_slice())),
            };
            let (summaries, _) =
                aggregate([input], WindowConfig::default(), 1, &mut |_| {}).expect("in memory");
            let mut out = Vec::with_capacity(2 << 20);
            write_summaries(&mut out, &summaries).expect("in memory");
            black_box(out.len())
        })
    });
    g.finish();
}

// criterion_group! makes an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);
