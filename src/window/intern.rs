//! Unicorn names → small dense ids, so that per-unicorn state lives in flat arrays.
//!
//! Part of the window engine's hot path: one hash and one probe per record, no allocation after a
//! name's first sighting. Names are stored back to back in one arena string (names are at most
//! 64 bytes), each id's span packed in a `u64`, and the table holds only the `u32` ids, so a
//! name costs its bytes plus about 13 bytes. The hasher is foldhash with a per-process random
//! seed: names come from outside, and a fixed seed would let a producer force collisions.
//!
//! Names can be forgotten (a unicorn gone silent, issue 11): the id is freed and reused, lowest
//! first, so ids stay dense under churn and the per-id arrays beside the table (the engine's
//! heads, the live state) can be cut back to [`Interner::id_bound`]. The arena is compacted once
//! more than half of it is dead, and the table shrinks when it is mostly empty: a flood of
//! random names costs memory only while its names are remembered.

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::collections::BTreeSet;
use std::hash::BuildHasher;

use super::{shrink_mostly_empty, SMALL};

/// Dense id of an interned name.
pub type NameId = u32;

/// The name table of one window engine.
#[derive(Default)]
pub struct Interner {
    arena: String,
    /// Per id: `start << 7 | len` into `arena`, or [`FREE`].
    spans: Vec<u64>,
    table: HashTable<NameId>,
    hasher: RandomState,
    /// Freed ids below `spans.len()`, reused lowest first.
    free: BTreeSet<NameId>,
    /// Arena bytes of forgotten names.
    dead_bytes: usize,
    /// The id after the last one looked up: see [`Interner::intern`].
    next: NameId,
    /// Wrong guesses in a row (guessing pauses past [`GUESS_MISSES`]).
    misses: u32,
}

/// Wrong guesses in a row after which an interner stops guessing the next id, and how many
/// names later it tries again ([`GUESS_RETRY`]).
const GUESS_MISSES: u32 = 16;
const GUESS_RETRY: u32 = 256;

/// The span of a freed id.
const FREE: u64 = u64::MAX;

fn span_of(arena: &str, span: u64) -> &str {
    if span == FREE {
        return "";
    }
    let start = (span >> 7) as usize;
    let len = (span & 0x7f) as usize;
    arena.get(start..start + len).unwrap_or_default()
}

impl Interner {
    /// The id of `name`, assigning the next one on first sight. Names must be ≤ 127 bytes
    /// (decoding guarantees ≤ 64).
    ///
    /// Fleets report in turn — a gateway cycling through its devices, `stampede produce` —
    /// so a name is usually the one after the last, in the order names were first seen: the
    /// id after the last is checked first, by comparing its name (read in order, so cached),
    /// which spares a probe into a table that a million names put out of every cache (two
    /// misses: measured, 29% of the server's CPU at a million unicorns). Names that come in
    /// no order pay a wrong guess now and then: after `GUESS_MISSES` in a row, guessing
    /// pauses for `GUESS_RETRY` names.
    pub fn intern(&mut self, name: &str) -> NameId {
        if self.misses < GUESS_MISSES {
            let guess = self.next;
            if let Some(&span) = self.spans.get(guess as usize) {
                if span != FREE && span_of(&self.arena, span) == name {
                    self.next = guess.wrapping_add(1);
                    self.misses = 0;
                    return guess;
                }
            }
        }
        self.misses += 1;
        if self.misses >= GUESS_RETRY {
            self.misses = 0;
        }
        let id = self.look_up(name);
        self.next = id.wrapping_add(1);
        id
    }

    /// The id of `name` through the table, assigning the next one on first sight.
    fn look_up(&mut self, name: &str) -> NameId {
        let Interner {
            arena,
            spans,
            table,
            hasher,
            free,
            ..
        } = self;
        let hash = hasher.hash_one(name);
        let entry = table.entry(
            hash,
            |&id| span_of(arena, spans[id as usize]) == name,
            |&id| hasher.hash_one(span_of(arena, spans[id as usize])),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get(),
            hashbrown::hash_table::Entry::Vacant(e) => {
                let len = name.len().min(0x7f);
                let span = ((arena.len() as u64) << 7) | len as u64;
                arena.push_str(&name[..floor_char_boundary(name, len)]);
                let id = match free.pop_first() {
                    Some(id) => {
                        spans[id as usize] = span;
                        id
                    }
                    None => {
                        spans.push(span);
                        (spans.len() - 1) as NameId
                    }
                };
                e.insert(id);
                id
            }
        }
    }

    /// The name of `id` ("" for an id never assigned).
    pub fn name(&self, id: NameId) -> &str {
        self.spans
            .get(id as usize)
            .map_or("", |&s| span_of(&self.arena, s))
    }

