//! Ad-hoc SQL (CONTRACT §8) over the archive and the store, with DataFusion: `stampede query`
//! and `POST /api/query`.
//!
//! Two tables, as Athena would show them:
//! * `wildrydes` — the archive: its NDJSON objects and its Parquet objects (`.parquet`), in any
//!   layout, found by listing the archive (files and directories whose names start with `.` or
//!   `_` are skipped: staging, markers). A view gives the workshop's lower-case columns
//!   (`name`, `statustime` timestamp, `latitude`, …), so `Name`, `name` and `NAME` all work,
//!   as in Athena (DataFusion folds unquoted names to lower case).
//! * `summaries` — the stored summaries (read from the store only when the query names it).
//! * one table per continuous view (CONTRACT §9), named after it: its stored rows (read only
//!   when the query names the view).
//!
//! Queries are read-only: DDL, DML (`COPY … TO` writes files) and `SET` are refused.

pub mod backfill;
mod files;
mod render;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};

use crate::output::archive::target::Target;
use crate::record::Summary;
use files::archive_files;
pub use render::{json_rows, render, row_values, Format};
pub use worker::run_isolated;

/// A query that could not run, in words.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL is wrong, or names what does not exist.
    #[error("{0}")]
    Sql(String),
    /// The archive or the store could not be read.
    #[error("{0}")]
    Source(String),
    /// It ran past its time limit.
    #[error("the query ran longer than {} s and was stopped", .0.as_secs())]
    Timeout(Duration),
    /// Its answer was larger than a query on the service may give.
    #[error("the answer is larger than {} MiB: select fewer rows or columns (LIMIT), or run it with stampede query", .0 >> 20)]
    TooLarge(usize),
    /// It was stopped for taking more than a query may (memory, stack).
    #[error("{0}")]
    Stopped(String),
}

fn sql_error(e: datafusion::error::DataFusionError) -> QueryError {
    // DataFusion's messages start with the kind ("Error during planning: …"): keep them whole,
    // they say what to fix.
    QueryError::Sql(e.to_string())
}

/// What the tables are read from.
#[derive(Clone, Default)]
pub struct Tables {
    /// The archive, if any.
    pub archive: Option<Target>,
    /// The stored summaries, when the query names `summaries`.
    pub summaries: Option<Vec<Summary>>,
    /// The views the query names: each one's statement and stored rows (JSON).
    pub views: Vec<ViewRows>,
}

/// A view's table: its statement (for its columns) and its rows as stored.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ViewRows {
    /// Its `CREATE VIEW` statement.
    pub sql: String,
    /// Its rows, one JSON object each.
    pub rows: Vec<String>,
}

/// Whether `sql` may name the view `name` (so that its rows are read only then).
pub fn names_view(sql: &str, name: &str) -> bool {
    sql.to_ascii_lowercase()
        .contains(&name.to_ascii_lowercase())
}

/// A view's rows as a table of its columns.
async fn view_table(view: &ViewRows) -> Result<(String, MemTable), QueryError> {
    let source = |e: &dyn std::fmt::Display| QueryError::Source(e.to_string());
    let def = crate::view::plan::parse(&view.sql).map_err(|e| source(&e))?;
    let name = def.name.clone();
    let plan = crate::view::compile::ViewPlan::new(def)
        .await
        .map_err(|e| source(&e))?;
    let schema = plan.schema();
    let mut text = String::with_capacity(view.rows.iter().map(|r| r.len() + 1).sum());
    for row in &view.rows {
        text.push_str(row);
        text.push('\n');
    }
    let reader = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(&schema))
        .build(std::io::Cursor::new(text.into_bytes()))
        .map_err(|e| source(&e))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| source(&format!("view {name}: {e}")))?;
    let table = MemTable::try_new(schema, vec![batches]).map_err(|e| source(&e))?;
    Ok((name, table))
}

/// Whether `sql` names the `summaries` table (so that the store is read only then).
pub fn wants_summaries(sql: &str) -> bool {
    sql.to_ascii_lowercase().contains("summaries")
}

