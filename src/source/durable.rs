//! The lifecycle of a re-readable partition, shared by the Kafka and Kinesis sources: each
//! transport only reads, commits and keeps its ownership (group membership, shard leases).
//!
//! * [`Partition`] — one owned partition: its engine task (`pipeline::run` with a
//!   [`Durable`] link), its bounded batch queue and its hand-off. Batches are *offered*, never
//!   awaited: a full queue hands the batch back, and the source stops reading that partition
//!   (pauses it, or stops calling `GetRecords`) while it keeps its ownership alive. So an output
//!   that stalls slows the reading down, and never the group heartbeat or the lease renewal.
//! * [`Commits`] — checkpoints waiting for their barriers: which is the newest one of each
//!   partition that every durable output has acknowledged, checked without waiting.
//! * [`BatchBuilder`] — records copied into one payload, with their positions.

use std::ops::Range;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::output::{Answer, Fanout};
use crate::pipeline::{self, Batch, CommitRequest, Durable, PartitionSpec, Steps};
use crate::record::SourceKind;
use crate::window::Checkpoint;

/// Records per batch handed to an engine, at most.
pub const BATCH_RECORDS: usize = 2_048;
/// Bytes per batch, at most (a batch may exceed it by one record).
pub const BATCH_BYTES: usize = 1 << 20;
/// Batches queued per partition before the source stops reading it.
pub const PARTITION_QUEUE: usize = 16;

/// One owned partition's engine.
pub struct Partition {
    /// The source's number for it, echoed in its [`CommitRequest`]s.
    pub slot: u32,
    feeder: Feeder,
    task: JoinHandle<()>,
    handoff: CancellationToken,
}

/// Where a partition's batches go; cheap to clone (a reading loop keeps one per partition).
#[derive(Clone)]
pub struct Feeder {
    tx: mpsc::Sender<Batch>,
    /// While full, the source reads no more (see [`crate::output::Backlog`]).
    backlog: crate::output::Backlog,
}

impl Feeder {
    /// Hands `batch` to the engine if its queue has room; never waits.
    ///
    /// # Errors
    /// [`Refused::Full`] with the batch when the queue is full, [`Refused::Gone`] when the
    /// engine has stopped.
    pub fn offer(&self, batch: Batch) -> Result<(), Refused> {
        if self.backlog.full().is_some() {
            // An output cannot write: what would be read could only wait in memory.
            return Err(Refused::Full(Box::new(batch)));
        }
        self.tx.try_send(batch).map_err(|e| match e {
            TrySendError::Full(batch) => Refused::Full(Box::new(batch)),
            TrySendError::Closed(_) => Refused::Gone,
        })
    }
}

/// Why an offered batch was handed back.
pub enum Refused {
    /// The engine is busy (an output is slow): offer it again later. (Boxed: this is the rare
    /// path, and it keeps `Result<(), Refused>` small on the common one.)
    Full(Box<Batch>),
    /// The engine has stopped (handed off): the records are the next owner's.
    Gone,
}

impl Partition {
    /// Starts the engine of partition `name` of a `source`, resumed from `resume`; its
    /// checkpoints go to `commits` tagged with `slot`. Must be called within a Tokio runtime
    /// (or pass one with [`Partition::start_on`]).
    pub fn start(
        spec: (SourceKind, String, Steps),
        slot: u32,
        resume: Option<Checkpoint>,
        commits: mpsc::UnboundedSender<CommitRequest>,
        outputs: Fanout,
    ) -> Partition {
        Partition::start_on(
            &tokio::runtime::Handle::current(),
            spec,
            slot,
            resume,
            commits,
            outputs,
        )
    }

