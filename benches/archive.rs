//! The Parquet archive's encoder on one object's worth of the benchmark fleet (5 MiB of NDJSON,
//! the default `archive.buffer_bytes`): the CPU the archive adds to ingest per record, which
//! `scripts/bench-archive` sees as a ratio of wall times. `cargo bench --bench archive`.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use stampede::decode::decode;
use stampede::output::archive::columns::{encode, Known};
use stampede::output::archive::lines::Lines;
use stampede::output::Fields;

mod support;

fn bench(c: &mut Criterion) {
    let file = support::fleet_file();
    let (mut lines, mut ends, mut times, mut fields, mut names) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for line in support::lines(&file) {
        if lines.len() + line.len() + 1 > 5 << 20 {
            break;
        }
        let record = decode(line).expect("the fleet's records are valid");
        // The fields and the name, as the pipeline keeps them.
        fields.push(Fields::of(&record));
        names.extend_from_slice(record.name.as_bytes());
        times.push(record.status_time);
        lines.extend_from_slice(line);
        lines.push(b'\n');
        ends.push(u32::try_from(lines.len()).expect("5 MiB"));
    }
    let ndjson = lines.len();
    let lines = {
        let mut held = Lines::default();
        held.push_piece(lines.into());
        held
    };
    let known = Known {
        times: &times,
        fields: &fields,
        names: &names,
    };
    let mut g = c.benchmark_group("archive");
    g.throughput(Throughput::Elements(ends.len() as u64));
    g.sample_size(20);
    g.bench_function("parquet_object", |b| {
        b.iter(|| black_box(encode(&lines, &ends, &known).expect("encodes").len()))
    });
    g.finish();
    let size = encode(&lines, &ends, &known).expect("encodes").len();
    println!(
        "one object: {} records, {} bytes of NDJSON, {size} bytes of Parquet",
        ends.len(),
        ndjson
    );
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
}
criterion_main!(benches);
