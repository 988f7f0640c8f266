//! Viewport subscriptions: a browser says which part of the map it shows, and the hub sends it
//! full records only for the unicorns there while they are at most [`MAX_IN_VIEW`], and counts
//! per cell otherwise, so a browser's cost stays flat from a thousand unicorns to a million.
//!
//! The hub keeps a [`Grid`] of where every unicorn is, cells of [`CELL_DEG`] degrees, kept
//! as records arrive, so "who is in this view" and "how many" visit the cells the view covers,
//! not the fleet.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

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

/// Where a unicorn is in the [`Grid`]: its cell, and its slot among the cell's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Place {
    cell: Cell,
    slot: u32,
}

/// Every live unicorn by cell, kept as records arrive: a record that stays in its cell (nearly
/// all: a cell is a kilometre, a unicorn flies 30 m a second) costs a comparison; one that
/// crosses into another moves its name, in constant time. So "who is in this view" and "how
/// many" visit the cells the view covers, never the fleet, and nothing is rebuilt.
#[derive(Default)]
pub struct Grid {
    cells: HashMap<Cell, Vec<Arc<str>>, RandomState>,
    len: usize,
    /// South, west, north, east of the occupied cells, as of the last [`Grid::refresh`].
    bounds: Option<[f64; 4]>,
}

impl Grid {
    /// Puts `name` at a position; where it went.
    pub fn insert(&mut self, name: &Arc<str>, lat: f64, lon: f64) -> Place {
        let cell = cell_of(lat, lon);
        let names = self.cells.entry(cell).or_default();
        names.push(Arc::clone(name));
        self.len += 1;
        Place {
            cell,
            slot: u32::try_from(names.len() - 1).unwrap_or(u32::MAX),
        }
    }

    /// Takes out the name at `place`. The cell's last name fills the gap: when that happens, it
    /// is returned with its new slot, for the caller to note.
    pub fn remove(&mut self, place: Place) -> Option<(Arc<str>, Place)> {
        let names = self.cells.get_mut(&place.cell)?;
        let slot = place.slot as usize;
        if slot >= names.len() {
            return None;
        }
        names.swap_remove(slot);
        self.len -= 1;
        if names.is_empty() {
            self.cells.remove(&place.cell);
            return None;
        }
        names.get(slot).map(|moved| (Arc::clone(moved), place))
    }

    /// Whether a position is still in `place`'s cell (so nothing needs to move).
    pub fn holds(place: Place, lat: f64, lon: f64) -> bool {
        place.cell == cell_of(lat, lon)
    }

    /// Once a second: the bounds of the fleet again, and memory back from a grid that shrank.
    pub fn refresh(&mut self) {
        let mut bounds: Option<[f64; 4]> = None;
        for &(r, c) in self.cells.keys() {
            let (s, w) = (f64::from(r) * CELL_DEG, f64::from(c) * CELL_DEG);
            let (n, e) = (s + CELL_DEG, w + CELL_DEG);
            let b = bounds.get_or_insert([s, w, n, e]);
            *b = [b[0].min(s), b[1].min(w), b[2].max(n), b[3].max(e)];
        }
        self.bounds = bounds.map(|b| {
            [
                b[0].max(-90.0),
                b[1].max(-180.0),
                b[2].min(90.0),
                b[3].min(180.0),
            ]
        });
        if self.cells.capacity() > 4 * self.cells.len().max(1_024) {
            self.cells.shrink_to(2 * self.cells.len());
        }
    }

    /// South, west, north, east of every unicorn (to the nearest cell, as of the last
    /// [`Grid::refresh`]; for a "fit the fleet" button of a client that holds only its view),
    /// if any.
    pub fn bounds(&self) -> Option<[f64; 4]> {
        self.bounds
    }

    /// The name at `place` (tests check places stay true).
    #[cfg(test)]
    fn at(&self, place: Place) -> Option<&Arc<str>> {
        self.cells.get(&place.cell)?.get(place.slot as usize)
    }

