//! The Kafka source (`[source] kind = "kafka"`): a member of a consumer group that runs one
//! window engine per assigned partition and commits each partition's low-water offset once the
//! results that depend on it are stored (DESIGN decisions 2 and 3).
//!
//! One OS thread polls the consumer (no `await` per record): it copies each message into the
//! pending batch of its partition and hands full batches, or all of them when the consumer has
//! nothing more for now, to that partition's engine task. The thread also runs the group
//! protocol's callbacks and commits:
//!
//! * **Assign** — the committed offset of each new partition is read with its metadata (the
//!   engine's [`Checkpoint`]), the partition is assigned explicitly at that offset, and an engine
//!   resumes from the checkpoint: the replay rebuilds the open windows and re-emits the same
//!   summaries.
//! * **Revoke** (cooperative-sticky: only the partitions that move) — the partition's engine
//!   hands off: it stops without emitting its open windows, its last checkpoint is committed as
//!   soon as the store and the summary stream have everything before it, and only then is the
//!   partition given up.
//! * **Commits** — each engine sends a checkpoint at most once a second with barriers through
//!   the sinks; the thread saves the newest checkpoint whose barriers have all returned to the
//!   checkpoint topic (see `checkpoints.rs`), then commits the offset = the partition's low-water
//!   position (with the checkpoint as metadata, for brokers that keep it).
//!
//! Stopping the source hands off every partition the same way, so a restart or another member
//! continues exactly where the results end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Statistics};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::oneshot::error::TryRecvError;
use tokio_util::sync::CancellationToken;

use crate::kafka::{client_config, Observed};

mod checkpoints;
use crate::metrics::METRICS;
use crate::output::Fanout;
use crate::pipeline::{self, Batch, CommitRequest, Durable, PartitionSpec};
use crate::window::{Checkpoint, WindowConfig};
use checkpoints::Checkpoints;

/// Records per batch handed to an engine, at most.
const BATCH_RECORDS: usize = 2_048;
/// Bytes per batch, at most (a batch may exceed it by one record).
const BATCH_BYTES: usize = 1 << 20;
/// Batches queued per partition before the poll thread waits (and stops fetching).
const PARTITION_QUEUE: usize = 16;
/// How long a hand-off may wait for the engine and the sinks before giving the partition up
/// without its last commit (the next owner then re-reads a little more).
const HANDOFF_WAIT: Duration = Duration::from_secs(15);
/// How long one request for committed offsets may take.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// Consumer settings the guarantees rest on; the user's pass-through options come after them
/// (those that would break a guarantee are refused when the config is checked).
const CONSUMER_DEFAULTS: [(&str, &str); 7] = [
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("statistics.interval.ms", "1000"),
    ("enable.partition.eof", "false"),
    // A live dashboard: a broker with nothing new answers a fetch within 50 ms, not 500.
    ("fetch.wait.max.ms", "50"),
];

/// What the source needs from the configuration.
pub struct KafkaSourceConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// The telemetry topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// librdkafka pass-through options.
    pub options: toml::Table,
    /// The topic the engines' checkpoints are kept in.
    pub checkpoint_topic: String,
    /// Window settings for each partition's engine.
    pub window: WindowConfig,
}

/// A running Kafka source.
pub struct KafkaSource {
    thread: JoinHandle<()>,
    /// Up while a broker is connected (for `/readyz`).
    pub connected: Arc<AtomicBool>,
}

