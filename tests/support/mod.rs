//! Shared test support: the reference implementation and generators of awkward telemetry.

#![allow(dead_code)]

pub mod aws;
pub mod disk;
pub mod faults;
pub mod flaky;
pub mod kafka;
pub mod kinesis;
pub mod mail;
pub mod process;
pub mod reference;
pub mod s3;
pub mod service;
pub mod sns;
pub mod webdriver;

// `poll.rs` is loaded by `webdriver.rs`, which an example includes on its own.
pub use webdriver::poll;

use stampede_producers::Rng;

/// Names that exercise escapes and multi-byte UTF-8, with how each is spelled in JSON.
const NAMES: &[(&str, &str)] = &[
    ("Shadowfax", "Shadowfax"),
    ("Bucephalus", "Bucephalus"),
    ("Felaróf", "Fela\\u0072\\u00f3f"),
    ("独角兽", "独角兽"),
    ("🦄 Sparkle", "\\ud83e\\udd84 Sparkle"),
    ("Quote\"d", "Quote\\\"d"),
    ("Rocinante", "Rocinante"),
];

/// How much of each awkwardness to mix in (probabilities per record).
#[derive(Clone, Copy)]
pub struct Awkward {
    pub late: f64,
    pub too_late: f64,
    pub bad: f64,
}

impl Default for Awkward {
    fn default() -> Self {
        Awkward {
            late: 0.01,
            too_late: 0.005,
            bad: 0.01,
        }
    }
}

/// Spells epoch milliseconds in one of the accepted `StatusTime` forms, chosen at random.
fn spell_time(t: i64, rng: &mut Rng) -> String {
    let dt = chrono::DateTime::from_timestamp_millis(t).unwrap();
    match rng.below(5) {
        0 => dt.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        1 if t % 1000 == 0 => dt.format("%Y-%m-%d %H:%M:%S").to_string(),
        1 => dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        2 => dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        3 => {
            let off = chrono::FixedOffset::east_opt(3 * 3600 + 1800).unwrap();
            dt.with_timezone(&off)
                .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
                .to_string()
        }
        _ => {
            let off = chrono::FixedOffset::west_opt(8 * 3600).unwrap();
            dt.with_timezone(&off)
                .format("%Y-%m-%d %H:%M:%S%.3f%:z")
                .to_string()
        }
    }
}

/// One bad line of a random kind.
fn bad_line(rng: &mut Rng, t: &str) -> String {
    match rng.below(9) {
        0 => format!("{{\"Name\":\"x\",\"StatusTime\":\"{t}\""),
        1 => "}{".to_owned(),
        2 => format!("{{\"StatusTime\":\"{t}\",\"Latitude\":1,\"Longitude\":1,\"Distance\":1,\"HealthPoints\":1,\"MagicPoints\":1}}"),
        3 => format!("{{\"Name\":\"x\",\"StatusTime\":\"{t}\",\"Latitude\":1,\"Longitude\":1,\"Distance\":true,\"HealthPoints\":1,\"MagicPoints\":1}}"),
        4 => format!("{{\"Name\":\"x\",\"StatusTime\":\"{t}\",\"Latitude\":-91,\"Longitude\":1,\"Distance\":1,\"HealthPoints\":1,\"MagicPoints\":1}}"),
        5 => format!("{{\"Name\":\"x\",\"StatusTime\":\"{t}\",\"Latitude\":1,\"Longitude\":1,\"Distance\":1,\"HealthPoints\":18446744073709551615,\"MagicPoints\":1}}"),
        6 => "{\"Name\":\"x\",\"StatusTime\":\"2021-13-01 00:00:00\",\"Latitude\":1,\"Longitude\":1,\"Distance\":1,\"HealthPoints\":1,\"MagicPoints\":1}".to_owned(),
        7 => format!(
            "{{\"Name\":\"x\",\"Pad\":\"{}\",\"StatusTime\":\"{t}\",\"Latitude\":1,\"Longitude\":1,\"Distance\":1,\"HealthPoints\":1,\"MagicPoints\":1}}",
            "p".repeat(70_000)
        ),
        _ => "[\"not\",\"an\",\"object\"]".to_owned(),
    }
}

/// Telemetry for `unicorns` unicorns over `seconds` seconds from `start_ms`, delivered
/// shuffled within 4 s (inside the 5 s out-of-orderness bound), with late, too-late and bad
/// lines mixed in, time spellings and name escapes varied. Returns the lines in delivery order.
pub fn awkward_lines(
    seed: u64,
    unicorns: usize,
    seconds: i64,
    start_ms: i64,
    mix: Awkward,
) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut keyed: Vec<(i64, u64, String)> = Vec::new();
    let mut seq = 0u64;
    for s in 0..seconds {
        for u in 0..unicorns {
            let (_, spelled) = NAMES[u % NAMES.len()];
            let name = if u < NAMES.len() {
                spelled.to_owned()
            } else {
                format!("{spelled}-{u}")
            };
            let t = start_ms + s * 1_000 + (u as i64 * 37) % 1_000;
            let window_end = (t.div_euclid(60_000) + 1) * 60_000;
            let roll = rng.next_f64();
            let deliver = if roll < mix.late {
                window_end + 6_000 + rng.below(40_000) as i64
            } else if roll < mix.late + mix.too_late {
                window_end + 70_000 + rng.below(50_000) as i64
            } else {
                t + rng.below(4_000) as i64
            };
            let time = spell_time(t, &mut rng);
            let line = if rng.next_f64() < mix.bad {
                bad_line(&mut rng, &time)
            } else {
                let health = 150 - rng.below(300) as i64;
                let magic = if rng.below(50) == 0 {
                    i64::MIN + rng.below(10) as i64
                } else {
                    150 + rng.below(9) as i64
                };
                format!(
                    "{{\"Name\":\"{name}\",\"StatusTime\":\"{time}\",\"Latitude\":{},\"Longitude\":{},\"Distance\":{},\"HealthPoints\":{health},\"MagicPoints\":{magic}}}",
                    rng.next_f64() * 180.0 - 90.0,
                    rng.next_f64() * 360.0 - 180.0,
                    29.0 + rng.next_f64() * 2.0,
                )
            };
            seq += 1;
            keyed.push((deliver, seq, line));
        }
    }
    keyed.sort();
    keyed.into_iter().map(|(_, _, l)| l.into_bytes()).collect()
}
