//! A view planned by DataFusion over the stream's columns, once, and shared by every partition
//! that keeps it and by the stage that merges their partial results.
//!
//! The view's `SELECT` (its window function replaced by [`WINDOWED`]) becomes a logical plan:
//! a projection over an optional `HAVING` filter over an aggregate over an optional `WHERE`
//! filter over the windowed stream. From it come physical expressions for the `WHERE`, the
//! `GROUP BY` keys and each aggregate's inputs, DataFusion's `AggregateFunctionExpr`s (whose
//! accumulators keep a window's state, batch by batch), and expressions for `HAVING` and the
//! select list over the aggregated row.
//!
//! A partition keeps *partial* state: one accumulator set per window and key of its own
//! records, handed on as the accumulators' `state()` — a row of the [`ViewPlan::partial_schema`].
//! [`ViewPlan::finish`] merges the partials of one window and key (from one partition or from
//! many: a fleet-wide view's window holds every partition's unicorns) into the view's row.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Accumulator, EmitTo, Expr, GroupsAccumulator, LogicalPlan};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
#[allow(deprecated)]
use datafusion::physical_planner::create_aggregate_expr_and_maybe_filter;

use super::plan::{ViewDef, Window, WINDOWED};
use crate::time::{format_status_time, Millis};

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

