//! The Wild Rydes fleet simulator: the workshop producer's movement and vitals model for any
//! number of unicorns, with reproducible randomness and fault injection.
//!
//! This crate is the source of test and load data for the whole project: `stampede produce`
//! drives a [`Fleet`] and writes its [`Reading`]s to stdout, HTTP, Kafka or Kinesis with the
//! root library's record writer. (The dependency points this way because the `stampede` binary
//! runs the simulator; a crate cannot depend on a package whose binary depends on it.)
//!
//! The model (REFERENCE §1.3): every unicorn starts at Wild Rydes HQ (40.749167, −73.985184) on a
//! fixed random heading, flies ~30 m/s (`Distance` uniform in [29, 31) per second), moves by the
//! flat-earth update, and its vitals take a random walk from 150 (−1/0/+1 with p ¼/½/¼).

mod faults;
mod rng;

pub use faults::{Fault, FaultRates, Malformation};
pub use rng::Rng;

use std::collections::BinaryHeap;

/// Wild Rydes HQ, where every unicorn starts.
pub const HQ: (f64, f64) = (40.749167, -73.985184);

/// The workshop's three unicorns come first, then these, then numbered repeats.
const NAMES: &[&str] = &[
    "Shadowfax",
    "Bucephalus",
    "Rocinante",
    "Pegasus",
    "Sleipnir",
    "Arion",
    "Marengo",
    "Copenhagen",
    "Traveller",
    "Comanche",
    "Trigger",
    "Silver",
    "Champion",
    "Artax",
    "Epona",
    "Falada",
    "Brego",
    "Hasufel",
    "Arod",
    "Felaróf",
    "Snowmane",
    "Windfola",
    "Binky",
    "Grane",
    "Llamrei",
    "Tachibana",
    "Kanthaka",
    "Tulpar",
    "Burak",
    "Xanthos",
    "Balios",
    "Aethon",
];

/// Name of the `i`-th unicorn of a generated fleet: the workshop's names first, then others,
/// then numbered (`Shadowfax-2`, …). Unique for every `i`.
pub fn fleet_name(i: usize) -> String {
    let base = NAMES[i % NAMES.len()];
    match i / NAMES.len() {
        0 => base.to_owned(),
        round => format!("{base}-{}", round + 1),
    }
}

/// How a fleet behaves.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// One unicorn per name.
    pub names: Vec<String>,
    /// Seed of every random choice: the same seed gives the same records.
    pub seed: u64,
    /// Event time of the first tick, UTC epoch milliseconds.
    pub start_ms: i64,
    /// Simulated time between two records of one unicorn, milliseconds (1000 = the workshop).
    pub step_ms: i64,
    /// Mean change of both vitals per simulated second for each unicorn (index = unicorn);
    /// missing entries are 0. Negative values make alerts fire.
    pub drift_per_sec: Vec<f64>,
    /// `--error yes`: every 5th record carries `InputData: "Unicornerror"`, the others "Unicorn".
    pub error_every_5th: bool,
    /// Fault injection.
    pub faults: FaultRates,
    /// Start the unicorns spread evenly over a disc of this radius around HQ, kilometres, instead
    /// of all at HQ (a fleet across a city or a country, for load runs); 0 for the workshop's.
    pub spread_km: f64,
}

impl FleetConfig {
    /// A fleet of `names` with the workshop's defaults and no faults.
    pub fn new(names: Vec<String>, seed: u64, start_ms: i64) -> Self {
        FleetConfig {
            names,
            seed,
            start_ms,
            step_ms: 1_000,
            drift_per_sec: Vec::new(),
            error_every_5th: false,
            faults: FaultRates::default(),
            spread_km: 0.0,
        }
    }
}

/// One telemetry reading as the simulator produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Index of the unicorn in [`FleetConfig::names`].
    pub unicorn: usize,
    /// `StatusTime`, UTC epoch milliseconds.
    pub status_time_ms: i64,
    /// Degrees.
    pub latitude: f64,
    /// Degrees.
    pub longitude: f64,
    /// Metres since this unicorn's previous reading.
    pub distance: f64,
    /// Health vital.
    pub health_points: i64,
    /// Magic vital.
    pub magic_points: i64,
    /// `Some("Unicorn" | "Unicornerror")` with `--error yes`.
    pub input_data: Option<&'static str>,
    /// Set when the reading is to be written broken (fault injection).
    pub malformation: Option<Malformation>,
}