    /// Whether `id` names an interned (not forgotten) name.
    pub fn contains(&self, id: NameId) -> bool {
        self.spans.get(id as usize).is_some_and(|&s| s != FREE)
    }

    /// Forgets `id`'s name: the id is free for the next new name. Call [`Interner::trim`] after
    /// a run of these.
    pub fn forget(&mut self, id: NameId) {
        let Some(&span) = self.spans.get(id as usize).filter(|&&s| s != FREE) else {
            return;
        };
        let name = span_of(&self.arena, span);
        let hash = self.hasher.hash_one(name);
        if let Ok(entry) = self.table.find_entry(hash, |&x| x == id) {
            entry.remove();
        }
        self.dead_bytes += name.len();
        self.spans[id as usize] = FREE;
        self.free.insert(id);
    }

    /// Gives `old`'s name the free id `new` (see [`Interner::pack`]).
    fn renumber(&mut self, old: NameId, new: NameId) {
        let span = self.spans[old as usize];
        let hash = self.hasher.hash_one(span_of(&self.arena, span));
        if let Ok(mut entry) = self.table.find_entry(hash, |&x| x == old) {
            *entry.get_mut() = new;
        }
        self.spans[new as usize] = span;
        self.spans[old as usize] = FREE;
        self.free.remove(&new);
        self.free.insert(old);
    }

    /// When most ids below [`Interner::id_bound`] are free (names that came after a flood keep
    /// high ids), moves every name at or past `len` into a free id below it, lowest first, and
    /// appends each `(old, new)` to `moved`: whoever keeps per-id state must move it too.
    pub fn pack(&mut self, moved: &mut Vec<(NameId, NameId)>) {
        let len = self.len();
        if self.spans.len() <= SMALL || self.spans.len() <= 2 * len {
            return;
        }
        let targets: Vec<NameId> = self.free.range(..len as NameId).copied().collect();
        let mut targets = targets.into_iter();
        for old in len..self.spans.len() {
            if self.spans[old] == FREE {
                continue;
            }
            let Some(new) = targets.next() else { break };
            self.renumber(old as NameId, new);
            moved.push((old as NameId, new));
        }
    }

    /// Gives back memory after forgetting: drops free ids at the end, compacts the arena once
    /// it is mostly dead, and shrinks the table once it is mostly empty. Ids do not change.
    pub fn trim(&mut self) {
        while let Some(&last) = self.free.last() {
            if last as usize + 1 != self.spans.len() {
                break;
            }
            self.free.pop_last();
            self.spans.pop();
        }
        if self.spans.is_empty() {
            // The common end of a flood: everything forgotten.
            self.arena = String::new();
            self.dead_bytes = 0;
        } else if self.dead_bytes > SMALL && self.dead_bytes * 2 > self.arena.len() {
            let mut arena = String::with_capacity(self.arena.len() - self.dead_bytes);
            for span in self.spans.iter_mut().filter(|s| **s != FREE) {
                let name = span_of(&self.arena, *span);
                *span = ((arena.len() as u64) << 7) | name.len() as u64;
                arena.push_str(name);
            }
            self.arena = arena;
            self.dead_bytes = 0;
        }
        shrink_mostly_empty(&mut self.spans);
        let live = self.len();
        if self.table.capacity() > SMALL && self.table.capacity() > 4 * live {
            let Interner {
                arena,
                spans,
                table,
                hasher,
                ..
            } = self;
            table.shrink_to(2 * live, |&id| {
                hasher.hash_one(span_of(arena, spans[id as usize]))
            });
        }
    }

    /// One past the highest id in use: per-id arrays beside the table need no more entries.
    pub fn id_bound(&self) -> usize {
        self.spans.len()
    }

    /// How many names are interned.
    pub fn len(&self) -> usize {
        self.spans.len() - self.free.len()
    }

    /// True when no name is interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held (capacities, not lengths; the free set only roughly).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.spans.capacity() * size_of::<u64>()
            // hashbrown: one slot and one control byte per bucket.
            + self.table.capacity() * (size_of::<NameId>() + 1) * 8 / 7
            // A B-tree node holds up to 11 keys: a little over 4 bytes a key, at best.
            + self.free.len() * 8
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn same_name_same_id() {
        let mut i = Interner::default();
        let a = i.intern("Shadowfax");
        let b = i.intern("Bucephalus");
        let c = i.intern("Felaróf 🦄");
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(i.intern("Shadowfax"), a);
        assert_eq!(i.intern("Felaróf 🦄"), c);
        assert_eq!(i.name(b), "Bucephalus");
        assert_eq!(i.name(c), "Felaróf 🦄");
        assert_eq!(i.name(99), "");
        assert_eq!(i.len(), 3);
    }