impl KafkaSource {
    /// Joins the group and starts consuming; stops (handing every partition off) when `stop`
    /// is cancelled.
    ///
    /// # Errors
    /// librdkafka refused the settings, or the subscription failed.
    pub fn start(
        cfg: KafkaSourceConfig,
        outputs: Fanout,
        stop: CancellationToken,
    ) -> Result<KafkaSource, KafkaError> {
        let observed = Observed::default();
        let connected = Arc::clone(&observed.connected);
        let (commits, commit_rx) = mpsc::unbounded_channel();
        let context = GroupContext {
            observed,
            runtime: Handle::current(),
            topic: cfg.topic.clone(),
            window: cfg.window,
            outputs,
            commits,
            state: Mutex::new(State {
                owned: HashMap::new(),
                next_slot: 0,
                pending: Vec::new(),
                commit_rx,
            }),
            changed: AtomicBool::new(false),
            checkpoints: OnceLock::new(),
        };
        let mut config = client_config(&cfg.brokers, &CONSUMER_DEFAULTS, &cfg.options);
        config.set("group.id", &cfg.group);
        let consumer: BaseConsumer<GroupContext> = config.create_with_context(context)?;
        let thread = std::thread::Builder::new()
            .name("kafka-source".into())
            .spawn(move || {
                // The checkpoint store first (retrying while the cluster is unreachable): the
                // group callbacks need it as soon as partitions arrive.
                let mut wait = Duration::from_millis(500);
                let store = loop {
                    match Checkpoints::open(
                        &cfg.brokers,
                        &cfg.options,
                        &cfg.checkpoint_topic,
                        &cfg.group,
                        &cfg.topic,
                    ) {
                        Ok(store) => break store,
                        Err(e) => {
                            tracing::warn!(brokers = %cfg.brokers, topic = %cfg.checkpoint_topic, error = %e, "kafka: cannot open the checkpoint topic; retrying");
                            if stop.is_cancelled() {
                                return;
                            }
                            std::thread::sleep(wait);
                            wait = (wait * 2).min(Duration::from_secs(10));
                        }
                    }
                };
                let _ = consumer.context().checkpoints.set(store);
                if let Err(e) = consumer.subscribe(&[&cfg.topic]) {
                    tracing::error!(topic = %cfg.topic, error = %e, "kafka: cannot subscribe");
                    return;
                }
                tracing::info!(brokers = %cfg.brokers, topic = %cfg.topic, group = %cfg.group, "kafka source subscribed");
                poll_loop(&consumer, &stop);
            })
            .map_err(|e| KafkaError::Subscription(format!("cannot start the poll thread: {e}")))?;
        Ok(KafkaSource { thread, connected })
    }

    /// Waits for the source to have handed off every partition and left the group.
    pub async fn stopped(self) {
        let joined = tokio::task::spawn_blocking(move || self.thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("the kafka source thread panicked while stopping");
        }
    }
}

/// One assigned partition, as the group callbacks see it.
struct Owned {
    slot: u32,
    tx: mpsc::Sender<Batch>,
    task: tokio::task::JoinHandle<()>,
    handoff: CancellationToken,
}

/// Shared between the poll loop and the group callbacks (both on the poll thread; the mutex is
/// taken per batch and per rebalance, never per record).
struct State {
    owned: HashMap<i32, Owned>,
    next_slot: u32,
    /// Checkpoints waiting for their barriers, oldest first.
    pending: Vec<CommitRequest>,
    commit_rx: mpsc::UnboundedReceiver<CommitRequest>,
}

struct GroupContext {
    observed: Observed,
    runtime: Handle,
    topic: String,
    window: WindowConfig,
    outputs: Fanout,
    commits: mpsc::UnboundedSender<CommitRequest>,
    state: Mutex<State>,
    /// Set when the assignment changed, for the poll loop to pick up.
    changed: AtomicBool,
    /// Where checkpoints are saved (set by the poll thread before it subscribes).
    checkpoints: OnceLock<Checkpoints>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.observed.log(level, fac, message);
    }

    fn stats(&self, statistics: Statistics) {
        self.observed.stats(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.observed.error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let start = self.assign(consumer, tpl);
                if cooperative {
                    consumer.incremental_assign(&start)
                } else {
                    consumer.assign(&start)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                self.hand_off(consumer, &partitions, lost);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "kafka rebalance failed; giving every partition up");
                let owned: Vec<i32> = self.state().owned.keys().copied().collect();
                self.hand_off(consumer, &owned, true);
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "kafka: cannot apply the new assignment");
        }
    }
}