/// The columns the view's expressions read: the stream's, `window_start`, `window_end`; then,
/// past what the SQL can name, each row's source position (for the partition's low water) and
/// the window end final when it was read.
pub(super) fn windowed_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let mut fields = record_fields();
    fields.push(Field::new("window_start", ts.clone(), false));
    fields.push(Field::new("window_end", ts, false));
    fields.push(Field::new(POSITION, DataType::UInt64, false));
    fields.push(Field::new(CLOSED, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The position column of the windowed batch (not in the planner's schema).
const POSITION: &str = "__position";
/// The column of the window end final when each record was read (not in the planner's schema).
const CLOSED: &str = "__closed";
/// Index of `window_start` in the windowed batch; `window_end` follows.
pub(super) const WINDOW_START: usize = 7;

/// Which window bound a `GROUP BY` key is, when it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bound {
    Start,
    End,
}

/// Columns of a partial row after its keys: the window's bounds (epoch ms) and whether the row
/// stands (`false`: the partition withdraws what it said of this window, a session merged away).
const PARTIAL_START: &str = "__window_start";
const PARTIAL_END: &str = "__window_end";
const PARTIAL_LIVE: &str = "__live";

/// A view planned: see the module docs.
pub struct ViewPlan {
    view: ViewDef,
    pub(super) filter: Option<Arc<dyn PhysicalExpr>>,
    /// The `GROUP BY` keys, in order; a window bound's entry in [`ViewPlan::bounds`] is set.
    pub(super) keys: Vec<Arc<dyn PhysicalExpr>>,
    pub(super) bounds: Vec<Option<Bound>>,
    pub(super) key_types: Vec<DataType>,
    pub(super) aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Each aggregate's inputs (its arguments, then its ORDER BY).
    pub(super) inputs: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// Each aggregate's columns in a partial row.
    states: Vec<Range<usize>>,
    aggregated: SchemaRef,
    having: Option<Arc<dyn PhysicalExpr>>,
    select: Vec<Arc<dyn PhysicalExpr>>,
    rows: SchemaRef,
    out: SchemaRef,
    partial: SchemaRef,
    /// Partial rows in arrow's row format: compact bytes, one call per batch each way.
    partial_rows: RowConverter,
    /// Which columns of a row read only the `GROUP BY` keys (the row's place, not its values).
    key_columns: Vec<bool>,
}

impl ViewPlan {
    /// Plans `view` over the stream.
    ///
    /// # Errors
    /// The SQL names a column or function that does not exist, types do not match, or a
    /// `SESSION` view computes something of its window other than the bounds themselves.
    pub async fn new(view: ViewDef) -> Result<ViewPlan, EngineError> {
        // DataFusion names the table it planned over; the user wrote `wildrydes`.
        let fail = |message: String| EngineError {
            view: view.name.clone(),
            message: message
                .replace(&format!("{WINDOWED}."), "")
                .replace(WINDOWED, "wildrydes"),
        };
        let ctx = SessionContext::new();
        let planner_schema = {
            let mut fields: Vec<Field> = windowed_schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.truncate(WINDOW_START + 2);
            Arc::new(Schema::new(fields))
        };
        let empty =
            MemTable::try_new(planner_schema, vec![vec![]]).map_err(|e| fail(e.to_string()))?;
        ctx.register_table(WINDOWED, Arc::new(empty))
            .map_err(|e| fail(e.to_string()))?;
        let state = ctx.state();
        let plan = state
            .create_logical_plan(&view.select)
            .await
            .map_err(|e| fail(e.to_string()))?;
        // The analyzer's rules only (not the optimizer's, which would reshape the plan): type
        // coercion above all, so that AVG or approx_percentile_cont of an integer column reads it
        // as the floating-point number their accumulators take.
        let plan = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
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
        let physical = |e: &Expr, schema: &DFSchema| {
            state
                .create_physical_expr(e.clone(), schema)
                .map_err(|e| fail(e.to_string()))
        };
        let bound_of = |e: &Expr| match e {
            Expr::Column(Column { name, .. }) if name == "window_start" => Some(Bound::Start),
            Expr::Column(Column { name, .. }) if name == "window_end" => Some(Bound::End),
            _ => None,
        };
        let reads_window = |e: &Expr| {
            e.column_refs()
                .iter()
                .any(|c| c.name == "window_start" || c.name == "window_end")
        };
        let session = matches!(view.window, Window::Session { .. });
        if let Some(f) = filter.as_ref().filter(|f| reads_window(f)) {
            return Err(fail(format!(
                "WHERE {f}: WHERE reads the record's columns, before windowing; use HAVING for the window's"
            )));
        }
        let filter = filter.as_ref().map(|f| physical(f, input)).transpose()?;
        let bounds: Vec<Option<Bound>> = aggregate.group_expr.iter().map(bound_of).collect();
        for (e, bound) in aggregate.group_expr.iter().zip(&bounds) {
            if session && bound.is_none() && reads_window(e) {
                return Err(fail(format!(
                    "GROUP BY {e}: a SESSION view groups by window_start and window_end themselves, not by expressions of them"
                )));
            }
        }
        let keys = aggregate
            .group_expr
            .iter()
            .map(|e| physical(e, input))
            .collect::<Result<Vec<_>, _>>()?;
        let key_types = keys
            .iter()
            .map(|k| {
                k.data_type(input.as_arrow())
                    .map_err(|e| fail(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut aggregates = Vec::new();
        let mut inputs = Vec::new();
        let mut states = Vec::new();
        let mut partial_fields: Vec<Field> = aggregate.schema.fields()[..keys.len()]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        partial_fields.push(Field::new(PARTIAL_START, DataType::Int64, false));
        partial_fields.push(Field::new(PARTIAL_END, DataType::Int64, false));
        partial_fields.push(Field::new(PARTIAL_LIVE, DataType::Boolean, false));
        for (i, e) in aggregate.aggr_expr.iter().enumerate() {
            if session && reads_window(e) {
                return Err(fail(format!(
                    "{e}: a SESSION view's aggregates read the records' columns, not the window's"
                )));
            }
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
            let fields = agg.state_fields().map_err(|e| fail(e.to_string()))?;
            let from = partial_fields.len();
            for (j, f) in fields.iter().enumerate() {
                partial_fields.push(Field::new(
                    format!("__state_{i}_{j}"),
                    f.data_type().clone(),
                    true,
                ));
            }
            states.push(from..partial_fields.len());
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
        let group_names: Vec<&str> = aggregated.fields()[..aggregate.group_expr.len()]
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let key_columns = projection
            .expr
            .iter()
            .map(|e| {
                let refs = e.column_refs();
                !refs.is_empty() && refs.iter().all(|c| group_names.contains(&c.name.as_str()))
            })
            .collect();
        let fields: Vec<Field> = projection
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let rows = Arc::new(Schema::new(fields.clone()));
        let mut out = fields;
        out.push(Field::new("revision", DataType::UInt64, false));
        let partial_rows = RowConverter::new(
            partial_fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )
        .map_err(|e| fail(format!("an aggregate's state cannot be kept: {e}")))?;
        Ok(ViewPlan {
            partial_rows,
            aggregated: Arc::new(aggregated.as_arrow().clone()),
            out: Arc::new(Schema::new(out)),
            rows,
            partial: Arc::new(Schema::new(partial_fields)),
            view,
            filter,
            keys,
            bounds,
            key_types,
            aggregates,
            inputs,
            states,
            having,
            select,
            key_columns,
        })
    }

    /// The names of the row's columns that place it (read only `GROUP BY` keys: the window,
    /// the name, the cell), as opposed to its values.
    pub fn key_columns(&self) -> Vec<String> {
        self.rows
            .fields()
            .iter()
            .zip(&self.key_columns)
            .filter(|(_, key)| **key)
            .map(|(f, _)| f.name().clone())
            .collect()
    }

    /// The view.
    pub fn view(&self) -> &ViewDef {
        &self.view
    }

    /// The columns of its rows: the select list's, then `revision`.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.out)
    }

    /// The columns of a partial row: the keys, the window's bounds, whether it stands, and each
    /// aggregate's state.
    pub fn partial_schema(&self) -> SchemaRef {
        Arc::clone(&self.partial)
    }

    /// The partial rows' row format: what the views output keeps and stores of each.
    pub fn partial_rows(&self) -> &RowConverter {
        &self.partial_rows
    }

    /// Each partial row's key (see [`ViewPlan::partial_key`]).
    ///
    /// # Errors
    /// As [`ViewPlan::partial_key`].
    pub fn partial_keys(&self, partials: &RecordBatch) -> Result<Vec<String>, EngineError> {
        let n = partials.num_rows();
        let columns: Vec<&ArrayRef> = self
            .bounds
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_none())
            .map(|(i, _)| partials.column(i))
            .collect();
        // Text keys (a unicorn's name, the usual one) written straight from the column, as
        // `json_of` would; any other type through it.
        let text = |c: &ArrayRef| {
            c.as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .cloned()
        };
        let texts: Vec<Option<datafusion::arrow::array::StringArray>> =
            columns.iter().map(|c| text(c)).collect();
        let mut out = Vec::with_capacity(n);
        let mut line = Vec::with_capacity(64);
        for row in 0..n {
            line.clear();
            line.push(b'[');
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    line.push(b',');
                }
                match &texts[i] {
                    Some(strings) if strings.is_valid(row) => {
                        serde_json::to_writer(&mut line, strings.value(row))
                            .map_err(|e| self.fail(e))?;
                    }
                    _ => {
                        let v =
                            ScalarValue::try_from_array(column, row).map_err(|e| self.fail(e))?;
                        serde_json::to_writer(&mut line, &json_of(&v)).map_err(|e| self.fail(e))?;
                    }
                }
            }
            line.push(b']');
            out.push(String::from_utf8(line.clone()).map_err(|e| self.fail(e))?);
        }
        Ok(out)
    }

    pub(super) fn fail(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError {
            view: self.view.name.clone(),
            message: e.to_string(),
        }
    }

    /// Fresh accumulators, one per aggregate.
    pub(super) fn accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>, EngineError> {
        self.aggregates
            .iter()
            .map(|a| a.create_accumulator())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(e))
    }

    /// Fresh vectorized accumulators, one per aggregate: one call per batch for every group
    /// (DataFusion's own where it has one, else its adapter over per-group accumulators).
    pub(super) fn groups_accumulators(
        &self,
    ) -> Result<Vec<Box<dyn GroupsAccumulator>>, EngineError> {
        self.aggregates
            .iter()
            .map(|a| {
                if a.groups_accumulator_supported() {
                    a.create_groups_accumulator()
                } else {
                    let a = Arc::clone(a);
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                        a.create_accumulator()
                    })) as Box<dyn GroupsAccumulator>)
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(e))
    }

    /// Each aggregate's columns of a partial row.
    pub(super) fn state_columns(&self, aggregate: usize) -> Range<usize> {
        self.states[aggregate].clone()
    }

    /// Partial rows, all standing, from columns: `keys` the key columns (window bounds
    /// included), `windows` each row's bounds, `states` the aggregates' state columns in order.
    pub(super) fn partials_of(
        &self,
        keys: Vec<ArrayRef>,
        windows: &[(Millis, Millis)],
        states: Vec<ArrayRef>,
    ) -> Result<RecordBatch, EngineError> {
        let mut columns = keys;
        columns.push(Arc::new(
            datafusion::arrow::array::Int64Array::from_iter_values(windows.iter().map(|w| w.0)),
        ));
        columns.push(Arc::new(
            datafusion::arrow::array::Int64Array::from_iter_values(windows.iter().map(|w| w.1)),
        ));
        columns.push(Arc::new(BooleanArray::from(vec![true; windows.len()])));
        let first = columns.len();
        for (i, state) in states.into_iter().enumerate() {
            columns.push(self.typed(state, self.partial.field(first + i).data_type())?);
        }
        RecordBatch::try_new(Arc::clone(&self.partial), columns).map_err(|e| self.fail(e))
    }

    /// `array` as `want` (a state may come back typed a little differently, a list's inner
    /// field, say; the schema's type is the contract).
    fn typed(&self, array: ArrayRef, want: &DataType) -> Result<ArrayRef, EngineError> {
        if array.data_type() == want {
            Ok(array)
        } else {
            datafusion::arrow::compute::cast(&array, want).map_err(|e| self.fail(e))
        }
    }

    /// Partial rows for windows and keys: `keys` the key columns (window bounds included),
    /// `windows` each row's bounds, `live` whether it stands, `states` each row's accumulators
    /// (`None` for a withdrawn row).
    pub(super) fn partials(
        &self,
        keys: Vec<ArrayRef>,
        windows: &[(Millis, Millis)],
        states: Vec<Option<&mut Vec<Box<dyn Accumulator>>>>,
    ) -> Result<RecordBatch, EngineError> {
        let n = windows.len();
        let mut columns = keys;
        columns.push(Arc::new(
            datafusion::arrow::array::Int64Array::from_iter_values(windows.iter().map(|w| w.0)),
        ));
        columns.push(Arc::new(
            datafusion::arrow::array::Int64Array::from_iter_values(windows.iter().map(|w| w.1)),
        ));
        columns.push(Arc::new(BooleanArray::from_iter(
            states.iter().map(|s| Some(s.is_some())),
        )));
        let width = self.partial.fields().len() - columns.len();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(n); width];
        for state in states {
            match state {
                Some(accumulators) => {
                    let mut column = 0;
                    for acc in accumulators.iter_mut() {
                        for v in acc.state().map_err(|e| self.fail(e))? {
                            values[column].push(v);
                            column += 1;
                        }
                    }
                }
                None => {
                    for (column, v) in values.iter_mut().enumerate() {
                        let field = self
                            .partial
                            .field(self.partial.fields().len() - width + column);
                        v.push(ScalarValue::try_from(field.data_type()).map_err(|e| self.fail(e))?);
                    }
                }
            }
        }
        let first = columns.len();
        for (i, v) in values.into_iter().enumerate() {
            columns.push(self.array(v, first + i)?);
        }
        RecordBatch::try_new(Arc::clone(&self.partial), columns).map_err(|e| self.fail(e))
    }

    fn array(&self, values: Vec<ScalarValue>, column: usize) -> Result<ArrayRef, EngineError> {
        if values.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(
                self.partial.field(column).data_type(),
            ));
        }
        let array = ScalarValue::iter_to_array(values).map_err(|e| self.fail(e))?;
        self.typed(array, self.partial.field(column).data_type())
    }

    /// A partial row's window: (start, end), epoch ms; and whether it stands.
    pub fn partial_window(&self, partials: &RecordBatch, row: usize) -> (Millis, Millis, bool) {
        let k = self.keys.len();
        let int = |c: usize| {
            partials
                .column(c)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .map_or(0, |a| a.value(row))
        };
        let live = partials
            .column(k + 2)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .is_some_and(|a| a.value(row));
        (int(k), int(k + 1), live)
    }

    /// A partial row's key as text: its `GROUP BY` values other than the window's, as a JSON
    /// array (the store's `Key`).
    ///
    /// # Errors
    /// A key column's value could not be read.
    pub fn partial_key(&self, partials: &RecordBatch, row: usize) -> Result<String, EngineError> {
        let mut values = Vec::new();
        for (i, bound) in self.bounds.iter().enumerate() {
            if bound.is_some() {
                continue;
            }
            let v =
                ScalarValue::try_from_array(partials.column(i), row).map_err(|e| self.fail(e))?;
            values.push(json_of(&v));
        }
        Ok(serde_json::Value::Array(values).to_string())
    }

    /// The view's rows for groups of partial rows (each range of `partials` the partials of one
    /// window and key, from one partition or several), without `revision`; and for each group
    /// whether it has a row (`HAVING` may say no).
    ///
    /// # Errors
    /// An aggregate, `HAVING` or select expression failed.
    pub fn finish(
        &self,
        partials: &RecordBatch,
        groups: &[Range<usize>],
    ) -> Result<(RecordBatch, Vec<bool>), EngineError> {
        let k = self.keys.len();
        let firsts = UInt64Array::from_iter_values(groups.iter().map(|g| g.start as u64));
        let mut columns = (0..k)
            .map(|i| datafusion::arrow::compute::take(partials.column(i), &firsts, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(e))?;
        // Every group's partial rows merged at once: one call per aggregate, not per group.
        let rows: Vec<u32> = groups
            .iter()
            .flat_map(|g| g.clone().map(|r| r as u32))
            .collect();
        let whole = rows.len() == partials.num_rows()
            && rows.iter().enumerate().all(|(i, r)| *r as usize == i);
        let rows = UInt32Array::from(rows);
        let group_of: Vec<usize> = groups
            .iter()
            .enumerate()
            .flat_map(|(g, r)| std::iter::repeat_n(g, r.len()))
            .collect();
        let mut accumulators = self.groups_accumulators()?;
        for (i, acc) in accumulators.iter_mut().enumerate() {
            let states = self.states[i]
                .clone()
                .map(|c| {
                    let column = partials.column(c);
                    if whole {
                        Ok(Arc::clone(column))
                    } else {
                        datafusion::arrow::compute::take(column, &rows, None)
                    }
                })
                .collect::<Result<Vec<ArrayRef>, _>>()
                .map_err(|e| self.fail(e))?;
            acc.merge_batch(&states, &group_of, groups.len())
                .map_err(|e| self.fail(e))?;
            let values = acc.evaluate(EmitTo::All).map_err(|e| self.fail(e))?;
            columns.push(self.typed(values, self.aggregated.field(k + i).data_type())?);
        }
        let aggregated = RecordBatch::try_new(Arc::clone(&self.aggregated), columns)
            .map_err(|e| self.fail(e))?;
        let (aggregated, kept) = match &self.having {
            None => (aggregated, vec![true; groups.len()]),
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
                let kept: Vec<bool> = (0..keep.len())
                    .map(|i| keep.is_valid(i) && keep.value(i))
                    .collect();
                let keep = BooleanArray::from(kept.clone());
                let rows = filter_record_batch(&aggregated, &keep).map_err(|e| self.fail(e))?;
                (rows, kept)
            }
        };
        let n = aggregated.num_rows();
        let columns = self
            .select
            .iter()
            .map(|e| e.evaluate(&aggregated).and_then(|v| v.into_array(n)))
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(|e| self.fail(e))?;
        let rows =
            RecordBatch::try_new(Arc::clone(&self.rows), columns).map_err(|e| self.fail(e))?;
        Ok((rows, kept))
    }

    /// `rows` (from [`ViewPlan::finish`]) with their revisions: a batch of [`ViewPlan::schema`].
    ///
    /// # Errors
    /// As many revisions as rows are needed.
    pub fn with_revisions(
        &self,
        rows: &RecordBatch,
        revisions: Vec<u64>,
    ) -> Result<RecordBatch, EngineError> {
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from(revisions)));
        RecordBatch::try_new(Arc::clone(&self.out), columns).map_err(|e| self.fail(e))
    }

    /// The windowed batch's window columns for the rows of `index`.
    pub(super) fn window_columns(starts: Vec<Millis>, ends: Vec<Millis>) -> [ArrayRef; 2] {
        [
            Arc::new(TimestampMillisecondArray::from(starts)),
            Arc::new(TimestampMillisecondArray::from(ends)),
        ]
    }
}

