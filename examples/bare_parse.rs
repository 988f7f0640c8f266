//! Baseline for the whole-process benchmark: read NDJSON files with the same line reader as
//! `stampede aggregate` and parse every line with serde_json into the seven telemetry fields,
//! nothing more. `scripts/bench-aggregate` times it against `stampede aggregate`.

use std::fs::File;

use stampede::source::file::LineReader;

#[derive(serde::Deserialize)]
#[allow(non_snake_case, dead_code)]
struct Bare<'a> {
    Name: &'a str,
    StatusTime: &'a str,
    Latitude: f64,
    Longitude: f64,
    Distance: f64,
    HealthPoints: i64,
    MagicPoints: i64,
}

fn main() -> std::io::Result<()> {
    let (mut ok, mut bad, mut sum) = (0u64, 0u64, 0i64);
    for path in std::env::args().skip(1) {
        let mut lines = LineReader::new(File::open(&path)?);
        while let Some(line) = lines.next_line()? {
            match serde_json::from_slice::<Bare<'_>>(line.bytes) {
                Ok(r) => {
                    ok += 1;
                    sum = sum.wrapping_add(r.HealthPoints);
                }
                Err(_) => bad += 1,
            }
        }
    }
    eprintln!("bare_parse: {ok} parsed, {bad} failed (checksum {sum})");
    Ok(())
}
