//! Rows as JSON the way every part of Stampede writes them: numbers as numbers, booleans as
//! booleans, nulls as null, timestamps in the workshop's format (`YYYY-MM-DD HH:MM:SS.fff`,
//! UTC), everything else as text. The views' rows in the store and on the WebSocket, and the
//! answers of `stampede query` and `POST /api/query`.

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// Timestamps in the workshop's format; nulls empty.
fn format_options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.3f"))
        .with_null("")
}

/// Every cell as text, column by column: (header, cells, numeric).
pub fn text_columns(
    schema: &Schema,
    batches: &[RecordBatch],
) -> Vec<(String, Vec<Option<String>>, bool)> {
    let options = format_options();
    let mut out: Vec<(String, Vec<Option<String>>, bool)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), Vec::new(), f.data_type().is_numeric()))
        .collect();
    for batch in batches {
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

/// Each row's values, columns in order: numbers as numbers, booleans as booleans, nulls as
/// null, everything else (timestamps in the workshop's format) as text.
pub fn row_values(schema: &Schema, batches: &[RecordBatch]) -> Vec<Vec<serde_json::Value>> {
    use serde_json::Value;
    let columns = text_columns(schema, batches);
    let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
    (0..batches.iter().map(RecordBatch::num_rows).sum::<usize>())
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
pub fn json_rows(schema: &Schema, batches: &[RecordBatch]) -> Vec<String> {
    let keys: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| serde_json::Value::String(f.name().clone()).to_string())
        .collect();
    row_values(schema, batches)
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