    /// Unicorns in the grid.
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

    /// The unicorns in cells the view overlaps (a superset of those in it: the caller checks
    /// positions).
    pub fn candidates<'a>(&'a self, view: &View) -> impl Iterator<Item = &'a Arc<str>> {
        self.cells_in(view).into_iter().flat_map(|(_, v)| v.iter())
    }

    /// How many unicorns are in cells the view overlaps: at least those in it, and more by at
    /// most a cell's width around its edge. Whether a view gets records or counts goes by this.
    pub fn count_in(&self, view: &View) -> usize {
        self.cells_in(view).iter().map(|(_, v)| v.len()).sum()
    }

    /// Counts per cell in the view, cells sized so that the longer side has at most 48:
    /// (cell size in degrees, `[latitude, longitude, count]` per occupied cell, at the
    /// count-weighted middle of its members' grid cells).
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
    fn the_grid_finds_who_is_in_a_view_and_counts_cells_as_unicorns_move_and_leave() {
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
        let mut grid = Grid::default();
        let mut places: Vec<Option<Place>> = names
            .iter()
            .zip(&at)
            .map(|(n, (a, o))| Some(grid.insert(n, *a, *o)))
            .collect();
        // As the hub does: a removal may move another name into the gap.
        let take_out = |grid: &mut Grid, places: &mut Vec<Option<Place>>, i: usize| {
            let place = places[i].take().unwrap();
            assert_eq!(grid.at(place).map(|n| &**n), Some(&*names[i]));
            if let Some((moved, to)) = grid.remove(place) {
                places[moved[1..].parse::<usize>().unwrap()] = Some(to);
            }
        };
        // Every third flies 0.3° north-east (into another cell); every seventh leaves.
        for i in (0..998).step_by(3) {
            take_out(&mut grid, &mut places, i);
            at[i] = (at[i].0 + 0.3, at[i].1 + 0.3);
            places[i] = Some(grid.insert(&names[i], at[i].0, at[i].1));
        }
        for i in (0..998).step_by(7) {
            take_out(&mut grid, &mut places, i);
        }
        let alive = |i: usize| places[i].is_some();
        assert_eq!(grid.len(), (0..1_000).filter(|&i| alive(i)).count());
        grid.refresh();
        let b = grid.bounds().unwrap();
        assert!(
            b[0] <= 0.0 && b[1] <= -179.99 && b[2] >= 42.25 && b[3] >= 179.99,
            "{b:?}"
        );
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
            let mut want: Vec<&str> = (0..1_000)
                .filter(|&i| alive(i) && view.contains(at[i].0, at[i].1))
                .map(|i| &*names[i])
                .collect();
            let mut got: Vec<&str> = grid
                .candidates(&view)
                .filter(|n| {
                    let i: usize = n[1..].parse().unwrap();
                    view.contains(at[i].0, at[i].1)
                })
                .map(|n| &**n)
                .collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "{view:?}");
            assert!(grid.count_in(&view) >= want.len(), "{view:?}");
            let (step, cells) = grid.density(&view);
            assert!(step >= CELL_DEG);
            let counted: u64 = cells.iter().map(|c| c.2).sum();
            assert_eq!(counted as usize, grid.count_in(&view), "{view:?}");
        }
        let world = View {
            south: -90.0,
            west: -180.0,
            north: 90.0,
            east: 180.0,
        };
        let (step, cells) = grid.density(&world);
        assert_eq!(step, 10.0);
        assert_eq!(cells.iter().map(|c| c.2).sum::<u64>() as usize, grid.len());
        // Every place still names its unicorn: all of them leave, and the grid is empty.
        for i in 0..1_000 {
            if places[i].is_some() {
                take_out(&mut grid, &mut places, i);
            }
        }
        assert!(grid.is_empty() && grid.cells.is_empty());
    }
}
