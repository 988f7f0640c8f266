//! Answers as people and programs read them: an aligned table, CSV or JSON lines for
//! `stampede query`, JSON values for `POST /api/query`.

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::Answer;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns with a header.
    Table,
    /// RFC 4180, with a header.
    Csv,
    /// One JSON object per row (NDJSON).
    Json,
}

/// Timestamps in the workshop's format; nulls empty.
fn format_options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.3f"))
        .with_null("")
}

/// Every cell as text, column by column: (header, cells, numeric).
fn text_columns(answer: &Answer) -> Vec<(String, Vec<Option<String>>, bool)> {
    let options = format_options();
    let mut out: Vec<(String, Vec<Option<String>>, bool)> = answer
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), Vec::new(), f.data_type().is_numeric()))
        .collect();
    for batch in &answer.batches {
        for (i, column) in batch.columns().iter().enumerate() {
            let Some((_, cells, _)) = out.get_mut(i) else {
                continue;
            };
            match ArrayFormatter::try_new(column.as_ref(), &options) {
                Ok(f) => {
                    for row in 0..column.len() {
                        cells.push((!column.is_null(row)).then(|| f.value(row).to_string()));
                    }
                }
                Err(e) => cells.extend((0..column.len()).map(|_| Some(format!("<{e}>")))),
            }
        }
    }
    out
}

/// The answer as text in `format`.
pub fn render(answer: &Answer, format: Format) -> String {
    let columns = text_columns(answer);
    let rows = answer.rows();
    let mut out = String::new();
    match format {
        Format::Table => {
            let widths: Vec<usize> = columns
                .iter()
                .map(|(h, cells, _)| {
                    cells
                        .iter()
                        .map(|c| c.as_deref().unwrap_or("").chars().count())
                        .chain([h.chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |out: &mut String, cells: Vec<(&str, bool)>| {
                let parts: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|((c, right), w)| {
                        if *right {
                            format!("{c:>w$}")
                        } else {
                            format!("{c:<w$}")
                        }
                    })
                    .collect();
                out.push_str(parts.join(" | ").trim_end());
                out.push('\n');
            };
            line(
                &mut out,
                columns
                    .iter()
                    .map(|(h, _, numeric)| (h.as_str(), *numeric))
                    .collect(),
            );
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("-+-"));
            out.push('\n');
            for row in 0..rows {
                line(
                    &mut out,
                    columns
                        .iter()
                        .map(|(_, cells, numeric)| {
                            (
                                cells.get(row).and_then(|c| c.as_deref()).unwrap_or(""),
                                *numeric,
                            )
                        })
                        .collect(),
                );
            }
        }
        Format::Csv => {
            let csv = |s: &str| {
                if s.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s.to_owned()
                }
            };
            let header: Vec<String> = columns.iter().map(|(h, _, _)| csv(h)).collect();
            out.push_str(&header.join(","));
            out.push_str("\r\n");
            for row in 0..rows {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|(_, cells, _)| {
                        csv(cells.get(row).and_then(|c| c.as_deref()).unwrap_or(""))
                    })
                    .collect();
                out.push_str(&cells.join(","));
                out.push_str("\r\n");
            }
        }
        Format::Json => {
            for row in json_rows(answer) {
                out.push_str(&row);
                out.push('\n');
            }
        }
    }
    out
}

/// Each row's values, columns in order: numbers as numbers, booleans as booleans, nulls as
/// null, everything else (timestamps in the workshop's format) as text.
pub fn row_values(answer: &Answer) -> Vec<Vec<serde_json::Value>> {
    use serde_json::Value;
    let columns = text_columns(answer);
    let types: Vec<&DataType> = answer
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type())
        .collect();
    (0..answer.rows())
        .map(|row| {
            columns
                .iter()
                .zip(&types)
                .map(
                    |((_, cells, numeric), t)| match cells.get(row).and_then(|c| c.as_deref()) {
                        None => Value::Null,
                        Some(text) if *numeric => text
                            .parse::<serde_json::Number>()
                            .map_or_else(|_| Value::String(text.to_owned()), Value::Number),
                        Some(text) if **t == DataType::Boolean => Value::Bool(text == "true"),
                        Some(text) => Value::String(text.to_owned()),
                    },
                )
                .collect()
        })
        .collect()
}

/// Each row as a JSON object, columns in order (see [`row_values`]).
pub fn json_rows(answer: &Answer) -> Vec<String> {
    let keys: Vec<String> = answer
        .schema
        .fields()
        .iter()
        .map(|f| serde_json::Value::String(f.name().clone()).to_string())
        .collect();
    row_values(answer)
        .into_iter()
        .map(|values| {
            let mut line = String::from("{");
            for (i, (key, value)) in keys.iter().zip(values).enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(key);
                line.push(':');
                line.push_str(&value.to_string());
            }
            line.push('}');
            line
        })
        .collect()
}