struct Unicorn {
    lat: f64,
    lon: f64,
    heading: f64,
    health: i64,
    magic: i64,
    /// Fixed sub-step offset of this unicorn's readings, so records carry realistic milliseconds.
    phase_ms: i64,
    drift: f64,
    drift_acc: f64,
}

/// A reading held back to be released out of order.
struct Held {
    release_ms: i64,
    seq: u64,
    reading: Reading,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.release_ms, self.seq) == (other.release_ms, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    // Reversed: BinaryHeap is a max-heap and we want the earliest release first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.release_ms, other.seq).cmp(&(self.release_ms, self.seq))
    }
}

/// The simulated fleet: an endless, reproducible stream of readings, tick by tick.
pub struct Fleet {
    cfg: FleetConfig,
    rng: Rng,
    unicorns: Vec<Unicorn>,
    tick: i64,
    next_unicorn: usize,
    produced: u64,
    held: BinaryHeap<Held>,
    held_seq: u64,
}

impl Fleet {
    /// A fleet at HQ, before its first tick.
    pub fn new(cfg: FleetConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let phase_range = cfg.step_ms.clamp(1, 1_000);
        let spread_m = cfg.spread_km * 1_000.0;
        let mut unicorns: Vec<Unicorn> = (0..cfg.names.len())
            .map(|i| Unicorn {
                lat: HQ.0,
                lon: HQ.1,
                heading: rng.next_f64() * std::f64::consts::TAU,
                health: 150,
                magic: 150,
                phase_ms: rng.below(phase_range as u64) as i64,
                drift: cfg.drift_per_sec.get(i).copied().unwrap_or(0.0),
                drift_acc: 0.0,
            })
            .collect();
        if spread_m > 0.0 {
            // Evenly over the disc (the square root spreads the radius by area). Drawn only
            // with a spread, so that the workshop's fleet is the same for a seed as before.
            for u in &mut unicorns {
                let r = spread_m * rng.next_f64().sqrt();
                let angle = rng.next_f64() * std::f64::consts::TAU;
                u.lat = (HQ.0 + r * angle.cos() / 111_320.0).clamp(-85.0, 85.0);
                u.lon = HQ.1 + r * angle.sin() / (111_320.0 * u.lat.to_radians().cos());
                u.lon = (u.lon + 540.0).rem_euclid(360.0) - 180.0;
            }
        }
        Fleet {
            cfg,
            rng,
            unicorns,
            tick: 0,
            next_unicorn: 0,
            produced: 0,
            held: BinaryHeap::new(),
            held_seq: 0,
        }
    }

    /// The fleet's settings.
    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// Simulated time of the current tick (the event time readings are produced at).
    pub fn now_ms(&self) -> i64 {
        self.cfg.start_ms + self.tick * self.cfg.step_ms
    }

    /// Changes unicorn `i`'s vitals drift (points per second, both vitals), e.g. to let a
    /// unicorn that fell low recover.
    pub fn set_drift(&mut self, i: usize, per_sec: f64) {
        if let Some(u) = self.unicorns.get_mut(i) {
            u.drift = per_sec;
        }
    }

    /// Readings generated so far (held-back ones included).
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// The next reading in emission order: held-back readings whose time has come, then the next
    /// unicorn of the current tick. Never ends; `None` only for an empty fleet.
    pub fn next_reading(&mut self) -> Option<Reading> {
        if self.unicorns.is_empty() {
            return None;
        }
        loop {
            if let Some(reading) = self.poll() {
                return Some(reading);
            }
        }
    }

    /// One step: releases a held-back reading whose time has come, or generates the next one —
    /// `None` when that one was held back (or the fleet is empty). Bounded runs loop on this
    /// while [`Fleet::produced`] is below their count, then [`Fleet::drain_held`].
    pub fn poll(&mut self) -> Option<Reading> {
        if self.unicorns.is_empty() {
            return None;
        }
        let now = self.now_ms();
        if self.held.peek().is_some_and(|h| h.release_ms <= now) {
            return self.held.pop().map(|h| h.reading);
        }
        let reading = self.generate();
        match self.cfg.faults.pick(&mut self.rng) {
            None => Some(reading),
            Some(Fault::Malformed) => {
                let kind = Malformation::ALL[(self.produced % 4) as usize];
                Some(Reading {
                    malformation: Some(kind),
                    ..reading
                })
            }
            Some(fault) => {
                let release_ms = fault.release_ms(reading.status_time_ms, &mut self.rng);
                self.held_seq += 1;
                self.held.push(Held {
                    release_ms,
                    seq: self.held_seq,
                    reading,
                });
                None
            }
        }
    }

