//! Shared by the benchmarks: the benchmark fleet file, made in memory exactly as
//! `stampede produce --unicorns 1000 --msgs 500000 --rate max --seed 42
//! --start-time "2018-03-18 03:20:00"` writes it (1,000 unicorns × 500 s).

#![allow(dead_code)]

use stampede::commands::produce::render;
use stampede_producers::{fleet_name, Fleet, FleetConfig};

/// Unicorns in the benchmark fleet.
pub const UNICORNS: usize = 1_000;
/// Records in the benchmark file.
pub const RECORDS: u64 = 500_000;

/// The benchmark file as NDJSON bytes.
pub fn fleet_file() -> Vec<u8> {
    let names: Vec<String> = (0..UNICORNS).map(fleet_name).collect();
    let mut fleet = Fleet::new(FleetConfig::new(names.clone(), 42, 1_521_343_200_000));
    let mut text = String::with_capacity(RECORDS as usize * 200);
    while fleet.produced() < RECORDS {
        if let Some(r) = fleet.poll() {
            render(&names, &r, &mut text);
        }
    }
    text.into_bytes()
}

/// The file's lines.
pub fn lines(file: &[u8]) -> Vec<&[u8]> {
    file.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// The seven fields, as a plain serde_json parse reads them: the baseline.
#[derive(serde::Deserialize)]
#[allow(non_snake_case, dead_code)]
pub struct Bare<'a> {
    pub Name: &'a str,
    pub StatusTime: &'a str,
    pub Latitude: f64,
    pub Longitude: f64,
    pub Distance: f64,
    pub HealthPoints: i64,
    pub MagicPoints: i64,
}
