//! The archive's Parquet objects: the typed columns of CONTRACT §1, each in its cheapest
//! encoding (names and times zstd-compressed, times and vitals as deltas), one row group per
//! object. Column names are the record's own (`Name`, `StatusTime`, …); `StatusTime`
//! is a timestamp in milliseconds (UTC, as the producer's strings are read).

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Float64Array, Int64Array, StringArray, StringBuilder,
    TimestampMillisecondArray,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::lines::Lines;
use crate::output::Fields;
use crate::time::Millis;

/// The schema of every Parquet object.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("Name", DataType::Utf8, false),
        Field::new(
            "StatusTime",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("Latitude", DataType::Float64, false),
        Field::new("Longitude", DataType::Float64, false),
        Field::new("Distance", DataType::Float64, false),
        Field::new("HealthPoints", DataType::Int64, false),
        Field::new("MagicPoints", DataType::Int64, false),
        Field::new("InputData", DataType::Utf8, true),
    ]))
}

/// What the pipeline decoded of each record of an object, parallel to its records — or, when
/// any is missing, nothing: then every record is decoded again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// Each record's `StatusTime`.
    pub times: &'a [Millis],
    /// Each record's fields.
    pub fields: &'a [Fields],
    /// Their names back to back, each [`Fields::name_len`] bytes.
    pub names: &'a [u8],
}