    /// Readings still held back for out-of-order release, in release order; for the end of a
    /// bounded run.
    pub fn drain_held(&mut self) -> Vec<Reading> {
        let mut out = Vec::with_capacity(self.held.len());
        while let Some(h) = self.held.pop() {
            out.push(h.reading);
        }
        out
    }

    /// Advances one unicorn by one step and returns its reading.
    fn generate(&mut self) -> Reading {
        let i = self.next_unicorn;
        let status_time_ms = self.now_ms() + self.unicorns[i].phase_ms;
        let dt = self.cfg.step_ms as f64 / 1_000.0;
        // Distance: an integer 29 or 30 plus a uniform fraction, as the workshop producer draws it.
        let speed = 29.0 + self.rng.below(2) as f64 + self.rng.next_f64();
        let distance = speed * dt;
        let health_step = self.rng.vital_step();
        let magic_step = self.rng.vital_step();
        let u = &mut self.unicorns[i];
        let lat_rad = u.lat.to_radians();
        u.lat += distance * u.heading.sin() / 110_540.0;
        u.lon += distance * u.heading.cos() / (111_320.0 * lat_rad.cos());
        // Keep the position on the globe for very long runs.
        u.lat = u.lat.clamp(-89.999, 89.999);
        if u.lon > 180.0 {
            u.lon -= 360.0;
        } else if u.lon < -180.0 {
            u.lon += 360.0;
        }
        u.drift_acc += u.drift * dt;
        let drift_step = u.drift_acc.trunc() as i64;
        u.drift_acc -= drift_step as f64;
        u.health = u.health.saturating_add(health_step + drift_step);
        u.magic = u.magic.saturating_add(magic_step + drift_step);
        self.produced += 1;
        let marker = if self.produced.is_multiple_of(5) {
            "Unicornerror"
        } else {
            "Unicorn"
        };
        let input_data = self.cfg.error_every_5th.then_some(marker);
        let reading = Reading {
            unicorn: i,
            status_time_ms,
            latitude: u.lat,
            longitude: u.lon,
            distance,
            health_points: u.health,
            magic_points: u.magic,
            input_data,
            malformation: None,
        };
        self.next_unicorn += 1;
        if self.next_unicorn == self.unicorns.len() {
            self.next_unicorn = 0;
            self.tick += 1;
        }
        reading
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(n: usize, seed: u64) -> Fleet {
        Fleet::new(FleetConfig::new((0..n).map(fleet_name).collect(), seed, 0))
    }

    /// `--spread-km`: the fleet starts within the radius, about half of it within the inner
    /// 71 % (half the disc's area); without it every unicorn starts at HQ.
    #[test]
    fn a_spread_fleet_starts_evenly_over_its_disc() {
        let names: Vec<String> = (0..10_000).map(fleet_name).collect();
        let mut cfg = FleetConfig::new(names, 5, 0);
        cfg.spread_km = 10.0;
        let mut f = Fleet::new(cfg);
        let first: Vec<Reading> = (0..10_000).filter_map(|_| f.poll()).collect();
        assert_eq!(first.len(), 10_000);
        let km = |r: &Reading| {
            let dy = (r.latitude - HQ.0) * 111.32;
            let dx = (r.longitude - HQ.1) * 111.32 * HQ.0.to_radians().cos();
            dx.hypot(dy)
        };
        // A record's first move is tens of metres at most.
        assert!(first.iter().all(|r| km(r) < 10.1));
        let inner = first.iter().filter(|r| km(r) < 10.0 / 2f64.sqrt()).count();
        assert!((4_700..5_300).contains(&inner), "{inner} in the inner half");
        let mut at_hq = Fleet::new(FleetConfig::new(vec!["a".into()], 5, 0));
        let r = at_hq.poll().unwrap();
        assert!(km(&r) < 0.1, "the workshop's fleet starts at HQ");
    }

    #[test]
    fn names_are_the_workshops_then_unique() {
        assert_eq!(fleet_name(0), "Shadowfax");
        assert_eq!(fleet_name(1), "Bucephalus");
        assert_eq!(fleet_name(2), "Rocinante");
        let names: std::collections::HashSet<_> = (0..10_000).map(fleet_name).collect();
        assert_eq!(names.len(), 10_000);
        assert!(names.iter().all(|n| n.len() <= 64));
    }

    #[test]
    fn same_seed_same_readings() {
        let a: Vec<_> = (0..500).map(|_| fleet(3, 7).next_reading()).collect();
        let mut f1 = fleet(3, 7);
        let mut f2 = fleet(3, 7);
        let mut f3 = fleet(3, 8);
        let r1: Vec<_> = (0..500).filter_map(|_| f1.next_reading()).collect();
        let r2: Vec<_> = (0..500).filter_map(|_| f2.next_reading()).collect();
        let r3: Vec<_> = (0..500).filter_map(|_| f3.next_reading()).collect();
        assert_eq!(r1, r2);
        assert_ne!(r1, r3);
        assert_eq!(a.len(), 500);
    }

    #[test]
    fn the_workshop_model() {
        let mut f = fleet(2, 1);
        let mut last_health = [150i64; 2];
        let mut first_time = [None; 2];
        let mut heading = [None::<f64>; 2];
        let mut prev = [HQ; 2];
        for _ in 0..2_000 {
            let r = f.next_reading().unwrap();
            let i = r.unicorn;
            assert!((29.0..31.0).contains(&r.distance), "{}", r.distance);
            assert!((r.health_points - last_health[i]).abs() <= 1);
            last_health[i] = r.health_points;
            let t0 = *first_time[i].get_or_insert(r.status_time_ms);
            assert_eq!((r.status_time_ms - t0) % 1_000, 0, "one reading per second");
            // Straight line: the bearing of every step is the same.
            // Measured in metres (the flat-earth update's own frame), the heading is exact.
            let dy = (r.latitude - prev[i].0) * 110_540.0;
            let dx = (r.longitude - prev[i].1) * 111_320.0 * prev[i].0.to_radians().cos();
            assert!(((dx * dx + dy * dy).sqrt() - r.distance).abs() < 1e-6);
            let b = dy.atan2(dx);
            let h = *heading[i].get_or_insert(b);
            assert!((b - h).abs() < 1e-6, "heading drifted: {h} → {b}");
            prev[i] = (r.latitude, r.longitude);
        }
        // ~30 m/s: after 1000 s about 30 km from HQ (1° latitude ≈ 110.5 km).
        let dlat = (prev[0].0 - HQ.0) * 110_540.0;
        let dlon = (prev[0].1 - HQ.1) * 111_320.0 * HQ.0.to_radians().cos();
        let km = (dlat * dlat + dlon * dlon).sqrt() / 1_000.0;
        assert!((29.0..31.0).contains(&km), "{km} km");
    }

    #[test]
    fn vitals_walk_with_the_right_odds() {
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[(rng.vital_step() + 1) as usize] += 1;
        }
        // ¼, ½, ¼ within 1 %.
        assert!((24_000..26_000).contains(&counts[0]), "{counts:?}");
        assert!((49_000..51_000).contains(&counts[1]), "{counts:?}");
        assert!((24_000..26_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn drift_pulls_vitals_down() {
        let mut cfg = FleetConfig::new(vec!["a".into()], 3, 0);
        cfg.drift_per_sec = vec![-0.5];
        let mut f = Fleet::new(cfg);
        let last = (0..400).filter_map(|_| f.next_reading()).last().unwrap();
        // 400 s × −0.5/s = −200, give or take the walk (σ ≈ 14 over 400 steps).
        assert!(last.health_points < 20, "{}", last.health_points);
    }

    #[test]
    fn every_fifth_is_an_error_marker() {
        let mut cfg = FleetConfig::new(vec!["a".into(), "b".into()], 3, 0);
        cfg.error_every_5th = true;
        let mut f = Fleet::new(cfg);
        let marks: Vec<_> = (0..10)
            .map(|_| f.next_reading().unwrap().input_data.unwrap())
            .collect();
        assert_eq!(marks[4], "Unicornerror");
        assert_eq!(marks[9], "Unicornerror");
        assert_eq!(marks.iter().filter(|m| **m == "Unicorn").count(), 8);
    }
}
