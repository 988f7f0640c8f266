//! A view's SQL (CONTRACT §9) read and checked: `CREATE [MATERIALIZED] VIEW name AS SELECT …
//! FROM TUMBLE | HOP | SESSION(wildrydes, statustime, …)`, with everything a view may not say
//! refused at once, naming the line, the column and the construct.
//!
//! Parsed with DataFusion's SQL front end (sqlparser), so a view reads exactly as `stampede
//! query` reads SQL. What it checks here is the shape: one window over the stream, a `GROUP BY`
//! on the window, the aggregates a view keeps incrementally; the types are DataFusion's to
//! check when the view is planned over the stream's columns.

use std::fmt;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DateTimeField, Distinct, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, ObjectName, Query, SetExpr, Spanned, Statement, TableFactor,
    Value, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Span;

use crate::time::Millis;

/// The table a view's `SELECT` reads once its window function is taken out: the stream's columns
/// with `window_start` and `window_end`.
pub const WINDOWED: &str = "wildrydes_windowed";

/// The aggregates a view may use: each can be kept per window and updated batch by batch.
pub const AGGREGATES: [&str; 9] = [
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "approx_distinct",
    "approx_percentile_cont",
    "first_value",
    "last_value",
];

/// Other aggregates DataFusion knows, refused by name (rather than taken for scalar functions).
const OTHER_AGGREGATES: [&str; 22] = [
    "array_agg",
    "string_agg",
    "median",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var",
    "var_pop",
    "var_samp",
    "variance",
    "corr",
    "covar",
    "covar_pop",
    "covar_samp",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "nth_value",
    "grouping",
    "approx_median",
];

/// A view's window over the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Fixed windows of `size_ms`, aligned to the epoch.
    Tumble {
        /// Window length.
        size_ms: Millis,
    },
    /// Windows of `size_ms` every `slide_ms` (size a whole multiple of slide).
    Hop {
        /// How far apart windows start.
        slide_ms: Millis,
        /// Window length.
        size_ms: Millis,
    },
    /// Per group key, a window ends `gap_ms` after its last record.
    Session {
        /// The silence that ends a session.
        gap_ms: Millis,
    },
}

/// A view as defined: its name, its SQL, its window.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewDef {
    /// 1–64 letters, digits, `-` and `_`.
    pub name: String,
    /// The whole statement, as written.
    pub sql: String,
    /// The window it is computed over.
    pub window: Window,
    /// The `SELECT` with the window function replaced by the table [`WINDOWED`]: the stream's
    /// columns (those of `wildrydes`) with `window_start` and `window_end`, a row per record and
    /// window it falls in. What is planned, over the stream or in batch.
    pub select: String,
    /// The `GROUP BY` expressions other than the window's: a session's key.
    pub keys: Vec<String>,
}

/// Why a view was refused: where, what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1-based line of the construct (0 when the SQL says nothing of where).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// The construct refused, e.g. `ORDER BY`.
    pub construct: String,
    /// Why, and what to write instead.
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}: {}",
            self.line, self.column, self.construct, self.message
        )
    }
}

impl std::error::Error for Refusal {}

fn refuse(span: Span, construct: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        line: span.start.line,
        column: span.start.column,
        construct: construct.to_owned(),
        message: message.into(),
    }
}

