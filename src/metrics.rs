//! Every metric in one place, as process-wide atomics, rendered in the Prometheus text format for
//! `GET /metrics`. Hot loops count locally and publish once per batch; labels are low
//! cardinality (reasons, stages), never a unicorn name.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::record::RejectReason;

/// Upper bounds (ms) of the latency histograms' buckets.
const LATENCY_BUCKETS_MS: [u64; 12] =
    [1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 60_000];

/// A latency histogram (buckets from 1 ms to 60 s).
pub struct Latency {
    /// Counts per bucket, the last one past every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    /// Sum of the latencies, ms.
    sum_ms: AtomicU64,
}

impl Latency {
    const fn new() -> Self {
        Latency {
            buckets: [ZERO; LATENCY_BUCKETS_MS.len() + 1],
            sum_ms: ZERO,
        }
    }

    /// Counts one latency of `ms` milliseconds.
    pub fn observe(&self, ms: u64) {
        self.observe_n(ms, 1);
    }

    /// Counts `n` latencies of `ms` milliseconds each.
    pub fn observe_n(&self, ms: u64, n: u64) {
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i].fetch_add(n, Relaxed);
        self.sum_ms.fetch_add(ms * n, Relaxed);
    }

    fn render(&self, s: &mut String, name: &str, help: &str) {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(
                s,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *b as f64 / 1_000.0
            );
        }
        cumulative += self.buckets[LATENCY_BUCKETS_MS.len()].load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            s,
            "{name}_sum {}",
            self.sum_ms.load(Relaxed) as f64 / 1_000.0
        );
        let _ = writeln!(s, "{name}_count {cumulative}");
    }
}

