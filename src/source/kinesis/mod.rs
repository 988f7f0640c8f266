//! The Kinesis source (`[source] kind = "kinesis"`): shards shared between instances through
//! leases in DynamoDB (see [`leases`]), one window engine per owned shard, checkpoints written to
//! the lease only after the summaries that depend on them are stored (DESIGN decisions 2 and 3).
//!
//! * **Coordinator** (one task): lists the shards every 10 s and creates a lease for each new
//!   one; every 2 s reads the leases and takes free or expired ones (a counter that has not moved
//!   for [`LEASE_MS`]), up to a fair share of the instances it sees, stealing from the busiest
//!   owner when it has less; a child shard is taken only once its parents are read to their end.
//! * **Shard reader** (one task per owned shard): `GetShardIterator` (`TRIM_HORIZON` on a first
//!   start, `AFTER_SEQUENCE_NUMBER` from the checkpoint afterwards), `GetRecords` at most five
//!   times a second, backing off on `ProvisionedThroughputExceededException` and transient errors,
//!   a new iterator after `ExpiredIteratorException`. Records are numbered from 0 after the
//!   checkpoint; the reader keeps the sequence number of each number still needed, so that a
//!   checkpoint's low-water position becomes "read after sequence S" and the engine's positions
//!   are stored relative to it. It renews its lease with every checkpoint (or every 2 s) — also
//!   while its engine is busy behind a slow output, when it stops calling `GetRecords` but not
//!   renewing, so that a stalled store moves no lease — and stops at once, without committing,
//!   when a conditional write says the lease moved. The engine, its batches and the checkpoint
//!   bookkeeping are the lifecycle shared with Kafka ([`durable`](crate::source::durable)).
//! * **Stopping** hands every shard off: the engine stops without emitting open windows, the last
//!   checkpoint is written, and the lease is released so that another instance takes it at once.
//!
//! * **Reshards**: a parent shard read to its end hands off like a stopping reader, and its lease
//!   keeps its last checkpoint as a "tail". A child of a split resumes the parent's engine from
//!   that checkpoint, re-reads the parent's tail keeping only the records whose partition key
//!   hashes into the child's range (MD5, as Kinesis routes them), then goes on with its own
//!   records: a minute that spans the split is summarised whole, with the revisions it would
//!   have had without the split. The child checkpoints only once it no longer needs the tail, so
//!   a crash before that re-reads the tail again.
//!
//! Known limit: a child of a *merge* has two parents, each with its own watermark, which one
//! engine cannot continue, so each parent flushes its open windows at its end and the child
//! starts a fresh engine: a minute that spans a merge is summarised in two parts, the later
//! replacing the earlier. Records put with an `ExplicitHashKey` are routed at a split by the
//! hash of their partition key (`GetRecords` does not return the explicit key). Sequence numbers
//! are kept as strings, never parsed.

use crate::backoff::Backoff;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clients::kinesis::describe;
use crate::metrics::METRICS;
use crate::output::{Fanout, Health};
use crate::pipeline::Steps;
use crate::record::SourceKind;
use crate::source::durable::{BatchBuilder, Commits, Partition, Ready};
use crate::window::Checkpoint;

pub mod leases;
mod plan;
use leases::{Lease, LeaseError, Leases, SHARD_END};

/// A lease whose counter has not moved for this long (as observed here) is expired.
pub const LEASE_MS: u64 = 10_000;
/// The sequence of a checkpoint taken before the shard's first record was consumed: a new
/// owner reads the shard from its start, with the checkpoint's engine and alert state.
const FROM_START: &str = "-";