/// Reads and checks one view.
///
/// # Errors
/// The first thing in it a view may not say (or the syntax error), with where it is.
pub fn parse(sql: &str) -> Result<ViewDef, Refusal> {
    let statements =
        Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| syntax(&e.to_string()))?;
    let mut statements = statements.into_iter();
    let (Some(statement), None) = (statements.next(), statements.next()) else {
        return Err(Refusal {
            line: 1,
            column: 1,
            construct: "statements".into(),
            message: "a view is one CREATE VIEW statement".into(),
        });
    };
    let Statement::CreateView(view) = statement else {
        return Err(refuse(
            statement.span(),
            "statement",
            "a view is CREATE VIEW name AS SELECT … FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) …",
        ));
    };
    let name = view_name(&view.name)?;
    let mut query = *view.query;
    let window = check_query(&query)?;
    let keys = match query.body.as_ref() {
        SetExpr::Select(select) => match &select.group_by {
            GroupByExpr::Expressions(exprs, _) => exprs
                .iter()
                .filter(|e| {
                    !matches!(e, Expr::Identifier(id)
                        if id.value.eq_ignore_ascii_case("window_start")
                            || id.value.eq_ignore_ascii_case("window_end"))
                })
                .map(ToString::to_string)
                .collect(),
            GroupByExpr::All(_) => Vec::new(),
        },
        _ => Vec::new(),
    };
    // Planned over the stream: the window function becomes the stream itself.
    if let SetExpr::Select(select) = query.body.as_mut() {
        if let Some(from) = select.from.first_mut() {
            from.relation = TableFactor::Table {
                name: ObjectName::from(vec![datafusion::sql::sqlparser::ast::Ident::new(WINDOWED)]),
                alias: None,
                args: None,
                with_hints: Vec::new(),
                version: None,
                with_ordinality: false,
                partitions: Vec::new(),
                json_path: None,
                sample: None,
                index_hints: Vec::new(),
            };
        }
    }
    Ok(ViewDef {
        name,
        sql: sql.trim().to_owned(),
        window,
        select: query.to_string(),
        keys,
    })
}

/// A parser error as a refusal, with the place it names.
fn syntax(message: &str) -> Refusal {
    let number = |after: &str| {
        message
            .split(after)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let text = message.trim_start_matches("sql parser error: ");
    Refusal {
        line: number("Line: "),
        column: number("Column: "),
        construct: "syntax".into(),
        message: text.split(" at Line:").next().unwrap_or(text).to_owned(),
    }
}

fn view_name(name: &ObjectName) -> Result<String, Refusal> {
    let text = name.to_string();
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ["wildrydes", "summaries", WINDOWED].contains(&text.to_ascii_lowercase().as_str()) {
        return Err(refuse(
            name.span(),
            "view name",
            format!("{text:?} is the name of a table stampede query already has: choose another"),
        ));
    }
    if ok {
        Ok(text)
    } else {
        Err(refuse(
            name.span(),
            "view name",
            format!("{text:?}: a view's name is 1 to 64 letters, digits, '-' or '_'"),
        ))
    }
}

/// The shape of a view's query; its window.
fn check_query(query: &Query) -> Result<Window, Refusal> {
    if let Some(with) = &query.with {
        return Err(refuse(
            with.span(),
            "WITH",
            "a view is one SELECT: no common table expressions",
        ));
    }
    if let Some(order) = &query.order_by {
        return Err(refuse(
            order.span(),
            "ORDER BY",
            "a view's rows have no order: sort them when you read them (GET /api/views/NAME, stampede query)",
        ));
    }
    if let Some(limit) = &query.limit_clause {
        return Err(refuse(
            limit.span(),
            "LIMIT",
            "a view keeps every window's rows: limit them when you read them",
        ));
    }
    if let Some(fetch) = &query.fetch {
        return Err(refuse(
            fetch.span(),
            "FETCH",
            "a view keeps every window's rows",
        ));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(refuse(
            query.body.span(),
            "set operation",
            "a view is one SELECT (no UNION, INTERSECT, EXCEPT or VALUES)",
        ));
    };
    if let Some(distinct) = &select.distinct {
        let span = match distinct {
            Distinct::On(exprs) => exprs.first().map_or(select.span(), Spanned::span),
            _ => select.select_token.0.span,
        };
        return Err(refuse(
            span,
            "SELECT DISTINCT",
            "a view's rows are already one per GROUP BY key",
        ));
    }
    let from = match select.from.as_slice() {
        [one] => one,
        [] => {
            return Err(refuse(
                select.span(),
                "FROM",
                "a view reads FROM TUMBLE, HOP or SESSION over wildrydes",
            ))
        }
        [_, second, ..] => {
            return Err(refuse(
                second.span(),
                "join",
                "a view reads one stream: no joins",
            ))
        }
    };
    if let Some(join) = from.joins.first() {
        return Err(refuse(
            join.span(),
            "join",
            "a view reads one stream: no joins",
        ));
    }
    let window = window_of(&from.relation)?;
    // Expressions anywhere: no subqueries, no window functions, the aggregates a view keeps.
    let mut check = Expressions(None);
    let _ = select.visit(&mut check);
    if let Some(refusal) = check.0 {
        return Err(refusal);
    }
    let grouped_by_window = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => exprs.iter().any(
            |e| matches!(e, Expr::Identifier(id) if id.value.eq_ignore_ascii_case("window_start")),
        ),
        GroupByExpr::All(_) => false,
    };
    if !grouped_by_window {
        return Err(refuse(
            select.group_by_span(),
            "GROUP BY",
            "a view groups by its window: GROUP BY window_start (and window_end) and any other keys",
        ));
    }
    Ok(window)
}

