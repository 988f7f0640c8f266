//! Viewport subscriptions: a browser says which part of the map it shows, and the hub sends it
//! full records only for the unicorns there while they are at most [`MAX_IN_VIEW`], and counts
//! per cell otherwise, so a browser's cost stays flat from a thousand unicorns to a million.
//!
//! The hub keeps an [`Index`] of where every unicorn was at the last sweep (once a second, and
//! only while some client has a view): cells of [`CELL_DEG`] degrees, so "who is in this view"
//! and "how many" visit the cells the view covers, not the fleet.

use std::collections::HashMap;
use std::sync::Arc;

/// Records a view may hold before it gets counts per cell instead.
pub const MAX_IN_VIEW: usize = 5_000;

/// Size of the index's cells, degrees (about a kilometre).
pub const CELL_DEG: f64 = 0.01;

/// Cells of a density frame along the view's longer side, at most.
const DENSITY_CELLS: f64 = 48.0;

/// The part of the map a client shows, in degrees; `west > east` crosses the antimeridian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Southern edge.
    pub south: f64,
    /// Western edge.
    pub west: f64,
    /// Northern edge.
    pub north: f64,
    /// Eastern edge.
    pub east: f64,
}

impl View {
    /// From `south,west,north,east` (the `view` query parameter of `/ws`).
    pub fn parse_query(text: &str) -> Option<View> {
        let mut it = text.split(',').map(|v| v.trim().parse::<f64>().ok());
        let view = View {
            south: it.next()??,
            west: it.next()??,
            north: it.next()??,
            east: it.next()??,
        };
        if it.next().is_some() {
            return None;
        }
        view.checked()
    }

    /// From a client's `{"type":"viewport","south":…,"west":…,"north":…,"east":…}`.
    pub fn from_message(text: &str) -> Option<View> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        if v.get("type")?.as_str()? != "viewport" {
            return None;
        }
        View {
            south: v.get("south")?.as_f64()?,
            west: v.get("west")?.as_f64()?,
            north: v.get("north")?.as_f64()?,
            east: v.get("east")?.as_f64()?,
        }
        .checked()
    }

    fn checked(self) -> Option<View> {
        let lat = |v: f64| (-90.0..=90.0).contains(&v);
        let lon = |v: f64| (-180.0..=180.0).contains(&v);
        (lat(self.south) && lat(self.north) && self.south <= self.north)
            .then_some(self)
            .filter(|v| lon(v.west) && lon(v.east))
    }

    /// Whether a position is in the view.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        let in_lon = if self.west <= self.east {
            (self.west..=self.east).contains(&lon)
        } else {
            lon >= self.west || lon <= self.east
        };
        in_lon && (self.south..=self.north).contains(&lat)
    }

    /// Spans in degrees (latitude, longitude).
    fn spans(&self) -> (f64, f64) {
        let lon = if self.west <= self.east {
            self.east - self.west
        } else {
            360.0 - (self.west - self.east)
        };
        (self.north - self.south, lon)
    }
}

/// An index cell: (row, column) of [`CELL_DEG`] squares.
type Cell = (i32, i32);

fn cell_of(lat: f64, lon: f64) -> Cell {
    // Saturating casts: positions are validated (|lat| ≤ 90, |lon| ≤ 180).
    (
        (lat / CELL_DEG).floor() as i32,
        (lon / CELL_DEG).floor() as i32,
    )
}

/// Where every unicorn was when the index was built, by cell.
#[derive(Default)]
pub struct Index {
    cells: HashMap<Cell, Vec<Arc<str>>>,
    /// Unicorns indexed.
    len: usize,
    /// South, west, north, east of them all, if any.
    bounds: Option<[f64; 4]>,
}