impl GroupContext {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts an engine for each newly assigned partition, resumed from its committed
    /// checkpoint; returns the assignment with each partition's start offset made explicit.
    fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> TopicPartitionList {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let saved = self.saved(&partitions);
        let committed = self.committed(consumer, tpl);
        let mut start = TopicPartitionList::with_capacity(tpl.count());
        let mut state = self.state();
        for elem in tpl.elements() {
            let partition = elem.partition();
            // Our own checkpoint first; else an offset committed with one (brokers that keep
            // commit metadata); else a bare committed offset (another program's).
            let committed = committed
                .as_ref()
                .and_then(|c| c.find_partition(elem.topic(), partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some((o as u64, e.metadata().to_owned())),
                    _ => None,
                });
            let (offset, resume) = match (saved.get(&partition), committed) {
                (Some(s), _) => (Some(s.offset), Some(s.checkpoint.clone())),
                (None, Some((o, meta))) => (Some(o), Checkpoint::decode(&meta, o)),
                (None, None) => (None, None),
            };
            match offset.and_then(|o| i64::try_from(o).ok()) {
                Some(o) => {
                    let _ = start.add_partition_offset(elem.topic(), partition, Offset::Offset(o));
                }
                None => {
                    start.add_partition(elem.topic(), partition);
                }
            }
            if offset.is_some() && resume.is_none() {
                tracing::warn!(
                    partition,
                    "committed offset has no Stampede checkpoint: starting a fresh engine there"
                );
            }
            tracing::info!(
                partition,
                ?offset,
                resumed = resume.is_some(),
                "kafka partition assigned"
            );
            let slot = state.next_slot;
            state.next_slot += 1;
            let (tx, rx) = mpsc::channel(PARTITION_QUEUE);
            let handoff = CancellationToken::new();
            let spec = PartitionSpec {
                window: self.window,
                source: "kafka",
                name: format!("{}/{partition}", self.topic),
                durable: Some(Durable {
                    slot,
                    resume,
                    commits: self.commits.clone(),
                }),
            };
            let task = self.runtime.spawn(pipeline::run(
                spec,
                rx,
                self.outputs.clone(),
                handoff.clone(),
            ));
            if let Some(old) = state.owned.insert(
                partition,
                Owned {
                    slot,
                    tx,
                    task,
                    handoff,
                },
            ) {
                // Assigned twice without a revoke in between (a lost assignment): stop the old one.
                old.handoff.cancel();
            }
        }
        METRICS
            .source_partitions
            .store(state.owned.len() as i64, Ordering::Relaxed);
        self.changed.store(true, Ordering::Release);
        start
    }

    /// The saved checkpoints of `partitions`, retried while the topic cannot be read: starting an
    /// engine without its checkpoint could emit a partial window.
    fn saved(&self, partitions: &[i32]) -> HashMap<i32, checkpoints::Saved> {
        let Some(store) = self.checkpoints.get() else {
            return HashMap::new();
        };
        retried("saved checkpoints", || store.load(partitions)).unwrap_or_default()
    }

