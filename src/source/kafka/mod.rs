//! The Kafka source (`[source] kind = "kafka"`): a member of a consumer group that runs one
//! window engine per assigned partition and commits each partition's low-water offset once the
//! results that depend on it are stored (DESIGN decisions 2 and 3).
//!
//! One OS thread polls the consumer (no `await` per record): it copies each message into the
//! pending batch of its partition and offers full batches, or all of them when the consumer has
//! nothing more for now, to that partition's engine task (the shared lifecycle of
//! [`durable`](crate::source::durable)). An engine whose queue is full (an output is slow) gets
//! its partition *paused* — the thread never waits for it, so it keeps polling, heartbeating and
//! committing, and a stalled store causes no rebalance; the partition resumes once the engine
//! takes the batch. The thread also runs the group protocol's callbacks and commits:
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
//!   the outputs; the thread saves the newest checkpoint whose barriers have all returned to the
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

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Statistics};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::clients::kafka::{client_config, Observed};

mod checkpoints;
use crate::metrics::METRICS;
use crate::output::Fanout;
use crate::pipeline::{Batch, CommitRequest, Steps};
use crate::record::SourceKind;
use crate::source::durable::{BatchBuilder, Commits, Feeder, Partition, Ready, Refused};
use crate::window::Checkpoint;
use checkpoints::Checkpoints;

/// Brokers refuse offset metadata past `offset.metadata.max.bytes` (4,096 by default).
const MAX_OFFSET_METADATA: usize = 4_000;

/// The checkpoint as offset metadata: the whole text, or without its alert state when that
/// makes it too long for a broker (the checkpoint topic keeps it whole; the metadata is only the
/// fallback for a group whose checkpoint records are gone).
fn offset_metadata(checkpoint: &Checkpoint) -> String {
    let text = checkpoint.encode();
    if text.len() <= MAX_OFFSET_METADATA {
        return text;
    }
    Checkpoint {
        alerts: None,
        ..checkpoint.clone()
    }
    .encode()
}

/// How long a hand-off may wait for the engine and the outputs before giving the partition up
/// without its last commit (the next owner then re-reads a little more).
const HANDOFF_WAIT: Duration = Duration::from_secs(15);
/// How long one request for committed offsets may take.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// Consumer settings the guarantees rest on; the user's pass-through options come after them
/// (those that would break a guarantee are refused when the config is checked).
const CONSUMER_DEFAULTS: [(&str, &str); 8] = [
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("statistics.interval.ms", "1000"),
    ("enable.partition.eof", "false"),
    // A live dashboard: a broker with nothing new answers a fetch within 10 ms, not 500. Some
    // brokers (tansu) hold every fetch for its whole wait, so this is also their pace when
    // reading a backlog: measured on tansu, 10 ms read 0.85 M records/s where 50 ms read 0.42 M.
    ("fetch.wait.max.ms", "10"),
    // With fetches that quick, librdkafka's local queue reaches its threshold often, and by
    // default it then waits a whole second before fetching that partition again: throughput
    // fell to 0.3 M records/s and came in bursts.
    ("fetch.queue.backoff.ms", "10"),
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
}

/// A running Kafka source.
pub struct KafkaSource {
    thread: JoinHandle<()>,
    /// Up while a broker is connected (for `/readyz`).
    pub connected: Arc<AtomicBool>,
    /// The consumer's last error, in words (why it is down, while it is).
    pub last_error: Arc<Mutex<Option<String>>>,
}

