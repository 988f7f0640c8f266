//! Live state and fan-out: the latest record and summary of every unicorn, and the frames of
//! CONTRACT §5 for every WebSocket client.
//!
//! Sits after the window engine. Engine tasks send conflated telemetry (the latest record of each
//! unicorn that changed) and summaries through a bounded channel; the hub merges them, and at
//! most ten times a second serialises one telemetry frame, once, for all clients. Every client
//! has its own queue of shared frames, bounded in frames and in bytes; the hub never waits on
//! it. A client whose queue is full is dropped from the fan-out and flagged; its task then
//! resubscribes and gets a fresh snapshot (conflation), so a slow browser costs nothing and
//! holds at most its queue's bound. (A broadcast ring would not do: a minute's close sends one
//! summary frame per unicorn in a burst, and a ring big enough for that would hold hundreds of
//! large telemetry frames.)
//!
//! A client may subscribe to a view (part of the map, [`view`]): it then gets records only of
//! the unicorns in it, and counts per cell when they are too many.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

mod fleet;
mod frames;
pub mod table;
mod task;
pub mod view;

pub use fleet::LiveKey;
use frames::{snapshot, sorted, write_area, write_bounds, write_unicorns};

use fleet::Fleet;
use table::{ByName, Names, TableQuery};
use view::{Grid, Place, View, MAX_IN_VIEW};

use crate::alert::{Change, State as AlertState};
use crate::metrics::METRICS;
use crate::record::{write_f64, write_json_string, Summary, Telemetry};
use crate::time::{now_ms, write_status_time, Millis};

const FRAME_EVERY: Duration = Duration::from_millis(100);

/// Summaries taken in at a time between frames ([`State::take_summaries`]).
const SUMMARIES_AT_ONCE: usize = 10_000;

/// More unicorns than this falling silent in one sweep resynchronise the clients instead of
/// sending a frame per name.
const MAX_SILENT_FRAMES: usize = 1_000;

/// One serialised JSON text frame, shared by every client (a reference-counted buffer, already
/// known to be UTF-8, so sending it to a thousand clients copies and checks nothing).
pub type Frame = Utf8Bytes;

/// The latest record of one unicorn, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRecord {
    /// The unicorn (shared: the engine task keeps one per unicorn).
    pub name: Arc<str>,
    /// Event time.
    pub status_time: Millis,
    /// Degrees.
    pub latitude: f64,
    /// Degrees.
    pub longitude: f64,
    /// Metres since the previous record.
    pub distance: f64,
    /// Health.
    pub health_points: i64,
    /// Magic.
    pub magic_points: i64,
    /// Carried through (shared while it does not change).
    pub input_data: Option<Arc<str>>,
    /// Its engine and its id there: how the hub finds it fast ([`LiveKey::NONE`]: by name).
    pub key: LiveKey,
}

impl LiveRecord {
    fn write_json(&self, out: &mut String, last_seen: Millis) {
        let t = Telemetry {
            name: self.name.as_ref().into(),
            status_time: self.status_time,
            latitude: self.latitude,
            longitude: self.longitude,
            distance: self.distance,
            health_points: self.health_points,
            magic_points: self.magic_points,
            input_data: self.input_data.as_deref().map(Into::into),
        };
        t.write_json(out);
        out.pop();
        out.push_str(",\"LastSeen\":\"");
        write_status_time(out, last_seen);
        out.push_str("\"}");
    }
}