    /// The committed offsets (and checkpoints) of `tpl`, retried while the coordinator is
    /// unreachable.
    fn committed(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> Option<TopicPartitionList> {
        retried("committed offsets", || {
            consumer.committed_offsets(tpl.clone(), COMMITTED_TIMEOUT)
        })
    }

    /// Stops the engines of `partitions` without emitting their open windows, then commits
    /// their last checkpoints (unless the assignment was lost: another member owns them now).
    fn hand_off(&self, consumer: &BaseConsumer<Self>, partitions: &[i32], lost: bool) {
        let stopping: Vec<(i32, Owned)> = {
            let mut state = self.state();
            let stopping = partitions
                .iter()
                .filter_map(|p| state.owned.remove(p).map(|o| (*p, o)))
                .collect();
            METRICS
                .source_partitions
                .store(state.owned.len() as i64, Ordering::Relaxed);
            stopping
        };
        self.changed.store(true, Ordering::Release);
        if stopping.is_empty() {
            return;
        }
        for (_, owned) in &stopping {
            owned.handoff.cancel();
        }
        let deadline = Instant::now() + HANDOFF_WAIT;
        let mut slots = Vec::with_capacity(stopping.len());
        for (partition, mut owned) in stopping {
            slots.push(owned.slot);
            drop(owned.tx);
            let left = deadline.saturating_duration_since(Instant::now());
            let task = &mut owned.task;
            if self
                .runtime
                .block_on(async { tokio::time::timeout(left, task).await })
                .is_err()
            {
                // Stuck behind a sink that does not drain: stop it rather than leave a second
                // writer for a partition another member now owns.
                owned.task.abort();
                tracing::warn!(
                    partition,
                    "kafka: partition engine did not stop in time; aborted"
                );
            }
        }
        if lost {
            tracing::warn!(
                ?partitions,
                "kafka: assignment lost; the new owner re-reads from the last commit"
            );
            self.drop_pending(&slots);
            return;
        }
        // Wait for the last checkpoints' barriers, then commit them synchronously.
        let mut state = self.state();
        collect_requests(&mut state);
        for request in state.pending.iter_mut().filter(|r| slots.contains(&r.slot)) {
            // Keep what did not answer (a timeout) or answered closed, for commit_ready to see.
            request.stored.retain_mut(|rx| {
                let left = deadline.saturating_duration_since(Instant::now());
                let answer = self
                    .runtime
                    .block_on(async { tokio::time::timeout(left, &mut *rx).await });
                !matches!(answer, Ok(Ok(())))
            });
        }
        let topic = self.topic.clone();
        let owners = slot_partitions(&state, &slots, partitions);
        commit_ready(consumer, &mut state, &topic, &owners, CommitMode::Sync);
        state.pending.retain(|r| !slots.contains(&r.slot));
        tracing::info!(?partitions, "kafka partitions handed off");
    }

    fn drop_pending(&self, slots: &[u32]) {
        let mut state = self.state();
        collect_requests(&mut state);
        state.pending.retain(|r| !slots.contains(&r.slot));
    }
}

/// `read`, retried with backoff for about a minute while the cluster does not answer; `None`
/// (logged) if it never does: the partitions then start from their committed offsets, or
/// `auto.offset.reset` without one.
fn retried<T>(what: &str, mut read: impl FnMut() -> KafkaResult<T>) -> Option<T> {
    let mut wait = Duration::from_millis(200);
    for attempt in 1..=12 {
        match read() {
            Ok(value) => return Some(value),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "kafka: cannot read {what}; retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!("kafka: {what} unreadable; partitions start without them");
    None
}

/// Moves newly arrived checkpoint requests into the pending list.
fn collect_requests(state: &mut State) {
    while let Ok(request) = state.commit_rx.try_recv() {
        state.pending.push(request);
    }
}

/// The partition of each slot being committed: owned ones from the map, handed-off ones from
/// `handed_off` (in the order their slots were listed).
fn slot_partitions(state: &State, handed_off_slots: &[u32], handed_off: &[i32]) -> Vec<(u32, i32)> {
    let mut owners: Vec<(u32, i32)> = state.owned.iter().map(|(p, o)| (o.slot, *p)).collect();
    owners.extend(
        handed_off_slots
            .iter()
            .copied()
            .zip(handed_off.iter().copied()),
    );
    owners
}

/// Commits, per partition in `owners`, the newest pending checkpoint whose barriers have all
/// returned; drops checkpoints superseded by it, and those whose sink gave up.
fn commit_ready(
    consumer: &BaseConsumer<GroupContext>,
    state: &mut State,
    topic: &str,
    owners: &[(u32, i32)],
    mode: CommitMode,
) {
    let (newest, abandoned) = settled(&mut state.pending);
    let mut tpl = TopicPartitionList::new();
    let mut ready = Vec::new();
    for (&slot, &i) in &newest {
        let Some(&(_, partition)) = owners.iter().find(|(s, _)| *s == slot) else {
            continue;
        };
        let request = &state.pending[i];
        let Some(position) = request.checkpoint.resume_position() else {
            continue;
        };
        let Ok(offset) = i64::try_from(position) else {
            continue;
        };
        if tpl
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .is_ok()
        {
            if let Some(mut elem) = tpl.find_partition(topic, partition) {
                elem.set_metadata(request.checkpoint.encode());
            }
            ready.push((slot, i));
        }
    }
    if !abandoned.is_empty() {
        tracing::warn!(
            count = abandoned.len(),
            "a sink stopped before storing: checkpoints not committed"
        );
    }
    if tpl.count() == 0 {
        drop_committed(&mut state.pending, &[], &abandoned);
        return;
    }
    let entries: Vec<(i32, u64, Checkpoint)> = ready
        .iter()
        .filter_map(|&(slot, i)| {
            let partition = owners.iter().find(|(s, _)| *s == slot)?.1;
            let checkpoint = state.pending[i].checkpoint.clone();
            Some((partition, checkpoint.resume_position()?, checkpoint))
        })
        .collect();
    if let Some(store) = consumer.context().checkpoints.get() {
        if let Err(e) = store.save(&entries) {
            METRICS.source_commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "kafka: cannot save checkpoints; the next round retries");
            drop_committed(&mut state.pending, &[], &abandoned);
            return;
        }
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            METRICS
                .source_commits
                .fetch_add(tpl.count() as u64, Ordering::Relaxed);
            drop_committed(&mut state.pending, &ready, &abandoned);
        }
        Err(e) => {
            METRICS.source_commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "kafka: commit failed; the next checkpoint retries");
            drop_committed(&mut state.pending, &[], &abandoned);
        }
    }
}

