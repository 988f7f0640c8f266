//! Outputs: every stage after the window engine, fed through one fan-out.
//!
//! A partition's engine task hands its results to a [`Fanout`] and nothing else: summaries, dead
//! letters, the raw bytes of accepted records (for the outputs that keep them) and commit
//! barriers. Each *durable* output — the store ([`store`]: [`store::embedded`], or
//! [`store::dynamodb`] with [`store::dead_letters`]), the summary stream and the dead-letter
//! stream ([`stream`]: Kafka or Kinesis), the [`archive`] and the alert notifications
//! ([`notify`]) — is built by its own `build()` from its settings, says which items it wants,
//! and reads them in order from its own bounded channel (back pressure: a durable output that
//! falls behind slows the engines, it never drops). A [`Barrier`] is answered by an output once
//! everything it received before it is durable there; a durable source commits a position only
//! when every durable output has answered the barrier sent after it (see `pipeline`). The live
//! hub is the one output that is never waited for: it gets what it can take, by `try_send`.
//!
//! Adding a capability (alerts, the raw archive) means writing one more output with its
//! `build()`, and calling it from `app`: the engine, the sources and the other outputs do not
//! change.

pub mod archive;
mod health;
pub mod notify;
pub mod store;
pub mod stream;
pub mod views;

pub use health::{Backlog, Classify, ErrorKind, Health, LOG_PERMANENT_EVERY_MS, STALLED_AFTER_MS};

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::hub::{HubInput, LiveRecord};
use crate::metrics::METRICS;
use crate::record::{DeadLetter, Summary};
use crate::time::{now_ms, Millis};

/// Items an output channel holds before the engines wait.
pub const OUTPUT_QUEUE: usize = 256;

/// What a durable output receives, in the order each partition produced it.
#[derive(Debug)]
pub enum Item {
    /// Summaries emitted (first emissions and restatements), shared by every output, and when
    /// they were emitted (wall clock, ms: for the window-closed → stored latency).
    Summaries(Arc<[Summary]>, Millis),
    /// Rejected records.
    DeadLetters(Arc<[DeadLetter]>),
    /// The bytes of accepted records as received.
    Records(Arc<Records>),
    /// Alert state changes (CONTRACT §7), in the order the partition's records caused them.
    Alerts {
        /// The changes.
        changes: Arc<[crate::alert::Change]>,
        /// From a re-readable partition: a barrier will follow them (see `alert::notify`).
        covered: bool,
    },
    /// Partial rows of views' windows (CONTRACT §9) from one partition, for the views output
    /// to merge with the other partitions' into rows.
    Views {
        /// The partition they come from.
        partition: Arc<str>,
        /// Each view's partial rows.
        handed: Arc<[crate::view::step::Handed]>,
    },
    /// To answer once everything received before it is durable.
    Barrier(Barrier),
}

/// The accepted records of one batch, as received: for outputs that keep raw telemetry.
#[derive(Debug)]
pub struct Records {
    /// Source kind: `http`, `file`, `kafka`, `kinesis`.
    pub source: crate::record::SourceKind,
    /// Partition or shard.
    pub partition: Arc<str>,
    /// The bytes the records are cut from.
    pub payload: Bytes,
    /// One range per accepted record, in order.
    pub ranges: Vec<Range<usize>>,
    /// The source position of each accepted record.
    pub positions: Vec<u64>,
    /// The `StatusTime` of each accepted record (epoch ms).
    pub times: Vec<Millis>,
    /// Kinesis: the sequence number of each accepted record; empty for other sources.
    pub sequences: Vec<String>,
    /// Every record is a whole line of `payload` with no CR or LF in it (an NDJSON body with no
    /// CR, as its source found when it cut the lines).
    pub plain_lines: bool,
    /// The decoded fields of each accepted record when an output wants them
    /// ([`Interest::fields`]), else empty.
    pub fields: Vec<Fields>,
    /// With `fields`, the records' names back to back, each [`Fields::name_len`] bytes: copied
    /// while the record is at hand, so that the Parquet encoder need not read them back from
    /// records long out of the cache.
    pub names: Vec<u8>,
}