/// What the hub receives.
pub enum HubInput {
    /// Latest records of unicorns that sent something.
    Telemetry(Vec<LiveRecord>),
    /// Emitted summaries (first emissions and restatements).
    Summaries(Arc<[Summary]>),
    /// A (re)connecting client, of the whole fleet or of a view: its snapshot and its queue,
    /// taken at the same instant.
    Subscribe(oneshot::Sender<LiveSubscription>, Option<View>),
    /// A client's new view: a snapshot of it follows in its queue.
    View {
        /// [`LiveSubscription::id`].
        id: u64,
        /// What it shows now.
        view: View,
    },
    /// `GET /api/unicorns`: the live fleet, or a page of it, as a JSON array.
    Unicorns(
        Option<TableQuery>,
        oneshot::Sender<Result<UnicornList, TableBusy>>,
    ),
    /// Alert state changes of a partition, in order; `notified: false` for the firing alerts
    /// a partition resumed from its checkpoint (shown, not news).
    Alerts {
        /// The partition they come from.
        partition: Arc<str>,
        /// The changes.
        changes: Arc<[Change]>,
        /// Whether these are changes (`true`) or restored state.
        notified: bool,
    },
    /// A partition left this instance: its firing alerts are the next owner's to show.
    Released(Arc<str>),
    /// `GET /api/alerts`: firing now or the recent changes, as a JSON array.
    AlertList(AlertQuery, oneshot::Sender<Bytes>),
    /// The continuous views a client wants rows of, replacing those it wanted.
    Views {
        /// [`LiveSubscription::id`].
        id: u64,
        /// The views' names.
        views: Vec<Arc<str>>,
    },
    /// Rows of a view (CONTRACT §9) written or restated, as JSON.
    ViewRows {
        /// The view.
        view: Arc<str>,
        /// Its rows.
        rows: Arc<[String]>,
    },
}

/// `GET /api/unicorns`' answer.
pub struct UnicornList {
    /// Unicorns matching the search (all of them without one).
    pub total: usize,
    /// The JSON array of the page's (or every) unicorn.
    pub body: Bytes,
}

#[cfg(test)]
impl Unicorn {
    /// A unicorn named `name` with health `health`, at 0°, 0° (tests of the fleet and table).
    fn sample(name: &Arc<str>, health: i64) -> Unicorn {
        Unicorn {
            record: LiveRecord {
                name: Arc::clone(name),
                status_time: 0,
                latitude: 0.0,
                longitude: 0.0,
                distance: 0.0,
                health_points: health,
                magic_points: 0,
                input_data: None,
                key: LiveKey::NONE,
            },
            seen: Instant::now(),
            seen_ms: 0,
            summary: None,
            pending: false,
            place: Place::default(),
        }
    }
}

/// `GET /api/unicorns` has had its share of the hub this second ([`HubSettings::table_budget`]).
#[derive(Debug)]
pub struct TableBusy;

/// The hub's time per second that `GET /api/unicorns` may take: a page of a million-strong
/// fleet costs up to ~50 ms, during which no frame goes out, so a crowd of tables asking at once
/// is told to come back rather than stall the live feed.
pub const TABLE_BUDGET: Duration = Duration::from_millis(250);

/// What `GET /api/alerts` asks for.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    /// Every recent change (`state=all`) rather than the firing alerts.
    pub all: bool,
    /// Only this unicorn's.
    pub name: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Firing alerts by (rule, unicorn), with the partition that owns each.
type Firing = HashMap<(Arc<str>, String), (Arc<str>, Change)>;

/// Changes the hub remembers for `GET /api/alerts?state=all`, newest kept.
pub const RECENT_ALERTS: usize = 10_000;

/// One client's view: the fleet as of subscribing, then every frame since.
pub struct LiveSubscription {
    /// Names the client to the hub ([`Hub::set_view`]).
    pub id: u64,
    /// The snapshot frame.
    pub snapshot: Frame,
    /// Frames after the snapshot.
    pub frames: mpsc::Receiver<Frame>,
    /// Bytes waiting in `frames`; the client subtracts what it takes.
    pub queued: Arc<AtomicUsize>,
    /// Set when the queue overflowed: resubscribe instead of reading on.
    pub lagged: Arc<AtomicBool>,
}

struct Client {
    id: u64,
    tx: mpsc::Sender<Frame>,
    queued: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
    /// `None`: the whole fleet.
    view: Option<ClientView>,
    /// The continuous views whose rows it asked for (CONTRACT §9).
    views: Vec<Arc<str>>,
}

struct ClientView {
    view: View,
    /// At most [`MAX_IN_VIEW`] in view at the last look: records; otherwise counts.
    records: bool,
}

