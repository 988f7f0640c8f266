//! The fleet table, paged on the server: `GET /api/unicorns?q=&sort=&order=&offset=&limit=`.
//!
//! A browser showing a fleet of a million cannot hold it, sort it or search it; the hub can,
//! cheaply enough to answer while it fans out frames. Names are kept in natural order
//! ("u2" before "u10", case folded) in a [`Names`] set maintained as unicorns arrive and leave
//! (a new unicorn costs one ordered insert, a record nothing), so a page by name walks the
//! set from its start; a page by a value that changes every second (health, last seen…)
//! selects the page's rows in one linear pass (`select_nth_unstable`), without sorting the
//! rest. A search is a case-insensitive substring of the name.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Fleet, Unicorn};

/// Rows in one page at most.
pub const MAX_LIMIT: usize = 1_000;

/// Rows in a page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// What a page is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Name, in natural order.
    Name,
    /// When the hub last heard of it.
    Seen,
    /// `HealthPoints`.
    Health,
    /// `MagicPoints`.
    Magic,
    /// `Distance` of the latest record (metres in its second: the speed).
    Speed,
    /// Distance of its latest summarised minute (unicorns without one last, either way).
    Minute,
}

impl SortKey {
    /// The key named `s` in the query string.
    pub fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "name" => SortKey::Name,
            "seen" => SortKey::Seen,
            "health" => SortKey::Health,
            "magic" => SortKey::Magic,
            "speed" => SortKey::Speed,
            "minute" => SortKey::Minute,
            _ => return None,
        })
    }

    /// The keys, as [`SortKey::parse`] reads them (for error messages).
    pub const NAMES: &'static str = "name, seen, health, magic, speed, minute";

    fn value(self, u: &Unicorn) -> f64 {
        match self {
            SortKey::Name => 0.0,
            // Milliseconds since 1970 are exact in an f64 for the next 280,000 years.
            #[allow(clippy::cast_precision_loss)]
            SortKey::Seen => u.seen_ms as f64,
            #[allow(clippy::cast_precision_loss)]
            SortKey::Health => u.record.health_points as f64,
            #[allow(clippy::cast_precision_loss)]
            SortKey::Magic => u.record.magic_points as f64,
            SortKey::Speed => u.record.distance,
            SortKey::Minute => u.summary.as_ref().map_or(f64::NAN, |s| s.distance),
        }
    }
}

/// One page asked for.
#[derive(Debug, Clone)]
pub struct TableQuery {
    /// Only names containing this, ASCII case ignored (empty: all).
    pub search: String,
    /// Sorted by.
    pub sort: SortKey,
    /// Largest (or last by name) first.
    pub descending: bool,
    /// Rows skipped.
    pub offset: usize,
    /// Rows at most.
    pub limit: usize,
}

/// A page: the unicorns matching the search, and those of them on the page, in order.
pub(super) struct Page<'a> {
    /// How many match the search.
    pub(super) total: usize,
    /// The page's rows.
    pub(super) rows: Vec<&'a Unicorn>,
}

/// A unicorn's name, ordered naturally (see [`natural`]).
#[derive(Debug, Clone)]
pub struct ByName(pub Arc<str>);

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for ByName {}

impl PartialOrd for ByName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByName {
    fn cmp(&self, other: &Self) -> Ordering {
        natural(&self.0, &other.0)
    }
}

/// Every live name, in natural order.
pub type Names = BTreeSet<ByName>;

/// Natural order: runs of ASCII digits compare as numbers ("u2" < "u10"), ASCII letters
/// without case; names equal so far are ordered by their bytes, so that the order is total and
/// only equal names are equal (a set keeps "U1", "u1" and "u01" apart).
pub fn natural(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let (m, n) = (digits_end(x, i), digits_end(y, j));
            let (p, q) = (trim_zeros(&x[i..m]), trim_zeros(&y[j..n]));
            let by_value = p.len().cmp(&q.len()).then_with(|| p.cmp(q));
            if by_value != Ordering::Equal {
                return by_value;
            }
            (i, j) = (m, n);
        } else {
            let (c, d) = (x[i].to_ascii_lowercase(), y[j].to_ascii_lowercase());
            if c != d {
                return c.cmp(&d);
            }
            (i, j) = (i + 1, j + 1);
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| x.cmp(y))
}