/// Checks the barriers of `pending` without waiting. Returns, per slot, the index of its newest
/// request whose barriers have all returned, and the indexes of requests a sink gave up on (a
/// barrier dropped unanswered: what came before it may not be stored).
fn settled(pending: &mut [CommitRequest]) -> (HashMap<u32, usize>, Vec<usize>) {
    let mut newest: HashMap<u32, usize> = HashMap::new();
    let mut abandoned = Vec::new();
    for (i, request) in pending.iter_mut().enumerate() {
        let mut done = true;
        let mut failed = false;
        request.stored.retain_mut(|rx| match rx.try_recv() {
            Ok(()) => false,
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
            abandoned.push(i);
        } else if done {
            // Barriers return in order, so the ready requests of a partition are its oldest;
            // the last of them wins.
            newest.insert(request.slot, i);
        }
    }
    (newest, abandoned)
}

/// Drops committed requests with everything older of the same partition, and abandoned ones.
fn drop_committed(
    pending: &mut Vec<CommitRequest>,
    committed: &[(u32, usize)],
    abandoned: &[usize],
) {
    let mut index = 0;
    pending.retain(|r| {
        let i = index;
        index += 1;
        let superseded = committed
            .iter()
            .any(|&(slot, at)| r.slot == slot && i <= at);
        !superseded && !abandoned.contains(&i)
    });
}

/// A partition's batch being filled by the poll loop.
struct Filling {
    slot: u32,
    tx: mpsc::Sender<Batch>,
    payload: BytesMut,
    records: Vec<std::ops::Range<usize>>,
    positions: Vec<u64>,
}

impl Filling {
    fn push(&mut self, message: &BorrowedMessage<'_>) {
        let bytes = message.payload().unwrap_or_default();
        let start = self.payload.len();
        self.payload.extend_from_slice(bytes);
        self.records.push(start..self.payload.len());
        self.positions
            .push(u64::try_from(message.offset()).unwrap_or_default());
    }

    fn full(&self) -> bool {
        self.records.len() >= BATCH_RECORDS || self.payload.len() >= BATCH_BYTES
    }

    /// Sends the batch to the engine, waiting while its queue is full. A closed queue means the
    /// partition was handed off: its records will be re-read by the next owner.
    fn send(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let batch = Batch {
            payload: self.payload.split().freeze(),
            records: std::mem::replace(&mut self.records, Vec::with_capacity(BATCH_RECORDS)),
            positions: std::mem::replace(&mut self.positions, Vec::with_capacity(BATCH_RECORDS)),
            reply: None,
        };
        let _ = self.tx.blocking_send(batch);
    }
}

/// The poll thread: fills batches, runs the group callbacks, commits; hands everything off and
/// leaves the group when `stop` fires.
fn poll_loop(consumer: &BaseConsumer<GroupContext>, stop: &CancellationToken) {
    let ctx = consumer.context();
    let mut filling: HashMap<i32, Filling> = HashMap::new();
    let mut last_commit = Instant::now();
    let mut wait = Duration::ZERO;
    while !stop.is_cancelled() {
        let polled = consumer.poll(wait);
        if ctx.changed.swap(false, Ordering::Acquire) {
            reconcile(ctx, &mut filling);
        }
        match polled {
            Some(Ok(message)) => {
                wait = Duration::ZERO;
                if let Some(f) = filling.get_mut(&message.partition()) {
                    f.push(&message);
                    if f.full() {
                        f.send();
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consumer error");
                wait = Duration::from_millis(100);
            }
            None => {
                for f in filling.values_mut() {
                    f.send();
                }
                wait = Duration::from_millis(100);
            }
        }
        if wait > Duration::ZERO || last_commit.elapsed() >= Duration::from_millis(200) {
            last_commit = Instant::now();
            let mut state = ctx.state();
            collect_requests(&mut state);
            if !state.pending.is_empty() {
                let owners = slot_partitions(&state, &[], &[]);
                // Checkpoints of partitions given up without a hand-off (a lost assignment).
                state
                    .pending
                    .retain(|r| owners.iter().any(|(slot, _)| *slot == r.slot));
                commit_ready(consumer, &mut state, &ctx.topic, &owners, CommitMode::Async);
            }
        }
    }
    // Stop: hand every partition off (records still filling are re-read by the next owner),
    // then leave the group.
    drop(filling);
    let owned: Vec<i32> = ctx.state().owned.keys().copied().collect();
    ctx.hand_off(consumer, &owned, false);
    consumer.unsubscribe();
    tracing::info!("kafka source stopped");
}

/// Matches the poll loop's batches to the current assignment: drops those of partitions given
/// up (their records are re-read by the next owner) and opens those of new ones.
fn reconcile(ctx: &GroupContext, filling: &mut HashMap<i32, Filling>) {
    let state = ctx.state();
    filling.retain(|p, f| state.owned.get(p).is_some_and(|o| o.slot == f.slot));
    for (&partition, owned) in &state.owned {
        filling.entry(partition).or_insert_with(|| Filling {
            slot: owned.slot,
            tx: owned.tx.clone(),
            payload: BytesMut::with_capacity(64 << 10),
            records: Vec::with_capacity(BATCH_RECORDS),
            positions: Vec::with_capacity(BATCH_RECORDS),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn request(slot: u32, barriers: usize) -> (CommitRequest, Vec<oneshot::Sender<()>>) {
        let (senders, stored) = (0..barriers).map(|_| oneshot::channel()).unzip();
        let checkpoint = Checkpoint {
            watermark: 0,
            low_water: Some(u64::from(slot)),
            last_position: None,
            closings: Vec::new(),
        };
        let r = CommitRequest {
            slot,
            checkpoint,
            stored,
        };
        (r, senders)
    }

    #[test]
    fn only_checkpoints_whose_barriers_all_returned_are_committed_newest_first() {
        let (a1, mut a1_tx) = request(1, 2);
        let (a2, mut a2_tx) = request(1, 2);
        let (b1, mut b1_tx) = request(2, 2);
        let (c1, c1_tx) = request(3, 1);
        let mut pending = vec![a1, a2, b1, c1];
        // Nothing answered yet.
        assert_eq!(settled(&mut pending), (HashMap::new(), vec![]));
        // Slot 1: both of its requests answered by both sinks; slot 2: one sink only.
        for tx in a1_tx.drain(..).chain(a2_tx.drain(..)) {
            tx.send(()).unwrap();
        }
        b1_tx.remove(0).send(()).unwrap();
        // Slot 3: the sink ended without answering.
        drop(c1_tx);
        let (newest, abandoned) = settled(&mut pending);
        assert_eq!(newest, HashMap::from([(1, 1)]));
        assert_eq!(abandoned, vec![3]);
        // A barrier answered earlier is remembered: slot 2 completes with its second sink.
        b1_tx.remove(0).send(()).unwrap();
        let (newest, _) = settled(&mut pending);
        assert_eq!(newest.get(&2), Some(&2));
        // Committing slot 1's newest drops its older one too, and the abandoned one.
        drop_committed(&mut pending, &[(1, 1)], &[3]);
        let left: Vec<u32> = pending.iter().map(|r| r.slot).collect();
        assert_eq!(left, vec![2]);
    }
}
