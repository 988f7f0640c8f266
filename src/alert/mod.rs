//! Alert rules of CONTRACT §7: a state per (rule, unicorn), evaluated per record on event time,
//! with hysteresis and an optional hold time, giving one [`Change`] per state change.
//!
//! Pure and synchronous, like the window engine beside which it runs: the caller (`stampede
//! aggregate --alerts`, or the service's engine task of each partition) calls
//! [`Alerts::evaluate`] for every record the window engine accepted, with the unicorn's dense
//! id, and collects the changes. Per record: a comparison of its time with the unicorn's newest, then, for a unicorn
//! with no alert state, a range check per field; the per-rule state machine runs only when some
//! rule holds or has state. Nothing is allocated unless a state changes.
//!
//! # Semantics
//!
//! * A record older (by `StatusTime`) than the newest already evaluated for its unicorn describes
//!   the past and changes nothing, so the changes do not depend on transport, batching or replay.
//! * A rule `below = N` holds on a record whose value is < N (`above`: > N). It fires on the
//!   record that has held it for `for_secs` of event time (at once when 0): every record since the
//!   first of the streak must hold it, or the streak starts again.
//! * A firing rule resolves on the first record whose value is ≥ `clear` (`above`: ≤ `clear`);
//!   `clear` defaults to the threshold ± `alerts.hysteresis`, so a value hovering at the
//!   threshold does not flap.
//!
//! # Checkpoints
//!
//! The state travels with the partition's checkpoint ([`Alerts::checkpoint`], as of the
//! checkpoint's last position), so that the next owner knows what already changed. Only the
//! unicorns with state (firing, or a streak under way) are written; a resumed partition re-reads
//! the records of the windows still open, and for those up to the checkpoint's last position it
//! only [`Alerts::observe`]s their time (a later record older than a time before those is in a
//! final window: the window engine rejects it as too late, so it is never evaluated).

mod checkpoint;
mod rule;
pub mod spec;

pub use rule::*;

use std::fmt::Write as _;
use std::sync::Arc;

use crate::record::Telemetry;
use crate::time::Millis;
use crate::window::NameId;

/// No streak under way.
const NO_STREAK: Millis = Millis::MIN;

/// The state of one (rule, unicorn).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    /// Event time of the first record of the current streak holding the condition; once firing,
    /// the time it fired.
    since: Millis,
    /// Once firing, the value that fired it (for the firing list after a restart; `f32` keeps
    /// the slot at 16 bytes).
    value: f32,
    firing: bool,
}

const FRESH: Slot = Slot {
    since: NO_STREAK,
    value: 0.0,
    firing: false,
};

/// Per unicorn: its newest evaluated time and which rules have state (firing, or a streak under
/// way), so that the common record — no state, every rule quiet — costs a range check per field
/// and no write to the per-rule slots.
#[derive(Debug, Clone, Copy)]
struct Unicorn {
    /// The newest `StatusTime` evaluated (`Millis::MIN`: none yet).
    newest: Millis,
    /// Bit `i`: rule `i`'s slot is not [`FRESH`].
    active: u64,
}

/// The values on which no rule holds, per field: the intersection of every rule's quiet side,
/// as inclusive ranges (integers for the integer fields, so the hot path converts nothing).
#[derive(Debug, Clone, Copy)]
struct Quiet {
    health: (i64, i64),
    magic: (i64, i64),
    distance: (f64, f64),
}