/// How often the coordinator looks at the leases.
const COORDINATE_EVERY: Duration = Duration::from_secs(2);
/// How often the shard list is refreshed.
const LIST_SHARDS_EVERY: Duration = Duration::from_secs(10);
/// A reader renews its lease at least this often.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// At most five `GetRecords` a second per shard.
const GET_RECORDS_EVERY: Duration = Duration::from_millis(200);
/// While its engine is busy, a reader looks after its lease this often.
const UPKEEP_EVERY: Duration = Duration::from_millis(500);
/// How long a hand-off waits for the engine and the outputs before releasing the lease without
/// its last checkpoint (the next owner then re-reads a little more).
const HANDOFF_WAIT: Duration = Duration::from_secs(15);

/// What the source needs from the configuration.
pub struct KinesisSourceConfig {
    /// The telemetry stream.
    pub stream: String,
    /// The DynamoDB lease table.
    pub lease_table: String,
    /// Create the lease table when missing.
    pub create_tables: bool,
}

/// A running Kinesis source.
pub struct KinesisSource {
    task: JoinHandle<()>,
    /// Up while Kinesis and the lease table answer (for `/readyz`), with the reason when not.
    pub health: Health,
}

impl KinesisSource {
    /// Opens the lease table and starts the coordinator; stops (handing every shard off) when
    /// `stop` is cancelled.
    ///
    /// # Errors
    /// The lease table is missing (without `create_tables`) or unreachable.
    pub async fn start(
        aws: &aws_config::SdkConfig,
        cfg: KinesisSourceConfig,
        steps: Steps,
        outputs: Fanout,
        stop: CancellationToken,
    ) -> Result<KinesisSource, LeaseError> {
        let leases = Leases::open(
            aws_sdk_dynamodb::Client::new(aws),
            &cfg.lease_table,
            cfg.create_tables,
        )
        .await?;
        let connected = Arc::new(AtomicBool::new(false));
        let health = Health::from_flag("source", Arc::clone(&connected));
        let coordinator = Coordinator {
            kinesis: aws_sdk_kinesis::Client::new(aws),
            leases,
            owner: crate::clients::instance_name(),
            stream: cfg.stream,
            steps,
            outputs,
            connected,
            reads: Reads {
                health: health.clone(),
                shards: Arc::default(),
            },
            readers: HashMap::new(),
            seen: HashMap::new(),
            ranges: HashMap::new(),
            next_slot: 0,
        };
        tracing::info!(owner = %coordinator.owner, stream = %coordinator.stream, "kinesis source started");
        let task = tokio::spawn(coordinator.run(stop));
        Ok(KinesisSource { task, health })
    }

    /// Waits until every shard is handed off and its lease released.
    pub async fn stopped(self) {
        if self.task.await.is_err() {
            tracing::error!("the kinesis coordinator panicked while stopping");
        }
    }
}

struct Reader {
    task: JoinHandle<()>,
    handoff: CancellationToken,
}

struct Coordinator {
    kinesis: aws_sdk_kinesis::Client,
    leases: Leases,
    owner: String,
    stream: String,
    steps: Steps,
    outputs: Fanout,
    connected: Arc<AtomicBool>,
    /// The shard readers' reads, for the source's health.
    reads: Reads,
    readers: HashMap<String, Reader>,
    /// Per shard: the counter last seen and when it was first seen at that value.
    seen: HashMap<String, (u64, Instant)>,
    /// Per shard: its hash key range, from the last `ListShards`.
    ranges: HashMap<String, (u128, u128)>,
    next_slot: u32,
}

