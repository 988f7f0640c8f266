//! A batch of records folded per (unicorn, window) before it reaches the engine: for the batch
//! path (`stampede aggregate`), where decoding threads fold their chunks and the engine's one
//! thread takes a group per unicorn and window instead of every record
//! ([`super::Engine::push_group`]).
//!
//! Folding changes nothing only when **no record of the batch is late** (its window's end at or
//! below the watermark before it): then every record is on time whatever the order of the
//! batch's records, and the watermark after the batch is the same. When the engine closes the
//! windows the batch's watermark passes — after the batch rather than between two of its
//! records — changes when they are emitted, never what they hold (the engine's `advance`). The
//! folder refuses a record that is late against the records before it in the batch; the
//! engine's thread checks the rest against its own watermark ([`Folds::earliest_end`]) and
//! otherwise takes the records one by one.
//!
//! Sums stay exact: a group keeps its records' distances in order, and the engine adds them one
//! by one, the same float additions in the same order as record by record. Counts and minima
//! and maxima do not depend on order.

use std::ops::Range;

use hashbrown::HashMap;

use crate::record::Telemetry;
use crate::time::Millis;

use super::engine::fold;
use super::WindowConfig;

/// One unicorn's records in one window, of one batch.
#[derive(Debug, Clone)]
pub struct Group {
    /// The unicorn's name, as a range of the batch's text.
    pub name: Range<usize>,
    /// The window's start.
    pub start: Millis,
    /// The index of its first record among the batch's non-blank lines.
    pub first: usize,
    /// Lowest and highest health points, lowest and highest magic points.
    pub vitals: [i64; 4],
    /// Its records' distances, as a range of [`Folds::distances`].
    distances: Range<usize>,
}

/// A batch's records, folded.
#[derive(Debug, Clone)]
pub struct Folds {
    groups: Vec<Group>,
    distances: Vec<f64>,
    /// The watermark the batch's records raise: their highest event time less the
    /// out-of-orderness, or the engine's watermark the folder started from if higher.
    watermark: Millis,
    earliest_end: Millis,
    records: usize,
}

impl Folds {
    /// The groups, in the order of their first records.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// A group's distances, in record order.
    pub fn distances(&self, group: &Group) -> &[f64] {
        &self.distances[group.distances.clone()]
    }

    /// The watermark the batch's records raise: their highest event time less the
    /// out-of-orderness, or the engine's watermark the folder started from if higher.
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    /// The end of the earliest window a record goes to: the batch folds into an engine whose
    /// watermark is below it (else some record is late there).
    pub fn earliest_end(&self) -> Millis {
        self.earliest_end
    }

    /// Records folded.
    pub fn records(&self) -> usize {
        self.records
    }
}

/// A record is late against the records before it in the batch, or its name does not lie in the
/// batch's text: the batch cannot be folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfoldable;

/// Folds a batch's records, in order, into [`Folds`].
pub struct Folder<'t> {
    cfg: WindowConfig,
    text: &'t str,
    folds: Folds,
    /// (name, window start) → group.
    index: HashMap<(&'t str, Millis), usize, foldhash::fast::FixedState>,
    /// The group and distance of every record, in order (sorted by group at the end).
    pending: Vec<(usize, f64)>,
    counts: Vec<usize>,
    /// The group of the last record: records come round the fleet in the same order, so the
    /// next group is the likely one, checked before the index.
    last: usize,
    lines: usize,
}

impl<'t> Folder<'t> {
    /// A folder for records decoded from `text`, for event-time windows of `cfg`, into an
    /// engine whose watermark is at least `watermark` (a record in a window that ends by it is
    /// late, and refused at once).
    pub fn new(cfg: WindowConfig, text: &'t str, watermark: Millis) -> Self {
        Folder {
            cfg,
            text,
            folds: Folds {
                groups: Vec::new(),
                distances: Vec::new(),
                watermark,
                earliest_end: Millis::MAX,
                records: 0,
            },
            // Room for a record per 160 bytes of text and a group per 512 (a fleet's records
            // are ~200 bytes; a fleet of a thousand has a few each in a MiB, a larger one grows
            // the index once or twice a chunk).
            index: HashMap::with_capacity_and_hasher(text.len() / 512, Default::default()),
            pending: Vec::with_capacity(text.len() / 160),
            counts: Vec::new(),
            last: usize::MAX,
            lines: 0,
        }
    }

    /// A non-blank line that is not a record (a reject): it takes a position all the same.
    pub fn skip(&mut self) {
        self.lines += 1;
    }