    /// As [`Partition::start`], on `runtime` (from a thread outside it).
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        (source, name, steps): (SourceKind, String, Steps),
        slot: u32,
        resume: Option<Checkpoint>,
        commits: mpsc::UnboundedSender<CommitRequest>,
        outputs: Fanout,
    ) -> Partition {
        let (tx, rx) = mpsc::channel(PARTITION_QUEUE);
        let handoff = CancellationToken::new();
        let spec = PartitionSpec {
            steps,
            source,
            name,
            durable: Some(Durable {
                slot,
                resume,
                commits,
            }),
        };
        let backlog = outputs.backlog().clone();
        let task = runtime.spawn(pipeline::run(spec, rx, outputs, handoff.clone()));
        Partition {
            slot,
            feeder: Feeder { tx, backlog },
            task,
            handoff,
        }
    }

    /// Where its batches go.
    pub fn feeder(&self) -> Feeder {
        self.feeder.clone()
    }

    /// Hands `batch` to the engine if its queue has room; never waits.
    ///
    /// # Errors
    /// As [`Feeder::offer`].
    pub fn offer(&self, batch: Batch) -> Result<(), Refused> {
        self.feeder.offer(batch)
    }

    /// Waits until the queue has room for one batch (and no output keeps the sources waiting,
    /// see [`crate::output::Backlog`]), then sends it; `false` if the engine has stopped. A source selects this against its ownership upkeep, which must go on meanwhile.
    pub async fn send(&self, batch: Batch) -> bool {
        // An output cannot write: what would be read could only wait in memory.
        while self.feeder.backlog.full().is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.feeder.tx.send(batch).await.is_ok()
    }

    /// Stops the engine and waits for it, at most `wait`: handing off (open windows left to the
    /// next owner, its last checkpoint requested), or, with `flush`, emitting every open window
    /// first (a shard that ends before a merge). An engine stuck behind an output that does not
    /// drain is aborted, so that no second writer outlives the hand-off. `false` if it had to be.
    pub async fn stop(mut self, flush: bool, wait: Duration) -> bool {
        if !flush {
            self.handoff.cancel();
        }
        drop(self.feeder);
        if tokio::time::timeout(wait, &mut self.task).await.is_ok() {
            return true;
        }
        self.task.abort();
        false
    }

    /// Whether the engine has ended on its own (it never does while its queue is open).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the engine at once, without a last checkpoint (ownership was lost).
    pub fn abort(self) {
        self.handoff.cancel();
        self.task.abort();
    }
}

/// A checkpoint whose barriers have all come back: safe to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    /// The partition's slot.
    pub slot: u32,
    /// The request's number, for [`Commits::done`].
    pub seq: u64,
    /// What to commit.
    pub checkpoint: Checkpoint,
}

/// Checkpoints waiting for their barriers, oldest first.
pub struct Commits {
    pending: Vec<(u64, CommitRequest)>,
    rx: mpsc::UnboundedReceiver<CommitRequest>,
    next_seq: u64,
}

impl Commits {
    /// An empty list and the sender the engines' [`Durable`] links use.
    pub fn new() -> (Commits, mpsc::UnboundedSender<CommitRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let commits = Commits {
            pending: Vec::new(),
            rx,
            next_seq: 0,
        };
        (commits, tx)
    }

    /// Takes in the requests that arrived since the last call.
    fn collect(&mut self) {
        while let Ok(request) = self.rx.try_recv() {
            self.pending.push((self.next_seq, request));
            self.next_seq += 1;
        }
    }

    /// Without waiting: per slot, its newest checkpoint whose barriers have all returned.
    /// Checkpoints an output gave up on (a barrier dropped unanswered: what came before it may
    /// not be stored) or skipped ([`Answer::Skip`]) are dropped; they are never committed.
    pub fn ready(&mut self) -> Vec<Ready> {
        self.collect();
        let mut ready: Vec<Ready> = Vec::new();
        let mut abandoned = 0;
        self.pending.retain_mut(|(seq, request)| {
            let mut done = true;
            let mut failed = false;
            let mut skipped = false;
            request.stored.retain_mut(|rx| match rx.try_recv() {
                Ok(Answer::Durable) => false,
                Ok(Answer::Skip) => {
                    skipped = true;
                    false
                }
                Err(TryRecvError::Empty) => {
                    done = false;
                    true
                }
                Err(TryRecvError::Closed) => {
                    failed = true;
                    false
                }
            });
            if failed {
                abandoned += 1;
                return false;
            }
            if skipped {
                // Not a point some output can resume from; a later checkpoint will be.
                return false;
            }
            if done {
                // Barriers return in order, so the ready requests of a partition are its
                // oldest; the last of them wins.
                let entry = Ready {
                    slot: request.slot,
                    seq: *seq,
                    checkpoint: request.checkpoint.clone(),
                };
                match ready.iter_mut().find(|r| r.slot == request.slot) {
                    Some(r) => *r = entry,
                    None => ready.push(entry),
                }
            }
            true
        });
        if abandoned > 0 {
            tracing::warn!(
                count = abandoned,
                "an output stopped before storing: checkpoints not committed"
            );
        }
        ready
    }

