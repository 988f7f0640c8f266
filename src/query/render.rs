//! Answers as people and programs read them: an aligned table, CSV or JSON lines for
//! `stampede query`, JSON values for `POST /api/query`.

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

/// Every cell as text, column by column: (header, cells, numeric).
fn text_columns(answer: &Answer) -> Vec<(String, Vec<Option<String>>, bool)> {
    crate::view::json::text_columns(&answer.schema, &answer.batches)
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
    crate::view::json::row_values(&answer.schema, &answer.batches)
}

/// Each row as a JSON object, columns in order (see [`row_values`]).
pub fn json_rows(answer: &Answer) -> Vec<String> {
    crate::view::json::json_rows(&answer.schema, &answer.batches)
}