/// How the hub treats clients and silent unicorns.
#[derive(Debug, Clone, Copy)]
pub struct HubSettings {
    /// Frames a client may fall behind before it is resynchronised.
    pub queue_frames: usize,
    /// Bytes of frames a client may fall behind before it is resynchronised.
    pub queue_bytes: usize,
    /// A unicorn not heard from this long leaves the live fleet.
    pub silent_after: Duration,
    /// The hub's time per second `GET /api/unicorns` may take ([`TABLE_BUDGET`]).
    pub table_budget: Duration,
}

/// A handle to the running hub.
#[derive(Clone)]
pub struct Hub {
    tx: mpsc::Sender<HubInput>,
}

impl Hub {
    /// Starts the hub task. It ends when `stop` fires, after taking in what was already sent
    /// (the engine's last summaries), and sends the last telemetry frame on its way out.
    pub fn start(
        settings: HubSettings,
        stop: CancellationToken,
    ) -> (Hub, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1_024);
        let task = tokio::spawn(task::run(rx, settings, stop));
        (Hub { tx }, task)
    }

    /// [`Hub::start`] on a thread of its own (the service's way): the hub wakes for its frames
    /// as the operating system schedules a thread, not behind every request and engine task
    /// queued on the service's runtime. At a million unicorns a second those kept a frame
    /// waiting 0.3–0.6 s; a thread that sleeps between frames is run as soon as it wakes.
    ///
    /// # Errors
    /// The thread or its runtime could not be started.
    pub fn start_on_own_thread(
        settings: HubSettings,
        stop: CancellationToken,
    ) -> std::io::Result<(Hub, tokio::task::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(1_024);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let (done, ended) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("stampede-hub".into())
            .spawn(move || {
                runtime.block_on(task::run(rx, settings, stop));
                let _ = done.send(());
            })?;
        let task = tokio::spawn(async move {
            // The sender is dropped unsent only when the hub panicked.
            assert!(ended.await.is_ok(), "the hub's thread panicked");
        });
        Ok((Hub { tx }, task))
    }

    /// For engine tasks: where to send telemetry and summaries.
    pub fn input(&self) -> mpsc::Sender<HubInput> {
        self.tx.clone()
    }

    /// A snapshot and the frames after it, of the whole fleet or of `view`; `None` once the
    /// hub has stopped.
    pub async fn subscribe(&self, view: Option<View>) -> Option<LiveSubscription> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(HubInput::Subscribe(tx, view)).await.ok()?;
        rx.await.ok()
    }

    /// Client `id` shows `view` now: a snapshot of it follows in its queue. `false` once the
    /// hub has stopped.
    pub async fn set_view(&self, id: u64, view: View) -> bool {
        self.tx.send(HubInput::View { id, view }).await.is_ok()
    }

    /// Client `id` wants the rows of `views` as they are written (and no other view's); false
    /// once the hub has stopped.
    pub async fn set_views(&self, id: u64, views: Vec<Arc<str>>) -> bool {
        self.tx.send(HubInput::Views { id, views }).await.is_ok()
    }

    /// Firing alerts or recent changes (see [`AlertQuery`]) as a JSON array; `None` once the
    /// hub has stopped.
    pub async fn alerts(&self, query: AlertQuery) -> Option<Bytes> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(HubInput::AlertList(query, tx)).await.ok()?;
        rx.await.ok()
    }

    /// The live fleet in natural order of names, or the page `query` asks for, as a JSON
    /// array, unless tables have had their budget this second; `None` once the hub
    /// has stopped.
    pub async fn unicorns(
        &self,
        query: Option<TableQuery>,
    ) -> Option<Result<UnicornList, TableBusy>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(HubInput::Unicorns(query, tx)).await.ok()?;
        rx.await.ok()
    }
}

