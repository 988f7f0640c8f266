//! The window semantics against the reference implementation on large awkward inputs, plus the
//! behaviours a single file cannot show: several partitions, ingest time, idle close, and
//! crash-and-replay from a checkpoint.

use std::collections::BTreeMap;

use stampede::commands::aggregate::{aggregate, write_summaries, Input};
use stampede::decode::decode;
use stampede::record::Summary;
use stampede::window::{Checkpoint, Engine, TimeMode, WindowConfig};
use stampede_producers::Rng;

use crate::support::{awkward_lines, reference, Awkward};

const T0: i64 = 1_521_343_200_000; // 2018-03-18 03:20:00 UTC

fn run_aggregate(lines: &[Vec<u8>]) -> (Vec<u8>, BTreeMap<String, u64>) {
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    let mut rejects = BTreeMap::new();
    let (summaries, report) = aggregate(
        [Input {
            label: "mem".into(),
            reader: Box::new(std::io::Cursor::new(text)),
        }],
        WindowConfig::default(),
        1,
        &mut |r| *rejects.entry(r.reject.reason.to_string()).or_default() += 1,
    )
    .unwrap();
    assert_eq!(report.records, lines.len() as u64);
    let mut out = Vec::new();
    write_summaries(&mut out, &summaries).unwrap();
    (out, rejects)
}

#[test]
fn awkward_input_matches_the_reference() {
    for seed in 1..=4 {
        let lines = awkward_lines(seed, 40, 600, T0 + 17, Awkward::default());
        let (out, rejects) = run_aggregate(&lines);
        let expected = reference::run(lines.iter().map(Vec::as_slice));
        let got = reference::parse_output(&out);
        assert_eq!(
            got.len(),
            expected.summaries.len(),
            "seed {seed}: number of summaries"
        );
        for (key, want) in &expected.summaries {
            assert_eq!(got.get(key), Some(want), "seed {seed}: summary {key:?}");
        }
        let expected_rejects: BTreeMap<String, u64> = expected
            .rejects
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        assert_eq!(rejects, expected_rejects, "seed {seed}: rejects");
        // The mix really exercised every path.
        for reason in ["too_late", "malformed_json", "too_large", "out_of_range"] {
            assert!(
                rejects.contains_key(reason),
                "seed {seed}: no {reason} in the mix"
            );
        }
        assert!(
            got.values().any(|s| s.revision > 0),
            "seed {seed}: no restatement in the mix"
        );
    }
}

fn record_line(name: &str, t: i64) -> Vec<u8> {
    let time = chrono::DateTime::from_timestamp_millis(t)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f");
    format!(
        "{{\"Name\":\"{name}\",\"StatusTime\":\"{time}\",\"Latitude\":0,\"Longitude\":0,\"Distance\":1,\"HealthPoints\":1,\"MagicPoints\":1}}"
    )
    .into_bytes()
}

fn push(engine: &mut Engine, line: &[u8], position: u64, now: i64) -> bool {
    engine.push(&decode(line).unwrap(), position, now).is_ok()
}

#[test]
fn partitions_keep_separate_watermarks() {
    // Partition A is an hour ahead of partition B; B's records are neither late nor too late.
    let mut a = Engine::new(WindowConfig::default());
    let mut b = Engine::new(WindowConfig::default());
    let mut out = Vec::new();
    assert!(push(&mut a, &record_line("fast", T0 + 3_600_000), 0, 0));
    for s in 0..120 {
        assert!(push(
            &mut b,
            &record_line("slow", T0 + s * 1_000),
            s as u64,
            0
        ));
    }
    b.advance(0, &mut out);
    a.advance(0, &mut out);
    assert_eq!(b.stats().late + b.stats().too_late, 0);
    // B closed its first minute only (watermark T0 + 114 s).
    let closed: Vec<_> = out
        .iter()
        .map(|s| (s.name.as_str(), s.window_start - T0, s.records))
        .collect();
    assert_eq!(closed, vec![("slow", 0, 60)]);
    assert_eq!(a.watermark(), T0 + 3_600_000 - 5_000);
    assert_eq!(b.watermark(), T0 + 119_000 - 5_000);
}

#[test]
fn ingest_time_windows_on_arrival() {
    let cfg = WindowConfig {
        time: TimeMode::Ingest,
        ..WindowConfig::default()
    };
    let mut e = Engine::new(cfg);
    let mut out = Vec::new();
    // StatusTime says 2018, arrivals are in 2030: windows follow the arrivals.
    let arrival = 1_900_000_000_000 - 1_900_000_000_000 % 60_000;
    assert!(push(&mut e, &record_line("a", T0), 0, arrival + 1_000));
    assert!(push(
        &mut e,
        &record_line("a", T0 + 59_000),
        1,
        arrival + 2_000
    ));
    assert!(push(
        &mut e,
        &record_line("a", T0 - 3_600_000),
        2,
        arrival + 61_000
    ));
    e.flush(&mut out);
    let got: Vec<_> = out
        .iter()
        .map(|s| (s.window_start - arrival, s.records))
        .collect();
    assert_eq!(got, vec![(0, 2), (60_000, 1)]);
}