/// Encodes accepted records — record `i` the line of `lines` ending (after its newline) at
/// `ends[i]` — as one Parquet object. `known` (what the pipeline decoded) spares decoding the
/// records again, and reading their names back from their lines.
///
/// # Errors
/// A line no longer decodes (it was accepted, so this is a bug), or the writer failed.
pub fn encode(lines: &Lines, ends: &[u32], known: &Known<'_>) -> Result<Vec<u8>, String> {
    let n = ends.len();
    if ends.last().is_some_and(|&end| end as usize > lines.len()) {
        return Err("record bounds out of range".into());
    }
    let complete = known.fields.len() == n
        && known.times.len() == n
        && known
            .fields
            .iter()
            .map(|f| f.name_len as usize)
            .sum::<usize>()
            == known.names.len()
        && i32::try_from(known.names.len()).is_ok();
    let (times, fields) = if complete {
        (known.times, known.fields)
    } else {
        (&[][..], &[][..])
    };
    // Without the pipeline's names, they are gathered from the records decoded again.
    let mut decoded_names = (!complete).then(|| BinaryBuilder::with_capacity(n, n * 16));
    let mut time = Vec::with_capacity(n);
    let mut lat = Vec::with_capacity(n);
    let mut lon = Vec::with_capacity(n);
    let mut dist = Vec::with_capacity(n);
    let mut health = Vec::with_capacity(n);
    let mut magic = Vec::with_capacity(n);
    // `InputData` is all null but for records that carried it: built only once one does.
    let mut input: Option<StringBuilder> = None;
    for (i, line) in lines.each(ends).enumerate() {
        let input_data = match fields.get(i) {
            Some(f) => {
                time.push(times[i]);
                lat.push(f.latitude);
                lon.push(f.longitude);
                dist.push(f.distance);
                health.push(f.health_points);
                magic.push(f.magic_points);
                if !f.input_data {
                    if let Some(input) = &mut input {
                        input.append_null();
                    }
                    continue;
                }
                // Rare: decoded again for its InputData alone.
                crate::decode::decode(line)
                    .map_err(|e| format!("an archived record no longer decodes: {e:?}"))?
                    .input_data
            }
            None => {
                let r = crate::decode::decode(line)
                    .map_err(|e| format!("an archived record no longer decodes: {e:?}"))?;
                if let Some(names) = &mut decoded_names {
                    names.append_value(r.name.as_bytes());
                }
                time.push(r.status_time);
                lat.push(r.latitude);
                lon.push(r.longitude);
                dist.push(r.distance);
                health.push(r.health_points);
                magic.push(r.magic_points);
                r.input_data
            }
        };
        if input.is_none() && input_data.is_some() {
            let mut builder = StringBuilder::new();
            builder.append_nulls(i);
            input = Some(builder);
        }
        if let Some(input) = &mut input {
            input.append_option(input_data.as_deref());
        }
    }
    // Names are checked as UTF-8 once, whole (they came from text that was checked when it
    // arrived; a check per name cost an eighth of the encoding).
    let name = match decoded_names {
        Some(mut names) => StringArray::try_from_binary(names.finish()),
        None => StringArray::try_new(
            OffsetBuffer::from_lengths(fields.iter().map(|f| f.name_len as usize)),
            Buffer::from_slice_ref(known.names),
            None,
        ),
    }
    .map_err(|e| e.to_string())?;
    let input: ArrayRef = match input {
        Some(mut input) => Arc::new(input.finish()),
        None => Arc::new(StringArray::new_null(n)),
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(name),
        Arc::new(TimestampMillisecondArray::from(time)),
        Arc::new(Float64Array::from(lat)),
        Arc::new(Float64Array::from(lon)),
        Arc::new(Float64Array::from(dist)),
        Arc::new(Int64Array::from(health)),
        Arc::new(Int64Array::from(magic)),
        input,
    ];
    let batch = RecordBatch::try_new(schema(), columns).map_err(|e| e.to_string())?;
    // zstd's fastest level: objects 1.5 % larger than at level 3, written 4–6 % faster on ingest.
    let level = ZstdLevel::try_new(1).map_err(|e| e.to_string())?;
    // Per column, the cheapest encoding that keeps the object small, and statistics only where
    // they prune (`cargo bench --bench archive`, one object of the fleet: 2.9–4.4 ms and 661 KB
    // with every column plain or in a dictionary, zstd and statistics, 2.1–2.2 ms and 720 KB
    // so):
    // - times arrive nearly in order: as deltas they take a few bits each (zstd still helps);
    //   their minimum and maximum let a query for a time range skip the object;
    // - vitals change little from record to record: deltas, with no dictionary to hash each
    //   value into and nothing left for zstd;
    // - the coordinates' and distances' low bytes are noise: zstd spent a quarter of the
    //   encoding on them to save 15 % of their bytes, so they are plain and uncompressed;
    // - names repeat: a dictionary, zstd;
    // - an object holds records of the whole fleet, so the minimum and maximum of a name,
    //   vital, coordinate or distance span nearly all of its values and prune nothing: they are
    //   not computed (a comparison per value, 15 % of the encoding).
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(n.max(1)))
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("StatusTime"), EnabledStatistics::Page);
    for (column, encoding, compressed) in [
        ("StatusTime", Encoding::DELTA_BINARY_PACKED, true),
        ("HealthPoints", Encoding::DELTA_BINARY_PACKED, false),
        ("MagicPoints", Encoding::DELTA_BINARY_PACKED, false),
        ("Latitude", Encoding::PLAIN, false),
        ("Longitude", Encoding::PLAIN, false),
        ("Distance", Encoding::PLAIN, false),
    ] {
        let column = ColumnPath::from(column);
        props = props
            .set_column_dictionary_enabled(column.clone(), false)
            .set_column_encoding(column.clone(), encoding);
        if !compressed {
            props = props.set_column_compression(column, Compression::UNCOMPRESSED);
        }
    }
    let props = props.build();
    let mut out = Vec::with_capacity(lines.len() / 4);
    let mut writer =
        ArrowWriter::try_new(&mut out, schema(), Some(props)).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    Ok(out)
}