struct Unicorn {
    record: LiveRecord,
    /// Wall time the hub last heard of it.
    seen: Instant,
    seen_ms: Millis,
    /// Boxed: most of a big fleet's table scans read the record only, and a summary is as big
    /// as the rest of the entry.
    summary: Option<Box<Summary>>,
    /// Listed in `State::pending`.
    pending: bool,
    /// Where it is in `State::grid`.
    place: Place,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(name: &str) -> LiveRecord {
        LiveRecord {
            name: name.into(),
            status_time: 1_521_343_200_000,
            latitude: 40.7,
            longitude: -73.9,
            distance: 1.0,
            health_points: 150,
            magic_points: 150,
            input_data: None,
            key: LiveKey::NONE,
        }
    }

    fn start() -> (Hub, CancellationToken) {
        start_with_table_budget(TABLE_BUDGET)
    }

    fn start_with_table_budget(table_budget: Duration) -> (Hub, CancellationToken) {
        let stop = CancellationToken::new();
        let settings = HubSettings {
            queue_frames: 16_384,
            queue_bytes: 64 << 20,
            silent_after: Duration::from_secs(30),
            table_budget,
        };
        let (hub, _task) = Hub::start(settings, stop.clone());
        (hub, stop)
    }

    /// Tables that have had the hub's budget this second are told to come back, and answered
    /// again after the next sweep. On real time: with the clock paused, the runtime jumps to the
    /// next sweep whenever it is idle, which could fall between the two requests.
    #[tokio::test]
    async fn tables_past_their_budget_are_told_to_come_back_the_next_second() {
        let (hub, stop) = start_with_table_budget(Duration::from_nanos(1));
        hub.input()
            .send(HubInput::Telemetry(vec![live("Arion")]))
            .await
            .unwrap();
        let first = hub.unicorns(None).await.unwrap().unwrap();
        let rows: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(
            (first.total, &rows[0]["Name"]),
            (1, &serde_json::json!("Arion"))
        );
        assert!(hub.unicorns(None).await.unwrap().is_err(), "over budget");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(hub.unicorns(None).await.unwrap().is_ok(), "a new second");
        stop.cancel();
    }

    /// A few unicorns falling silent get a frame each; a flood of them resynchronises the
    /// clients with one fresh snapshot instead of a frame per name.
    #[tokio::test(start_paused = true)]
    async fn silent_unicorns_leave_with_a_frame_each_or_a_flood_with_one_snapshot() {
        let (hub, stop) = start();
        let few: Vec<LiveRecord> = ["Arion", "Bucephalus"].map(live).into();
        hub.input().send(HubInput::Telemetry(few)).await.unwrap();
        let mut sub = hub.subscribe(None).await.unwrap();
        tokio::time::sleep(Duration::from_secs(32)).await;
        let mut silent = Vec::new();
        while silent.len() < 2 {
            let frame = sub.frames.recv().await.unwrap();
            if frame.as_str().contains("\"silent\"") {
                silent.push(frame.as_str().to_owned());
            }
        }
        silent.sort();
        assert_eq!(
            silent,
            [
                r#"{"type":"silent","name":"Arion"}"#,
                r#"{"type":"silent","name":"Bucephalus"}"#
            ]
        );
        assert!(!sub.lagged.load(Ordering::Relaxed));

        let flood: Vec<LiveRecord> = (0..MAX_SILENT_FRAMES + 1)
            .map(|i| live(&format!("flood-{i}")))
            .collect();
        hub.input().send(HubInput::Telemetry(flood)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(32)).await;
        let mut frames = 0;
        while let Some(frame) = sub.frames.recv().await {
            assert!(!frame.as_str().contains("\"silent\""), "{frame}");
            frames += 1;
        }
        assert!(
            frames <= 2,
            "the flood's telemetry, no silent frames: {frames}"
        );
        assert!(sub.lagged.load(Ordering::Relaxed), "told to resubscribe");
        let fresh = hub.subscribe(None).await.unwrap();
        assert_eq!(
            fresh.snapshot.as_str(),
            r#"{"type":"snapshot","unicorns":[],"summaries":[],"alerts":[]}"#
        );
        stop.cancel();
    }