    /// A checkpoint was committed: it and everything older of its slot are dropped.
    pub fn done(&mut self, slot: u32, seq: u64) {
        self.pending.retain(|(s, r)| !(r.slot == slot && *s <= seq));
    }

    /// Drops everything of `slot` (given up without a hand-off).
    pub fn forget(&mut self, slot: u32) {
        self.collect();
        self.pending.retain(|(_, r)| r.slot != slot);
    }

    /// Keeps only the requests of slots for which `keep` holds.
    pub fn retain_slots(&mut self, keep: impl Fn(u32) -> bool) {
        self.collect();
        self.pending.retain(|(_, r)| keep(r.slot));
    }

    /// Waits, at most until `deadline`, for every barrier of `slot`'s pending checkpoints (a
    /// hand-off's last commit); then [`Commits::ready`] says which may be committed.
    pub async fn settle(&mut self, slot: u32, deadline: tokio::time::Instant) {
        self.collect();
        for (_, request) in self.pending.iter_mut().filter(|(_, r)| r.slot == slot) {
            let mut i = 0;
            while i < request.stored.len() {
                match tokio::time::timeout_at(deadline, &mut request.stored[i]).await {
                    // Answered: nothing left to wait for on this output.
                    Ok(Ok(Answer::Durable)) => {
                        request.stored.remove(i);
                    }
                    // Skipped: kept as such for `ready` to drop.
                    Ok(Ok(Answer::Skip)) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        let _ = tx.send(Answer::Skip);
                        request.stored[i] = rx;
                        i += 1;
                    }
                    // Closed (`ready` drops the request) or out of time (it stays pending).
                    _ => i += 1,
                }
            }
        }
    }
}

/// Records being copied into one batch for an engine.
pub struct BatchBuilder {
    payload: BytesMut,
    records: Vec<Range<usize>>,
    positions: Vec<u64>,
    sequences: Vec<String>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder {
            payload: BytesMut::with_capacity(64 << 10),
            records: Vec::with_capacity(BATCH_RECORDS),
            positions: Vec::with_capacity(BATCH_RECORDS),
            sequences: Vec::new(),
        }
    }
}

impl BatchBuilder {
    /// Appends one record at `position`. Records are kept one per line, as an NDJSON body is:
    /// the archive then keeps a run of them as one slice of the batch instead of copying each.
    pub fn push(&mut self, bytes: &[u8], position: u64) {
        let start = self.payload.len();
        self.payload.extend_from_slice(bytes);
        self.records.push(start..self.payload.len());
        self.payload.extend_from_slice(b"\n");
        self.positions.push(position);
    }

    /// Appends one Kinesis record at `position` with its sequence number.
    pub fn push_sequenced(&mut self, bytes: &[u8], position: u64, sequence: String) {
        self.push(bytes, position);
        self.sequences.push(sequence);
    }