/// The service's counters and gauges.
pub struct Metrics {
    /// Records received (decoded or not).
    pub records_in: AtomicU64,
    /// Rejects by reason, indexed by [`RejectReason::index`].
    pub rejected: [AtomicU64; RejectReason::ALL.len()],
    /// Late records accepted (restating a window).
    pub late: AtomicU64,
    /// Summaries emitted the first time.
    pub summaries: AtomicU64,
    /// Restatements emitted.
    pub restated: AtomicU64,
    /// Window emit latency: wall time of emission minus window end.
    pub emit_latency: Latency,
    /// Window store latency: from a window's first emission (its close) to its summary stored.
    pub store_latency: Latency,
    /// Items waiting for the store output.
    pub queue_store: AtomicI64,
    /// Items waiting for the hub.
    pub queue_hub: AtomicI64,
    /// Connected WebSocket clients.
    pub ws_clients: AtomicI64,
    /// WebSocket upgrades refused at `web.max_ws_clients`.
    pub ws_refused: AtomicU64,
    /// Connections refused because as many as the server takes were open.
    pub connections_refused: AtomicU64,
    /// Clients resynchronised with a snapshot after falling behind.
    pub ws_resyncs: AtomicU64,
    /// Frames sent to WebSocket clients.
    pub ws_frames: AtomicU64,
    /// Failed store writes.
    pub store_errors: AtomicU64,
    /// Summaries written to the store.
    pub store_writes: AtomicU64,
    /// Messages acknowledged by the summary / dead-letter stream.
    pub stream_published: AtomicU64,
    /// Failed deliveries to the summary / dead-letter stream (each is retried).
    pub stream_errors: AtomicU64,
    /// Source positions committed (one per partition per commit).
    pub source_commits: AtomicU64,
    /// Failed commits of source positions (retried with the next checkpoint).
    pub source_commit_errors: AtomicU64,
    /// Partitions (or shards) this instance currently owns.
    pub source_partitions: AtomicI64,
    /// Times a source stopped reading a partition because its engine was busy (an output slow).
    pub source_paused: AtomicU64,
    /// Partitions (or shards) this instance took ownership of since it started.
    pub source_taken: AtomicU64,
    /// Items the live hub had no room for (it is never waited for).
    pub hub_dropped: AtomicU64,
    /// The gauges of each running partition engine, by (source, partition).
    partitions: Mutex<Vec<(String, String, Weak<PartitionGauges>)>>,
    /// Error counters of each output, by name.
    outputs: Mutex<Vec<(&'static str, Arc<OutputErrors>)>>,
    /// Alert state changes by (rule, state); rules are at most 64.
    alert_changes: Mutex<Vec<(String, &'static str, u64)>>,
    /// Notifications (mails, publishes) sent and failed, by channel: `[sns, smtp]`.
    pub notifications_sent: [AtomicU64; 2],
    /// See `notifications_sent`.
    pub notifications_failed: [AtomicU64; 2],
    /// Alert changes received by the alert output and not yet notified.
    pub alerts_pending: AtomicI64,
    /// Alert changes not sent because the notification log said they were.
    pub alerts_already_sent: AtomicU64,
    /// Built-in e-mail subscriptions: `[pending, confirmed]`.
    pub subscriptions: [AtomicI64; 2],
    /// Archive objects written.
    pub archive_objects: AtomicU64,
    /// Records in the archive objects written.
    pub archive_records: AtomicU64,
    /// Bytes of the archive objects written.
    pub archive_bytes: AtomicU64,
    /// Objects a replay found already written (after a crash or a move).
    pub archive_found: AtomicU64,
    /// Bytes of records buffered for the archive.
    pub archive_buffered: AtomicI64,
}

/// The channels of `stampede_notifications_total`, in the order of its arrays.
pub const CHANNELS: [&str; 2] = ["sns", "smtp"];

/// Errors of one output's service, by kind (`stampede_output_errors_total{output,kind}`).
#[derive(Debug, Default)]
pub struct OutputErrors {
    permanent: AtomicU64,
    transient: AtomicU64,
}

impl OutputErrors {
    /// Counts one error.
    pub fn count(&self, permanent: bool) {
        let counter = if permanent {
            &self.permanent
        } else {
            &self.transient
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// The gauges of one partition's engine, written without a lock per batch and tick; the series
/// go away when the engine ends (the last `Arc` is dropped).
#[derive(Debug, Default)]
pub struct PartitionGauges {
    /// Wall clock minus the partition's watermark, ms.
    pub watermark_lag_ms: AtomicI64,
    /// Batches waiting for the engine.
    pub queue: AtomicI64,
    /// Unicorns the engine tracks (seen, not yet forgotten).
    pub unicorns: AtomicI64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

/// The process's metrics.
pub static METRICS: Metrics = Metrics {
    records_in: ZERO,
    rejected: [ZERO; RejectReason::ALL.len()],
    late: ZERO,
    summaries: ZERO,
    restated: ZERO,
    emit_latency: Latency::new(),
    store_latency: Latency::new(),
    queue_store: AtomicI64::new(0),
    queue_hub: AtomicI64::new(0),
    ws_clients: AtomicI64::new(0),
    ws_resyncs: ZERO,
    ws_refused: ZERO,
    connections_refused: ZERO,
    ws_frames: ZERO,
    store_errors: ZERO,
    store_writes: ZERO,
    stream_published: ZERO,
    stream_errors: ZERO,
    source_commits: ZERO,
    source_commit_errors: ZERO,
    source_partitions: AtomicI64::new(0),
    source_paused: ZERO,
    source_taken: ZERO,
    hub_dropped: ZERO,
    partitions: Mutex::new(Vec::new()),
    outputs: Mutex::new(Vec::new()),
    alert_changes: Mutex::new(Vec::new()),
    notifications_sent: [ZERO; 2],
    notifications_failed: [ZERO; 2],
    alerts_pending: AtomicI64::new(0),
    alerts_already_sent: ZERO,
    subscriptions: [AtomicI64::new(0), AtomicI64::new(0)],
    archive_objects: ZERO,
    archive_records: ZERO,
    archive_bytes: ZERO,
    archive_found: ZERO,
    archive_buffered: AtomicI64::new(0),
};

impl Metrics {
    /// Registers the gauges of partition `partition` of `source` (`http`, `kafka`, …).
    pub fn partition(&self, source: &str, partition: &str) -> Arc<PartitionGauges> {
        let gauges = Arc::new(PartitionGauges::default());
        let mut all = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.retain(|(_, _, g)| g.strong_count() > 0);
        all.push((
            source.to_owned(),
            escape(partition),
            Arc::downgrade(&gauges),
        ));
        gauges
    }

    /// The error counters of output `name` (one set per name, shared by every caller).
    pub fn output_errors(&self, name: &'static str) -> Arc<OutputErrors> {
        let mut all = self.outputs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, e)) = all.iter().find(|(n, _)| *n == name) {
            return Arc::clone(e);
        }
        let errors = Arc::new(OutputErrors::default());
        all.push((name, Arc::clone(&errors)));
        errors
    }

    /// Per-partition gauges: watermark lag, engine queue depth.
    fn render_partitions(&self, s: &mut String) {
        let live: Vec<(String, String, Arc<PartitionGauges>)> = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(source, p, g)| Some((source.clone(), p.clone(), g.upgrade()?)))
            .collect();
        let _ = writeln!(s, "# HELP stampede_watermark_lag_seconds Wall clock minus the partition's watermark, seconds.\n# TYPE stampede_watermark_lag_seconds gauge");
        for (source, p, g) in &live {
            let _ = writeln!(
                s,
                "stampede_watermark_lag_seconds{{source=\"{source}\",partition=\"{p}\"}} {}",
                g.watermark_lag_ms.load(Relaxed) as f64 / 1_000.0
            );
        }
        let outputs = self.outputs.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(s, "# HELP stampede_output_errors_total Errors from an output's service, by kind (permanent: needs someone to act).\n# TYPE stampede_output_errors_total counter");
        for (name, e) in outputs.iter() {
            for (kind, v) in [("permanent", &e.permanent), ("transient", &e.transient)] {
                let _ = writeln!(
                    s,
                    "stampede_output_errors_total{{output=\"{name}\",kind=\"{kind}\"}} {}",
                    v.load(Relaxed)
                );
            }
        }
        drop(outputs);
        let _ = writeln!(s, "# HELP stampede_engine_queue_depth Batches waiting for a partition's engine.\n# TYPE stampede_engine_queue_depth gauge");
        for (source, p, g) in &live {
            let _ = writeln!(
                s,
                "stampede_engine_queue_depth{{source=\"{source}\",partition=\"{p}\"}} {}",
                g.queue.load(Relaxed)
            );
        }
        let _ = writeln!(s, "# HELP stampede_unicorns Unicorns a partition's engine tracks: heard from, not yet forgotten.\n# TYPE stampede_unicorns gauge");
        for (source, p, g) in &live {
            let _ = writeln!(
                s,
                "stampede_unicorns{{source=\"{source}\",partition=\"{p}\"}} {}",
                g.unicorns.load(Relaxed)
            );
        }
    }

    /// Counts one alert state change of `rule` to `state`.
    pub fn alert_change(&self, rule: &str, state: &'static str) {
        let mut all = self
            .alert_changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match all.iter_mut().find(|(r, s, _)| r == rule && *s == state) {
            Some((_, _, n)) => *n += 1,
            None => all.push((rule.to_owned(), state, 1)),
        }
    }

    /// Counts `n` notifications of `channel` (`sns`, `smtp`) sent (`ok`) or failed.
    pub fn notification(&self, channel: &str, ok: bool, n: u64) {
        if let Some(i) = CHANNELS.iter().position(|c| *c == channel) {
            let counters = if ok {
                &self.notifications_sent
            } else {
                &self.notifications_failed
            };
            counters[i].fetch_add(n, Relaxed);
        }
    }

    fn render_alerts(&self, s: &mut String) {
        let _ = writeln!(s, "# HELP stampede_alert_changes_total Alert state changes, by rule and state.\n# TYPE stampede_alert_changes_total counter");
        for (rule, state, n) in self
            .alert_changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                s,
                "stampede_alert_changes_total{{rule=\"{}\",state=\"{state}\"}} {n}",
                escape(rule)
            );
        }
        let _ = writeln!(s, "# HELP stampede_notifications_total Alert notifications (mails, SNS publishes), by channel and outcome.\n# TYPE stampede_notifications_total counter");
        for (i, channel) in CHANNELS.iter().enumerate() {
            for (outcome, v) in [
                ("sent", &self.notifications_sent[i]),
                ("failed", &self.notifications_failed[i]),
            ] {
                let _ = writeln!(
                    s,
                    "stampede_notifications_total{{channel=\"{channel}\",outcome=\"{outcome}\"}} {}",
                    v.load(Relaxed)
                );
            }
        }
        for (name, help, v) in [
            ("stampede_archive_objects_total", "Archive objects written.", &self.archive_objects),
            ("stampede_archive_records_total", "Records in the archive objects written.", &self.archive_records),
            ("stampede_archive_bytes_total", "Bytes of the archive objects written.", &self.archive_bytes),
            ("stampede_archive_found_total", "Archive objects a replay found already written (after a crash or a partition move), whose records it did not write again.", &self.archive_found),
            ("stampede_alerts_already_sent_total", "Alert changes not sent because the notification log said they were (made again by a replay, or held by an instance that lost its partition).", &self.alerts_already_sent),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
        let _ = writeln!(s, "# HELP stampede_archive_buffered_bytes Bytes of records waiting to be written to the archive.\n# TYPE stampede_archive_buffered_bytes gauge\nstampede_archive_buffered_bytes {}", self.archive_buffered.load(Relaxed));
        let _ = writeln!(s, "# HELP stampede_alerts_pending Alert changes waiting to be notified.\n# TYPE stampede_alerts_pending gauge\nstampede_alerts_pending {}", self.alerts_pending.load(Relaxed));
        let _ = writeln!(s, "# HELP stampede_subscriptions Built-in e-mail subscriptions, by state.\n# TYPE stampede_subscriptions gauge");
        for (state, v) in [
            ("pending", &self.subscriptions[0]),
            ("confirmed", &self.subscriptions[1]),
        ] {
            let _ = writeln!(
                s,
                "stampede_subscriptions{{state=\"{state}\"}} {}",
                v.load(Relaxed)
            );
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "stampede_records_in_total",
            "Telemetry records received.",
            self.records_in.load(Relaxed),
        );
        counter(
            "stampede_records_late_total",
            "Late records accepted; each restates its window.",
            self.late.load(Relaxed),
        );
        counter(
            "stampede_summaries_total",
            "Window summaries emitted for the first time.",
            self.summaries.load(Relaxed),
        );
        counter(
            "stampede_summaries_restated_total",
            "Window summaries emitted again with a higher Revision.",
            self.restated.load(Relaxed),
        );
        counter(
            "stampede_ws_refused_total",
            "WebSocket upgrades refused with 503 at web.max_ws_clients.",
            self.ws_refused.load(Relaxed),
        );
        counter(
            "stampede_connections_refused_total",
            "Connections answered 503 and closed because as many as the server takes were open.",
            self.connections_refused.load(Relaxed),
        );
        counter(
            "stampede_ws_resyncs_total",
            "WebSocket clients resynchronised with a snapshot after falling behind.",
            self.ws_resyncs.load(Relaxed),
        );
        counter(
            "stampede_ws_frames_total",
            "Frames sent to WebSocket clients.",
            self.ws_frames.load(Relaxed),
        );
        counter(
            "stampede_store_writes_total",
            "Summaries written to the store.",
            self.store_writes.load(Relaxed),
        );
        counter(
            "stampede_store_errors_total",
            "Failed store writes.",
            self.store_errors.load(Relaxed),
        );
        counter(
            "stampede_stream_published_total",
            "Messages acknowledged by the summary or dead-letter stream.",
            self.stream_published.load(Relaxed),
        );
        counter(
            "stampede_stream_errors_total",
            "Failed deliveries to the summary or dead-letter stream; each is sent again.",
            self.stream_errors.load(Relaxed),
        );
        counter(
            "stampede_source_commits_total",
            "Source positions committed, per partition.",
            self.source_commits.load(Relaxed),
        );
        counter(
            "stampede_source_commit_errors_total",
            "Failed commits of source positions; the next checkpoint retries.",
            self.source_commit_errors.load(Relaxed),
        );
        counter(
            "stampede_hub_dropped_total",
            "Summaries and live records the hub had no room for (browsers skip a beat; never waited for).",
            self.hub_dropped.load(Relaxed),
        );
        counter(
            "stampede_source_taken_total",
            "Partitions or shards this instance took ownership of (assigned, taken or stolen).",
            self.source_taken.load(Relaxed),
        );
        counter(
            "stampede_source_paused_total",
            "Times a source stopped reading a partition while its engine was busy (a slow output).",
            self.source_paused.load(Relaxed),
        );
        let _ = writeln!(s, "# HELP stampede_records_rejected_total Rejected records by reason.\n# TYPE stampede_records_rejected_total counter");
        for reason in RejectReason::ALL {
            let _ = writeln!(
                s,
                "stampede_records_rejected_total{{reason=\"{reason}\"}} {}",
                self.rejected[reason.index()].load(Relaxed)
            );
        }
        let mut gauge = |name: &str, help: &str, labels: &str, v: i64| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{labels} {v}"
            );
        };
        gauge(
            "stampede_ws_clients",
            "Connected WebSocket clients.",
            "",
            self.ws_clients.load(Relaxed),
        );
        gauge(
            "stampede_source_partitions",
            "Kafka partitions or Kinesis shards this instance owns now.",
            "",
            self.source_partitions.load(Relaxed),
        );
        let _ = writeln!(s, "# HELP stampede_queue_depth Items waiting between pipeline stages.\n# TYPE stampede_queue_depth gauge");
        for (stage, v) in [("store", &self.queue_store), ("hub", &self.queue_hub)] {
            let _ = writeln!(
                s,
                "stampede_queue_depth{{stage=\"{stage}\"}} {}",
                v.load(Relaxed)
            );
        }
        self.render_partitions(&mut s);
        self.render_alerts(&mut s);
        self.emit_latency.render(
            &mut s,
            "stampede_window_emit_latency_seconds",
            "Wall time from a window's end to its first emission.",
        );
        self.store_latency.render(
            &mut s,
            "stampede_window_store_latency_seconds",
            "Wall time from a window's close (its first emission) to its summary being stored.",
        );
        s
    }
}

/// A label value as the text format needs it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partition_has_its_own_series_until_its_engine_ends() {
        let a = METRICS.partition("kafka", "wildrydes/0");
        let b = METRICS.partition("file", "a \"quoted\" path");
        a.watermark_lag_ms.store(2_500, Relaxed);
        b.queue.store(3, Relaxed);
        let text = METRICS.render();
        assert!(text.contains(
            "stampede_watermark_lag_seconds{source=\"kafka\",partition=\"wildrydes/0\"} 2.5"
        ));
        assert!(text.contains(
            "stampede_engine_queue_depth{source=\"file\",partition=\"a \\\"quoted\\\" path\"} 3"
        ));
        drop(a);
        let text = METRICS.render();
        assert!(!text.contains("wildrydes/0"), "an ended engine's series go");
        drop(b);
    }
}