/// A key's value as JSON: numbers as numbers, timestamps in the workshop's format, the rest as
/// text.
fn json_of(v: &ScalarValue) -> serde_json::Value {
    use serde_json::Value;
    if v.is_null() {
        return Value::Null;
    }
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Value::String(s.clone()),
        ScalarValue::Boolean(Some(b)) => Value::Bool(*b),
        ScalarValue::Int8(Some(i)) => (*i).into(),
        ScalarValue::Int16(Some(i)) => (*i).into(),
        ScalarValue::Int32(Some(i)) => (*i).into(),
        ScalarValue::Int64(Some(i)) => (*i).into(),
        ScalarValue::UInt8(Some(i)) => (*i).into(),
        ScalarValue::UInt16(Some(i)) => (*i).into(),
        ScalarValue::UInt32(Some(i)) => (*i).into(),
        ScalarValue::UInt64(Some(i)) => (*i).into(),
        ScalarValue::Float64(Some(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        ScalarValue::Float32(Some(f)) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        ScalarValue::TimestampMillisecond(Some(t), _) => Value::String(format_status_time(*t)),
        ScalarValue::TimestampSecond(Some(t), _) => {
            Value::String(format_status_time(t.saturating_mul(1_000)))
        }
        ScalarValue::TimestampMicrosecond(Some(t), _) => {
            Value::String(format_status_time(t / 1_000))
        }
        ScalarValue::TimestampNanosecond(Some(t), _) => {
            Value::String(format_status_time(t / 1_000_000))
        }
        other => Value::String(other.to_string()),
    }
}