    /// Whether it holds a full batch.
    pub fn full(&self) -> bool {
        self.records.len() >= BATCH_RECORDS || self.payload.len() >= BATCH_BYTES
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The batch so far (`None` when empty); the builder starts over.
    pub fn take(&mut self) -> Option<Batch> {
        if self.records.is_empty() {
            return None;
        }
        Some(Batch {
            payload: self.payload.split().freeze(),
            records: std::mem::replace(&mut self.records, Vec::with_capacity(BATCH_RECORDS)),
            positions: std::mem::replace(&mut self.positions, Vec::with_capacity(BATCH_RECORDS)),
            sequences: std::mem::take(&mut self.sequences),
            reply: None,
            decoded: Vec::new(),
            plain_lines: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn request(slot: u32, barriers: usize) -> (CommitRequest, Vec<oneshot::Sender<Answer>>) {
        let (senders, stored) = (0..barriers).map(|_| oneshot::channel()).unzip();
        let checkpoint = Checkpoint {
            watermark: 0,
            low_water: Some(u64::from(slot)),
            last_position: None,
            closings: Vec::new(),
            alerts: None,
            finals: Vec::new(),
        };
        let r = CommitRequest {
            slot,
            checkpoint,
            stored,
        };
        (r, senders)
    }

    /// A batch's records lie one per line, each range its record alone, so that the archive can
    /// keep them as one slice.
    #[test]
    fn a_batch_holds_its_records_one_per_line() {
        let mut builder = BatchBuilder::default();
        builder.push(b"{\"a\":1}", 7);
        builder.push(b"{}", 8);
        let batch = builder.take().unwrap();
        assert_eq!(&batch.payload[..], b"{\"a\":1}\n{}\n");
        assert_eq!(batch.records, [0..7, 8..10]);
        assert_eq!(batch.positions, [7, 8]);
        assert!(builder.take().is_none());
    }

    fn slots(ready: &[Ready]) -> Vec<(u32, u64)> {
        ready.iter().map(|r| (r.slot, r.seq)).collect()
    }

    #[test]
    fn only_checkpoints_whose_barriers_all_returned_are_ready_newest_first() {
        let (mut commits, tx) = Commits::new();
        let (a1, mut a1_tx) = request(1, 2);
        let (a2, mut a2_tx) = request(1, 2);
        let (b1, mut b1_tx) = request(2, 2);
        let (c1, c1_tx) = request(3, 1);
        for r in [a1, a2, b1, c1] {
            tx.send(r).unwrap();
        }
        // Nothing answered yet.
        assert!(commits.ready().is_empty());
        // Slot 1: both of its requests answered by both outputs; slot 2: one output only.
        for tx in a1_tx.drain(..).chain(a2_tx.drain(..)) {
            tx.send(Answer::Durable).unwrap();
        }
        b1_tx.remove(0).send(Answer::Durable).unwrap();
        // Slot 3: the output ended without answering: dropped, never ready.
        drop(c1_tx);
        assert_eq!(slots(&commits.ready()), [(1, 1)]);
        // A barrier answered earlier is remembered: slot 2 completes with its second output.
        b1_tx.remove(0).send(Answer::Durable).unwrap();
        assert_eq!(slots(&commits.ready()), [(1, 1), (2, 2)]);
        // Committing slot 1's newest drops its older one too; an uncommitted one stays ready.
        commits.done(1, 1);
        assert_eq!(slots(&commits.ready()), [(2, 2)]);
        commits.forget(2);
        assert!(commits.ready().is_empty());
    }

    #[test]
    fn a_skipped_checkpoint_is_dropped_and_a_later_one_commits() {
        let (mut commits, tx) = Commits::new();
        let (a1, mut a1_tx) = request(1, 2);
        let (a2, mut a2_tx) = request(1, 2);
        tx.send(a1).unwrap();
        tx.send(a2).unwrap();
        // The archive skips the first (inside an object); the store answers both.
        a1_tx.remove(0).send(Answer::Durable).unwrap();
        a1_tx.remove(0).send(Answer::Skip).unwrap();
        assert!(commits.ready().is_empty());
        for tx in a2_tx.drain(..) {
            tx.send(Answer::Durable).unwrap();
        }
        assert_eq!(slots(&commits.ready()), [(1, 1)]);
    }

    #[tokio::test]
    async fn settle_waits_for_the_barriers_of_one_slot_until_the_deadline() {
        let (mut commits, tx) = Commits::new();
        let (a, mut a_tx) = request(1, 1);
        let (b, _b_tx) = request(2, 1);
        tx.send(a).unwrap();
        tx.send(b).unwrap();
        let answer = a_tx.remove(0);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            answer.send(Answer::Durable).unwrap();
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        commits.settle(1, deadline).await;
        assert_eq!(slots(&commits.ready()), [(1, 0)]);
        // Slot 2 never answers: settling it ends at the deadline, not ready.
        let soon = tokio::time::Instant::now() + Duration::from_millis(30);
        commits.settle(2, soon).await;
        assert_eq!(slots(&commits.ready()), [(1, 0)]);
    }

    #[tokio::test]
    async fn a_full_engine_hands_the_batch_back_and_a_stopped_one_says_gone() {
        let (_commits, tx) = Commits::new();
        let outputs = crate::output::Outputs::new(None).fanout();
        let steps = Steps {
            window: crate::window::WindowConfig::default(),
            rules: Vec::new().into(),
            views: None,
        };
        let partition = Partition::start(
            (SourceKind::Kafka, "t/0".into(), steps),
            0,
            None,
            tx,
            outputs,
        );
        let mut builder = BatchBuilder::default();
        let record = br#"{"Name":"a","StatusTime":"2018-03-18 03:20:00","Latitude":1,"Longitude":1,"Distance":1,"HealthPoints":1,"MagicPoints":1}"#;
        let mut full = 0;
        for i in 0..10_000u64 {
            builder.push(record, i);
            let batch = builder.take().unwrap();
            if let Err(Refused::Full(_)) = partition.offer(batch) {
                full += 1;
            }
        }
        assert!(builder.is_empty());
        assert!(full > 0, "a queue of {PARTITION_QUEUE} fills up");
        assert!(partition.stop(false, Duration::from_secs(5)).await);
    }

    /// While an output that keeps what is read cannot write and the records received since
    /// have reached the bound, a partition takes no batch: `offer` hands it back (Kafka pauses
    /// the partition) and `send` waits (a Kinesis shard is not read on); once the output writes
    /// again, both go on.
    #[tokio::test]
    async fn a_full_backlog_holds_the_source_until_the_output_writes_again() {
        use crate::metrics::METRICS;
        use crate::output::{Health, Interest, Outputs};
        const BOUND: u64 = 1 << 40;
        let (_commits, tx) = Commits::new();
        let mut outputs = Outputs::new(None);
        outputs.limit_unwritten(BOUND);
        let _store = outputs.add(
            "store",
            Interest {
                summaries: true,
                ..Interest::default()
            },
        );
        let health = Health::new("store");
        outputs.run("store", tokio::spawn(async {}), health.clone());
        let steps = Steps {
            window: crate::window::WindowConfig::default(),
            rules: Vec::new().into(),
            views: None,
        };
        let partition = Partition::start(
            (SourceKind::Kinesis, "shard-0".into(), steps),
            0,
            None,
            tx,
            outputs.fanout(),
        );
        let record = br#"{"Name":"a","StatusTime":"2018-03-18 03:20:00","Latitude":1,"Longitude":1,"Distance":1,"HealthPoints":1,"MagicPoints":1}"#;
        let batch = |i: u64| {
            let mut builder = BatchBuilder::default();
            builder.push(record, i);
            builder.take().unwrap()
        };
        health.down(&"No space left on device");
        METRICS
            .records_in
            .fetch_add(BOUND, std::sync::atomic::Ordering::Relaxed);
        assert!(matches!(partition.offer(batch(0)), Err(Refused::Full(_))));
        {
            let mut send = std::pin::pin!(partition.send(batch(1)));
            assert!(
                tokio::time::timeout(Duration::from_millis(500), &mut send)
                    .await
                    .is_err(),
                "a shard is not read on while the backlog is full"
            );
            health.set(true);
            assert!(send.await, "read on once the output writes");
        }
        assert!(partition.offer(batch(2)).is_ok());
        assert!(partition.stop(false, Duration::from_secs(5)).await);
    }
}
