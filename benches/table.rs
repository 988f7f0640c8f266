//! The fleet table's pages (`GET /api/unicorns?q=&sort=&offset=&limit=`) answered by the hub
//! holding 1,000,000 unicorns: each is time the hub spends away from its frames, so it must stay
//! a small fraction of a frame's 100 ms. `cargo bench --bench table`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_main, Criterion};
use stampede::hub::table::{SortKey, TableQuery};
use stampede::hub::{Hub, HubInput, HubSettings, LiveKey, LiveRecord};
use stampede_producers::fleet_name;
use tokio_util::sync::CancellationToken;

const UNICORNS: usize = 1_000_000;

fn query(search: &str, sort: SortKey, offset: usize) -> TableQuery {
    TableQuery {
        search: search.into(),
        sort,
        descending: sort != SortKey::Name,
        offset,
        limit: 100,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let settings = HubSettings {
        queue_frames: 64,
        queue_bytes: 1 << 20,
        silent_after: Duration::from_secs(3_600),
        // Unbounded: the bench times every page, back to back.
        table_budget: Duration::MAX,
    };
    let hub = rt.block_on(async {
        let (hub, _task) = Hub::start(settings, CancellationToken::new());
        let input = hub.input();
        let mut batch = Vec::new();
        for i in 0..UNICORNS {
            #[allow(clippy::cast_precision_loss)]
            let x = i as f64;
            batch.push(LiveRecord {
                name: Arc::from(fleet_name(i)),
                status_time: 1_521_343_200_000,
                latitude: 40.0 + (x * 0.618).fract(),
                longitude: -74.0 + (x * 0.414).fract(),
                distance: (x * 0.7).fract() * 30.0,
                health_points: (i % 151) as i64,
                magic_points: (i % 149) as i64,
                input_data: None,
                key: LiveKey::NONE,
            });
            if batch.len() == 10_000 {
                let sent = input.send(HubInput::Telemetry(std::mem::take(&mut batch)));
                sent.await.expect("the hub runs");
            }
        }
        hub
    });
    let answer = |q: TableQuery| {
        rt.block_on(hub.unicorns(Some(q)))
            .expect("the hub runs")
            .expect("no budget")
    };
    assert_eq!(answer(query("", SortKey::Name, 0)).total, UNICORNS);
    let mut g = c.benchmark_group("table_1m");
    g.sample_size(20);
    for (label, q) in [
        ("name_first_page", query("", SortKey::Name, 0)),
        ("name_page_at_500k", query("", SortKey::Name, 500_000)),
        ("name_search", query("fax-4242", SortKey::Name, 0)),
        ("health_first_page", query("", SortKey::Health, 0)),
        ("speed_page_at_10k", query("", SortKey::Speed, 10_000)),
    ] {
        g.bench_function(label, |b| b.iter(|| answer(q.clone())));
    }
    g.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
}

criterion_main!(benches);