    /// The next record, decoded from the text.
    ///
    /// # Errors
    /// The record is late against the records before it, or its name is not a slice of the text
    /// (it had escapes).
    pub fn push(&mut self, record: &Telemetry<'t>) -> Result<(), Unfoldable> {
        let t = record.status_time;
        let start = self.cfg.window_start(t);
        let end = start.saturating_add(self.cfg.size_ms);
        if end <= self.folds.watermark {
            return Err(Unfoldable);
        }
        let std::borrow::Cow::Borrowed(name) = record.name else {
            return Err(Unfoldable);
        };
        let guess = self.last.wrapping_add(1);
        let group = match self.folds.groups.get(guess) {
            Some(g) if g.start == start && self.text.get(g.name.clone()) == Some(name) => guess,
            _ => match self.index.get(&(name, start)) {
                Some(&g) => g,
                None => self.group(name, start, record)?,
            },
        };
        self.last = group;
        let g = &mut self.folds.groups[group];
        fold(&mut g.vitals, record.health_points, record.magic_points);
        self.counts[group] += 1;
        self.pending.push((group, record.distance));
        self.folds.earliest_end = self.folds.earliest_end.min(end);
        self.folds.watermark = self.folds.watermark.max(self.cfg.watermark_of(t));
        self.lines += 1;
        self.folds.records += 1;
        Ok(())
    }

    /// A new group for `record`, whose window starts at `start`.
    fn group(
        &mut self,
        name: &'t str,
        start: Millis,
        record: &Telemetry<'_>,
    ) -> Result<usize, Unfoldable> {
        let range = crate::decode::range_in(name, self.text.as_bytes()).ok_or(Unfoldable)?;
        let group = self.folds.groups.len();
        self.folds.groups.push(Group {
            name: range,
            start,
            first: self.lines,
            vitals: [
                record.health_points,
                record.health_points,
                record.magic_points,
                record.magic_points,
            ],
            distances: 0..0,
        });
        self.counts.push(0);
        self.index.insert((name, start), group);
        Ok(group)
    }

    /// The folded batch.
    pub fn finish(mut self) -> Folds {
        // Each group's distances together, in record order: a counting sort by group.
        let mut at = 0;
        for (g, &n) in self.folds.groups.iter_mut().zip(&self.counts) {
            g.distances = at..at;
            at += n;
        }
        self.folds.distances = vec![0.0; at];
        for (group, distance) in self.pending {
            let g = &mut self.folds.groups[group];
            self.folds.distances[g.distances.end] = distance;
            g.distances.end += 1;
        }
        self.folds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn record(name: &str, t: Millis, distance: f64, health: i64) -> Telemetry<'_> {
        Telemetry {
            name: Cow::Borrowed(name),
            status_time: t,
            latitude: 0.0,
            longitude: 0.0,
            distance,
            health_points: health,
            magic_points: -health,
            input_data: None,
        }
    }

    fn cfg() -> WindowConfig {
        WindowConfig {
            size_ms: 60_000,
            out_of_orderness_ms: 5_000,
            ..WindowConfig::default()
        }
    }

    #[test]
    fn groups_keep_their_records_distances_in_order_and_their_extremes() {
        let text = "a b";
        let (a, b) = (&text[0..1], &text[2..3]);
        let mut folder = Folder::new(cfg(), text, Millis::MIN);
        folder.push(&record(a, 1_000, 0.1, 5)).unwrap();
        folder.push(&record(b, 2_000, 0.2, 7)).unwrap();
        folder.skip();
        folder.push(&record(a, 59_000, 0.3, 2)).unwrap();
        folder.push(&record(a, 61_000, 0.4, 9)).unwrap();
        folder.push(&record(b, 62_000, 0.5, 3)).unwrap();
        folder.push(&record(a, 63_000, 0.6, 1)).unwrap();
        let folds = folder.finish();
        let got: Vec<_> = folds
            .groups()
            .iter()
            .map(|g| {
                (
                    &text[g.name.clone()],
                    g.start,
                    g.first,
                    g.vitals,
                    folds.distances(g).to_vec(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 0, 0, [2, 5, -5, -2], vec![0.1, 0.3]),
                ("b", 0, 1, [7, 7, -7, -7], vec![0.2]),
                ("a", 60_000, 4, [1, 9, -9, -1], vec![0.4, 0.6]),
                ("b", 60_000, 5, [3, 3, -3, -3], vec![0.5]),
            ]
        );
        assert_eq!(
            (folds.records(), folds.earliest_end(), folds.watermark()),
            (6, 60_000, 63_000 - 5_000)
        );
    }

    #[test]
    fn a_record_late_against_those_before_it_or_with_a_name_of_its_own_is_refused() {
        let (text, elsewhere) = (String::from("a"), String::from("a"));
        let text = text.as_str();
        let mut folder = Folder::new(cfg(), text, Millis::MIN);
        folder.push(&record(text, 125_000, 1.0, 1)).unwrap();
        // The watermark is at 120 s: the window [60 s, 120 s) is closed.
        assert_eq!(folder.push(&record(text, 119_999, 1.0, 1)), Err(Unfoldable));
        assert_eq!(folder.push(&record(text, 120_000, 1.0, 1)), Ok(()));
        let owned = Telemetry {
            name: Cow::Owned("a".into()),
            ..record(text, 121_000, 1.0, 1)
        };
        assert_eq!(
            Folder::new(cfg(), text, Millis::MIN).push(&owned),
            Err(Unfoldable)
        );
        let mut folder = Folder::new(cfg(), text, Millis::MIN);
        assert_eq!(folder.push(&record(&elsewhere, 1, 1.0, 1)), Err(Unfoldable));
    }
}