/// The raw NDJSON schema: the record's keys, `StatusTime` as text (cast in the view).
fn ndjson_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("Name", DataType::Utf8, true),
        Field::new("StatusTime", DataType::Utf8, true),
        Field::new("Latitude", DataType::Float64, true),
        Field::new("Longitude", DataType::Float64, true),
        Field::new("Distance", DataType::Float64, true),
        Field::new("HealthPoints", DataType::Int64, true),
        Field::new("MagicPoints", DataType::Int64, true),
    ]))
}

/// The columns of `wildrydes`, as Athena shows them.
fn wildrydes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new(
            "statustime",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("latitude", DataType::Float64, true),
        Field::new("longitude", DataType::Float64, true),
        Field::new("distance", DataType::Float64, true),
        Field::new("healthpoints", DataType::Int64, true),
        Field::new("magicpoints", DataType::Int64, true),
    ]))
}

fn summaries_table(summaries: &[Summary]) -> Result<MemTable, QueryError> {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("statustime", ts(), false),
        Field::new("windowend", ts(), false),
        Field::new("distance", DataType::Float64, false),
        Field::new("minmagicpoints", DataType::Int64, false),
        Field::new("maxmagicpoints", DataType::Int64, false),
        Field::new("minhealthpoints", DataType::Int64, false),
        Field::new("maxhealthpoints", DataType::Int64, false),
        Field::new("records", DataType::Int64, false),
        Field::new("revision", DataType::Int64, false),
    ]));
    let int = |f: &dyn Fn(&Summary) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(summaries.iter().map(f)))
    };
    let whole = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            summaries.iter().map(|s| s.name.as_str()),
        )),
        Arc::new(TimestampMillisecondArray::from_iter_values(
            summaries.iter().map(|s| s.window_start),
        )),
        Arc::new(TimestampMillisecondArray::from_iter_values(
            summaries.iter().map(|s| s.window_end),
        )),
        Arc::new(Float64Array::from_iter_values(
            summaries.iter().map(|s| s.distance),
        )),
        int(&|s| s.min_magic_points),
        int(&|s| s.max_magic_points),
        int(&|s| s.min_health_points),
        int(&|s| s.max_health_points),
        int(&|s| whole(s.records)),
        int(&|s| whole(s.revision)),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
        .map_err(|e| QueryError::Source(e.to_string()))?;
    MemTable::try_new(schema, vec![vec![batch]]).map_err(|e| QueryError::Source(e.to_string()))
}

/// The records of `table` (the record's own keys) as Athena shows them: lower-case columns,
/// `statustime` a timestamp.
///
/// `statustime` is in milliseconds, as records are: a nanosecond timestamp holds only the years
/// 1677–2262, and one record outside them (kept by an older version, or by a file source) would
/// fail every query that reads the column.
fn athena_columns(table: &str) -> String {
    format!(
        "SELECT \"Name\" AS name, arrow_cast(\"StatusTime\", 'Timestamp(Millisecond, None)') AS statustime, \"Latitude\" AS latitude, \"Longitude\" AS longitude, \"Distance\" AS distance, \"HealthPoints\" AS healthpoints, \"MagicPoints\" AS magicpoints FROM {table}"
    )
}

/// How much a query may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Threads of parallelism.
    pub partitions: usize,
    /// Memory for sorts, joins and aggregations; past it the query fails (it does not spill).
    pub memory_bytes: Option<usize>,
}