impl Index {
    /// Indexes `(name, latitude, longitude)` of every unicorn.
    pub fn build<'a>(positions: impl Iterator<Item = (&'a Arc<str>, f64, f64)>) -> Index {
        let mut cells: HashMap<Cell, Vec<Arc<str>>> = HashMap::new();
        let mut len = 0;
        let mut bounds: Option<[f64; 4]> = None;
        for (name, lat, lon) in positions {
            cells
                .entry(cell_of(lat, lon))
                .or_default()
                .push(Arc::clone(name));
            len += 1;
            let b = bounds.get_or_insert([lat, lon, lat, lon]);
            *b = [b[0].min(lat), b[1].min(lon), b[2].max(lat), b[3].max(lon)];
        }
        Index { cells, len, bounds }
    }

    /// South, west, north, east of every unicorn indexed (for a "fit the fleet" button of a
    /// client that holds only its view), if any.
    pub fn bounds(&self) -> Option<[f64; 4]> {
        self.bounds
    }

    /// Unicorns indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The occupied cells the view overlaps, with their keys: by looking up the view's cells,
    /// or by a pass over the occupied ones when the view spans more cells than are occupied.
    fn cells_in<'a>(&'a self, view: &View) -> Vec<(Cell, &'a [Arc<str>])> {
        let (r0, c0) = cell_of(view.south, view.west);
        let (r1, c1) = cell_of(view.north, view.east);
        let cols: Vec<(i32, i32)> = if c0 <= c1 {
            vec![(c0, c1)]
        } else {
            let (_, last) = cell_of(0.0, 180.0);
            let (_, first) = cell_of(0.0, -180.0);
            vec![(c0, last), (first, c1)]
        };
        let width: i64 = cols.iter().map(|(a, b)| i64::from(b - a) + 1).sum();
        let spanned = (i64::from(r1 - r0) + 1).saturating_mul(width);
        let in_cols = |c: i32| cols.iter().any(|(a, b)| (*a..=*b).contains(&c));
        if spanned > self.cells.len() as i64 {
            self.cells
                .iter()
                .filter(|((r, c), _)| (r0..=r1).contains(r) && in_cols(*c))
                .map(|(k, v)| (*k, v.as_slice()))
                .collect()
        } else {
            let mut out = Vec::new();
            for r in r0..=r1 {
                for &(a, b) in &cols {
                    for c in a..=b {
                        if let Some(v) = self.cells.get(&(r, c)) {
                            out.push(((r, c), v.as_slice()));
                        }
                    }
                }
            }
            out
        }
    }

    /// The unicorns indexed in cells the view overlaps (a superset of those in it: the caller
    /// checks positions).
    pub fn candidates<'a>(&'a self, view: &View) -> impl Iterator<Item = &'a Arc<str>> {
        self.cells_in(view).into_iter().flat_map(|(_, v)| v.iter())
    }

    /// Counts per cell in the view, cells sized so that the longer side has at most 48:
    /// (cell size in degrees, `[latitude, longitude, count]` per occupied cell, at the
    /// count-weighted middle of its members' index cells).
    pub fn density(&self, view: &View) -> (f64, Vec<(f64, f64, u64)>) {
        let (lat_span, lon_span) = view.spans();
        let step = nice_step(lat_span.max(lon_span) / DENSITY_CELLS).max(CELL_DEG);
        let mut coarse: HashMap<(i64, i64), (f64, f64, u64)> = HashMap::new();
        for ((r, c), names) in self.cells_in(view) {
            let lat = (f64::from(r) + 0.5) * CELL_DEG;
            let lon = (f64::from(c) + 0.5) * CELL_DEG;
            let n = names.len() as u64;
            let key = ((lat / step).floor() as i64, (lon / step).floor() as i64);
            let e = coarse.entry(key).or_insert((0.0, 0.0, 0));
            e.0 += lat * n as f64;
            e.1 += lon * n as f64;
            e.2 += n;
        }
        let mut cells: Vec<(f64, f64, u64)> = coarse
            .into_values()
            .map(|(lat, lon, n)| (lat / n as f64, lon / n as f64, n))
            .collect();
        cells.sort_by(|a, b| {
            b.2.cmp(&a.2)
                .then(a.0.total_cmp(&b.0))
                .then(a.1.total_cmp(&b.1))
        });
        (step, cells)
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_parse_and_check() {
        assert_eq!(
            View::parse_query("40.7,-74.05,40.8,-73.9"),
            Some(View {
                south: 40.7,
                west: -74.05,
                north: 40.8,
                east: -73.9
            })
        );
        for bad in [
            "",
            "1,2,3",
            "1,2,3,4,5",
            "91,0,92,1",
            "10,0,5,1",
            "0,-181,1,0",
            "0,0,1,NaN",
        ] {
            assert_eq!(View::parse_query(bad), None, "{bad}");
        }
        let m = r#"{"type":"viewport","south":-10,"west":170,"north":10,"east":-170}"#;
        let across = View::from_message(m).unwrap();
        assert!(across.contains(0.0, 175.0) && across.contains(0.0, -175.0));
        assert!(!across.contains(0.0, 0.0) && !across.contains(20.0, 175.0));
        assert_eq!(View::from_message(r#"{"type":"other"}"#), None);
        assert_eq!(View::from_message("not json"), None);
    }

    #[test]
    fn the_index_finds_who_is_in_a_view_and_counts_cells() {
        let names: Vec<Arc<str>> = (0..1_000).map(|i| Arc::from(format!("u{i}"))).collect();
        // 1,000 unicorns on a 0.1° grid around New York, and one on each side of the antimeridian.
        let mut at: Vec<(f64, f64)> = (0..1_000)
            .map(|i| {
                (
                    40.0 + f64::from(i % 40) * 0.05,
                    -75.0 + f64::from(i / 40) * 0.1,
                )
            })
            .collect();
        at[998] = (0.0, 179.995);
        at[999] = (0.0, -179.995);
        let index = Index::build(names.iter().zip(&at).map(|(n, (a, o))| (n, *a, *o)));
        assert_eq!(index.len(), 1_000);
        for view in [
            View {
                south: 40.2,
                west: -74.0,
                north: 41.0,
                east: -73.0,
            },
            View {
                south: -1.0,
                west: 179.0,
                north: 1.0,
                east: -179.0,
            },
            View {
                south: -90.0,
                west: -180.0,
                north: 90.0,
                east: 180.0,
            },
        ] {
            let want: Vec<&str> = names
                .iter()
                .zip(&at)
                .filter(|(_, (a, o))| view.contains(*a, *o))
                .map(|(n, _)| &**n)
                .collect();
            let mut got: Vec<&str> = index
                .candidates(&view)
                .filter(|n| {
                    let i: usize = n[1..].parse().unwrap();
                    view.contains(at[i].0, at[i].1)
                })
                .map(|n| &**n)
                .collect();
            got.sort_unstable();
            let mut want = want;
            want.sort_unstable();
            assert_eq!(got, want, "{view:?}");
            let (step, cells) = index.density(&view);
            assert!(step >= CELL_DEG);
            let counted: u64 = cells.iter().map(|c| c.2).sum();
            assert!(
                counted as usize >= want.len(),
                "{view:?}: counts cover the view"
            );
        }
        let world = View {
            south: -90.0,
            west: -180.0,
            north: 90.0,
            east: 180.0,
        };
        let (step, cells) = index.density(&world);
        assert_eq!(step, 10.0);
        assert_eq!(cells.iter().map(|c| c.2).sum::<u64>(), 1_000);
    }
}