impl Coordinator {
    async fn run(mut self, stop: CancellationToken) {
        let mut listed: Option<Instant> = None;
        loop {
            if listed.is_none_or(|t| t.elapsed() >= LIST_SHARDS_EVERY) {
                match self.discover().await {
                    Ok(()) => listed = Some(Instant::now()),
                    Err(e) => {
                        self.connected.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, "kinesis: cannot list shards; retrying");
                    }
                }
            }
            if let Err(e) = self.balance().await {
                self.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "kinesis: cannot read the leases; retrying");
            }
            self.readers.retain(|shard, r| {
                let running = !r.task.is_finished();
                if !running {
                    tracing::info!(shard, "kinesis shard reader ended");
                    self.reads.gone(shard);
                }
                running
            });
            METRICS
                .source_partitions
                .store(self.readers.len() as i64, Ordering::Relaxed);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(COORDINATE_EVERY) => {}
            }
        }
        // Hand every shard off; each reader releases its lease after its last checkpoint.
        for r in self.readers.values() {
            r.handoff.cancel();
        }
        for (shard, r) in self.readers.drain() {
            if r.task.await.is_err() {
                tracing::error!(shard, "kinesis shard reader panicked");
            }
        }
        METRICS.source_partitions.store(0, Ordering::Relaxed);
        tracing::info!("kinesis source stopped");
    }

    /// Creates a lease for every shard that has none.
    async fn discover(&mut self) -> Result<(), String> {
        let shards = crate::clients::kinesis::list_shards(&self.kinesis, &self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let known: Vec<String> = self
            .leases
            .all()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|l| l.shard)
            .collect();
        for shard in shards {
            if let Some(range) = crate::clients::kinesis::hash_range(&shard) {
                self.ranges.insert(shard.shard_id().to_owned(), range);
            }
            if known.iter().any(|k| k == shard.shard_id()) {
                continue;
            }
            let parents: Vec<String> = shard
                .parent_shard_id()
                .into_iter()
                .chain(shard.adjacent_parent_shard_id())
                .map(str::to_owned)
                .collect();
            self.leases
                .create(shard.shard_id(), &parents)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.connected.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Takes free, expired or (for balance) stolen leases up to a fair share.
    async fn balance(&mut self) -> Result<(), LeaseError> {
        let all = self.leases.all().await?;
        let now = Instant::now();
        for l in &all {
            let entry = self.seen.entry(l.shard.clone()).or_insert((l.counter, now));
            if entry.0 != l.counter {
                *entry = (l.counter, now);
            }
        }
        let seen = &self.seen;
        let expired = |l: &Lease| {
            seen.get(&l.shard)
                .is_some_and(|(_, at)| at.elapsed() >= Duration::from_millis(LEASE_MS))
        };
        let plan::Plan {
            candidates,
            mut wanted,
        } = plan::plan(&all, &self.owner, |s| self.readers.contains_key(s), expired);
        for lease in candidates {
            if wanted == 0 {
                break;
            }
            let inherit = inheritance(lease, &all);
            if inherit.is_some() && !self.ranges.contains_key(&lease.shard) {
                continue; // its hash range is not listed yet
            }
            match self
                .leases
                .own(&lease.shard, lease.counter, &self.owner)
                .await
            {
                Ok(counter) => {
                    tracing::info!(shard = %lease.shard, from = %lease.owner, "kinesis lease taken");
                    METRICS.source_taken.fetch_add(1, Ordering::Relaxed);
                    self.start_reader(lease, counter, inherit);
                    wanted -= 1;
                }
                Err(LeaseError::Lost(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn start_reader(&mut self, lease: &Lease, counter: u64, inherit: Option<&Lease>) {
        let handoff = CancellationToken::new();
        let slot = self.next_slot;
        self.next_slot += 1;
        // A checkpoint at the start of the shard reads it from its first record.
        let start_after = lease.sequence.clone().filter(|s| s != FROM_START);
        // A child of a split starts with its parent's tail, from the parent's checkpoint.
        let tail = inherit.and_then(|parent| {
            let range = *self.ranges.get(&lease.shard)?;
            let after = parent.tail.clone().filter(|t| t != "-");
            Some((parent, range, after))
        });
        let (reading, tail_range, after, engine) = match tail {
            Some((parent, range, after)) => (
                parent.shard.clone(),
                Some(range),
                after,
                parent.engine.as_ref(),
            ),
            None => (
                lease.shard.clone(),
                None,
                start_after.clone(),
                lease.engine.as_ref().filter(|_| lease.sequence.is_some()),
            ),
        };
        if tail_range.is_some() {
            tracing::info!(shard = %lease.shard, parent = %reading, "kinesis: re-reading the parent's tail first");
        }
        let reader = ShardReader {
            kinesis: self.kinesis.clone(),
            reads: self.reads.clone(),
            failing: 0,
            leases: self.leases.clone(),
            owner: self.owner.clone(),
            stream: self.stream.clone(),
            shard: lease.shard.clone(),
            counter,
            start_after: start_after.clone(),
            committed: start_after,
            reading,
            tail_range,
            after,
            sequences: VecDeque::new(),
            next_position: 0,
            base: 0,
        };
        let resume = engine.and_then(|text| Checkpoint::decode(text, 0));
        let task = tokio::spawn(reader.run(
            self.steps.clone(),
            resume,
            slot,
            self.outputs.clone(),
            handoff.clone(),
        ));
        self.readers
            .insert(lease.shard.clone(), Reader { task, handoff });
    }
}

/// The parent whose tail a never-checkpointed child of a split re-reads first: one that ended
/// with its checkpoint kept (see [`Leases::finish`]).
fn inheritance<'a>(lease: &Lease, all: &'a [Lease]) -> Option<&'a Lease> {
    let [parent] = lease.parents.as_slice() else {
        return None;
    };
    if lease.sequence.is_some() {
        return None;
    }
    all.iter()
        .find(|l| l.shard == *parent)
        .filter(|p| p.sequence.as_deref() == Some(SHARD_END) && p.tail.is_some())
}

struct ShardReader {
    kinesis: aws_sdk_kinesis::Client,
    /// What this shard's reads tell the source's health.
    reads: Reads,
    /// Reads failed in a row (throttling aside).
    failing: u32,
    leases: Leases,
    owner: String,
    stream: String,
    shard: String,
    counter: u64,
    /// The sequence number this run's own records start after (`None`: the start of the shard).
    start_after: Option<String>,
    /// The sequence number of the last checkpoint written (the tail kept at the shard's end).
    committed: Option<String>,
    /// The shard being read: a parent while its tail is re-read, then this one.
    reading: String,
    /// While a parent's tail is re-read: this shard's hash key range, the records to keep.
    tail_range: Option<(u128, u128)>,
    /// The last sequence number read in `reading` (where a new iterator starts after one expires).
    after: Option<String>,
    /// (position, sequence number) of this shard's records that a checkpoint may still need.
    sequences: VecDeque<(u64, String)>,
    next_position: u64,
    /// The position of this shard's first record (after a parent's tail).
    base: u64,
}

/// Why a shard reader stopped reading.
#[derive(Clone, Copy)]
enum Stop {
    HandOff,
    Lost,
    /// Read to its end; `merged` once known: a child of the shard has two parents.
    ShardEnd {
        merged: bool,
    },
}

/// What the shard readers' reads tell `/readyz`, shard by shard: the source is down while some
/// shard's reads keep failing, or one of its reads has been under way for long (a peer that
/// accepts and never answers).
#[derive(Clone)]
struct Reads {
    health: Health,
    /// Shard → (when its read under way started, why its reads fail).
    shards: Arc<std::sync::Mutex<HashMap<String, ShardReads>>>,
}

/// When a shard's read under way started, and why its reads fail.
type ShardReads = (Option<crate::time::Millis>, Option<String>);

impl Reads {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, ShardReads>) -> T) -> T {
        f(&mut self
            .shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// A read of `shard` starts (`true`) or ends; the source is busy since the oldest under way.
    fn busy(&self, shard: &str, busy: bool) {
        self.with(|shards| {
            shards.entry(shard.to_owned()).or_default().0 = busy.then(crate::time::now_ms);
        });
        self.busy_check();
    }

    /// The reads of `shard` keep failing, for `why`.
    fn failed(&self, shard: &str, why: String) {
        self.with(|shards| shards.entry(shard.to_owned()).or_default().1 = Some(why.clone()));
        self.health.down(&why);
    }

    /// The reads of `shard` go through again: up, unless another shard's still fail.
    fn ok(&self, shard: &str) {
        let other = self.with(|shards| {
            shards.entry(shard.to_owned()).or_default().1 = None;
            shards.values().find_map(|(_, why)| why.clone())
        });
        match other {
            Some(why) => self.health.down(&why),
            None => self.health.set(true),
        }
    }

    /// `shard`'s reader ended: what it said goes.
    fn gone(&self, shard: &str) {
        self.with(|shards| shards.remove(shard));
        self.busy_check();
    }

    /// The source is busy since the oldest read under way.
    fn busy_check(&self) {
        let oldest = self.with(|shards| shards.values().filter_map(|(since, _)| *since).min());
        self.health.busy_from(oldest);
    }
}

/// Reads of a shard that fail in a row (throttling aside) before the source is down.
const FAILING_READS: u32 = 3;

impl ShardReader {
    /// A read failed (`why`): from the third in a row, the source is down with it.
    fn read_failed(&mut self, why: &dyn std::fmt::Display) {
        self.failing += 1;
        if self.failing >= FAILING_READS {
            self.reads
                .failed(&self.shard, format!("kinesis shard {}: {why}", self.shard));
        }
    }

    /// A read succeeded: the source is up again if this shard had it down (and no other has).
    fn read_again(&mut self) {
        if self.failing >= FAILING_READS {
            self.reads.ok(&self.shard);
        }
        self.failing = 0;
    }

    async fn run(
        mut self,
        steps: Steps,
        resume: Option<Checkpoint>,
        slot: u32,
        outputs: Fanout,
        handoff: CancellationToken,
    ) {
        let (mut commits, commit_tx) = Commits::new();
        // Sequence numbers go with the records only to an output that names records by them.
        let named = outputs.wants_records();
        let engine = Partition::start(
            (SourceKind::Kinesis, self.shard.clone(), steps),
            slot,
            resume,
            commit_tx,
            outputs,
        );
        let end = self.read(&engine, &mut commits, &handoff, named).await;
        if let Stop::Lost = end {
            tracing::warn!(shard = %self.shard, "kinesis lease lost: stopping without a checkpoint");
            engine.abort();
            return;
        }
        // A handed-off engine stops where it is. So does one whose shard ended in a split: the
        // children re-read its tail. Before a merge, whose child starts fresh, it flushes.
        // Undecided (ListShards failing until a hand-off): a plain hand-off, and the next owner
        // reaches the end again.
        let end = match end {
            Stop::ShardEnd { .. } => match self.merged(&handoff).await {
                Some(merged) => Stop::ShardEnd { merged },
                None => Stop::HandOff,
            },
            other => other,
        };
        let flush = matches!(end, Stop::ShardEnd { merged: true });
        if !engine.stop(flush, HANDOFF_WAIT).await {
            tracing::warn!(shard = %self.shard, "kinesis: shard engine did not stop in time; aborted");
        }
        // The engine's last checkpoint once its outputs have it, then the lease goes (or the
        // shard is done).
        commits
            .settle(slot, tokio::time::Instant::now() + HANDOFF_WAIT)
            .await;
        match self.commit_ready(&mut commits).await {
            Ok(_) => {}
            Err(LeaseError::Lost(_)) => return,
            Err(e) => {
                tracing::warn!(shard = %self.shard, error = %e, "kinesis: last checkpoint not written; the next owner re-reads from the one before");
            }
        }
        if let Stop::ShardEnd { merged } = end {
            let tail = (!merged).then(|| self.committed.as_deref().unwrap_or("-"));
            match self
                .leases
                .finish(&self.shard, self.counter, &self.owner, tail)
                .await
            {
                Ok(c) => self.counter = c,
                Err(e) => {
                    tracing::warn!(shard = %self.shard, error = %e, "kinesis: shard end not recorded; the next owner reaches it again")
                }
            }
        }
        match self.leases.own(&self.shard, self.counter, "").await {
            Ok(_) => tracing::info!(shard = %self.shard, "kinesis lease released"),
            Err(e) => {
                tracing::warn!(shard = %self.shard, error = %e, "kinesis lease not released")
            }
        }
    }

    /// Whether a child of this (ended) shard is a merge, asking `ListShards` until it answers;
    /// `None` if handed off first.
    async fn merged(&self, handoff: &CancellationToken) -> Option<bool> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match crate::clients::kinesis::list_shards(&self.kinesis, &self.stream).await {
                Ok(shards) => {
                    let me = Some(self.shard.as_str());
                    return Some(shards.iter().any(|s| {
                        (s.parent_shard_id() == me || s.adjacent_parent_shard_id() == me)
                            && s.adjacent_parent_shard_id().is_some()
                    }));
                }
                Err(e) => {
                    tracing::warn!(shard = %self.shard, error = %e, "kinesis: cannot list the children of an ended shard; retrying");
                }
            }
            tokio::select! {
                () = handoff.cancelled() => return None,
                () = backoff.wait() => {}
            }
        }
    }

    /// An iterator where reading `reading` goes on; the error says whether the shard is gone.
    async fn iterator(&self) -> Result<String, (String, bool)> {
        let request = self
            .kinesis
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&self.reading);
        let request = match &self.after {
            Some(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = request.send().await.map_err(|e| {
            let gone = aws_sdk_kinesis::error::ProvideErrorMetadata::code(&e)
                == Some("ResourceNotFoundException");
            (describe(&e), gone)
        })?;
        out.shard_iterator
            .ok_or_else(|| ("GetShardIterator returned no iterator".to_owned(), false))
    }

    /// The parent's tail is read: this shard's own records follow it.
    fn end_tail(&mut self) {
        self.tail_range = None;
        self.reading = self.shard.clone();
        self.after = self.start_after.clone();
        self.base = self.next_position;
    }

    /// Reads until handed off, the lease is lost, or the shard ends.
    ///
    /// Between `GetRecords` calls, and while its engine has no room for a batch, it keeps the
    /// lease: writes the checkpoints whose barriers have returned, and renews it.
    async fn read(
        &mut self,
        engine: &Partition,
        commits: &mut Commits,
        handoff: &CancellationToken,
        named: bool,
    ) -> Stop {
        let mut iterator: Option<String> = None;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut renewed = Instant::now();
        let mut next_call = tokio::time::Instant::now();
        loop {
            // Backing off (up to 10 s) or not: the lease is looked after meanwhile.
            let call = tokio::select! {
                biased;
                () = handoff.cancelled() => return Stop::HandOff,
                () = tokio::time::sleep_until(next_call) => true,
                () = tokio::time::sleep(UPKEEP_EVERY) => false,
            };
            if let Err(stop) = self.upkeep(commits, &mut renewed).await {
                return stop;
            }
            if !call {
                continue;
            }
            let it = match iterator.take() {
                Some(it) => it,
                None => match self.iterator().await {
                    Ok(it) => it,
                    Err((e, true)) if self.tail_range.is_some() => {
                        // Past the stream's retention, a closed parent is deleted: its windows
                        // are long final, and this shard's records come next.
                        tracing::warn!(shard = %self.shard, parent = %self.reading, error = %e, "kinesis: the parent's tail is gone; reading this shard");
                        self.end_tail();
                        continue;
                    }
                    Err((e, _)) => {
                        tracing::warn!(shard = %self.shard, error = %e, "kinesis: no shard iterator; retrying");
                        self.read_failed(&e);
                        next_call = tokio::time::Instant::now() + backoff.next_wait();
                        continue;
                    }
                },
            };
            next_call = tokio::time::Instant::now() + GET_RECORDS_EVERY;
            // A read that hangs (a peer that accepts and never answers) says so on `/readyz`
            // after a few seconds, long before the call gives up; the lease is looked after
            // meanwhile.
            self.reads.busy(&self.shard, true);
            let read = {
                let mut call =
                    std::pin::pin!(self.kinesis.get_records().shard_iterator(&it).send());
                loop {
                    tokio::select! {
                        biased;
                        () = handoff.cancelled() => {
                            self.reads.busy(&self.shard, false);
                            return Stop::HandOff;
                        }
                        read = &mut call => break read,
                        () = tokio::time::sleep(UPKEEP_EVERY) => {
                            if let Err(stop) = self.upkeep(commits, &mut renewed).await {
                                self.reads.busy(&self.shard, false);
                                return stop;
                            }
                        }
                    }
                }
            };
            self.reads.busy(&self.shard, false);
            let page = match read {
                Ok(page) => {
                    backoff.reset();
                    self.read_again();
                    page
                }
                Err(e) => {
                    let code = aws_sdk_kinesis::error::ProvideErrorMetadata::code(&e).unwrap_or("");
                    if code != "ExpiredIteratorException" {
                        // Throughput exceeded or transient: the same iterator, later.
                        iterator = Some(it);
                        tracing::debug!(shard = %self.shard, error = %describe(&e), "GetRecords failed; backing off");
                        if code != "ProvisionedThroughputExceededException" {
                            self.read_failed(&format!("GetRecords: {}", describe(&e)));
                        }
                        next_call = tokio::time::Instant::now() + backoff.next_wait();
                    }
                    continue;
                }
            };
            let empty = page.records.is_empty();
            if !empty {
                let mut batch = BatchBuilder::default();
                // Records are consumed: their sequence numbers move into the map, uncopied, and
                // are copied for the batch only for an output that names records by them (the
                // archive).
                for r in page.records {
                    let position = self.next_position;
                    self.next_position += 1;
                    let sequence = r.sequence_number;
                    let for_batch = named.then(|| sequence.clone());
                    if let Some((low, high)) = self.tail_range {
                        // A parent's record: ours only if its key hashes into our range. Every
                        // record keeps its position, as the parent's checkpoint counts them.
                        let hash = crate::clients::kinesis::hash_key(
                            r.partition_key.as_deref().unwrap_or(""),
                        );
                        self.after = Some(sequence);
                        if hash < low || hash > high {
                            continue;
                        }
                    } else {
                        self.sequences.push_back((position, sequence));
                    }
                    match for_batch {
                        Some(sequence) => {
                            batch.push_sequenced(r.data.as_ref(), position, sequence);
                        }
                        None => batch.push(r.data.as_ref(), position),
                    }
                }
                if self.tail_range.is_none() {
                    if let Some(last) = self.sequences.back() {
                        // Reads continue after it if the iterator expires.
                        self.after = Some(last.1.clone());
                    }
                }
                if let Some(batch) = batch.take() {
                    // The engine may be busy behind a slow output: wait for it, keeping the
                    // lease meanwhile.
                    let mut send = std::pin::pin!(engine.send(batch));
                    loop {
                        tokio::select! {
                            biased;
                            () = handoff.cancelled() => return Stop::HandOff,
                            sent = &mut send => {
                                if !sent {
                                    return Stop::HandOff;
                                }
                                break;
                            }
                            () = tokio::time::sleep(UPKEEP_EVERY) => {
                                if let Err(stop) = self.upkeep(commits, &mut renewed).await {
                                    return stop;
                                }
                            }
                        }
                    }
                }
            }
            match page.next_shard_iterator {
                Some(next) => iterator = Some(next),
                None if self.tail_range.is_some() => {
                    // The parent's tail is read: this shard's own records follow it.
                    tracing::info!(shard = %self.shard, parent = %self.reading, "kinesis: parent's tail re-read");
                    self.end_tail();
                }
                None => return Stop::ShardEnd { merged: false },
            }
            if empty {
                next_call = tokio::time::Instant::now() + Duration::from_secs(1);
            }
        }
    }

    /// Keeps the lease: writes the newest checkpoint whose barriers have all returned (which
    /// renews it), else renews it when [`RENEW_EVERY`] has passed. Never waits for an output.
    async fn upkeep(&mut self, commits: &mut Commits, renewed: &mut Instant) -> Result<(), Stop> {
        match self.commit_ready(commits).await {
            Ok(true) => *renewed = Instant::now(),
            Ok(false) => {}
            Err(LeaseError::Lost(_)) => return Err(Stop::Lost),
            // Throttled or unreachable: the next checkpoint supersedes this one, and the lease
            // is renewed below.
            Err(e) => {
                tracing::warn!(shard = %self.shard, error = %e, "kinesis: checkpoint not written; the next one follows")
            }
        }
        if renewed.elapsed() >= RENEW_EVERY {
            match self
                .leases
                .own(&self.shard, self.counter, &self.owner)
                .await
            {
                Ok(c) => {
                    self.counter = c;
                    *renewed = Instant::now();
                }
                Err(LeaseError::Lost(_)) => return Err(Stop::Lost),
                Err(e) => {
                    tracing::warn!(shard = %self.shard, error = %e, "kinesis: lease renewal failed; retrying")
                }
            }
        }
        Ok(())
    }

    /// Writes the newest checkpoint that every output has acknowledged, if any; whether one was
    /// written.
    async fn commit_ready(&mut self, commits: &mut Commits) -> Result<bool, LeaseError> {
        let Some(Ready {
            slot,
            seq,
            checkpoint,
        }) = commits.ready().pop()
        else {
            return Ok(false);
        };
        let written = self.commit(checkpoint).await?;
        commits.done(slot, seq);
        Ok(written)
    }

    /// Writes an acknowledged checkpoint to the lease: "after sequence S", with the engine's
    /// positions made relative to the record after S; whether there was anything to write.
    async fn commit(&mut self, checkpoint: Checkpoint) -> Result<bool, LeaseError> {
        let Some(p) = checkpoint.resume_position() else {
            return Ok(false);
        };
        if p < self.base {
            // Still needs the parent's tail, which only a fresh start re-reads.
            return Ok(false);
        }
        let sequence = if p == self.base {
            // The start point of this run; at the start of the shard, a checkpoint "from the
            // first record" (its alert state says what was notified), once the parent's tail is
            // no longer being read.
            match &self.start_after {
                Some(s) => s.clone(),
                None if self.tail_range.is_none() => FROM_START.to_owned(),
                None => return Ok(false),
            }
        } else {
            // The record before the low-water one; gone only if a newer checkpoint was written.
            match self.sequences.iter().find(|(pos, _)| *pos == p - 1) {
                Some((_, s)) => s.clone(),
                None => return Ok(false),
            }
        };
        let c = checkpoint;
        let rebased = Checkpoint {
            watermark: c.watermark,
            low_water: Some(0),
            last_position: c.last_position.and_then(|l| l.checked_sub(p)),
            closings: c
                .closings
                .iter()
                .map(|(end, at)| (*end, at.and_then(|q| q.checked_sub(p))))
                .collect(),
            alerts: c.alerts.clone(),
            finals: c
                .finals
                .iter()
                .map(|(end, at)| (*end, at.and_then(|q| q.checked_sub(p))))
                .collect(),
        };
        self.counter = self
            .leases
            .checkpoint(
                &self.shard,
                self.counter,
                &self.owner,
                &sequence,
                &rebased.encode(),
            )
            .await?;
        METRICS.source_commits.fetch_add(1, Ordering::Relaxed);
        self.committed = Some(sequence).filter(|s| s != FROM_START);
        // Positions before p - 1 are never needed again.
        while self.sequences.front().is_some_and(|(pos, _)| *pos + 1 < p) {
            self.sequences.pop_front();
        }
        Ok(true)
    }
}