trait GroupBySpan {
    fn group_by_span(&self) -> Span;
}

impl GroupBySpan for datafusion::sql::sqlparser::ast::Select {
    /// Where the `GROUP BY` is, or the end of the `SELECT` when it has none.
    fn group_by_span(&self) -> Span {
        match &self.group_by {
            GroupByExpr::Expressions(exprs, _) if !exprs.is_empty() => exprs
                .iter()
                .map(Spanned::span)
                .fold(Span::empty(), |a, b| a.union(&b)),
            _ => {
                let whole = self.span();
                Span::new(whole.end, whole.end)
            }
        }
    }
}

/// The window function of the `FROM`.
fn window_of(relation: &TableFactor) -> Result<Window, Refusal> {
    let over_anything_else = |span| {
        refuse(
            span,
            "FROM",
            "a view reads FROM TUMBLE(wildrydes, statustime, size), HOP(wildrydes, statustime, slide, size) or SESSION(wildrydes, statustime, gap)",
        )
    };
    let TableFactor::Table {
        name,
        args: Some(args),
        ..
    } = relation
    else {
        return Err(over_anything_else(relation.span()));
    };
    let function = name.to_string().to_ascii_lowercase();
    let args: Vec<&Expr> = args
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            other => Err(over_anything_else(other.span())),
        })
        .collect::<Result<_, _>>()?;
    let ident = |e: &Expr, want: &str| matches!(e, Expr::Identifier(id) if id.value.eq_ignore_ascii_case(want));
    match args.as_slice() {
        [stream, time, ..] if ident(stream, "wildrydes") && ident(time, "statustime") => {}
        [stream, ..] if !ident(stream, "wildrydes") => {
            return Err(refuse(
                stream.span(),
                "window",
                "a window is over the stream wildrydes",
            ))
        }
        [_, time, ..] => {
            return Err(refuse(
                time.span(),
                "window",
                "a window is on event time: statustime",
            ))
        }
        _ => return Err(over_anything_else(relation.span())),
    }
    let intervals: Vec<Millis> = args[2..]
        .iter()
        .map(|e| interval_ms(e))
        .collect::<Result<_, _>>()?;
    match (function.as_str(), intervals.as_slice()) {
        ("tumble", [size]) => Ok(Window::Tumble { size_ms: *size }),
        ("hop", [slide, size]) => {
            if size % slide != 0 {
                return Err(refuse(
                    args[3].span(),
                    "HOP",
                    format!(
                        "the size ({size} ms) must be a whole multiple of the slide ({slide} ms)"
                    ),
                ));
            }
            Ok(Window::Hop {
                slide_ms: *slide,
                size_ms: *size,
            })
        }
        ("session", [gap]) => Ok(Window::Session { gap_ms: *gap }),
        ("tumble" | "hop" | "session", _) => Err(refuse(
            relation.span(),
            "window",
            "TUMBLE takes one interval (the size), HOP two (slide, size), SESSION one (the gap)",
        )),
        _ => Err(over_anything_else(name.span())),
    }
}

