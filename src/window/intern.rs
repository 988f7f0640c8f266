//! Unicorn names → small dense ids, so that per-unicorn state lives in flat arrays.
//!
//! Part of the window engine's hot path: one hash and one probe per record, no allocation after a
//! name's first sighting. Names are stored back to back in one arena string (names are at most
//! 64 bytes), each id's span packed in a `u64`, and the table holds only the `u32` ids, so a
//! name costs its bytes plus about 13 bytes. The hasher is foldhash with a per-process random
//! seed: names come from outside, and a fixed seed would let a producer force collisions.

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// Dense id of an interned name.
pub type NameId = u32;

/// The name table of one window engine.
#[derive(Default)]
pub struct Interner {
    arena: String,
    /// Per id: `start << 7 | len` into `arena`.
    spans: Vec<u64>,
    table: HashTable<NameId>,
    hasher: RandomState,
}

fn span_of(arena: &str, span: u64) -> &str {
    let start = (span >> 7) as usize;
    let len = (span & 0x7f) as usize;
    arena.get(start..start + len).unwrap_or_default()
}

impl Interner {
    /// The id of `name`, assigning the next one on first sight. Names must be ≤ 127 bytes
    /// (decoding guarantees ≤ 64).
    pub fn intern(&mut self, name: &str) -> NameId {
        let Interner {
            arena,
            spans,
            table,
            hasher,
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
                let id = spans.len() as NameId;
                let len = name.len().min(0x7f);
                spans.push(((arena.len() as u64) << 7) | len as u64);
                arena.push_str(&name[..floor_char_boundary(name, len)]);
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

    /// How many names are interned.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when no name is interned.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Heap bytes held (capacities, not lengths).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.spans.capacity() * size_of::<u64>()
            // hashbrown: one slot and one control byte per bucket.
            + self.table.capacity() * (size_of::<NameId>() + 1) * 8 / 7
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