/// The decoded fields of one accepted record, for an output that keeps them typed (the Parquet
/// archive) so that it need not decode the record again (`StatusTime` is [`Records::times`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fields {
    /// The length of the (decoded) name, whose bytes follow the record before's in
    /// [`Records::names`].
    pub name_len: u32,
    /// The record has `InputData`: such a record, rare, is decoded again for it.
    pub input_data: bool,
    /// `Latitude`.
    pub latitude: f64,
    /// `Longitude`.
    pub longitude: f64,
    /// `Distance`.
    pub distance: f64,
    /// `HealthPoints`.
    pub health_points: i64,
    /// `MagicPoints`.
    pub magic_points: i64,
}

impl Fields {
    /// The fields of `record`, its name to be appended to [`Records::names`].
    pub fn of(record: &crate::record::Telemetry<'_>) -> Fields {
        Fields {
            // A name is at most MAX_NAME_BYTES.
            name_len: u32::try_from(record.name.len()).unwrap_or(u32::MAX),
            input_data: record.input_data.is_some(),
            latitude: record.latitude,
            longitude: record.longitude,
            distance: record.distance,
            health_points: record.health_points,
            magic_points: record.magic_points,
        }
    }
}

/// A request to say when everything received before it is durable. Dropping it unanswered means
/// the output gave up: the checkpoint behind it is not committed.
#[derive(Debug)]
pub struct Barrier {
    tx: oneshot::Sender<Answer>,
    /// The partition whose checkpoint waits for it.
    pub partition: Arc<str>,
    /// The partition is handing off or ending: an output holding items back (the alert
    /// notifier grouping changes) sends them now rather than at its next round.
    pub last: bool,
}

/// How an output answers a [`Barrier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Everything received before the barrier is durable: its checkpoint may be committed.
    Durable,
    /// Not a point this output can resume from (the archive: the barrier fell inside an object
    /// it wrote whole); a later barrier of the partition will be. Its checkpoint is skipped,
    /// quietly.
    Skip,
}

/// What a source holds for one output's answer to one barrier.
pub type Answered = oneshot::Receiver<Answer>;

impl Barrier {
    /// A barrier of `partition` and the receiver of its answer (the fan-out makes one per
    /// output; tests of an output make their own).
    pub fn new(partition: Arc<str>, last: bool) -> (Barrier, Answered) {
        let (tx, rx) = oneshot::channel();
        (
            Barrier {
                tx,
                partition,
                last,
            },
            rx,
        )
    }

    /// Everything received before this barrier is durable.
    pub fn done(self) {
        let _ = self.tx.send(Answer::Durable);
    }

    /// The checkpoint behind this barrier must not be committed, though nothing failed (see
    /// [`Answer::Skip`]).
    pub fn skip(self) {
        let _ = self.tx.send(Answer::Skip);
    }
}

/// Which items an output wants; the fan-out sends it nothing else (barriers always).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interest {
    /// Summaries.
    pub summaries: bool,
    /// Dead letters.
    pub dead_letters: bool,
    /// Raw accepted records.
    pub records: bool,
    /// With the raw records, their decoded fields ([`Records::fields`]).
    pub fields: bool,
    /// Alert state changes.
    pub alerts: bool,
    /// Views' partial rows.
    pub views: bool,
}

/// One registered durable output, as the fan-out sees it.
#[derive(Clone)]
struct Registered {
    name: &'static str,
    wants: Interest,
    tx: mpsc::Sender<Item>,
}

/// The engine tasks' handle on every output: clone one per partition.
#[derive(Clone)]
pub struct Fanout {
    durable: Arc<[Registered]>,
    live: Option<mpsc::Sender<HubInput>>,
    records: bool,
    fields: bool,
    backlog: Backlog,
}

impl Fanout {
    /// What waits for outputs that cannot write: sources take no more while it is full.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Whether some output keeps raw records (else the engine does not collect them).
    pub fn wants_records(&self) -> bool {
        self.records
    }

    /// Whether some output wants the raw records' decoded fields too ([`Records::fields`]).
    pub fn wants_fields(&self) -> bool {
        self.fields
    }

