//! The window engine alone on decoded records (the benchmark fleet: 1,000 unicorns × 500 s):
//! intern, assign, accumulate, close, evict. `cargo bench --bench engine`; target ≥ 20 M
//! records/s. `push_advance_flush_alerts` adds the two default alert rules per record (CONTRACT
//! §7), which must cost at most 10 % of the engine's throughput.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use stampede::alert::{Alerts, Rule};
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
    for with_alerts in [false, true] {
        let name = if with_alerts {
            "push_advance_flush_alerts"
        } else {
            "push_advance_flush"
        };
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(16_384);
            let mut changes = Vec::new();
            b.iter(|| {
                let mut engine = Engine::new(cfg);
                let mut alerts = Alerts::new(Rule::defaults(5.0).into());
                for (i, r) in records.iter().enumerate() {
                    if engine.push(r, i as u64, 0).is_ok() && with_alerts {
                        alerts.evaluate(engine.last_unicorn(), r, &mut changes);
                    }
                    if i % 4_096 == 4_095 {
                        engine.advance(0, &mut out);
                        out.clear();
                        changes.clear();
                    }
                }
                engine.flush(&mut out);
                black_box((out.len(), changes.len()));
                out.clear();
            })
        });
    }
    g.finish();
}

// criterion_group! makes an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);
