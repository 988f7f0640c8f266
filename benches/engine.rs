//! The window engine alone on decoded records (the benchmark fleet: 1,000 unicorns × 500 s):
//! intern, assign, accumulate, close, evict. `cargo bench --bench engine`; target ≥ 20 M
//! records/s.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use stampede::decode::decode;
use stampede::record::Telemetry;
use stampede::window::{Engine, WindowConfig};

mod support;

fn bench(c: &mut Criterion) {
    let file = support::fleet_file();
    let records: Vec<Telemetry<'_>> = support::lines(&file)
        .into_iter()
        .map(|l| decode(l).expect("valid"))
        .collect();
    let cfg = WindowConfig {
        idle_timeout_ms: None,
        ..WindowConfig::default()
    };
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.sample_size(30);
    g.bench_function("push_advance_flush", |b| {
        let mut out = Vec::with_capacity(16_384);
        b.iter(|| {
            let mut engine = Engine::new(cfg);
            for (i, r) in records.iter().enumerate() {
                let _ = engine.push(r, i as u64, 0);
                if i % 4_096 == 4_095 {
                    engine.advance(0, &mut out);
                    out.clear();
                }
            }
            engine.flush(&mut out);
            black_box(out.len());
            out.clear();
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
