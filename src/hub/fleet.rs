//! The hub's live fleet: every unicorn's latest record, found by name, and by the key its
//! engine gives it, for the record path.
//!
//! A million unicorns at 1 Hz is a million look-ups a second. By name, each is a random probe
//! into a table of a million entries, which misses every cache (measured: a third of the
//! server's CPU at a million). So unicorns live in a slab with stable slots, and each engine's
//! records carry a [`LiveKey`] — the engine and the unicorn's dense id there — that the fleet
//! maps to a slot in a flat array per engine: engines number unicorns in the order they first
//! report, so a fleet reporting in turn walks those arrays and the slab in order. A key is a
//! hint, checked by the name's identity (the engine shares one allocation per name); a stale one
//! (an id reused for another name, a slot for another unicorn) falls back to the name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use foldhash::fast::RandomState;

use super::Unicorn;

/// Which engine sent a record, and the unicorn's id there (a hint for the fleet's look-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveKey {
    /// The engine ([`LiveKey::next_source`]).
    pub source: u32,
    /// The unicorn's id in it.
    pub id: u32,
}

impl LiveKey {
    /// No hint: found by name.
    pub const NONE: LiveKey = LiveKey {
        source: u32::MAX,
        id: u32::MAX,
    };

    /// A number for a new engine, unique in this process.
    pub fn next_source() -> u32 {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % (u32::MAX - 1)
    }
}

/// Slots by id for one engine.
struct Hints {
    source: u32,
    slots: Vec<u32>,
    /// Sweeps since it was last used.
    idle: u32,
}

/// An engine's hints go after this many sweeps (seconds) unused: it has stopped (a partition
/// that moved to another instance).
const HINTS_IDLE_SWEEPS: u32 = 120;

const NO_SLOT: u32 = u32::MAX;

/// The live fleet.
#[derive(Default)]
pub(super) struct Fleet {
    index: HashMap<Arc<str>, u32, RandomState>,
    slab: Vec<Option<Unicorn>>,
    free: Vec<u32>,
    hints: Vec<Hints>,
    /// The hints used last (records come in batches from one engine).
    last: usize,
}

impl Fleet {
    /// Unicorns in the fleet.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The unicorn named `name`.
    pub fn get(&self, name: &str) -> Option<&Unicorn> {
        let &slot = self.index.get(name)?;
        self.slab.get(slot as usize)?.as_ref()
    }