fn digits_end(s: &[u8], from: usize) -> usize {
    s[from..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .map_or(s.len(), |k| from + k)
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

/// Whether `name` contains `needle` (already lower-case), ASCII case ignored.
fn matches(name: &str, needle: &[u8]) -> bool {
    needle.is_empty()
        || name
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The page `q` asks for. By name: one walk of `names` (from the end when descending). By a
/// value: the matching unicorns' values gathered in one pass, the page's rows selected
/// without sorting the others, then sorted; ties go by name.
pub(super) fn page<'a>(fleet: &'a Fleet, names: &Names, q: &TableQuery) -> Page<'a> {
    let needle = q.search.to_ascii_lowercase().into_bytes();
    let end = q.offset.saturating_add(q.limit);
    if q.sort == SortKey::Name {
        let mut total = 0;
        let mut rows = Vec::new();
        let ordered: Box<dyn Iterator<Item = &ByName>> = if q.descending {
            Box::new(names.iter().rev())
        } else {
            Box::new(names.iter())
        };
        for ByName(name) in ordered {
            if !matches(name, &needle) {
                continue;
            }
            if (q.offset..end).contains(&total) {
                if let Some(u) = fleet.get(name) {
                    rows.push(u);
                }
            } else if needle.is_empty() && total >= end {
                // Nothing left to count one by one: every name matches.
                total = names.len();
                break;
            }
            total += 1;
        }
        return Page { total, rows };
    }
    // Each value as an integer in the page's order (missing ones, a unicorn without a summary,
    // last either way), so that selecting compares integers; names break ties only among the
    // few rows that make the page.
    let descending = q.descending;
    let mut keyed: Vec<(u64, &'a Unicorn)> = fleet
        .iter()
        .filter(|u| matches(&u.record.name, &needle))
        .map(|u| (ordered_bits(q.sort.value(u), descending), u))
        .collect();
    let total = keyed.len();
    if end < keyed.len() {
        // Everything before `end` is at most the value at `end`, everything after at least it:
        // the page is among those before it and those after that equal it.
        let (_, &mut (bound, _), _) = keyed.select_nth_unstable_by_key(end, |k| k.0);
        let mut tail = end;
        for i in end..keyed.len() {
            if keyed[i].0 == bound {
                keyed.swap(tail, i);
                tail += 1;
            }
        }
        keyed.truncate(tail);
    }
    keyed.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| natural(&a.1.record.name, &b.1.record.name))
    });
    let rows = keyed
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|(_, u)| u)
        .collect();
    Page { total, rows }
}

/// `v` as an integer that orders like `v` (or like `-v` when `descending`), NaN after all.
fn ordered_bits(v: f64, descending: bool) -> u64 {
    if v.is_nan() {
        return u64::MAX;
    }
    let v = if descending { -v } else { v };
    // IEEE 754 bits in total order: flip every bit of a negative, the sign bit of a positive.
    let bits = v.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::LiveKey;

    #[test]
    fn natural_order_reads_numbers_as_numbers_and_keeps_every_name_apart() {
        let mut names = vec![
            "u10",
            "u2",
            "U1",
            "u1",
            "u01",
            "Shadowfax",
            "bucephalus",
            "u1a",
            "u1-x",
            "u",
            "ü1",
            "10",
            "9",
            "a0b",
            "a00b",
        ];
        names.sort_by(|a, b| natural(a, b));
        assert_eq!(
            names,
            [
                "9",
                "10",
                "a00b",
                "a0b",
                "bucephalus",
                "Shadowfax",
                "u",
                "U1",
                "u01",
                "u1",
                "u1-x",
                "u1a",
                "u2",
                "u10",
                "ü1"
            ]
        );
        // A total order: equal only when the same.
        for a in &names {
            for b in &names {
                assert_eq!(natural(a, b) == Ordering::Equal, a == b, "{a} {b}");
                assert_eq!(natural(a, b), natural(b, a).reverse(), "{a} {b}");
            }
        }
    }

    #[test]
    fn values_become_integers_in_the_same_order() {
        let values = [
            f64::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-300,
            2.0,
            150.0,
            f64::INFINITY,
        ];
        for w in values.windows(2) {
            assert!(
                ordered_bits(w[0], false) <= ordered_bits(w[1], false),
                "{w:?}"
            );
            assert!(
                ordered_bits(w[0], true) >= ordered_bits(w[1], true),
                "{w:?}"
            );
        }
        assert!(ordered_bits(1.0, false) < ordered_bits(2.0, false));
        assert_eq!(ordered_bits(f64::NAN, false), u64::MAX);
        assert_eq!(ordered_bits(f64::NAN, true), u64::MAX);
    }

    fn unicorn(name: &str, health: i64) -> Unicorn {
        Unicorn::sample(&Arc::from(name), health)
    }

    /// Every page of a fleet full of ties is the slice of the whole fleet sorted by value,
    /// then name.
    #[test]
    fn pages_by_a_value_are_slices_of_the_full_order_even_across_ties() {
        let mut fleet = Fleet::default();
        for i in 0..500 {
            fleet.insert(LiveKey::NONE, unicorn(&format!("u{i}"), (i * 7) % 5));
        }
        let names: Names = fleet
            .iter()
            .map(|u| ByName(Arc::clone(&u.record.name)))
            .collect();
        for descending in [false, true] {
            let mut all: Vec<(i64, usize)> = (0..500).map(|i| ((i * 7) % 5, i as usize)).collect();
            all.sort_by_key(|&(h, i)| (if descending { -h } else { h }, i));
            let want: Vec<String> = all.iter().map(|&(_, i)| format!("u{i}")).collect();
            for (offset, limit) in [(0, 1), (0, 100), (99, 3), (100, 100), (250, 7), (495, 100)] {
                let q = TableQuery {
                    search: String::new(),
                    sort: SortKey::Health,
                    descending,
                    offset,
                    limit,
                };
                let page = page(&fleet, &names, &q);
                let got: Vec<&str> = page.rows.iter().map(|u| &*u.record.name).collect();
                let end = (offset + limit).min(500);
                assert_eq!(page.total, 500);
                assert_eq!(got, want[offset..end], "{q:?}");
            }
        }
    }

    #[test]
    fn a_search_ignores_ascii_case() {
        assert!(matches("Shadowfax", b"dowf"));
        assert!(matches("SHADOWFAX", b"dowf"));
        assert!(matches("anything", b""));
        assert!(!matches("Rocinante", b"dowf"));
        assert!(!matches("u1", b"u10"));
    }
}
