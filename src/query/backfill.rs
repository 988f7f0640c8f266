//! Backfill (CONTRACT §9): a view defined at run time, with an archive, first computes its
//! past from the archive's records, then continues live — no window counted twice or missed.
//!
//! The split is an event time, the *cut*: a window boundary of the view a minute (and the
//! out-of-orderness) past the newest record any partition had accepted when the view was
//! defined. The partitions count only records from the cut on; the backfill those before.
//! It waits until no partition can accept a record before the cut any more (the newest event
//! time past the cut by the allowed lateness, a window and the out-of-orderness) and the
//! archive has written what was accepted until then (its buffer time), reads the archive's
//! records before the cut in event-time order, keeps the view over them with its own engine
//! and hands the partial rows on to the views output as one more partition: a window that
//! spans the cut (a `HOP`) merges with what the partitions said of it. `GET /api/views` says
//! `backfilling` meanwhile.
//!
//! A partition that had already read records past the cut when it first saw the view (a
//! historical replay racing far ahead) marks the view failed rather than miss them.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SQLOptions;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{context, Limits, Tables};
use crate::output::archive::target::Target;
use crate::output::Fanout;
use crate::time::Millis;
use crate::view::engine::{record_schema, ViewEngine};
use crate::view::plan::Window;
use crate::view::registry::{LiveView, Registry};
use crate::view::step::Handed;
use crate::window::WindowConfig;

/// The partition name of the backfill's partial rows.
const PARTITION: &str = "backfill";

/// Event time past the newest record the cut is set at, beyond the out-of-orderness.
const MARGIN_MS: Millis = 60_000;

/// What a backfill needs; one per service, shared by the views API.
#[derive(Clone)]
pub struct Backfill {
    /// The archive.
    pub archive: Target,
    /// Where the partial rows go; taken away when the service stops (see [`Backfill::close`]).
    pub fanout: Arc<Mutex<Option<Fanout>>>,
    /// The windows' settings.
    pub window: WindowConfig,
    /// How long the archive holds records before it writes them.
    pub buffer: Duration,
    /// Fires when the service stops: backfills under way give up.
    pub stop: CancellationToken,
}

impl Backfill {
    /// The cut for `view` defined now (see the module docs).
    pub fn cut(&self, view: &LiveView, registry: &Registry) -> Millis {
        let newest = registry.newest();
        if newest == Millis::MIN {
            // Nothing read yet: the archive holds whatever came before this service.
            return Millis::MIN;
        }
        let unit = match view.plan.view().window {
            Window::Tumble { size_ms } => size_ms,
            Window::Hop { slide_ms, .. } => slide_ms,
            Window::Session { .. } => 1_000,
        };
        let at = newest
            .saturating_add(self.window.out_of_orderness_ms)
            .saturating_add(MARGIN_MS);
        (at.div_euclid(unit) + 1).saturating_mul(unit)
    }

    /// Stops backfills and lets go of the outputs (before they are closed at shutdown).
    pub fn close(&self) {
        self.stop.cancel();
        if let Ok(mut fanout) = self.fanout.lock() {
            fanout.take();
        }
    }

    /// Starts the backfill of `view` (whose cut is set) in the background.
    pub fn start(&self, view: Arc<LiveView>, registry: Arc<Registry>) {
        let me = self.clone();
        // Said at once: the API answers `backfilling` from the moment the view is defined.
        view.backfilling.store(true, Relaxed);
        tokio::spawn(async move {
            let name = view.name().to_owned();
            tokio::select! {
                () = me.stop.cancelled() => {}
                done = me.run(&view, &registry) => match done {
                    Ok(windows) => tracing::info!(view = %name, windows, "backfill done"),
                    Err(e) => view.fail(format!("backfill: {e}")),
                },
            }
            view.backfilling.store(false, Relaxed);
        });
    }

    async fn run(&self, view: &Arc<LiveView>, registry: &Registry) -> Result<usize, String> {
        let cut = view.cut.load(Relaxed);
        let w = &self.window;
        // No partition accepts a record before the cut any more...
        let settled = cut
            .saturating_add(w.allowed_lateness_ms)
            .saturating_add(w.size_ms)
            .saturating_add(w.out_of_orderness_ms);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if registry
                .get(view.name())
                .is_none_or(|v| !Arc::ptr_eq(&v, view))
            {
                return Ok(0);
            }
            if registry.newest() >= settled || cut == Millis::MIN {
                break;
            }
        }
        // ... and the archive has written what they accepted before.
        tokio::time::sleep(self.buffer + Duration::from_secs(2)).await;
        let tables = Tables {
            archive: Some(self.archive.clone()),
            summaries: None,
            views: Vec::new(),
        };
        let limits = Limits {
            partitions: 1,
            memory_bytes: None,
        };
        let ctx = context(&tables, limits).await.map_err(|e| e.to_string())?;
        let before = if cut == Millis::MIN {
            String::new()
        } else {
            format!("AND statustime < to_timestamp_millis({cut})")
        };
        let sql = format!(
            "SELECT name, statustime, latitude, longitude, distance, healthpoints, magicpoints \
             FROM wildrydes WHERE name IS NOT NULL AND statustime IS NOT NULL \
             AND latitude IS NOT NULL AND longitude IS NOT NULL AND distance IS NOT NULL \
             AND healthpoints IS NOT NULL AND magicpoints IS NOT NULL {before} ORDER BY statustime"
        );
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx
            .sql_with_options(&sql, options)
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = df.execute_stream().await.map_err(|e| e.to_string())?;
        let mut engine = ViewEngine::new(Arc::clone(&view.plan)).map_err(|e| e.message)?;
        let partition: Arc<str> = PARTITION.into();
        let mut windows = 0;
        while let Some(batch) = stream.next().await {
            if self.stop.is_cancelled() {
                return Ok(windows);
            }
            let batch = batch.map_err(|e| e.to_string())?;
            // The archive's types (text may come as views from Parquet) as the stream's.
            let schema = record_schema();
            let columns = batch
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let records = RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())?;
            let n = records.num_rows();
            if n == 0 {
                continue;
            }
            engine
                .push(&records, &vec![0; n], &vec![Millis::MIN; n])
                .map_err(|e| e.message)?;
            // In event-time order: windows that ended before this batch's last record are
            // whole.
            let last = records
                .column(1)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::TimestampMillisecondArray>()
                .map_or(Millis::MIN, |t| t.value(n - 1));
            let due = engine.advance(last - 1, last - 1).map_err(|e| e.message)?;
            windows += self.hand_on(view, &partition, due).await?;
        }
        let rest = engine.flush().map_err(|e| e.message)?;
        windows += self.hand_on(view, &partition, rest).await?;
        Ok(windows)
    }

    async fn hand_on(
        &self,
        view: &Arc<LiveView>,
        partition: &Arc<str>,
        partials: Option<RecordBatch>,
    ) -> Result<usize, String> {
        let Some(partials) = partials else {
            return Ok(0);
        };
        let n = partials.num_rows();
        let fanout = self
            .fanout
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .ok_or("the service is stopping")?;
        fanout
            .views(
                partition,
                vec![Handed {
                    view: Arc::clone(view),
                    partials,
                }],
            )
            .await;
        Ok(n)
    }
}