impl KafkaSource {
    /// Joins the group and starts consuming; stops (handing every partition off) when `stop`
    /// is cancelled.
    ///
    /// # Errors
    /// librdkafka refused the settings, or the subscription failed.
    pub fn start(
        cfg: KafkaSourceConfig,
        steps: Steps,
        outputs: Fanout,
        stop: CancellationToken,
    ) -> Result<KafkaSource, KafkaError> {
        let observed = Observed::default();
        let connected = Arc::clone(&observed.connected);
        let last_error = Arc::clone(&observed.last_error);
        let (pending, commits) = Commits::new();
        let context = GroupContext {
            observed,
            runtime: Handle::current(),
            topic: cfg.topic.clone(),
            steps,
            outputs,
            commits,
            state: Mutex::new(State {
                owned: HashMap::new(),
                next_slot: 0,
                commits: pending,
            }),
            changed: AtomicBool::new(false),
            rejoining: AtomicBool::new(false),
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
                let mut wait = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
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
                            wait.wait_blocking();
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
        Ok(KafkaSource {
            thread,
            connected,
            last_error,
        })
    }

    /// Waits for the source to have handed off every partition and left the group.
    pub async fn stopped(self) {
        let joined = tokio::task::spawn_blocking(move || self.thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("the kafka source thread panicked while stopping");
        }
    }
}

/// Shared between the poll loop and the group callbacks (both on the poll thread; the mutex is
/// taken per batch and per rebalance, never per record).
struct State {
    owned: HashMap<i32, Partition>,
    next_slot: u32,
    /// Checkpoints waiting for their barriers.
    commits: Commits,
}

struct GroupContext {
    observed: Observed,
    runtime: Handle,
    topic: String,
    steps: Steps,
    outputs: Fanout,
    commits: mpsc::UnboundedSender<CommitRequest>,
    state: Mutex<State>,
    /// Set when the assignment changed, for the poll loop to pick up.
    changed: AtomicBool,
    /// The assignment was lost (the group session timed out) and none has come since: the
    /// member reads nothing, so `/readyz` says the source is down even while a connection that
    /// nothing is sent on still looks up (a stalled link keeps idle connections "UP").
    rejoining: AtomicBool,
    /// Where checkpoints are saved (set by the poll thread before it subscribes).
    checkpoints: OnceLock<Checkpoints>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.observed.log(level, fac, message);
    }

    fn stats(&self, statistics: Statistics) {
        // Out of the group, the connections' state is no news: down until assigned again.
        if self.rejoining.load(Ordering::Relaxed) {
            self.observed.connected.store(false, Ordering::Relaxed);
        } else {
            self.observed.stats(statistics);
        }
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
                if self.rejoining.swap(false, Ordering::Relaxed) {
                    tracing::info!("kafka: back in the consumer group");
                }
                let start = self.assign(consumer, tpl);
                if cooperative {
                    consumer.incremental_assign(&start)
                } else {
                    consumer.assign(&start)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Partitions paused behind a busy engine leave unpaused, so that one assigned
                // here again fetches.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::debug!(error = %e, "kafka: cannot resume revoked partitions");
                }
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
    /// The member is out of the group until its next assignment: `/readyz` says so, with why.
    fn left_group(&self, why: &str) {
        self.rejoining.store(true, Ordering::Relaxed);
        self.observed.connected.store(false, Ordering::Relaxed);
        *self
            .observed
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why.to_owned());
    }

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
            METRICS.source_taken.fetch_add(1, Ordering::Relaxed);
            let engine = Partition::start_on(
                &self.runtime,
                (
                    SourceKind::Kafka,
                    format!("{}/{partition}", self.topic),
                    self.steps.clone(),
                ),
                slot,
                resume,
                self.commits.clone(),
                self.outputs.clone(),
            );
            if let Some(old) = state.owned.insert(partition, engine) {
                // Assigned twice without a revoke in between (a lost assignment): stop the old one.
                old.abort();
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
        if lost {
            self.left_group(
                "the assignment was lost (a group session that timed out, or a failed rebalance); rejoining the group",
            );
        }
        let stopping: Vec<(i32, Partition)> = {
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
        let deadline = Instant::now() + HANDOFF_WAIT;
        let mut handed: Vec<(u32, i32)> = Vec::with_capacity(stopping.len());
        for (partition, engine) in stopping {
            handed.push((engine.slot, partition));
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.runtime.block_on(engine.stop(false, left)) {
                // Stuck behind an output that does not drain: stopped rather than left as a
                // second writer for a partition another member now owns.
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
            let mut state = self.state();
            for (slot, _) in &handed {
                state.commits.forget(*slot);
            }
            return;
        }
        // Wait for the last checkpoints' barriers, then commit them synchronously.
        let mut state = self.state();
        let until = tokio::time::Instant::from_std(deadline);
        for (slot, _) in &handed {
            self.runtime.block_on(state.commits.settle(*slot, until));
        }
        let topic = self.topic.clone();
        let owners = slot_partitions(&state, &handed);
        commit_ready(consumer, &mut state, &topic, &owners, CommitMode::Sync);
        for (slot, _) in &handed {
            state.commits.forget(*slot);
        }
        tracing::info!(?partitions, "kafka partitions handed off");
    }
}

/// `read`, retried with backoff for about a minute while the cluster does not answer; `None`
/// (logged) if it never does: the partitions then start from their committed offsets, or
/// `auto.offset.reset` without one.
fn retried<T>(what: &str, mut read: impl FnMut() -> KafkaResult<T>) -> Option<T> {
    let mut wait = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    for attempt in 1..=12 {
        match read() {
            Ok(value) => return Some(value),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "kafka: cannot read {what}; retrying");
                wait.wait_blocking();
            }
        }
    }
    tracing::error!("kafka: {what} unreadable; partitions start without them");
    None
}