impl Quiet {
    fn of(rules: &[Rule]) -> Quiet {
        let mut q = Quiet {
            health: (i64::MIN, i64::MAX),
            magic: (i64::MIN, i64::MAX),
            distance: (f64::NEG_INFINITY, f64::INFINITY),
        };
        for r in rules {
            // An integer value is below T exactly when it is below ceil(T) (casts saturate).
            let int = |range: &mut (i64, i64)| match r.direction {
                Direction::Below => range.0 = range.0.max(r.threshold.ceil() as i64),
                Direction::Above => range.1 = range.1.min(r.threshold.floor() as i64),
            };
            match r.field {
                Measure::HealthPoints => int(&mut q.health),
                Measure::MagicPoints => int(&mut q.magic),
                Measure::Distance => match r.direction {
                    Direction::Below => q.distance.0 = q.distance.0.max(r.threshold),
                    Direction::Above => q.distance.1 = q.distance.1.min(r.threshold),
                },
            }
        }
        q
    }

    #[inline]
    fn contains(&self, r: &Telemetry<'_>) -> bool {
        (self.health.0..=self.health.1).contains(&r.health_points)
            && (self.magic.0..=self.magic.1).contains(&r.magic_points)
            && self.distance.0 <= r.distance
            && r.distance <= self.distance.1
    }
}

/// The most rules a partition evaluates (each has one bit of a per-unicorn mask).
pub const MAX_RULES: usize = 63;

/// The last bit of the mask: a unicorn not seen since a resume whose checkpoint may hold state
/// for it (its first record takes the slow path, which looks for it).
const UNSEEN: u64 = 1 << 63;

/// The alert state of one partition: per unicorn id, its newest evaluated time and a slot per
/// rule.
pub struct Alerts {
    rules: Arc<[Rule]>,
    quiet: Quiet,
    unicorns: Vec<Unicorn>,
    /// `rules.len()` slots per unicorn.
    slots: Vec<Slot>,
    /// State read from a checkpoint for unicorns not seen since, by name: taken up by a
    /// unicorn's first record (looked up only while not empty).
    restored: std::collections::HashMap<String, Restored>,
}

/// A unicorn's state from a checkpoint, waiting for its first record.
#[derive(Debug, Clone, PartialEq)]
struct Restored {
    newest: Millis,
    /// One slot per rule of this configuration (rules the checkpoint named that no longer exist
    /// are dropped; new ones start fresh).
    slots: Vec<Slot>,
}