/// A session with the two tables registered.
///
/// # Errors
/// The archive cannot be listed, or a table cannot be registered.
pub async fn context(tables: &Tables, limits: Limits) -> Result<SessionContext, QueryError> {
    let config = SessionConfig::new()
        .with_target_partitions(limits.partitions.max(1))
        .with_information_schema(true);
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(bytes) = limits.memory_bytes {
        runtime = runtime.with_memory_limit(bytes, 1.0);
    }
    let runtime = runtime.build_arc().map_err(sql_error)?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let (json, parquet) = match &tables.archive {
        Some(target) => archive_files(target).await?,
        None => (Vec::new(), Vec::new()),
    };
    if let Some(Target::S3 { store, bucket, .. }) = &tables.archive {
        let url = url::Url::parse(&format!("s3://{bucket}"))
            .map_err(|e| QueryError::Source(e.to_string()))?;
        ctx.register_object_store(&url, Arc::clone(store));
    }
    let mut parts = Vec::new();
    if !json.is_empty() {
        let format = JsonFormat::default();
        let options = ListingOptions::new(Arc::new(format)).with_file_extension("");
        register_files(&ctx, "wildrydes_ndjson", &json, options, ndjson_schema()).await?;
        parts.push(athena_columns("wildrydes_ndjson"));
    }
    if !parquet.is_empty() {
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        register_files(
            &ctx,
            "wildrydes_parquet",
            &parquet,
            options,
            crate::output::archive::columns::schema(),
        )
        .await?;
        parts.push(athena_columns("wildrydes_parquet"));
    }
    if parts.is_empty() {
        let empty = MemTable::try_new(wildrydes_schema(), vec![vec![]]).map_err(sql_error)?;
        ctx.register_table("wildrydes", Arc::new(empty))
            .map_err(sql_error)?;
    } else {
        let view = format!("CREATE VIEW wildrydes AS {}", parts.join(" UNION ALL "));
        ctx.sql(&view).await.map_err(sql_error)?;
    }
    let summaries = summaries_table(tables.summaries.as_deref().unwrap_or_default())?;
    ctx.register_table("summaries", Arc::new(summaries))
        .map_err(sql_error)?;
    for view in &tables.views {
        let (name, table) = view_table(view).await?;
        ctx.register_table(name.as_str(), Arc::new(table))
            .map_err(sql_error)?;
    }
    Ok(ctx)
}

async fn register_files(
    ctx: &SessionContext,
    name: &str,
    files: &[String],
    options: ListingOptions,
    schema: SchemaRef,
) -> Result<(), QueryError> {
    let urls = files
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql_error)?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    let table = ListingTable::try_new(config).map_err(sql_error)?;
    ctx.register_table(name, Arc::new(table))
        .map_err(sql_error)?;
    Ok(())
}

/// A query's result.
#[derive(Debug)]
pub struct Answer {
    /// Column names and types.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// More rows were found than the limit allowed; they are not here.
    pub truncated: bool,
}

impl Answer {
    /// How many rows it holds.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Runs one read-only statement, keeping at most `max_rows` rows.
///
/// # Errors
/// The SQL is wrong or not a query, or reading failed.
pub async fn run(
    ctx: &SessionContext,
    sql: &str,
    max_rows: Option<usize>,
) -> Result<Answer, QueryError> {
    check_depth(sql)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let mut df = ctx
        .sql_with_options(sql, options)
        .await
        .map_err(sql_error)?;
    if let Some(max) = max_rows {
        df = df
            .limit(0, Some(max.saturating_add(1)))
            .map_err(sql_error)?;
    }
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut batches = df.collect().await.map_err(sql_error)?;
    let mut truncated = false;
    if let Some(max) = max_rows {
        let mut kept = 0usize;
        batches.retain_mut(|b| {
            if kept >= max {
                truncated = true;
                return false;
            }
            if kept + b.num_rows() > max {
                *b = b.slice(0, max - kept);
                truncated = true;
            }
            kept += b.num_rows();
            true
        });
    }
    Ok(Answer {
        schema,
        batches,
        truncated,
    })
}

/// Expressions nested deeper than this are refused: DataFusion plans, optimises and evaluates
/// expressions recursively, and a chain such as `1+1+…+1` of a few thousand terms would
/// overflow its stack.
pub const MAX_EXPRESSION_DEPTH: usize = 64;

/// SQL longer than this is refused (the workshop's longest query is under 1 kB).
pub const MAX_SQL_BYTES: usize = 100 << 10;

/// Refuses SQL longer than [`MAX_SQL_BYTES`] or whose expressions nest deeper than
/// [`MAX_EXPRESSION_DEPTH`]. SQL that does not parse passes: DataFusion then says what is wrong
/// with it.
///
/// The parsed tree of a long chain is as deep as the chain, and walking or dropping it recurses
/// once per level: that happens on a thread with a stack for the longest SQL allowed.
fn check_depth(sql: &str) -> Result<(), QueryError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(QueryError::Sql(format!(
            "the SQL is {} bytes long; at most {MAX_SQL_BYTES} are taken",
            sql.len()
        )));
    }
    let text = sql.to_owned();
    std::thread::Builder::new()
        .name("stampede-sql-check".into())
        .stack_size(256 << 20)
        .spawn(move || nesting(&text))
        .map_err(|e| QueryError::Source(format!("cannot start a thread: {e}")))?
        .join()
        .unwrap_or_else(|_| Err(QueryError::Sql("the SQL could not be checked".into())))
}