/// The partition of each slot being committed: owned ones from the map, and the (slot,
/// partition) pairs being handed off.
fn slot_partitions(state: &State, handed_off: &[(u32, i32)]) -> Vec<(u32, i32)> {
    let mut owners: Vec<(u32, i32)> = state.owned.iter().map(|(p, e)| (e.slot, *p)).collect();
    owners.extend_from_slice(handed_off);
    owners
}

/// Commits, per partition in `owners`, the newest pending checkpoint whose barriers have all
/// returned (and drops those it supersedes); what fails stays pending for the next round.
fn commit_ready(
    consumer: &BaseConsumer<GroupContext>,
    state: &mut State,
    topic: &str,
    owners: &[(u32, i32)],
    mode: CommitMode,
) {
    let ready: Vec<(i32, Ready)> = state
        .commits
        .ready()
        .into_iter()
        .filter_map(|r| {
            let partition = owners.iter().find(|(s, _)| *s == r.slot)?.1;
            Some((partition, r))
        })
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut entries: Vec<(i32, u64, Checkpoint)> = Vec::new();
    for (partition, r) in &ready {
        let Some(position) = r.checkpoint.resume_position() else {
            continue;
        };
        let Ok(offset) = i64::try_from(position) else {
            continue;
        };
        if tpl
            .add_partition_offset(topic, *partition, Offset::Offset(offset))
            .is_ok()
        {
            if let Some(mut elem) = tpl.find_partition(topic, *partition) {
                elem.set_metadata(offset_metadata(&r.checkpoint));
            }
            entries.push((*partition, position, r.checkpoint.clone()));
        }
    }
    if tpl.count() == 0 {
        return;
    }
    if let Some(store) = consumer.context().checkpoints.get() {
        match store.save(&entries, matches!(mode, CommitMode::Sync)) {
            Ok(true) => {}
            // An earlier save is still unacknowledged (counted when it failed).
            Ok(false) => return,
            Err(e) => {
                METRICS.source_commit_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "kafka: cannot save checkpoints; the next round retries");
                return;
            }
        }
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            METRICS
                .source_commits
                .fetch_add(tpl.count() as u64, Ordering::Relaxed);
            for (_, r) in &ready {
                state.commits.done(r.slot, r.seq);
            }
        }
        Err(e) => {
            METRICS.source_commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "kafka: commit failed; the next checkpoint retries");
        }
    }
}

/// A partition's batch being filled by the poll loop.
struct Filling {
    slot: u32,
    feeder: Feeder,
    builder: BatchBuilder,
    /// A batch the engine had no room for, offered again before anything newer.
    blocked: Option<Batch>,
    /// Whether the partition is paused (while `blocked` waits).
    paused: bool,
}

impl Filling {
    fn push(&mut self, message: &BorrowedMessage<'_>) {
        self.builder.push(
            message.payload().unwrap_or_default(),
            u64::try_from(message.offset()).unwrap_or_default(),
        );
    }

