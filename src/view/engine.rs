//! A view kept window by window: the pure core that the partition task will drive, and that
//! `stampede aggregate --view` drives over files.
//!
//! The view's SQL is planned by DataFusion over [`WINDOWED`] (the stream's columns with
//! `window_start` and `window_end`); from that plan come physical expressions for its `WHERE`,
//! its `GROUP BY` keys and its aggregates' inputs, DataFusion's own `Accumulator`s for the
//! aggregates, and expressions for its `HAVING` and select list over the aggregated row. Records
//! come in micro-batches (Arrow arrays of accepted records): each record is placed in its
//! window(s), filtered, grouped by its key (window included) with arrow's row format, and each
//! group's accumulators are updated with its slice of the batch — a cost per batch and group,
//! never a dynamic call per record. A window is emitted when the watermark passes its end,
//! restated (`revision` + 1) when late records change it within the allowed lateness, and
//! forgotten after.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Accumulator, ExprSchemable as _, LogicalPlan};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;
#[allow(deprecated)]
use datafusion::physical_planner::create_aggregate_expr_and_maybe_filter;

use super::plan::{ViewDef, Window, WINDOWED};
use crate::time::Millis;

/// Why a view cannot be computed.
#[derive(Debug, thiserror::Error)]
#[error("view {view}: {message}")]
pub struct EngineError {
    /// The view.
    pub view: String,
    /// What went wrong.
    pub message: String,
}

/// The stream's columns, as the records give them (before windows are added).
pub fn record_schema() -> SchemaRef {
    Arc::new(Schema::new(record_fields()))
}

fn record_fields() -> Vec<Field> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("statustime", ts, false),
        Field::new("latitude", DataType::Float64, false),
        Field::new("longitude", DataType::Float64, false),
        Field::new("distance", DataType::Float64, false),
        Field::new("healthpoints", DataType::Int64, false),
        Field::new("magicpoints", DataType::Int64, false),
    ]
}

fn windowed_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let mut fields = record_fields();
    fields.push(Field::new("window_start", ts.clone(), false));
    fields.push(Field::new("window_end", ts, false));
    Arc::new(Schema::new(fields))
}

/// One group's state: a window and key, its accumulators, what was emitted of it.
struct Group {
    window_start: Millis,
    window_end: Millis,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// The revision last emitted, if any.
    emitted: Option<u64>,
    /// Changed since it was last emitted.
    dirty: bool,
}

/// One view's windows.
pub struct ViewEngine {
    view: ViewDef,
    filter: Option<Arc<dyn PhysicalExpr>>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Each aggregate's inputs (its arguments, then its ORDER BY).
    inputs: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    aggregated: SchemaRef,
    having: Option<Arc<dyn PhysicalExpr>>,
    select: Vec<Arc<dyn PhysicalExpr>>,
    out: SchemaRef,
    rows: RowConverter,
    groups: HashMap<OwnedRow, Group>,
    /// Records dropped because their window had closed past the allowed lateness.
    pub dropped_late: u64,
}