/// See [`check_depth`].
fn nesting(sql: &str) -> Result<(), QueryError> {
    use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use std::ops::ControlFlow;

    struct Depth(usize);
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.0 += 1;
            if self.0 > MAX_EXPRESSION_DEPTH {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.0 -= 1;
            ControlFlow::Continue(())
        }
    }
    let Ok(statements) = Parser::parse_sql(&GenericDialect {}, sql) else {
        return Ok(());
    };
    if statements.iter().any(|s| s.visit(&mut Depth(0)).is_break()) {
        return Err(QueryError::Sql(format!(
            "an expression nests deeper than {MAX_EXPRESSION_DEPTH} levels (e.g. a long chain of + or ||): split it, or use SUM or concat_ws over rows"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_nested_too_deep_are_refused_with_the_reason() {
        let chain = |terms: usize| format!("SELECT 1{} FROM t", "+1".repeat(terms));
        assert!(check_depth(&chain(MAX_EXPRESSION_DEPTH - 2)).is_ok());
        match check_depth(&chain(20_000)) {
            Err(QueryError::Sql(m)) => assert!(m.contains("nests deeper than 64"), "{m}"),
            other => panic!("{other:?}"),
        }
        let long = chain(60_000);
        assert!(matches!(check_depth(&long), Err(QueryError::Sql(m)) if m.contains("at most")));
        // Not SQL at all: DataFusion says why.
        assert!(check_depth("SELEKT").is_ok());
    }

    #[tokio::test]
    async fn an_empty_archive_is_an_empty_table_and_writes_are_refused() {
        let ctx = context(
            &Tables::default(),
            Limits {
                partitions: 1,
                memory_bytes: None,
            },
        )
        .await
        .unwrap();
        let answer = run(
            &ctx,
            "SELECT Name, SUM(Distance) AS TotalDistance FROM wildrydes GROUP BY Name",
            None,
        )
        .await
        .unwrap();
        assert_eq!(answer.rows(), 0);
        let names: Vec<&String> = answer.schema.fields().iter().map(|f| f.name()).collect();
        assert_eq!(names, ["name", "totaldistance"]);
        for sql in [
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "CREATE TABLE t AS SELECT 1",
            "SET datafusion.execution.batch_size = 1",
        ] {
            assert!(run(&ctx, sql, None).await.is_err(), "{sql} must be refused");
        }
    }

    #[test]
    fn tables_align_csv_quotes_and_json_keeps_types() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![Some("a,b"), None])),
                Arc::new(Int64Array::from(vec![Some(5), Some(123)])),
            ],
        )
        .unwrap();
        let answer = Answer {
            schema,
            batches: vec![batch],
            truncated: false,
        };
        assert_eq!(
            render(&answer, Format::Table),
            "name |   n\n-----+----\na,b  |   5\n     | 123\n"
        );
        assert_eq!(
            render(&answer, Format::Csv),
            "name,n\r\n\"a,b\",5\r\n,123\r\n"
        );
        assert_eq!(
            render(&answer, Format::Json),
            "{\"name\":\"a,b\",\"n\":5}\n{\"name\":null,\"n\":123}\n"
        );
    }
}