    /// Offers the blocked batch, then what is filled; when the engine has no room, keeps the
    /// batch and pauses the partition (the consumer stops fetching it, the poll loop goes on),
    /// and resumes it once everything is taken. An engine that is gone was handed off: its
    /// records are the next owner's.
    fn offer(&mut self, consumer: &BaseConsumer<GroupContext>, partition: i32) {
        loop {
            let Some(batch) = self.blocked.take().or_else(|| self.builder.take()) else {
                break;
            };
            match self.feeder.offer(batch) {
                Ok(()) => {}
                Err(Refused::Full(batch)) => {
                    self.blocked = Some(*batch);
                    if !self.paused {
                        pause(consumer, partition, true);
                        self.paused = true;
                    }
                    return;
                }
                Err(Refused::Gone) => return,
            }
        }
        if self.paused {
            pause(consumer, partition, false);
            self.paused = false;
        }
    }
}

/// Pauses (or resumes) fetching one partition of the source's topic.
fn pause(consumer: &BaseConsumer<GroupContext>, partition: i32, paused: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&consumer.context().topic, partition);
    let result = if paused {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    match result {
        Ok(()) if paused => {
            METRICS.source_paused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(partition, "kafka: engine busy; partition paused");
        }
        Ok(()) => tracing::debug!(partition, "kafka: partition resumed"),
        Err(e) => tracing::warn!(partition, error = %e, "kafka: cannot pause or resume"),
    }
}

/// The poll thread: fills batches, runs the group callbacks, commits; hands everything off and
/// leaves the group when `stop` fires. It never waits for an engine.
fn poll_loop(consumer: &BaseConsumer<GroupContext>, stop: &CancellationToken) {
    let ctx = consumer.context();
    let mut filling: HashMap<i32, Filling> = HashMap::new();
    let mut last_commit = Instant::now();
    let mut wait = Duration::ZERO;
    while !stop.is_cancelled() {
        let polled = consumer.poll(wait);
        if ctx.changed.swap(false, Ordering::Acquire) {
            reconcile(consumer, &mut filling);
        }
        match polled {
            Some(Ok(message)) => {
                wait = Duration::ZERO;
                let partition = message.partition();
                if let Some(f) = filling.get_mut(&partition) {
                    f.push(&message);
                    if f.builder.full() && !f.paused {
                        f.offer(consumer, partition);
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consumer error");
                wait = Duration::from_millis(100);
            }
            None => {
                for (&partition, f) in &mut filling {
                    f.offer(consumer, partition);
                }
                wait = Duration::from_millis(100);
            }
        }
        // Paused partitions go on once their engine has made room.
        let mut paused = false;
        for (&partition, f) in filling.iter_mut().filter(|(_, f)| f.paused) {
            f.offer(consumer, partition);
            paused |= f.paused;
        }
        if paused {
            wait = wait.min(Duration::from_millis(20));
        }
        if wait > Duration::ZERO || last_commit.elapsed() >= Duration::from_millis(200) {
            last_commit = Instant::now();
            let mut state = ctx.state();
            let owners = slot_partitions(&state, &[]);
            // Checkpoints of partitions given up without a hand-off (a lost assignment).
            state
                .commits
                .retain_slots(|slot| owners.iter().any(|(s, _)| *s == slot));
            commit_ready(consumer, &mut state, &ctx.topic, &owners, CommitMode::Async);
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
fn reconcile(consumer: &BaseConsumer<GroupContext>, filling: &mut HashMap<i32, Filling>) {
    let ctx = consumer.context();
    let state = ctx.state();
    filling.retain(|p, f| state.owned.get(p).is_some_and(|e| e.slot == f.slot));
    for (&partition, engine) in &state.owned {
        if filling.contains_key(&partition) {
            continue;
        }
        filling.insert(
            partition,
            Filling {
                slot: engine.slot,
                feeder: engine.feeder(),
                builder: BatchBuilder::default(),
                blocked: None,
                paused: false,
            },
        );
    }
}