    fn at(name: &str, lat: f64, lon: f64) -> LiveRecord {
        LiveRecord {
            latitude: lat,
            longitude: lon,
            ..live(name)
        }
    }

    fn frame_text(f: &Frame) -> serde_json::Value {
        serde_json::from_str(f.as_str()).unwrap()
    }

    fn names(v: &serde_json::Value, key: &str) -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// A minute's close of a big fleet is taken in slices: every summary still reaches a client
    /// of the whole fleet, in order, and the table has each unicorn's.
    #[tokio::test]
    async fn a_burst_of_summaries_is_taken_in_slices_and_loses_none() {
        let (hub, stop) = start();
        // Two slices, within a client's queue (16,384 frames here).
        let n = SUMMARIES_AT_ONCE + 5_000;
        let fleet: Vec<LiveRecord> = (0..n).map(|i| live(&format!("u{i}"))).collect();
        hub.input().send(HubInput::Telemetry(fleet)).await.unwrap();
        let mut everyone = hub.subscribe(None).await.unwrap();
        let burst: Arc<[Summary]> = (0..n).map(|i| Summary::sample(&format!("u{i}"))).collect();
        hub.input().send(HubInput::Summaries(burst)).await.unwrap();
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let f = frame_text(&everyone.frames.recv().await.unwrap());
            if f["type"] == "summary" {
                got.push(f["summary"]["Name"].as_str().unwrap().to_owned());
            }
        }
        let want: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
        assert_eq!(got, want);
        let page = hub.unicorns(None).await.unwrap().unwrap();
        let rows: serde_json::Value = serde_json::from_slice(&page.body).unwrap();
        let with_minute = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["MinuteDistance"].is_number())
            .count();
        assert_eq!(with_minute, n);
        stop.cancel();
    }

    /// Views are answered from where unicorns are now: one that flies into another cell is
    /// found there, and no longer where it was.
    #[tokio::test]
    async fn a_unicorn_that_flies_elsewhere_is_found_where_it_is_now() {
        let (hub, stop) = start();
        let input = hub.input();
        let fleet = vec![at("Pegasus", 42.36, -71.06), at("Brooklyn", 40.68, -73.95)];
        input.send(HubInput::Telemetry(fleet)).await.unwrap();
        let nyc = View::parse_query("40.6,-74.1,40.9,-73.8").unwrap();
        let boston = View::parse_query("42.2,-71.2,42.5,-70.9").unwrap();
        let in_view = |view| {
            let hub = hub.clone();
            async move {
                let sub = hub.subscribe(Some(view)).await.unwrap();
                names(&frame_text(&sub.snapshot), "unicorns")
            }
        };
        assert_eq!(in_view(nyc).await, ["Brooklyn"]);
        assert_eq!(in_view(boston).await, ["Pegasus"]);
        // Pegasus flies to Manhattan, Brooklyn a few metres (the same cell).
        let moved = vec![
            at("Pegasus", 40.75, -73.98),
            at("Brooklyn", 40.68001, -73.95),
        ];
        input.send(HubInput::Telemetry(moved)).await.unwrap();
        assert_eq!(in_view(nyc).await, ["Brooklyn", "Pegasus"]);
        assert!(in_view(boston).await.is_empty());
        // Back and forth across many cells, with others moving around it.
        for k in 0..50 {
            let lat = 40.0 + f64::from(k) * 0.05;
            let crowd = (0..20)
                .map(|i| at(&format!("c{i}"), lat + f64::from(i) * 0.02, -73.9))
                .chain([at("Pegasus", lat, -73.98)])
                .collect();
            input.send(HubInput::Telemetry(crowd)).await.unwrap();
        }
        let last = View::parse_query("42.4,-74.0,42.5,-73.92").unwrap();
        assert_eq!(in_view(last).await, ["Pegasus"]);
        stop.cancel();
    }

    /// A client of a view gets the records and summaries of the unicorns in it only, and a
    /// snapshot when it moves; past MAX_IN_VIEW it gets counts per cell instead; a client of the
    /// whole fleet still gets everything.
    #[tokio::test(start_paused = true)]
    async fn a_view_gets_what_is_in_it_and_counts_when_too_many() {
        let (hub, stop) = start();
        let input = hub.input();
        let fleet = vec![
            at("Manhattan", 40.75, -73.98),
            at("Brooklyn", 40.68, -73.95),
            at("London", 51.5, -0.12),
        ];
        input.send(HubInput::Telemetry(fleet)).await.unwrap();
        let nyc = View::parse_query("40.6,-74.1,40.9,-73.8").unwrap();
        let mut viewer = hub.subscribe(Some(nyc)).await.unwrap();
        let mut everyone = hub.subscribe(None).await.unwrap();
        let snap = frame_text(&viewer.snapshot);
        assert_eq!(names(&snap, "unicorns"), ["Brooklyn", "Manhattan"]);
        assert_eq!(
            (snap["view"].clone(), snap["total"].clone()),
            (true.into(), 3.into())
        );
        assert_eq!(names(&frame_text(&everyone.snapshot), "unicorns").len(), 3);

        // London and Manhattan report; the viewer hears of Manhattan only.
        let moved = vec![at("London", 51.51, -0.12), at("Manhattan", 40.76, -73.98)];
        input.send(HubInput::Telemetry(moved)).await.unwrap();
        // (The first frame also carries what was pending before they subscribed.)
        let got = names(&frame_text(&viewer.frames.recv().await.unwrap()), "records");
        assert!(got.contains(&"Manhattan".to_owned()), "{got:?}");
        assert!(!got.contains(&"London".to_owned()), "{got:?}");
        let all = names(
            &frame_text(&everyone.frames.recv().await.unwrap()),
            "records",
        );
        assert!(
            all.contains(&"London".to_owned()) && all.contains(&"Manhattan".to_owned()),
            "{all:?}"
        );
        // Summaries likewise.
        let sums: Arc<[Summary]> =
            vec![Summary::sample("London"), Summary::sample("Brooklyn")].into();
        input.send(HubInput::Summaries(sums)).await.unwrap();
        // London's came first, and is not the viewer's.
        let got = loop {
            let f = frame_text(&viewer.frames.recv().await.unwrap());
            if f["type"] == "summary" {
                break f;
            }
        };
        assert_eq!(got["summary"]["Name"], "Brooklyn");

        // Moving to London: a snapshot of London.
        let london = View::parse_query("51.3,-0.5,51.7,0.3").unwrap();
        assert!(hub.set_view(viewer.id, london).await);
        let snap = loop {
            let f = frame_text(&viewer.frames.recv().await.unwrap());
            if f["type"] == "snapshot" {
                break f;
            }
        };
        assert_eq!(names(&snap, "unicorns"), ["London"]);

        // A crowd in London, past MAX_IN_VIEW: counts per cell, no records.
        let crowd: Vec<LiveRecord> = (0..=MAX_IN_VIEW)
            .map(|i| {
                at(
                    &format!("c{i}"),
                    51.4 + (i % 100) as f64 * 0.001,
                    -0.2 + (i / 100) as f64 * 0.001,
                )
            })
            .collect();
        input.send(HubInput::Telemetry(crowd)).await.unwrap();
        // The sweep finds the view too full: counts, which add up to what is in it.
        let density = loop {
            let f = frame_text(&viewer.frames.recv().await.unwrap());
            if f["type"] == "density" {
                break f;
            }
        };
        let counted: u64 = density["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[2].as_u64().unwrap())
            .sum();
        assert_eq!(counted, MAX_IN_VIEW as u64 + 2, "the crowd and London");
        assert_eq!(density["total"], MAX_IN_VIEW + 4);
        // Records of the crowd no longer come to the viewer.
        input
            .send(HubInput::Telemetry(vec![at("c1", 51.41, -0.19)]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(f) = viewer.frames.try_recv() {
            assert_ne!(frame_text(&f)["type"], "telemetry", "{f}");
        }
        stop.cancel();
    }
}