    /// Guessing the next id never changes an answer: in turn, in turn with gaps and strays,
    /// in no order, after forgetting, every name gets the id it first got.
    #[test]
    fn guessing_the_next_id_gives_the_same_ids_in_any_order() {
        let mut i = Interner::default();
        let mut first: HashMap<String, NameId> = HashMap::new();
        fn check(i: &mut Interner, first: &mut HashMap<String, NameId>, name: String) {
            let id = i.intern(&name);
            let want = *first.entry(name.clone()).or_insert(id);
            assert_eq!(id, want, "{name}");
        }
        let names: Vec<String> = (0..2_000).map(|n| format!("u{n}")).collect();
        for _ in 0..3 {
            for n in &names {
                check(&mut i, &mut first, n.clone());
            }
        }
        // In turn, with every seventh missing and a stranger every hundredth.
        for (k, n) in names.iter().enumerate() {
            if k % 7 != 0 {
                check(&mut i, &mut first, n.clone());
            }
            if k % 100 == 0 {
                check(&mut i, &mut first, format!("stray-{k}"));
            }
        }
        // No order at all.
        let mut x: u64 = 42;
        for _ in 0..10_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            check(
                &mut i,
                &mut first,
                names[(x >> 33) as usize % names.len()].clone(),
            );
        }
        // A forgotten name's id goes to a newcomer; the next in turn is still itself.
        i.forget(10);
        first.remove("u10");
        let newcomer = i.intern("newcomer");
        assert_eq!(newcomer, 10);
        first.insert("newcomer".into(), 10);
        for n in &names[5..15] {
            check(&mut i, &mut first, n.clone());
        }
        assert_eq!(i.intern("newcomer"), 10);
    }

    #[test]
    fn forgotten_ids_are_reused_lowest_first_and_memory_comes_back() {
        let mut i = Interner::default();
        for n in 0..50_000 {
            i.intern(&format!("flood-{n}"));
        }
        let big = i.heap_bytes();
        for id in [7, 3, 49_999] {
            i.forget(id);
        }
        assert!(!i.contains(3));
        assert_eq!(i.name(3), "");
        assert_eq!(i.len(), 49_997);
        assert_eq!(i.intern("new-1"), 3, "lowest free id first");
        assert_eq!(i.intern("new-2"), 7);
        assert_eq!(i.intern("flood-3"), 49_999, "a returning name is new");
        assert_eq!(i.intern("flood-4"), 4, "others keep theirs");

        // Forget all but a few in the middle: trailing ids go, the arena is compacted.
        for id in 0..50_000 {
            if !(20_000..20_003).contains(&id) {
                i.forget(id);
            }
        }
        i.trim();
        assert_eq!(i.len(), 3);
        assert_eq!(i.id_bound(), 20_003);
        for id in 20_000..20_003 {
            assert_eq!(i.name(id), format!("flood-{id}"));
            assert_eq!(i.intern(&format!("flood-{id}")), id);
        }
        // Ids do not move in `trim` (see `pack`): 20,000 free ones below the three remain.
        assert!(
            i.heap_bytes() * 2 < big,
            "{} of {big} bytes kept",
            i.heap_bytes()
        );
        for id in 20_000..20_003 {
            i.forget(id);
        }
        i.trim();
        assert_eq!((i.len(), i.id_bound()), (0, 0));
        assert_eq!(i.intern("first"), 0);
    }

    #[test]
    fn packing_moves_late_names_into_free_ids() {
        let mut i = Interner::default();
        for n in 0..20_000 {
            i.intern(&format!("flood-{n}"));
        }
        i.intern("straggler");
        for id in 0..20_000 {
            if id != 5 {
                i.forget(id);
            }
        }
        let mut moved = Vec::new();
        i.pack(&mut moved);
        assert_eq!(moved, [(5, 0), (20_000, 1)], "every name lands below len()");
        i.trim();
        assert_eq!(i.id_bound(), 2);
        assert_eq!((i.name(0), i.name(1)), ("flood-5", "straggler"));
        assert_eq!(i.intern("straggler"), 1);
        assert_eq!(i.intern("flood-5"), 0);
        assert_eq!(i.intern("next"), 2);
    }

    #[test]
    fn many_names_survive_table_growth() {
        let mut i = Interner::default();
        for n in 0..100_000 {
            assert_eq!(i.intern(&format!("unicorn-{n}")), n);
        }
        for n in (0..100_000).step_by(997) {
            assert_eq!(i.intern(&format!("unicorn-{n}")), n);
            assert_eq!(i.name(n), format!("unicorn-{n}"));
        }
    }
}