#[test]
fn idle_partition_closes_its_windows_on_the_wall_clock() {
    let mut e = Engine::new(WindowConfig::default());
    let mut out = Vec::new();
    let wall = 5_000_000;
    assert!(push(&mut e, &record_line("a", T0 + 20_000), 0, wall));
    // Watermark T0 + 15 s. Idle for 10 s, then it moves with the wall clock: window end
    // T0 + 60 s is reached 45 s after the idle timeout.
    e.advance(wall + 10_000 + 44_999, &mut out);
    assert!(out.is_empty());
    e.advance(wall + 10_000 + 45_000, &mut out);
    assert_eq!(out.len(), 1);
    // Records arriving again take over from the advanced watermark.
    assert!(push(
        &mut e,
        &record_line("a", T0 + 61_000),
        1,
        wall + 60_000
    ));
    assert_eq!(e.watermark(), T0 + 60_000);
}

/// Everything a summary says: records, distance bits, min/max vitals, revision.
type Content = (u64, u64, i64, i64, i64, i64, u64);

/// A store that keeps, per key, the highest revision (a tie goes to the newer write).
#[derive(Default)]
struct EmbeddedStore(BTreeMap<(i64, String), Summary>);

impl EmbeddedStore {
    fn put(&mut self, summaries: impl IntoIterator<Item = Summary>) {
        for s in summaries {
            let key = (s.window_start, s.name.clone());
            match self.0.get(&key) {
                Some(old) if old.revision > s.revision => {}
                _ => {
                    self.0.insert(key, s);
                }
            }
        }
    }

    /// What each window says, revision included: a replay restores revisions exactly.
    fn content(&self) -> BTreeMap<(i64, String), Content> {
        self.0
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    (
                        s.records,
                        s.distance.to_bits(),
                        s.min_health_points,
                        s.max_health_points,
                        s.min_magic_points,
                        s.max_magic_points,
                        s.revision,
                    ),
                )
            })
            .collect()
    }
}

/// Feeds `lines[from..]` (positions are indexes) to `engine`, advancing every `every` records
/// into `store`; stops before `until`. Returns the checkpoints taken after each advance.
fn feed(
    engine: &mut Engine,
    lines: &[Vec<u8>],
    from: usize,
    until: usize,
    every: usize,
    store: &mut EmbeddedStore,
) -> Vec<(usize, Checkpoint)> {
    let mut checkpoints = Vec::new();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().take(until).skip(from) {
        if let Ok(record) = decode(line) {
            let _ = engine.push(&record, i as u64, 0);
        }
        if (i + 1) % every == 0 {
            engine.advance(0, &mut out);
            store.put(out.drain(..));
            checkpoints.push((i + 1, engine.checkpoint()));
        }
    }
    checkpoints
}

#[test]
fn crash_and_replay_from_the_checkpoint_gives_the_same_summaries() {
    let cfg = WindowConfig {
        idle_timeout_ms: None,
        ..WindowConfig::default()
    };
    let mut rng = Rng::new(99);
    for round in 0..12 {
        let lines = awkward_lines(
            100 + round,
            12,
            400,
            T0,
            Awkward {
                late: 0.03,
                too_late: 0.01,
                bad: 0.01,
            },
        );
        let every = 50 + rng.below(400) as usize;

        let mut single = EmbeddedStore::default();
        let mut e = Engine::new(cfg);
        feed(&mut e, &lines, 0, lines.len(), every, &mut single);
        let mut out = Vec::new();
        e.flush(&mut out);
        single.put(out.drain(..));

        // Crash somewhere; the last checkpoint before the crash is what was committed.
        let crash = rng.below(lines.len() as u64) as usize;
        let mut store = EmbeddedStore::default();
        let mut e = Engine::new(cfg);
        let checkpoints = feed(&mut e, &lines, 0, crash, every, &mut store);
        // What the dead instance emitted after its checkpoint may or may not have been stored.
        if rng.below(2) == 0 {
            e.advance(0, &mut out);
            store.put(out.drain(..));
        }
        drop(e);
        let (resume_at, mut e) = match checkpoints.last() {
            Some((_, cp)) => {
                let from = cp
                    .low_water
                    .or(cp.last_position.map(|p| p + 1))
                    .unwrap_or(0) as usize;
                (from, Engine::resume(cfg, cp, 0))
            }
            None => (0, Engine::new(cfg)),
        };
        feed(&mut e, &lines, resume_at, lines.len(), every, &mut store);
        e.flush(&mut out);
        store.put(out.drain(..));

        assert_eq!(
            store.content(),
            single.content(),
            "round {round}: crash at {crash}, resumed at {resume_at}"
        );
        assert!(
            single.0.values().any(|s| s.revision > 0),
            "round {round}: no restatement to test"
        );
    }
}