impl ViewEngine {
    /// Plans `view` over the stream.
    ///
    /// # Errors
    /// The SQL names a column or function that does not exist, types do not match, or it is a
    /// `SESSION` view (kept live in a later step).
    pub async fn new(view: ViewDef) -> Result<ViewEngine, EngineError> {
        let fail = |message: String| EngineError {
            view: view.name.clone(),
            message,
        };
        if let Window::Session { .. } = view.window {
            return Err(fail(
                "SESSION views are checked but not yet computed; TUMBLE and HOP are".into(),
            ));
        }
        let ctx = SessionContext::new();
        let empty =
            MemTable::try_new(windowed_schema(), vec![vec![]]).map_err(|e| fail(e.to_string()))?;
        ctx.register_table(WINDOWED, Arc::new(empty))
            .map_err(|e| fail(e.to_string()))?;
        let state = ctx.state();
        let plan = state
            .create_logical_plan(&view.select)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let LogicalPlan::Projection(projection) = plan else {
            return Err(fail(format!("unexpected plan: {plan}")));
        };
        let (having, aggregate) = match projection.input.as_ref() {
            LogicalPlan::Filter(f) => match f.input.as_ref() {
                LogicalPlan::Aggregate(a) => (Some(f.predicate.clone()), a.clone()),
                other => return Err(fail(format!("unexpected plan under HAVING: {other}"))),
            },
            LogicalPlan::Aggregate(a) => (None, a.clone()),
            other => return Err(fail(format!("a view aggregates: {other}"))),
        };
        let mut below = aggregate.input.as_ref();
        let mut filter = None;
        if let LogicalPlan::Filter(f) = below {
            filter = Some(f.predicate.clone());
            below = f.input.as_ref();
        }
        let input: &DFSchema = below.schema();
        let physical = |e: &datafusion::logical_expr::Expr, schema: &DFSchema| {
            state
                .create_physical_expr(e.clone(), schema)
                .map_err(|e| fail(e.to_string()))
        };
        let filter = filter.as_ref().map(|f| physical(f, input)).transpose()?;
        let keys = aggregate
            .group_expr
            .iter()
            .map(|e| physical(e, input))
            .collect::<Result<Vec<_>, _>>()?;
        let mut aggregates = Vec::new();
        let mut inputs = Vec::new();
        for e in &aggregate.aggr_expr {
            // Deprecated for a builder that needs a planning context DataFusion keeps private.
            #[allow(deprecated)]
            let (agg, agg_filter, _) = create_aggregate_expr_and_maybe_filter(
                e,
                input,
                input.as_arrow(),
                state.execution_props(),
            )
            .map_err(|e| fail(e.to_string()))?;
            if agg_filter.is_some() {
                return Err(fail("FILTER on an aggregate is not kept by views".into()));
            }
            let mut args = agg.expressions();
            args.extend(agg.order_bys().iter().map(|s| Arc::clone(&s.expr)));
            inputs.push(args);
            aggregates.push(agg);
        }
        let aggregated: &DFSchema = aggregate.schema.as_ref();
        let having = having
            .as_ref()
            .map(|h| physical(h, aggregated))
            .transpose()?;
        let select = projection
            .expr
            .iter()
            .map(|e| physical(e, aggregated))
            .collect::<Result<Vec<_>, _>>()?;
        let mut fields: Vec<Field> = projection
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("revision", DataType::UInt64, false));
        let key_types = aggregate
            .group_expr
            .iter()
            .map(|e| {
                e.get_type(input)
                    .map(SortField::new)
                    .map_err(|e| fail(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rows = RowConverter::new(key_types).map_err(|e| fail(e.to_string()))?;
        Ok(ViewEngine {
            aggregated: Arc::new(aggregated.as_arrow().clone()),
            out: Arc::new(Schema::new(fields)),
            view,
            filter,
            keys,
            aggregates,
            inputs,
            having,
            select,
            rows,
            groups: HashMap::new(),
            dropped_late: 0,
        })
    }

    /// The view.
    pub fn view(&self) -> &ViewDef {
        &self.view
    }

    /// The columns of its rows (the select list's, then `revision`).
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.out)
    }

    fn fail(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError {
            view: self.view.name.clone(),
            message: e.to_string(),
        }
    }

    /// Takes in accepted records (columns of [`record_schema`]); `closed` is the oldest window
    /// end still open to late records (the watermark less the allowed lateness): a record
    /// whose window ended before it is dropped and counted.
    ///
    /// # Errors
    /// An expression failed on the batch (a type DataFusion could not coerce, say).
    pub fn push(&mut self, records: &RecordBatch, closed: Millis) -> Result<(), EngineError> {
        if records.num_rows() == 0 {
            return Ok(());
        }
        let batch = self.windowed(records)?;
        let batch = match &self.filter {
            None => batch,
            Some(f) => {
                let keep = f
                    .evaluate(&batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| self.fail(e))?;
                let keep = keep
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| self.fail("WHERE is not a condition"))?;
                filter_record_batch(&batch, keep).map_err(|e| self.fail(e))?
            }
        };
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let keys = self
            .keys
            .iter()
            .map(|k| k.evaluate(&batch).and_then(|v| v.into_array(n)))
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(|e| self.fail(e))?;
        let window = |at: usize, what: &str| {
            batch
                .column(batch.num_columns() - at)
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .cloned()
                .ok_or_else(|| self.fail(what))
        };
        let starts = window(2, "window_start")?;
        let ends = window(1, "window_end")?;
        let rows = self.rows.convert_columns(&keys).map_err(|e| self.fail(e))?;
        // Rows of the batch by group, in order of first appearance.
        let mut order: Vec<OwnedRow> = Vec::new();
        let mut members: HashMap<OwnedRow, Vec<u32>> = HashMap::new();
        for i in 0..n {
            if ends.value(i) <= closed {
                self.dropped_late += 1;
                continue;
            }
            let key = rows.row(i).owned();
            let slot = members.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                Vec::new()
            });
            slot.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        let inputs = self
            .inputs
            .iter()
            .map(|exprs| {
                exprs
                    .iter()
                    .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(n)))
                    .collect::<Result<Vec<ArrayRef>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(e))?;
        for key in order {
            let Some(indices) = members.remove(&key) else {
                continue;
            };
            let (start, end) = (
                starts.value(indices[0] as usize),
                ends.value(indices[0] as usize),
            );
            let take_rows = UInt32Array::from(indices);
            let group = match self.groups.get_mut(&key) {
                Some(g) => g,
                None => {
                    let accumulators = self
                        .aggregates
                        .iter()
                        .map(|a| a.create_accumulator())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| self.fail(e))?;
                    self.groups.entry(key).or_insert(Group {
                        window_start: start,
                        window_end: end,
                        accumulators,
                        emitted: None,
                        dirty: true,
                    })
                }
            };
            group.dirty = true;
            for (acc, args) in group.accumulators.iter_mut().zip(&inputs) {
                let slice = args
                    .iter()
                    .map(|a| take(a.as_ref(), &take_rows, None))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| EngineError {
                        view: self.view.name.clone(),
                        message: e.to_string(),
                    })?;
                acc.update_batch(&slice).map_err(|e| EngineError {
                    view: self.view.name.clone(),
                    message: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    /// Each record with its window(s): one for `TUMBLE`, size/slide for `HOP`.
    fn windowed(&self, records: &RecordBatch) -> Result<RecordBatch, EngineError> {
        let (slide, size) = match self.view.window {
            Window::Tumble { size_ms } => (size_ms, size_ms),
            Window::Hop { slide_ms, size_ms } => (slide_ms, size_ms),
            Window::Session { .. } => return Err(self.fail("SESSION is not computed yet")),
        };
        let copies = usize::try_from(size / slide).unwrap_or(1).max(1);
        let times = records
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| self.fail("statustime"))?;
        let n = records.num_rows();
        let mut index = Vec::with_capacity(n * copies);
        let mut starts = Vec::with_capacity(n * copies);
        for i in 0..n {
            let t = times.value(i);
            let first = t - t.rem_euclid(slide);
            for c in 0..copies {
                index.push(u32::try_from(i).unwrap_or(u32::MAX));
                starts.push(first - (c as Millis) * slide);
            }
        }
        let index = UInt32Array::from(index);
        let mut columns = records
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &index, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(e))?;
        let ends: Vec<Millis> = starts.iter().map(|s| s + size).collect();
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
        RecordBatch::try_new(windowed_schema(), columns).map_err(|e| self.fail(e))
    }

    /// The rows of the windows that ended by `watermark` and are new or changed since emitted,
    /// each with its revision; windows that ended before `closed` (no late record can reach
    /// them any more) are forgotten once emitted.
    ///
    /// # Errors
    /// An aggregate, `HAVING` or select expression failed.
    pub fn advance(
        &mut self,
        watermark: Millis,
        closed: Millis,
    ) -> Result<Option<RecordBatch>, EngineError> {
        // In order of window, then key.
        let mut due: Vec<(Millis, OwnedRow)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.window_end <= watermark && g.dirty)
            .map(|(k, g)| (g.window_start, k.clone()))
            .collect();
        due.sort();
        let due: Vec<OwnedRow> = due.into_iter().map(|(_, k)| k).collect();
        let out = self.emit(&due)?;
        self.groups.retain(|_, g| g.window_end > closed || g.dirty);
        Ok(out)
    }

    /// Every window's row that is new or changed, whatever the watermark (the end of a file).
    ///
    /// # Errors
    /// As [`ViewEngine::advance`].
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, EngineError> {
        self.advance(Millis::MAX, Millis::MIN)
    }

    fn emit(&mut self, keys: &[OwnedRow]) -> Result<Option<RecordBatch>, EngineError> {
        if keys.is_empty() {
            return Ok(None);
        }
        let group_columns = self
            .rows
            .convert_rows(keys.iter().map(OwnedRow::row))
            .map_err(|e| self.fail(e))?;
        let mut values: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(keys.len()); self.aggregates.len()];
        let mut revisions = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(group) = self.groups.get_mut(key) else {
                continue;
            };
            for (i, acc) in group.accumulators.iter_mut().enumerate() {
                values[i].push(acc.evaluate().map_err(|e| EngineError {
                    view: self.view.name.clone(),
                    message: e.to_string(),
                })?);
            }
            let revision = group.emitted.map_or(0, |r| r + 1);
            group.emitted = Some(revision);
            group.dirty = false;
            revisions.push(revision);
        }
        let mut columns = group_columns;
        for v in values {
            let array = if v.is_empty() {
                datafusion::arrow::array::new_empty_array(
                    self.aggregated.field(columns.len()).data_type(),
                )
            } else {
                ScalarValue::iter_to_array(v).map_err(|e| self.fail(e))?
            };
            columns.push(array);
        }
        let aggregated = RecordBatch::try_new(Arc::clone(&self.aggregated), columns)
            .map_err(|e| self.fail(e))?;
        let revisions = UInt64Array::from(revisions);
        let (aggregated, revisions) = match &self.having {
            None => (aggregated, revisions),
            Some(h) => {
                let keep = h
                    .evaluate(&aggregated)
                    .and_then(|v| v.into_array(aggregated.num_rows()))
                    .map_err(|e| self.fail(e))?;
                let keep = keep
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| self.fail("HAVING is not a condition"))?
                    .clone();
                let kept = filter_record_batch(&aggregated, &keep).map_err(|e| self.fail(e))?;
                let revisions = datafusion::arrow::compute::filter(&revisions, &keep)
                    .map_err(|e| self.fail(e))?;
                let revisions = revisions
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .ok_or_else(|| self.fail("revision"))?
                    .clone();
                (kept, revisions)
            }
        };
        let n = aggregated.num_rows();
        let mut columns = self
            .select
            .iter()
            .map(|e| e.evaluate(&aggregated).and_then(|v| v.into_array(n)))
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(|e| self.fail(e))?;
        columns.push(Arc::new(revisions));
        RecordBatch::try_new(Arc::clone(&self.out), columns)
            .map(Some)
            .map_err(|e| self.fail(e))
    }
}