/// How many records an object holds: lines of NDJSON, or the rows a Parquet footer counts.
///
/// # Errors
/// Parquet that does not parse.
pub fn count_records(bytes: Bytes, parquet: bool) -> Result<u64, String> {
    if !parquet {
        return Ok(memchr::memchr_iter(b'\n', &bytes).count() as u64);
    }
    let reader = parquet::file::reader::SerializedFileReader::new(bytes)
        .map_err(|e| format!("not a Parquet object: {e}"))?;
    let rows = parquet::file::reader::FileReader::metadata(&reader)
        .file_metadata()
        .num_rows();
    u64::try_from(rows).map_err(|_| "a negative row count".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// `text`'s lines held as the archive holds them: the first as a slice, the rest copied.
    fn held(text: &str) -> Lines {
        let first = text.find('\n').unwrap() + 1;
        let mut lines = Lines::default();
        lines.push_piece(Bytes::copy_from_slice(&text.as_bytes()[..first]));
        for line in text[first..].lines() {
            lines.push_line(line.as_bytes());
        }
        lines
    }

    #[test]
    fn records_round_trip_through_parquet_typed() {
        let lines = concat!(
            r#"{"Name":"Shadowfax","StatusTime":"2018-03-18 03:20:00.250","Latitude":40.75,"Longitude":-73.98,"Distance":17,"HealthPoints":150,"MagicPoints":90}"#,
            "\n",
            r#"{"MagicPoints":-3,"HealthPoints":99,"Distance":0.5,"Longitude":1.5,"Latitude":-2.25,"StatusTime":"2018-03-18T04:20:01+01:00","Name":"Rocinante","InputData":"x"}"#,
            "\n"
        );
        let first = lines.find('\n').unwrap() as u32 + 1;
        let ends = [first, lines.len() as u32];
        let bytes = Bytes::from(encode(&held(lines), &ends, &Known::default()).unwrap());
        assert_eq!(count_records(bytes.clone(), true).unwrap(), 2);
        assert_eq!(count_records(Bytes::from(lines), false).unwrap(), 2);
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let b = &batches[0];
        assert_eq!(b.num_rows(), 2);
        let names = b.column(0).as_string::<i32>();
        assert_eq!((names.value(0), names.value(1)), ("Shadowfax", "Rocinante"));
        let times = b.column(1).as_primitive::<TimestampMillisecondType>();
        // 2018-03-18 03:20:00.250 UTC, and 04:20:01+01:00 = 03:20:01 UTC.
        assert_eq!(times.value(0), 1_521_343_200_250);
        assert_eq!(times.value(1), 1_521_343_201_000);
        assert_eq!(b.column(4).as_primitive::<Float64Type>().value(0), 17.0);
        assert_eq!(b.column(6).as_primitive::<Int64Type>().value(1), -3);
        assert!(b.column(7).is_null(0));
        assert_eq!(b.column(7).as_string::<i32>().value(1), "x");
    }

    /// Each record's fields and name as the pipeline decoded them give the same object as
    /// decoding the lines again: an escaped name as its text, InputData read again; a name
    /// missing from what is known, or a record, and the records are decoded again.
    #[test]
    fn the_pipelines_fields_give_the_object_decoding_gives() {
        let lines = concat!(
            r#"{"Name":"Shadowfax","StatusTime":"2018-03-18 03:20:00.250","Latitude":40.75,"Longitude":-73.98,"Distance":17,"HealthPoints":150,"MagicPoints":90}"#,
            "\n",
            r#"{"Name":"Sha\u0064owfax","StatusTime":"2018-03-18 03:20:01.250","Latitude":40.5,"Longitude":-73.5,"Distance":1.25,"HealthPoints":15,"MagicPoints":9}"#,
            "\n",
            r#"{"Name":"Rocinante","StatusTime":"2018-03-18 03:20:02","Latitude":-2.25,"Longitude":1.5,"Distance":0.5,"HealthPoints":99,"MagicPoints":-3,"InputData":"x"}"#,
            "\n",
            r#"{"Name":"Ombre-Fée","StatusTime":"2018-03-18 03:20:03","Latitude":-2.5,"Longitude":1.25,"Distance":0.25,"HealthPoints":98,"MagicPoints":-4}"#,
            "\n"
        );
        let mut ends = Vec::new();
        let mut times = Vec::new();
        let mut fields = Vec::new();
        let mut names = Vec::new();
        let mut start = 0;
        for line in lines.split_inclusive('\n') {
            let raw = &lines.as_bytes()[start..start + line.len()];
            let record = crate::decode::decode(raw.strip_suffix(b"\n").unwrap()).unwrap();
            times.push(record.status_time);
            fields.push(Fields::of(&record));
            names.extend_from_slice(record.name.as_bytes());
            start += line.len();
            ends.push(start as u32);
        }
        assert_eq!(fields.iter().filter(|f| f.input_data).count(), 1);
        let read = |bytes: Vec<u8>| -> Vec<RecordBatch> {
            ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let decoded = read(encode(&held(lines), &ends, &Known::default()).unwrap());
        let known = Known {
            times: &times,
            fields: &fields,
            names: &names,
        };
        let given = read(encode(&held(lines), &ends, &known).unwrap());
        assert_eq!(decoded, given);
        let got = given[0].column(0).as_string::<i32>();
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            [
                Some("Shadowfax"),
                Some("Shadowfax"),
                Some("Rocinante"),
                Some("Ombre-Fée")
            ]
        );
        assert_eq!(given[0].column(7).as_string::<i32>().value(2), "x");
        // Names that do not add up to the fields' lengths are not trusted.
        let short = Known {
            names: &names[1..],
            ..known
        };
        assert_eq!(read(encode(&held(lines), &ends, &short).unwrap()), decoded);
    }

    /// Vitals and times are stored as deltas: the largest jumps an `i64` allows (which wrap
    /// when subtracted) come back exact, and each column is encoded and compressed as chosen,
    /// with a minimum and maximum for the time alone.
    #[test]
    fn deltas_take_the_extremes_and_columns_are_encoded_as_chosen_with_time_statistics() {
        use parquet::basic::{Compression, Encoding};
        use parquet::file::reader::FileReader;
        let vitals = [i64::MIN, i64::MAX, 0, i64::MIN, -1, i64::MAX, i64::MAX];
        let mut text = String::new();
        for (i, v) in vitals.iter().enumerate() {
            text += &format!(
                r#"{{"Name":"U{i}","StatusTime":"2018-03-18 03:20:0{i}","Latitude":1,"Longitude":2,"Distance":3,"HealthPoints":{v},"MagicPoints":{}}}"#,
                v.wrapping_neg()
            );
            text.push('\n');
        }
        let ends: Vec<u32> = text
            .match_indices('\n')
            .map(|(at, _)| at as u32 + 1)
            .collect();
        let bytes = Bytes::from(encode(&held(&text), &ends, &Known::default()).unwrap());
        let batch = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let column = |i: usize| {
            batch
                .column(i)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(column(5), vitals);
        let magic: Vec<i64> = vitals.iter().map(|v| v.wrapping_neg()).collect();
        assert_eq!(column(6), magic);
        let reader = parquet::file::reader::SerializedFileReader::new(bytes).unwrap();
        let row_group = reader.metadata().row_group(0);
        for chunk in row_group.columns() {
            let name = chunk.column_path().string();
            let (encoding, compression) = match name.as_str() {
                "StatusTime" => (Encoding::DELTA_BINARY_PACKED, "ZSTD"),
                "HealthPoints" | "MagicPoints" => (Encoding::DELTA_BINARY_PACKED, "UNCOMPRESSED"),
                "Latitude" | "Longitude" | "Distance" => (Encoding::PLAIN, "UNCOMPRESSED"),
                "Name" => (Encoding::RLE_DICTIONARY, "ZSTD"),
                _ => continue,
            };
            let encodings: Vec<Encoding> = chunk.encodings().collect();
            assert!(encodings.contains(&encoding), "{name}: {encodings:?}");
            let compressed = match chunk.compression() {
                Compression::UNCOMPRESSED => "UNCOMPRESSED",
                Compression::ZSTD(_) => "ZSTD",
                other => panic!("{name}: {other:?}"),
            };
            assert_eq!(compressed, compression, "{name}");
            let stats = chunk
                .statistics()
                .is_some_and(|s| s.min_bytes_opt().is_some());
            assert_eq!(stats, name == "StatusTime", "{name}: minimum and maximum");
        }
    }
}