/// A positive `INTERVAL` in milliseconds: `INTERVAL '5' MINUTE`, `INTERVAL '30 seconds'`.
fn interval_ms(e: &Expr) -> Result<Millis, Refusal> {
    let bad = || {
        refuse(
            e.span(),
            "interval",
            "a window's length is an INTERVAL of whole seconds or more, e.g. INTERVAL '1' MINUTE or INTERVAL '30 seconds'",
        )
    };
    let Expr::Interval(interval) = e else {
        return Err(bad());
    };
    let text = match interval.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::Number(s, _) => s.trim().to_ascii_lowercase(),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let (number, unit) = match &interval.leading_field {
        Some(field) => (text.as_str(), field_unit(field).ok_or_else(bad)?),
        None => {
            let mut words = text.split_whitespace();
            let number = words.next().ok_or_else(bad)?;
            let unit = words.next().and_then(word_unit).ok_or_else(bad)?;
            (number, unit)
        }
    };
    let n: Millis = number.parse().map_err(|_| bad())?;
    n.checked_mul(unit)
        .filter(|ms| *ms >= 1_000 && *ms <= 7 * 86_400_000)
        .ok_or_else(bad)
}

fn field_unit(field: &DateTimeField) -> Option<Millis> {
    match field {
        DateTimeField::Second | DateTimeField::Seconds => Some(1_000),
        DateTimeField::Minute | DateTimeField::Minutes => Some(60_000),
        DateTimeField::Hour | DateTimeField::Hours => Some(3_600_000),
        DateTimeField::Day | DateTimeField::Days => Some(86_400_000),
        _ => None,
    }
}

fn word_unit(word: &str) -> Option<Millis> {
    match word.trim_end_matches('s') {
        "second" | "sec" => Some(1_000),
        "minute" | "min" => Some(60_000),
        "hour" => Some(3_600_000),
        "day" => Some(86_400_000),
        _ => None,
    }
}

/// Refuses subqueries, window functions (`OVER`), `DISTINCT` aggregates and aggregates a view
/// does not keep; the first refusal is kept.
struct Expressions(Option<Refusal>);