    /// The unicorn named `name`, to change.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Unicorn> {
        let &slot = self.index.get(name)?;
        self.slab.get_mut(slot as usize)?.as_mut()
    }

    /// Whether `name` is in the fleet.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Every unicorn, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Unicorn> {
        self.slab.iter().flatten()
    }

    /// The unicorn `key` and `name` designate, to change: through the key's hint when it holds,
    /// by name otherwise (and the hint learnt for next time).
    pub fn find(&mut self, key: LiveKey, name: &Arc<str>) -> Option<&mut Unicorn> {
        let hinted = self.hint(key);
        let slot = match hinted {
            Some(slot)
                if self
                    .slab
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|u| Arc::ptr_eq(&u.record.name, name)) =>
            {
                slot
            }
            _ => {
                let slot = *self.index.get(&**name)?;
                self.learn(key, slot);
                slot
            }
        };
        self.slab.get_mut(slot as usize)?.as_mut()
    }

    /// Adds a unicorn not in the fleet, reached by `key` from now on.
    pub fn insert(&mut self, key: LiveKey, unicorn: Unicorn) {
        let name = Arc::clone(&unicorn.record.name);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(unicorn);
                slot
            }
            None => {
                self.slab.push(Some(unicorn));
                u32::try_from(self.slab.len() - 1).unwrap_or(NO_SLOT)
            }
        };
        self.index.insert(name, slot);
        self.learn(key, slot);
    }

    /// Takes `name` out of the fleet.
    pub fn remove(&mut self, name: &str) -> Option<Unicorn> {
        let slot = self.index.remove(name)?;
        let unicorn = self.slab.get_mut(slot as usize)?.take();
        self.free.push(slot);
        unicorn
    }

    /// Once a second: hints of engines gone quiet go, and memory comes back from a fleet
    /// that shrank.
    pub fn tidy(&mut self) {
        for h in &mut self.hints {
            h.idle += 1;
        }
        self.hints.retain(|h| h.idle <= HINTS_IDLE_SWEEPS);
        self.last = 0;
        while self.slab.last().is_some_and(Option::is_none) {
            self.slab.pop();
        }
        if self.free.iter().any(|&s| s as usize >= self.slab.len()) {
            let len = self.slab.len();
            self.free.retain(|&s| (s as usize) < len);
        }
        let len = self.index.len().max(1_024);
        if self.index.capacity() > 4 * len {
            self.index.shrink_to(2 * len);
        }
        if self.slab.capacity() > 4 * self.slab.len().max(1_024) {
            self.slab.shrink_to(2 * self.slab.len());
        }
    }

    fn hints_of(&mut self, source: u32) -> Option<&mut Hints> {
        if self.hints.get(self.last).is_none_or(|h| h.source != source) {
            self.last = self.hints.iter().position(|h| h.source == source)?;
        }
        let h = &mut self.hints[self.last];
        h.idle = 0;
        Some(h)
    }

    fn hint(&mut self, key: LiveKey) -> Option<u32> {
        if key == LiveKey::NONE {
            return None;
        }
        let slot = *self.hints_of(key.source)?.slots.get(key.id as usize)?;
        (slot != NO_SLOT).then_some(slot)
    }

    fn learn(&mut self, key: LiveKey, slot: u32) {
        if key == LiveKey::NONE {
            return;
        }
        if self.hints_of(key.source).is_none() {
            self.hints.push(Hints {
                source: key.source,
                slots: Vec::new(),
                idle: 0,
            });
            self.last = self.hints.len() - 1;
        }
        let Some(h) = self.hints_of(key.source) else {
            return;
        };
        let id = key.id as usize;
        if id >= h.slots.len() {
            h.slots.resize(id + 1, NO_SLOT);
        }
        h.slots[id] = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unicorn(name: &Arc<str>) -> Unicorn {
        Unicorn::sample(name, 100)
    }

    /// Keys find unicorns fast while they hold, and never find the wrong one when they do not:
    /// an id an engine gave to another name, a slot another unicorn took, an engine never seen.
    #[test]
    fn keys_are_hints_checked_by_the_names_identity() {
        let mut fleet = Fleet::default();
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) =
            ("Arion".into(), "Bucephalus".into(), "Comet".into());
        let key = |id| LiveKey { source: 7, id };
        fleet.insert(key(0), unicorn(&a));
        fleet.insert(key(1), unicorn(&b));
        assert_eq!(fleet.len(), 2);
        fleet.find(key(1), &b).unwrap().record.health_points = 1;
        assert_eq!(fleet.get("Bucephalus").unwrap().record.health_points, 1);
        // The same name, another allocation: found by name (and the hint learnt).
        let b2: Arc<str> = "Bucephalus".into();
        assert_eq!(fleet.find(key(1), &b2).unwrap().record.health_points, 1);
        // The engine forgot Arion and gave id 0 to Comet, new to the fleet: not Arion.
        assert!(fleet.find(key(0), &c).is_none());
        fleet.insert(key(0), unicorn(&c));
        assert!(Arc::ptr_eq(
            &fleet.find(key(0), &c).unwrap().record.name,
            &c
        ));
        assert!(Arc::ptr_eq(
            &fleet.find(LiveKey::NONE, &a).unwrap().record.name,
            &a
        ));
        // Arion leaves; its slot goes to a newcomer; Arion's old key finds nothing.
        assert!(fleet.remove("Arion").is_some());
        let d: Arc<str> = "Dancer".into();
        fleet.insert(LiveKey { source: 8, id: 0 }, unicorn(&d));
        assert!(fleet.find(LiveKey { source: 7, id: 5 }, &a).is_none());
        assert!(
            fleet.find(LiveKey { source: 9, id: 0 }, &a).is_none(),
            "an unknown engine"
        );
        assert!(Arc::ptr_eq(
            &fleet
                .find(LiveKey { source: 8, id: 0 }, &d)
                .unwrap()
                .record
                .name,
            &d
        ));
        let mut names: Vec<&str> = fleet.iter().map(|u| &*u.record.name).collect();
        names.sort_unstable();
        assert_eq!(names, ["Bucephalus", "Comet", "Dancer"]);
        assert_eq!(fleet.len(), 3);
        // Engines quiet for long lose their hints; look-ups by name still work.
        for _ in 0..=HINTS_IDLE_SWEEPS {
            fleet.tidy();
        }
        assert!(fleet.hints.is_empty());
        assert!(fleet.find(key(1), &b).is_some());
        assert_eq!(fleet.hints.len(), 1, "learnt again");
    }
}