impl Alerts {
    /// No state yet, for `rules` (at most [`MAX_RULES`]; the config checks it).
    pub fn new(rules: Arc<[Rule]>) -> Alerts {
        let rules: Arc<[Rule]> = rules.iter().take(MAX_RULES).cloned().collect();
        Alerts {
            quiet: Quiet::of(&rules),
            rules,
            unicorns: Vec::new(),
            slots: Vec::new(),
            restored: std::collections::HashMap::new(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Evaluates one accepted record of unicorn `id`, appending any state change to `out`.
    #[inline]
    pub fn evaluate(&mut self, id: NameId, record: &Telemetry<'_>, out: &mut Vec<Change>) {
        let idx = id as usize;
        let t = record.status_time;
        let Some(u) = self.unicorns.get_mut(idx) else {
            // A new unicorn (ids are dense): room for it, then the same again.
            self.grow(idx);
            return self.evaluate(id, record, out);
        };
        if t < u.newest {
            return;
        }
        u.newest = t;
        // The common case: nothing firing or pending, and no rule holds on this record.
        if u.active == 0 && self.quiet.contains(record) {
            return;
        }
        self.evaluate_rules(idx, record, out);
    }

    /// A record re-read after a resume that the checkpoint already accounts for: its time is
    /// noted (see the module docs), its values change nothing.
    #[inline]
    pub fn observe(&mut self, id: NameId, record: &Telemetry<'_>) {
        let idx = id as usize;
        if idx >= self.unicorns.len() {
            self.grow(idx);
        }
        if self.unicorns[idx].active & UNSEEN != 0 {
            self.unicorns[idx].active &= !UNSEEN;
            self.take_restored(idx, &record.name);
        }
        let u = &mut self.unicorns[idx];
        u.newest = u.newest.max(record.status_time);
    }

    /// Whether unicorn `id` has state (firing, or a streak under way): such a unicorn is not
    /// forgotten while silent, or it would fire again, unresolved, when it comes back.
    pub fn has_state(&self, id: NameId) -> bool {
        self.unicorns
            .get(id as usize)
            .is_some_and(|u| u.active & !UNSEEN != 0)
    }

    /// Follows the window engine's forgetting: forgotten ids lose their state, moved ids take
    /// theirs along, and the arrays are cut to `bound` ids.
    pub fn forget(&mut self, forgotten: &crate::window::Forgotten, bound: usize) {
        let n = self.rules.len();
        let fresh = self.fresh_unicorn();
        for &id in &forgotten.ids {
            let idx = id as usize;
            if let Some(u) = self.unicorns.get_mut(idx) {
                *u = fresh;
                self.slots[idx * n..(idx + 1) * n].fill(FRESH);
            }
        }
        for &(old, new) in &forgotten.moved {
            let (old, new) = (old as usize, new as usize);
            if old < self.unicorns.len() && new < self.unicorns.len() {
                self.unicorns.swap(old, new);
                for i in 0..n {
                    self.slots.swap(old * n + i, new * n + i);
                }
            }
        }
        self.unicorns.truncate(bound);
        self.slots.truncate(bound * n);
        crate::window::shrink_mostly_empty(&mut self.unicorns);
        crate::window::shrink_mostly_empty(&mut self.slots);
    }

    /// The firing alerts the state holds, as the changes that fired them (with the value kept
    /// in the state): the firing list of a partition resumed from a checkpoint.
    pub fn firing<'n>(&self, name: impl Fn(NameId) -> &'n str) -> Vec<Change> {
        let n = self.rules.len();
        let mut out = Vec::new();
        let mut push = |name: &str, slots: &[Slot]| {
            for (rule, slot) in self.rules.iter().zip(slots) {
                if slot.firing {
                    out.push(Change {
                        rule: Arc::clone(&rule.name),
                        name: name.to_owned(),
                        state: State::Firing,
                        field: rule.field,
                        value: rule.field.stored(slot.value),
                        threshold: rule.threshold,
                        direction: rule.direction,
                        clear: rule.clear,
                        status_time: slot.since,
                    });
                }
            }
        };
        for (idx, u) in self.unicorns.iter().enumerate() {
            if u.active & !UNSEEN != 0 {
                push(name(idx as NameId), &self.slots[idx * n..(idx + 1) * n]);
            }
        }
        for (name, r) in &self.restored {
            push(name, &r.slots);
        }
        out
    }

    /// A unicorn with no state yet (marked [`UNSEEN`] while restored state waits for names).
    fn fresh_unicorn(&self) -> Unicorn {
        Unicorn {
            newest: Millis::MIN,
            active: if self.restored.is_empty() { 0 } else { UNSEEN },
        }
    }

    /// Room for unicorn `idx` (ids are dense: this happens once per new unicorn).
    #[cold]
    fn grow(&mut self, idx: usize) {
        let fresh = self.fresh_unicorn();
        self.unicorns.resize(idx + 1, fresh);
        self.slots.resize((idx + 1) * self.rules.len(), FRESH);
    }

    /// The per-rule state machine of the module docs, for a unicorn with state or a record on
    /// which some rule holds (rare: kept out of line so that the quiet path stays small).
    #[cold]
    #[inline(never)]
    fn evaluate_rules(&mut self, idx: usize, record: &Telemetry<'_>, out: &mut Vec<Change>) {
        let n = self.rules.len();
        let t = record.status_time;
        if self.unicorns[idx].active & UNSEEN != 0 {
            // The first record since a resume: the unicorn's state from the checkpoint, if any.
            self.unicorns[idx].active &= !UNSEEN;
            if let Some(newest) = self.take_restored(idx, &record.name) {
                if t < newest {
                    // Older than what the last owner evaluated: the past, changing nothing.
                    return;
                }
                self.unicorns[idx].newest = t;
            }
            if self.unicorns[idx].active == 0 && self.quiet.contains(record) {
                return;
            }
        }
        let slots = &mut self.slots[idx * n..(idx + 1) * n];
        let mut active = 0u64;
        for (i, (rule, slot)) in self.rules.iter().zip(slots).enumerate() {
            let value = rule.field.value(record);
            let v = value.as_f64();
            let state = if slot.firing {
                if rule.clears(v) {
                    *slot = FRESH;
                    Some(State::Resolved)
                } else {
                    None
                }
            } else if rule.holds(v) {
                if slot.since == NO_STREAK {
                    slot.since = t;
                }
                if t.saturating_sub(slot.since) >= rule.for_ms {
                    slot.firing = true;
                    slot.since = t;
                    slot.value = v as f32;
                    Some(State::Firing)
                } else {
                    None
                }
            } else {
                *slot = FRESH;
                None
            };
            if slot.firing || slot.since != NO_STREAK {
                active |= 1 << i;
            }
            if let Some(state) = state {
                out.push(Change {
                    rule: Arc::clone(&rule.name),
                    name: record.name.as_ref().to_owned(),
                    state,
                    field: rule.field,
                    value,
                    threshold: rule.threshold,
                    direction: rule.direction,
                    clear: rule.clear,
                    status_time: t,
                });
            }
        }
        self.unicorns[idx].active = active;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn rec(name: &str, secs: i64, health: i64, magic: i64) -> Telemetry<'_> {
        Telemetry {
            name: Cow::Borrowed(name),
            status_time: secs * 1_000,
            latitude: 0.0,
            longitude: 0.0,
            distance: 10.0,
            health_points: health,
            magic_points: magic,
            input_data: None,
        }
    }

    /// (name, id, secs, health, magic) in, (rule, name, state, value, secs) out.
    fn run(
        rules: Vec<Rule>,
        records: &[(&str, NameId, i64, i64, i64)],
    ) -> Vec<(String, String, &'static str, f64, i64)> {
        let mut alerts = Alerts::new(rules.into());
        let mut out = Vec::new();
        for &(name, id, secs, h, m) in records {
            alerts.evaluate(id, &rec(name, secs, h, m), &mut out);
        }
        out.iter()
            .map(|c| {
                (
                    c.rule.to_string(),
                    c.name.clone(),
                    c.state.as_str(),
                    c.value.as_f64(),
                    c.status_time / 1_000,
                )
            })
            .collect()
    }

    fn ch(
        rule: &str,
        name: &str,
        state: &'static str,
        v: f64,
        secs: i64,
    ) -> (String, String, &'static str, f64, i64) {
        (rule.into(), name.into(), state, v, secs)
    }

    /// A partition resumed from a checkpoint taken after any record, re-reading some records
    /// before it (observed only) and then the rest, makes exactly the changes the uninterrupted
    /// run makes after that record: none twice, none lost.
    #[test]
    fn state_resumed_from_a_checkpoint_continues_exactly() {
        let rule = Rule {
            name: "held low".into(),
            field: Measure::HealthPoints,
            direction: Direction::Below,
            threshold: 100.0,
            clear: 105.0,
            for_ms: 2_000,
        };
        let rules: Vec<Rule> = Rule::defaults(5.0).into_iter().chain([rule]).collect();
        // Three unicorns (one with a name that needs escaping), vitals crossing back and forth,
        // an out-of-order record among them.
        let names = ["A", "B b;@:=/%", "C"];
        let mut records = Vec::new();
        for t in 0..60i64 {
            for (i, name) in names.iter().enumerate() {
                let h = 100 + ((t * 7 + i as i64 * 13) % 23) - 11;
                let m = 100 + ((t * 5 + i as i64 * 3) % 17) - 8;
                let secs = if t == 30 && i == 1 { 25 } else { t };
                records.push((*name, i as NameId, secs, h, m));
            }
        }
        let all = run(rules.clone(), &records);
        assert!(all.len() > 20, "the data crosses often: {}", all.len());
        for cut in [1, 17, 50, 91, 140, records.len() - 1] {
            let mut first = Alerts::new(rules.clone().into());
            let mut out = Vec::new();
            for &(name, id, secs, h, m) in &records[..cut] {
                first.evaluate(id, &rec(name, secs, h, m), &mut out);
            }
            let before = out.len();
            let text = first
                .checkpoint(|id| names[id as usize])
                .unwrap_or_default();
            assert!(!text.contains(' '), "{text}");
            // The next owner numbers unicorns its own way.
            let mut next = Alerts::new(rules.clone().into());
            next.restore(&text).unwrap();
            let renumber = |id: NameId| (2 - id) as NameId;
            let replay_from = cut.saturating_sub(7);
            for &(name, id, secs, h, m) in &records[replay_from..cut] {
                next.observe(renumber(id), &rec(name, secs, h, m));
            }
            let mut after = Vec::new();
            for &(name, id, secs, h, m) in &records[cut..] {
                next.evaluate(renumber(id), &rec(name, secs, h, m), &mut after);
            }
            let got: Vec<_> = after
                .iter()
                .map(|c| {
                    (
                        c.rule.to_string(),
                        c.name.clone(),
                        c.state.as_str(),
                        c.value.as_f64(),
                        c.status_time / 1_000,
                    )
                })
                .collect();
            assert_eq!(got, all[before..], "cut after {cut} records");
        }
    }

    #[test]
    fn restored_firing_alerts_are_listed_and_unreadable_state_is_an_error() {
        let mut a = Alerts::new(Rule::defaults(5.0).into());
        let mut out = Vec::new();
        a.evaluate(0, &rec("Shadowfax", 7, 99, 150), &mut out);
        let text = a.checkpoint(|_| "Shadowfax").unwrap();
        let mut b = Alerts::new(Rule::defaults(5.0).into());
        b.restore(&text).unwrap();
        let firing = b.firing(|_| "?");
        assert_eq!(firing.len(), 1);
        assert_eq!(firing[0].alert_id(), out[0].alert_id());
        assert_eq!(firing[0].value, Value::Int(99));
        for bad in ["x", "A@1:low-health=1/2/q", "A@x", "A@1:low-health=1/x/f"] {
            assert!(
                Alerts::new(Rule::defaults(5.0).into())
                    .restore(bad)
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn hysteresis_fires_below_100_and_resolves_only_at_105() {
        // Health 101, 99 (fires), 102 and 104 (inside the band: still firing), 105 (resolves),
        // 99 (fires again). Magic stays at 150: low-magic never changes.
        let got = run(
            Rule::defaults(5.0),
            &[
                ("A", 0, 1, 101, 150),
                ("A", 0, 2, 99, 150),
                ("A", 0, 3, 98, 150),
                ("A", 0, 4, 102, 150),
                ("A", 0, 5, 104, 150),
                ("A", 0, 6, 105, 150),
                ("A", 0, 7, 99, 150),
            ],
        );
        assert_eq!(
            got,
            [
                ch("low-health", "A", "firing", 99.0, 2),
                ch("low-health", "A", "resolved", 105.0, 6),
                ch("low-health", "A", "firing", 99.0, 7),
            ]
        );
    }

    #[test]
    fn the_past_changes_nothing_and_unicorns_are_apart() {
        let got = run(
            Rule::defaults(5.0),
            &[
                ("A", 0, 10, 99, 99),
                // Older than A's newest: describes the past, ignored (would resolve both).
                ("A", 0, 9, 150, 150),
                ("B", 1, 5, 150, 90),
                ("A", 0, 10, 150, 99),
            ],
        );
        assert_eq!(
            got,
            [
                ch("low-health", "A", "firing", 99.0, 10),
                ch("low-magic", "A", "firing", 99.0, 10),
                ch("low-magic", "B", "firing", 90.0, 5),
                // Same time as the newest: evaluated.
                ch("low-health", "A", "resolved", 150.0, 10),
            ]
        );
    }

    #[test]
    fn for_secs_needs_every_record_of_the_streak() {
        let rule = Rule {
            name: "sustained".into(),
            field: Measure::HealthPoints,
            direction: Direction::Below,
            threshold: 100.0,
            clear: 100.0,
            for_ms: 3_000,
        };
        let got = run(
            vec![rule],
            &[
                ("A", 0, 0, 90, 0),
                ("A", 0, 2, 90, 0),
                ("A", 0, 3, 100, 0), // breaks the streak
                ("A", 0, 4, 90, 0),  // a new one starts here
                ("A", 0, 6, 90, 0),
                ("A", 0, 7, 90, 0),  // held 3 s: fires
                ("A", 0, 8, 100, 0), // clear = 100: resolves
            ],
        );
        assert_eq!(
            got,
            [
                ch("sustained", "A", "firing", 90.0, 7),
                ch("sustained", "A", "resolved", 100.0, 8),
            ]
        );
    }

    /// The quiet fast path must agree with the rules themselves, fractional thresholds on integer
    /// fields included.
    #[test]
    fn the_quiet_range_is_exactly_where_no_rule_holds() {
        let rule = |field, direction, threshold| Rule {
            name: "r".into(),
            field,
            direction,
            threshold,
            clear: threshold,
            for_ms: 0,
        };
        let rules = vec![
            rule(Measure::HealthPoints, Direction::Below, 99.5),
            rule(Measure::HealthPoints, Direction::Above, 180.0),
            rule(Measure::MagicPoints, Direction::Above, 120.7),
            rule(Measure::Distance, Direction::Above, 50.0),
        ];
        let quiet = Quiet::of(&rules);
        for h in [i64::MIN, 98, 99, 100, 150, 180, 181, i64::MAX] {
            for m in [-5, 120, 121, 200] {
                for d in [0.0, 50.0, 50.5] {
                    let mut r = rec("A", 0, h, m);
                    r.distance = d;
                    let holds = rules.iter().any(|x| x.holds(x.field.value(&r).as_f64()));
                    assert_eq!(quiet.contains(&r), !holds, "{h} {m} {d}");
                }
            }
        }
    }

    #[test]
    fn above_rules_and_the_json_of_a_change() {
        let rule = Rule {
            name: "speeding".into(),
            field: Measure::Distance,
            direction: Direction::Above,
            threshold: 50.5,
            clear: 40.0,
            for_ms: 0,
        };
        let mut alerts = Alerts::new(vec![rule].into());
        let mut out = Vec::new();
        let mut r = rec("Shadowfax", 1_521_343_207, 150, 150);
        r.distance = 60.25;
        alerts.evaluate(3, &r, &mut out);
        let mut json = String::new();
        out[0].write_json(&mut json);
        assert_eq!(
            json,
            r#"{"AlertId":"speeding/Shadowfax/2018-03-18 03:20:07.000","Rule":"speeding","Name":"Shadowfax","State":"firing","Field":"Distance","Value":60.25,"Threshold":50.5,"StatusTime":"2018-03-18 03:20:07.000"}"#
        );
        r.distance = 45.0;
        r.status_time += 1_000;
        alerts.evaluate(3, &r, &mut out);
        assert_eq!(
            out.len(),
            1,
            "45 is above the clear level of 40: still firing"
        );
        let mut h = String::new();
        Change {
            threshold: 100.0,
            value: Value::Int(99),
            ..out[0].clone()
        }
        .write_json(&mut h);
        assert!(h.contains(r#""Value":99,"Threshold":100,"#), "{h}");
    }
}