impl Visitor for Expressions {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        let refusal = match expr {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => Some(refuse(
                expr.span(),
                "subquery",
                "a view reads the stream once: no subqueries",
            )),
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                let distinct = matches!(
                    &f.args,
                    FunctionArguments::List(list)
                        if list.duplicate_treatment == Some(DuplicateTreatment::Distinct)
                );
                if f.over.is_some() {
                    Some(refuse(
                        expr.span(),
                        "window function (OVER)",
                        "a view's windows are its FROM's: no OVER",
                    ))
                } else if distinct {
                    Some(refuse(
                        expr.span(),
                        "DISTINCT aggregate",
                        format!("{name}(DISTINCT …) cannot be kept per batch: use approx_distinct"),
                    ))
                } else if OTHER_AGGREGATES.contains(&name.as_str()) {
                    Some(refuse(
                        f.name.span(),
                        "aggregate",
                        format!(
                            "{name} is not one a view keeps; it may use {}",
                            AGGREGATES.join(", ")
                        ),
                    ))
                } else {
                    None
                }
            }
            _ => None,
        };
        match refusal {
            Some(r) => {
                self.0 = Some(r);
                ControlFlow::Break(())
            }
            None => ControlFlow::Continue(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "CREATE VIEW summary AS
SELECT name, window_start, window_end, SUM(distance) AS distance,
       MIN(magicpoints) AS minmagicpoints, MAX(magicpoints) AS maxmagicpoints,
       MIN(healthpoints) AS minhealthpoints, MAX(healthpoints) AS maxhealthpoints,
       COUNT(*) AS records
FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)
GROUP BY name, window_start, window_end";

    #[test]
    fn the_example_views_are_taken_with_their_windows() {
        let v = parse(SUMMARY).unwrap();
        assert_eq!(v.name, "summary");
        assert_eq!(v.window, Window::Tumble { size_ms: 60_000 });
        assert!(v.select.contains("FROM wildrydes_windowed"), "{}", v.select);
        assert_eq!(v.keys, ["name"]);
        let hop = parse(
            "CREATE MATERIALIZED VIEW fleet_5min AS SELECT window_start, window_end, COUNT(*) AS records, approx_distinct(name) AS unicorns \
             FROM HOP(wildrydes, statustime, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) GROUP BY window_start, window_end",
        )
        .unwrap();
        assert_eq!(
            hop.window,
            Window::Hop {
                slide_ms: 60_000,
                size_ms: 300_000
            }
        );
        let rides = parse(
            "CREATE VIEW rides AS SELECT name, window_start, window_end, SUM(distance) AS distance, \
             first_value(latitude ORDER BY statustime) AS start_latitude \
             FROM SESSION(wildrydes, statustime, INTERVAL '30 seconds') GROUP BY name, window_start, window_end",
        )
        .unwrap();
        assert_eq!(rides.window, Window::Session { gap_ms: 30_000 });
        let weak = parse(
            "CREATE VIEW weak_cells AS SELECT window_start, round(latitude, 2) AS lat, round(longitude, 2) AS lon, COUNT(*) AS weak \
             FROM TUMBLE(wildrydes, statustime, INTERVAL '5' MINUTE) WHERE healthpoints < 100 \
             GROUP BY window_start, round(latitude, 2), round(longitude, 2) HAVING COUNT(*) >= 3",
        )
        .unwrap();
        assert_eq!(weak.window, Window::Tumble { size_ms: 300_000 });
    }

    /// The examples in `queries/views/` are views as they stand.
    #[test]
    fn the_repositorys_example_views_are_taken() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/views");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let sql = std::fs::read_to_string(&path).unwrap();
            let view = parse(&sql).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.push(view.name);
        }
        names.sort();
        assert_eq!(names, ["fleet_5min", "rides", "summary", "weak_cells"]);
    }

    /// Each refused construct is named, with its line and column.
    #[test]
    fn what_a_view_may_not_say_is_refused_where_it_is() {
        let cases: [(&str, &str, (u64, u64)); 11] = [
            (
                "CREATE VIEW v AS SELECT name, window_start, COUNT(*) FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)\nGROUP BY name, window_start\nORDER BY name",
                "ORDER BY",
                (3, 10),
            ),
            (
                "CREATE VIEW v AS SELECT window_start, COUNT(*) FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY window_start LIMIT 5",
                "LIMIT",
                (1, 132),
            ),
            (
                "CREATE VIEW v AS SELECT name, COUNT(*) FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)\n  GROUP BY name",
                "GROUP BY",
                (2, 12),
            ),
            (
                "CREATE VIEW v AS SELECT window_start, COUNT(DISTINCT name) FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY window_start",
                "DISTINCT aggregate",
                (1, 39),
            ),
            (
                "CREATE VIEW v AS SELECT w.window_start, COUNT(*) FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) w JOIN other o ON w.name = o.name GROUP BY w.window_start",
                "join",
                (1, 113),
            ),
            (
                "CREATE VIEW v AS SELECT name, COUNT(*) FROM wildrydes GROUP BY name",
                "FROM",
                (1, 45),
            ),
            (
                "CREATE VIEW v AS SELECT window_start, COUNT(*) FROM TUMBLE(other, statustime, INTERVAL '1' MINUTE) GROUP BY window_start",
                "window",
                (1, 60),
            ),
            (
                "CREATE VIEW v AS SELECT window_start, (SELECT 1) AS x FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY window_start",
                "subquery",
                (1, 40),
            ),
            (
                "CREATE VIEW v AS SELECT window_start, median(distance) FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE) GROUP BY window_start",
                "aggregate",
                (1, 39),
            ),
            (
                "CREATE VIEW v AS SELECT window_start, COUNT(*) FROM HOP(wildrydes, statustime, INTERVAL '2' MINUTE, INTERVAL '5' MINUTE) GROUP BY window_start",
                "HOP",
                (1, 110),
            ),
            (
                "CREATE VIEW v AS SELEC window_start FROM TUMBLE(wildrydes, statustime, INTERVAL '1' MINUTE)",
                "syntax",
                (1, 18),
            ),
        ];
        for (sql, construct, (line, column)) in cases {
            let refused = parse(sql).expect_err(sql);
            assert_eq!(refused.construct, construct, "{sql}: {refused}");
            assert_eq!(
                (refused.line, refused.column),
                (line, column),
                "{sql}: {refused}"
            );
            assert!(!refused.message.is_empty());
        }
        let named = parse("CREATE VIEW \"bad name\" AS SELECT 1").expect_err("name");
        assert_eq!(named.construct, "view name");
        let query = parse("SELECT 1").expect_err("not a view");
        assert_eq!(query.construct, "statement");
    }
}