    /// Sends summaries to every output that wants them: the live hub if it has room, the
    /// durable outputs waiting while they are busy.
    pub async fn summaries(&self, summaries: Vec<Summary>) {
        let shared: Arc<[Summary]> = summaries.into();
        if let Some(live) = &self.live {
            if live
                .try_send(HubInput::Summaries(Arc::clone(&shared)))
                .is_err()
            {
                METRICS.hub_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let at = now_ms();
        self.send(|w| w.summaries, || Item::Summaries(Arc::clone(&shared), at))
            .await;
    }

    /// Sends dead letters to every output that wants them.
    pub async fn dead_letters(&self, dead: Vec<DeadLetter>) {
        let shared: Arc<[DeadLetter]> = dead.into();
        self.send(
            |w| w.dead_letters,
            || Item::DeadLetters(Arc::clone(&shared)),
        )
        .await;
    }

    /// Sends the alert state changes of partition `partition` to every output that wants them
    /// and to the live hub (waiting for room: changes are few, and the dashboard's list of firing
    /// alerts must not miss one).
    pub async fn alerts(
        &self,
        partition: &Arc<str>,
        changes: Vec<crate::alert::Change>,
        covered: bool,
    ) {
        let shared: Arc<[crate::alert::Change]> = changes.into();
        if let Some(live) = &self.live {
            let _ = live
                .send(HubInput::Alerts {
                    partition: Arc::clone(partition),
                    changes: Arc::clone(&shared),
                    notified: true,
                })
                .await;
        }
        self.send(
            |w| w.alerts,
            || Item::Alerts {
                changes: Arc::clone(&shared),
                covered,
            },
        )
        .await;
    }

    /// Tells the live hub what a partition resumed from its checkpoint holds as firing (shown,
    /// not notified again) or, with `None`, that the partition left this instance.
    pub async fn partition_alerts(
        &self,
        partition: &Arc<str>,
        firing: Option<Vec<crate::alert::Change>>,
    ) {
        if let Some(live) = &self.live {
            let input = match firing {
                Some(changes) => HubInput::Alerts {
                    partition: Arc::clone(partition),
                    changes: changes.into(),
                    notified: false,
                },
                None => HubInput::Released(Arc::clone(partition)),
            };
            let _ = live.send(input).await;
        }
    }

    /// Sends accepted raw records to every output that wants them.
    pub async fn records(&self, records: Records) {
        let shared = Arc::new(records);
        self.send(|w| w.records, || Item::Records(Arc::clone(&shared)))
            .await;
    }

    /// Sends the partial rows of views' windows from `partition` to every output that wants
    /// them.
    pub async fn views(&self, partition: &Arc<str>, handed: Vec<crate::view::step::Handed>) {
        if handed.is_empty() {
            return;
        }
        let shared: Arc<[crate::view::step::Handed]> = handed.into();
        self.send(
            |w| w.views,
            || Item::Views {
                partition: Arc::clone(partition),
                handed: Arc::clone(&shared),
            },
        )
        .await;
    }

    /// Hands the latest records of live unicorns to the hub, if it has room (never waits).
    pub fn live(&self, records: Vec<LiveRecord>) {
        if let Some(live) = &self.live {
            if live.try_send(HubInput::Telemetry(records)).is_err() {
                METRICS.hub_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends a barrier of `partition` to every durable output; each receiver resolves once that
    /// output has made everything before it durable, or closes if the output gave up. `last`: the
    /// partition's last one before it hands off or ends (see [`Barrier::last`]).
    pub async fn barrier(&self, partition: &Arc<str>, last: bool) -> Vec<Answered> {
        let mut answers = Vec::with_capacity(self.durable.len());
        for output in self.durable.iter() {
            let (barrier, rx) = Barrier::new(Arc::clone(partition), last);
            if output.tx.send(Item::Barrier(barrier)).await.is_err() {
                tracing::error!(
                    output = output.name,
                    "output gone: checkpoint not committed"
                );
            }
            answers.push(rx);
        }
        answers
    }

    async fn send(&self, wanted: impl Fn(Interest) -> bool, item: impl Fn() -> Item) {
        for output in self.durable.iter().filter(|o| wanted(o.wants)) {
            if output.tx.send(item()).await.is_err() {
                // Only during a failed shutdown: the output ended before its inputs.
                tracing::error!(output = output.name, "output gone: results not delivered");
            }
        }
    }
}

/// How long the outputs have, together, to finish what they were sent when the service stops;
/// past it, those still at work give up (what they had is re-read from the last commit). Well
/// inside the 30 s `main` gives the whole shutdown, so the steps after the outputs still run.
pub const CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// The set of outputs of a running service: built once in `app`, shut down in order.
pub struct Outputs {
    registered: Vec<Registered>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    health: Vec<(&'static str, Health)>,
    live: Option<mpsc::Sender<HubInput>>,
    give_up: tokio_util::sync::CancellationToken,
    /// Records received while a keeping output cannot write, at most (see [`Backlog`]).
    unwritten: u64,
}

impl Outputs {
    /// No outputs yet; `live` is the hub's input, if there is a hub.
    pub fn new(live: Option<mpsc::Sender<HubInput>>) -> Outputs {
        Outputs {
            registered: Vec::new(),
            tasks: Vec::new(),
            health: Vec::new(),
            live,
            give_up: tokio_util::sync::CancellationToken::new(),
            unwritten: u64::MAX,
        }
    }

    /// Sources take no more once `records` were received while an output that keeps them
    /// cannot write (`web.max_unwritten_records`; unbounded until set).
    pub fn limit_unwritten(&mut self, records: u64) {
        self.unwritten = records;
    }

    /// Fires when shutdown passes its deadline: an output that retries in a loop of its own (on
    /// a thread, where it cannot be aborted) stops retrying then.
    pub fn give_up(&self) -> tokio_util::sync::CancellationToken {
        self.give_up.clone()
    }

    /// Registers a durable output named `name` (for logs and `/readyz`) that wants `wants`;
    /// returns the channel its task reads. Register its task with [`Outputs::run`].
    pub fn add(&mut self, name: &'static str, wants: Interest) -> mpsc::Receiver<Item> {
        let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
        self.registered.push(Registered { name, wants, tx });
        rx
    }

    /// The task of output `name`, awaited at shutdown once its input has closed, and its health.
    pub fn run(&mut self, name: &'static str, task: JoinHandle<()>, health: Health) {
        self.tasks.push((name, task));
        self.health.push((name, health));
    }

    /// Each output's name and health, for `/readyz`.
    pub fn health(&self) -> Vec<(&'static str, Health)> {
        self.health.clone()
    }

    /// What waits for the outputs that keep what is received (all but alerts-only ones), full
    /// at [`Outputs::limit_unwritten`] records (see [`Backlog`]).
    fn backlog(&self) -> Backlog {
        let keepers = self
            .registered
            .iter()
            .filter(|r| {
                r.wants
                    != Interest {
                        alerts: true,
                        ..Interest::default()
                    }
            })
            .filter_map(|r| {
                let (_, health) = self.health.iter().find(|(name, _)| *name == r.name)?;
                Some((r.name, health.clone()))
            })
            .collect();
        Backlog::new(keepers, self.unwritten)
    }

    /// The handle the engine tasks send through.
    pub fn fanout(&self) -> Fanout {
        Fanout {
            durable: self.registered.clone().into(),
            live: self.live.clone(),
            records: self.registered.iter().any(|r| r.wants.records),
            fields: self.registered.iter().any(|r| r.wants.fields),
            backlog: self.backlog(),
        }
    }

    /// Closes the outputs' inputs (once every [`Fanout`] is dropped too) and waits for each
    /// output to finish what it was sent, in the order they were registered, all within
    /// `deadline`: past it, the outputs still at work give up (and are stopped), so that a
    /// stalled one never holds the shutdown. Every output is waited for even when one fails;
    /// the error names those that did.
    ///
    /// # Errors
    /// An output's task panicked, or did not finish in time.
    pub async fn close(self, deadline: std::time::Duration) -> anyhow::Result<()> {
        drop(self.registered);
        drop(self.live);
        let until = tokio::time::Instant::now() + deadline;
        let mut failed = Vec::new();
        for (name, mut task) in self.tasks {
            tracing::info!(output = name, "stopping: output");
            let done = match tokio::time::timeout_at(until, &mut task).await {
                Ok(done) => done,
                Err(_) => {
                    tracing::error!(output = name, secs = deadline.as_secs(), "output did not finish in time; stopping it (what it had is re-read from the last commit)");
                    self.give_up.cancel();
                    let grace = std::time::Duration::from_secs(3);
                    match tokio::time::timeout(grace, &mut task).await {
                        Ok(_) => {}
                        Err(_) => task.abort(),
                    }
                    failed.push(format!(
                        "{name} (did not finish within {} s)",
                        deadline.as_secs()
                    ));
                    continue;
                }
            };
            if done.is_err() {
                failed.push(name.to_owned());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("outputs failed while stopping: {}", failed.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn summary(name: &str) -> Summary {
        Summary::sample(name)
    }

    fn dead() -> DeadLetter {
        DeadLetter {
            reason: crate::record::RejectReason::MalformedJson,
            field: None,
            source: crate::record::SourceKind::Http,
            partition: "0".into(),
            position: 3,
            at: 0,
            raw: b"{".to_vec(),
        }
    }

    #[tokio::test]
    async fn each_output_gets_what_it_wants_in_order_and_every_barrier() {
        let (hub_tx, mut hub_rx) = mpsc::channel(8);
        let mut outputs = Outputs::new(Some(hub_tx));
        let mut store = outputs.add(
            "store",
            Interest {
                summaries: true,
                dead_letters: true,
                ..Interest::default()
            },
        );
        let mut dlq = outputs.add(
            "dead_letter_stream",
            Interest {
                dead_letters: true,
                ..Interest::default()
            },
        );
        let fanout = outputs.fanout();
        assert!(!fanout.wants_records());
        fanout.summaries(vec![summary("a")]).await;
        fanout.dead_letters(vec![dead()]).await;
        let answers = fanout.barrier(&"0".into(), false).await;
        assert_eq!(answers.len(), 2, "one barrier per durable output");

        let kinds = |rx: &mut mpsc::Receiver<Item>| {
            let mut kinds = Vec::new();
            let mut barrier = None;
            while let Ok(item) = rx.try_recv() {
                kinds.push(match item {
                    Item::Summaries(s, _) => format!("summaries:{}", s[0].name),
                    Item::DeadLetters(d) => format!("dead:{}", d[0].position),
                    Item::Records(_) => "records".to_owned(),
                    Item::Alerts { .. } => "alerts".to_owned(),
                    Item::Views { .. } => "views".to_owned(),
                    Item::Barrier(b) => {
                        barrier = Some(b);
                        "barrier".to_owned()
                    }
                });
            }
            (kinds, barrier)
        };
        let (store_kinds, store_barrier) = kinds(&mut store);
        assert_eq!(store_kinds, ["summaries:a", "dead:3", "barrier"]);
        let (dlq_kinds, dlq_barrier) = kinds(&mut dlq);
        assert_eq!(dlq_kinds, ["dead:3", "barrier"], "no summaries to the DLQ");
        assert!(matches!(hub_rx.try_recv(), Ok(HubInput::Summaries(_))));

        // The checkpoint waits for both: one answered, one dropped (gave up).
        let mut answers = answers.into_iter();
        let (first, second) = (answers.next().unwrap(), answers.next().unwrap());
        store_barrier.unwrap().done();
        drop(dlq_barrier);
        assert_eq!(first.await, Ok(Answer::Durable));
        assert!(second.await.is_err(), "a dropped barrier is not an answer");
    }

    #[tokio::test]
    async fn records_go_only_to_outputs_that_want_them() {
        let mut outputs = Outputs::new(None);
        let mut archive = outputs.add(
            "archive",
            Interest {
                records: true,
                ..Interest::default()
            },
        );
        let mut store = outputs.add(
            "store",
            Interest {
                summaries: true,
                ..Interest::default()
            },
        );
        let fanout = outputs.fanout();
        assert!(fanout.wants_records());
        fanout
            .records(Records {
                source: crate::record::SourceKind::Http,
                partition: "0".into(),
                payload: Bytes::from_static(b"ab"),
                ranges: vec![0..1, 1..2],
                positions: vec![7, 8],
                times: vec![0, 0],
                sequences: Vec::new(),
                plain_lines: false,
                fields: Vec::new(),
                names: Vec::new(),
            })
            .await;
        assert!(matches!(archive.try_recv(), Ok(Item::Records(r)) if r.positions == [7, 8]));
        assert!(store.try_recv().is_err());
    }

    #[tokio::test]
    async fn close_waits_for_every_output_and_names_the_failed() {
        let mut outputs = Outputs::new(None);
        let mut rx = outputs.add("store", Interest::default());
        let drained = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        outputs.run("store", drained, Health::new("store"));
        let _rx = outputs.add("broken", Interest::default());
        outputs.run(
            "broken",
            tokio::spawn(async { panic!("output failed") }),
            Health::new("broken"),
        );
        drop(_rx);
        let err = outputs
            .close(std::time::Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken") && !err.contains("store"), "{err}");
    }

    /// Sources take no more once an output that keeps what is received has failed to write for
    /// as many records as the bound, and take again once it writes.
    #[test]
    fn the_backlog_fills_at_its_bound_of_records_received_since_an_output_stopped_writing() {
        // Counts of the process's own records: far from what other tests in the process add.
        const BOUND: u64 = 1 << 40;
        let store = Health::new("store");
        let alerts_only = Health::new("alerts");
        let backlog = Backlog::new(vec![("store", store.clone())], BOUND);
        METRICS.records_in.fetch_add(1_000, Ordering::Relaxed);
        assert_eq!(backlog.full(), None, "all write");
        assert_eq!(backlog.failing(), None);
        alerts_only.down(&"mail server down");
        store.failed(ErrorKind::Transient, &"retried quietly");
        store.down(&"No space left on device");
        assert!(backlog
            .failing()
            .is_some_and(|w| w.contains("No space left")));
        METRICS.records_in.fetch_add(BOUND / 2, Ordering::Relaxed);
        assert_eq!(backlog.full(), None, "half the bound waits");
        METRICS.records_in.fetch_add(BOUND / 2, Ordering::Relaxed);
        let why = backlog.full().expect("the bound waits");
        assert!(
            why.contains("the store output") && why.contains("No space left"),
            "{why}"
        );
        store.wrote();
        assert_eq!(backlog.full(), None, "written again");
        store.down(&"No space left on device");
        store.set(true);
        assert_eq!(backlog.failing(), None, "up again");
    }

    /// A client library rewrites its connection flag every second; a permanent error must keep
    /// the output down regardless, until a write succeeds.
    #[test]
    fn a_permanent_error_outlasts_the_connection_flag_until_a_success() {
        let connected = Arc::new(AtomicBool::new(true));
        let health = Health::from_flag("test_output", Arc::clone(&connected));
        health.failed(ErrorKind::Transient, &"timed out");
        assert!(health.up(), "a transient error is retried, not reported");
        health.failed(ErrorKind::Permanent, &"topic missing");
        connected.store(true, Ordering::Relaxed);
        assert!(!health.up());
        assert_eq!(health.reason().as_deref(), Some("topic missing"));
        health.set(true);
        assert!(health.up());
        assert_eq!(health.reason(), None);
    }

    /// The flag starts down until the library's first statistics; a write that succeeds before
    /// them proves the output up, but does not clear a permanent error.
    #[test]
    fn a_successful_write_raises_the_connection_flag_but_not_a_permanent_error() {
        let connected = Arc::new(AtomicBool::new(false));
        let health = Health::from_flag("test_output", Arc::clone(&connected));
        assert!(!health.up());
        health.wrote();
        assert!(health.up() && connected.load(Ordering::Relaxed));
        health.failed(ErrorKind::Permanent, &"access denied");
        health.wrote();
        assert!(!health.up());
    }
}