/// Accepted records gathered into Arrow columns, a micro-batch at a time.
#[derive(Default)]
pub struct Batcher {
    names: Vec<String>,
    times: Vec<Millis>,
    latitudes: Vec<f64>,
    longitudes: Vec<f64>,
    distances: Vec<f64>,
    health: Vec<i64>,
    magic: Vec<i64>,
}

impl Batcher {
    /// Adds one accepted record.
    pub fn push(&mut self, r: &crate::record::Telemetry<'_>) {
        self.names.push(r.name.to_string());
        self.times.push(r.status_time);
        self.latitudes.push(r.latitude);
        self.longitudes.push(r.longitude);
        self.distances.push(r.distance);
        self.health.push(r.health_points);
        self.magic.push(r.magic_points);
    }

    /// Records gathered.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The records gathered so far as a batch of [`record_schema`]; empties it.
    ///
    /// # Errors
    /// Never in practice: the columns are built to the schema.
    pub fn take(&mut self) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
        let b = std::mem::take(self);
        RecordBatch::try_new(
            record_schema(),
            vec![
                Arc::new(StringArray::from(b.names)),
                Arc::new(TimestampMillisecondArray::from(b.times)),
                Arc::new(Float64Array::from(b.latitudes)),
                Arc::new(Float64Array::from(b.longitudes)),
                Arc::new(Float64Array::from(b.distances)),
                Arc::new(Int64Array::from(b.health)),
                Arc::new(Int64Array::from(b.magic)),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::archive::target::Target;
    use crate::query::{context, json_rows, run, Answer, Limits, Tables};
    use crate::time::format_status_time;
    use crate::view::{batch, plan::parse};

    const T0: Millis = 1_521_343_200_000;

    /// Four unicorns over 14 minutes, a little out of order, some weak, and a few records a
    /// five minutes late.
    fn records() -> Vec<(String, Millis, f64, f64, i64)> {
        let mut out = Vec::new();
        for step in 0..84i64 {
            for (u, name) in ["Shadowfax", "Rocinante", "Bucephalus", "Pegasus"]
                .iter()
                .enumerate()
            {
                let t = T0 + step * 10_000 + (u as i64) * 1_000 - (step % 3) * 4_000;
                let lat = 40.70 + (u as f64) * 0.004;
                let health = if (step + u as i64) % 5 == 0 { 80 } else { 150 };
                out.push(((*name).to_owned(), t, lat, 1.0 + u as f64, health));
            }
            // Now and then a record five minutes late: its window was emitted, and is restated.
            if step % 17 == 16 {
                out.push((
                    "Pegasus".to_owned(),
                    T0 + step * 10_000 - 300_000,
                    40.712,
                    0.5,
                    90,
                ));
            }
        }
        out
    }

    fn batch_of(records: &[(String, Millis, f64, f64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            record_schema(),
            vec![
                Arc::new(StringArray::from(
                    records.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(TimestampMillisecondArray::from(
                    records.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    records.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(vec![-73.98; records.len()])),
                Arc::new(Float64Array::from(
                    records.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    records.iter().map(|r| r.4).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(vec![100; records.len()])),
            ],
        )
        .unwrap()
    }

    /// The view's final rows from the engine, fed in batches, without `revision`, sorted.
    async fn kept(sql: &str) -> (Vec<String>, bool) {
        let mut engine = ViewEngine::new(parse(sql).unwrap()).await.unwrap();
        let all = records();
        let mut finals: HashMap<String, String> = HashMap::new();
        let mut seen_restated = false;
        for chunk in all.chunks(97) {
            engine.push(&batch_of(chunk), Millis::MIN).unwrap();
            // A watermark that trails the records, so that windows close and later restate.
            let newest = chunk.iter().map(|r| r.1).max().unwrap();
            if let Some(rows) = engine.advance(newest - 5_000, Millis::MIN).unwrap() {
                collect(&rows, &mut finals, &mut seen_restated);
            }
        }
        if let Some(rows) = engine.flush().unwrap() {
            collect(&rows, &mut finals, &mut seen_restated);
        }
        let mut out: Vec<String> = finals.into_values().collect();
        out.sort();
        (out, seen_restated)
    }

    /// Keeps each key's newest row (its JSON without `revision`).
    fn collect(rows: &RecordBatch, finals: &mut HashMap<String, String>, restated: &mut bool) {
        let answer = Answer {
            schema: rows.schema(),
            batches: vec![rows.clone()],
            truncated: false,
        };
        for line in json_rows(&answer) {
            let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let revision = v["revision"].as_u64().unwrap();
            *restated |= revision > 0;
            v.as_object_mut().unwrap().remove("revision");
            // The key: every column but the aggregates' — here, those named like keys.
            let key: String = ["name", "window_start", "window_end", "lat", "lon"]
                .iter()
                .map(|k| v[*k].to_string())
                .collect::<Vec<_>>()
                .join("|");
            finals.insert(key, v.to_string());
        }
    }

    /// The same view in batch, by SQL alone (view::batch), over the same records archived.
    async fn batch(sql: &str) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!(
            "stampede-view-engine-{}-{}",
            std::process::id(),
            crate::time::now_ms()
        ));
        let hour = dir.join("2018/03/18/03");
        std::fs::create_dir_all(&hour).unwrap();
        let mut ndjson = String::new();
        for (name, t, lat, distance, health) in records() {
            ndjson.push_str(&format!(
                "{{\"Name\":\"{name}\",\"StatusTime\":\"{}\",\"Latitude\":{lat},\"Longitude\":-73.98,\"Distance\":{distance},\"HealthPoints\":{health},\"MagicPoints\":100}}\n",
                format_status_time(t)
            ));
        }
        std::fs::write(hour.join("wildrydes-1-x"), ndjson).unwrap();
        let tables = Tables {
            archive: Some(Target::Dir(dir.clone())),
            summaries: None,
        };
        let ctx = context(
            &tables,
            Limits {
                partitions: 1,
                memory_bytes: None,
            },
        )
        .await
        .unwrap();
        let answer = run(&ctx, &batch::sql(&parse(sql).unwrap()), None)
            .await
            .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let mut out: Vec<String> = json_rows(&answer)
            .into_iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(&l)
                    .unwrap()
                    .to_string()
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn the_summary_view_kept_live_equals_its_batch_answer() {
        let sql = "CREATE VIEW summary AS SELECT name, window_start, window_end, SUM(distance) AS distance, \
                   MIN(healthpoints) AS minhealth, MAX(healthpoints) AS maxhealth, COUNT(*) AS records \
                   FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY name, window_start, window_end";
        let (live, restated) = kept(sql).await;
        assert!(!live.is_empty());
        assert!(restated, "late records restated some windows");
        assert_eq!(live, batch(sql).await);
    }

    #[tokio::test]
    async fn a_hopping_view_kept_live_equals_its_batch_answer() {
        let sql = "CREATE VIEW fleet AS SELECT window_start, window_end, COUNT(*) AS records, AVG(distance) AS distance, \
                   approx_distinct(name) AS unicorns \
                   FROM HOP(wildrydes, statustime, INTERVAL '1' MINUTE, INTERVAL '3' MINUTE) GROUP BY window_start, window_end";
        assert_eq!(kept(sql).await.0, batch(sql).await);
    }

    #[tokio::test]
    async fn where_having_and_expressions_kept_live_equal_their_batch_answer() {
        let sql = "CREATE VIEW weak AS SELECT window_start, round(latitude, 2) AS lat, COUNT(*) AS weak, \
                   MIN(healthpoints) + 1 AS floor \
                   FROM TUMBLE(wildrydes, statustime, INTERVAL '2' MINUTE) WHERE healthpoints < 100 \
                   GROUP BY window_start, round(latitude, 2) HAVING COUNT(*) >= 2";
        let (live, _) = kept(sql).await;
        assert!(!live.is_empty());
        assert_eq!(live, batch(sql).await);
    }
}
