//! The wire format of CONTRACT §1–2: the telemetry record that comes in, the per-minute
//! summary that goes out, and the reasons a record is rejected.
//!
//! The first stop of the flow: `decode` turns bytes into a [`Telemetry`], the window engine turns
//! telemetry into [`Summary`] values, and every output writes summaries with [`Summary::write_json`].

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::time::{write_status_time, Millis};

/// Largest record accepted, in bytes; a longer one is rejected as `too_large` unparsed.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Longest `Name`, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 64;

/// One decoded telemetry record. Strings borrow from the input unless they held JSON escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry<'a> {
    /// The unicorn: entity key and partition key.
    pub name: Cow<'a, str>,
    /// Event time (`StatusTime`) in UTC epoch milliseconds.
    pub status_time: Millis,
    /// Decimal degrees, −90..=90.
    pub latitude: f64,
    /// Decimal degrees, −180..=180.
    pub longitude: f64,
    /// Metres travelled since the unicorn's previous record, ≥ 0.
    pub distance: f64,
    /// Health vital.
    pub health_points: i64,
    /// Magic vital.
    pub magic_points: i64,
    /// Carried, never interpreted.
    pub input_data: Option<Cow<'a, str>>,
}

impl Telemetry<'_> {
    /// Appends the record as one line of JSON (no newline) with the workshop producer's
    /// alphabetical key order and its `StatusTime` spelling.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"Distance\":");
        write_f64(out, self.distance);
        out.push_str(",\"HealthPoints\":");
        write_int(out, self.health_points);
        if let Some(input) = &self.input_data {
            out.push_str(",\"InputData\":");
            write_json_string(out, input);
        }
        out.push_str(",\"Latitude\":");
        write_f64(out, self.latitude);
        out.push_str(",\"Longitude\":");
        write_f64(out, self.longitude);
        out.push_str(",\"MagicPoints\":");
        write_int(out, self.magic_points);
        out.push_str(",\"Name\":");
        write_json_string(out, &self.name);
        out.push_str(",\"StatusTime\":\"");
        write_status_time(out, self.status_time);
        out.push_str("\"}");
    }
}

/// The per-unicorn, per-window aggregate of CONTRACT §2. (`name`, `window_start`) is its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The unicorn.
    #[serde(rename = "Name")]
    pub name: String,
    /// Window start, UTC epoch milliseconds (rendered as `StatusTime`).
    #[serde(rename = "StatusTime", with = "status_time_text")]
    pub window_start: Millis,
    /// Window end, exclusive (rendered as `WindowEnd`).
    #[serde(rename = "WindowEnd", with = "status_time_text")]
    pub window_end: Millis,
    /// Sum of `Distance` over the window's records.
    #[serde(rename = "Distance")]
    pub distance: f64,
    /// Smallest `MagicPoints`.
    #[serde(rename = "MinMagicPoints")]
    pub min_magic_points: i64,
    /// Largest `MagicPoints`.
    #[serde(rename = "MaxMagicPoints")]
    pub max_magic_points: i64,
    /// Smallest `HealthPoints`.
    #[serde(rename = "MinHealthPoints")]
    pub min_health_points: i64,
    /// Largest `HealthPoints`.
    #[serde(rename = "MaxHealthPoints")]
    pub max_health_points: i64,
    /// How many records the window holds.
    #[serde(rename = "Records")]
    pub records: u64,
    /// 0 for the first emission; grows with every late record that restates the window.
    #[serde(rename = "Revision")]
    pub revision: u64,
}

impl Summary {
    /// Appends the summary as one line of JSON (no newline), keys in CONTRACT §2 order.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"Name\":");
        write_json_string(out, &self.name);
        out.push_str(",\"StatusTime\":\"");
        write_status_time(out, self.window_start);
        out.push_str("\",\"WindowEnd\":\"");
        write_status_time(out, self.window_end);
        out.push_str("\",\"Distance\":");
        write_f64(out, self.distance);
        for (key, v) in [
            (",\"MinMagicPoints\":", self.min_magic_points),
            (",\"MaxMagicPoints\":", self.max_magic_points),
            (",\"MinHealthPoints\":", self.min_health_points),
            (",\"MaxHealthPoints\":", self.max_health_points),
        ] {
            out.push_str(key);
            write_int(out, v);
        }
        out.push_str(",\"Records\":");
        write_int(out, self.records);
        out.push_str(",\"Revision\":");
        write_int(out, self.revision);
        out.push('}');
    }
}

/// Serde adapter: epoch milliseconds as the workshop's `YYYY-MM-DD HH:MM:SS.mmm` text.
mod status_time_text {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use crate::time::{format_status_time, parse_status_time, Millis};

    pub fn serialize<S: Serializer>(t: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_status_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_status_time(text.as_bytes())
            .map_err(|e| D::Error::custom(format!("bad timestamp {text:?}: {e:?}")))
    }
}

/// A finite f64 in Rust's shortest round-trip spelling, which is valid JSON; a whole number
/// keeps a `.0` so that readers see a float. Spelled by `zmij` (several times faster than
/// `Display`, the same digits) unless it would choose an exponent, which `Display` never does.
pub(crate) fn write_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let mut buffer = zmij::Buffer::new();
        let fast = buffer.format_finite(v);
        if !fast.contains('e') {
            out.push_str(fast);
            return;
        }
        let start = out.len();
        let _ = write!(out, "{v}");
        if !out[start..].contains(['.', 'e', 'E']) {
            out.push_str(".0");
        }
    } else {
        // Decoding rejects non-finite input and sums of finite values ≤ f64::MAX stay finite in
        // practice; should one overflow, `null` keeps the line valid JSON.
        out.push_str("null");
    }
}

/// Appends an integer in decimal.
pub(crate) fn write_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        last = i + 1;
    }
    out.push_str(&s[last..]);
    out.push('"');
}

/// Why a record was rejected: the short snake_case words of CONTRACT §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Not a JSON value, or trailing bytes after it.
    MalformedJson,
    /// A required field is absent (or `null`).
    MissingField,
    /// A field, or the record itself, has the wrong JSON type or an unreadable `StatusTime`.
    BadType,
    /// A value breaks its range rule (latitude, name length, calendar, i64 overflow …).
    OutOfRange,
    /// Over [`MAX_RECORD_BYTES`]; not parsed.
    TooLarge,
    /// Its window was already final: end + allowed lateness ≤ the partition's watermark.
    TooLate,
    /// Live sources only: its `StatusTime` is further ahead of the wall clock than
    /// `window.max_future_secs`, so that one clock-skewed record cannot move a partition's
    /// watermark into the future.
    TooEarly,
}

impl RejectReason {
    /// Every reason, in a stable order (for metrics and reports).
    pub const ALL: [RejectReason; 7] = [
        RejectReason::MalformedJson,
        RejectReason::MissingField,
        RejectReason::BadType,
        RejectReason::OutOfRange,
        RejectReason::TooLarge,
        RejectReason::TooLate,
        RejectReason::TooEarly,
    ];

    /// The contract's word for it, e.g. `malformed_json`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::MissingField => "missing_field",
            RejectReason::BadType => "bad_type",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::TooLarge => "too_large",
            RejectReason::TooLate => "too_late",
            RejectReason::TooEarly => "too_early",
        }
    }

    /// Position in [`RejectReason::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A telemetry field, to say which one a reject is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Field {
    Name,
    StatusTime,
    Latitude,
    Longitude,
    Distance,
    HealthPoints,
    MagicPoints,
    InputData,
}

impl Field {
    /// The JSON key.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "Name",
            Field::StatusTime => "StatusTime",
            Field::Latitude => "Latitude",
            Field::Longitude => "Longitude",
            Field::Distance => "Distance",
            Field::HealthPoints => "HealthPoints",
            Field::MagicPoints => "MagicPoints",
            Field::InputData => "InputData",
        }
    }
}

/// A rejected record's reason and, where one field is to blame, that field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// The contract's reason.
    pub reason: RejectReason,
    /// The field at fault, if any.
    pub field: Option<Field>,
}

impl Reject {
    /// A reject not tied to one field.
    pub fn new(reason: RejectReason) -> Self {
        Reject {
            reason,
            field: None,
        }
    }

    /// A reject about `field`.
    pub fn field(reason: RejectReason, field: Field) -> Self {
        Reject {
            reason,
            field: Some(field),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{} ({})", self.reason, field.as_str()),
            None => write!(f, "{}", self.reason),
        }
    }
}

#[cfg(test)]
impl Summary {
    /// A first summary of `name` for the minute from 0, for unit tests.
    pub(crate) fn sample(name: &str) -> Summary {
        Summary {
            name: name.into(),
            window_start: 0,
            window_end: 60_000,
            distance: 1.0,
            min_magic_points: 1,
            max_magic_points: 1,
            min_health_points: 1,
            max_health_points: 1,
            records: 1,
            revision: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spelling `write_f64` had before it took the fast path: std's `Display`.
    fn displayed(v: f64) -> String {
        let mut s = format!("{v}");
        if !s.contains(['.', 'e', 'E']) {
            s.push_str(".0");
        }
        s
    }

    #[test]
    fn floats_are_spelled_shortest_in_fixed_notation_and_read_back_exactly() {
        // Coordinates, distances and sums as they come, then every magnitude from 1e-300 to
        // 1e300 with awkward mantissas, and the edges of the fast path's fixed notation.
        let mut values = vec![0.0, -0.0, 1.0, 29.5, 40.749167, -73.985184, 1e-5, 9.999e-6];
        values.extend([
            1e15,
            9.99e15,
            1e16,
            123_456_789_012_345.67,
            f64::MAX,
            f64::MIN_POSITIVE,
        ]);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            // xorshift: bit patterns over every exponent.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if v.is_finite() {
                values.push(v);
            }
            values.push((x % 36_000_000) as f64 / 100_000.0 - 180.0);
        }
        for v in values {
            let mut s = String::new();
            write_f64(&mut s, v);
            let display = displayed(v);
            // Where two spellings of the shortest length are equally near (…562.25 as .2 or
            // .3), std rounds the tie up and zmij, like Python's repr, to even: either reads
            // back as the same f64.
            assert_eq!(
                s.parse::<f64>().map(f64::to_bits),
                Ok(v.to_bits()),
                "{s} for {v:e}"
            );
            assert_eq!(s.len(), display.len(), "{s} against {display}");
            assert_eq!(
                s.contains('.'),
                display.contains('.'),
                "{s} against {display}"
            );
            assert!(!s.contains('e'), "{s}");
        }
    }

    fn summary() -> Summary {
        Summary {
            name: "Shadowfax".into(),
            window_start: 1_521_343_200_000,
            window_end: 1_521_343_260_000,
            distance: 1798.4,
            min_magic_points: 170,
            max_magic_points: 172,
            min_health_points: 146,
            max_health_points: 149,
            records: 60,
            revision: 0,
        }
    }

    #[test]
    fn summary_json_is_the_contract_example() {
        let mut s = String::new();
        summary().write_json(&mut s);
        assert_eq!(
            s,
            r#"{"Name":"Shadowfax","StatusTime":"2018-03-18 03:20:00.000","WindowEnd":"2018-03-18 03:21:00.000","Distance":1798.4,"MinMagicPoints":170,"MaxMagicPoints":172,"MinHealthPoints":146,"MaxHealthPoints":149,"Records":60,"Revision":0}"#
        );
        // The hand writer and serde agree, and serde reads it back.
        assert_eq!(serde_json::to_string(&summary()).unwrap(), s);
        assert_eq!(serde_json::from_str::<Summary>(&s).unwrap(), summary());
    }

    #[test]
    fn floats_keep_full_precision_and_a_point() {
        let mut s = String::new();
        write_f64(&mut s, 1800.0);
        assert_eq!(s, "1800.0");
        s.clear();
        write_f64(&mut s, 29.837_123_456_789_01);
        assert_eq!(s.parse::<f64>().unwrap(), 29.837_123_456_789_01);
        s.clear();
        write_f64(&mut s, 1e300);
        assert_eq!(s.parse::<f64>().unwrap(), 1e300);
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        write_json_string(&mut s, "a\"b\\c\nd\u{1}é🦄");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é🦄""#);
        assert_eq!(
            serde_json::from_str::<String>(&s).unwrap(),
            "a\"b\\c\nd\u{1}é🦄"
        );
    }
}

/// Where telemetry comes from (`source.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// `POST /ingest` only.
    Http,
    /// A Kafka consumer group.
    Kafka,
    /// A Kinesis stream, shards shared through leases.
    Kinesis,
    /// One NDJSON file, read once.
    File,
}

impl SourceKind {
    /// Its name in the configuration, dead letters and metrics: `http`, `kafka`, `kinesis`,
    /// `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Http => "http",
            SourceKind::Kafka => "kafka",
            SourceKind::Kinesis => "kinesis",
            SourceKind::File => "file",
        }
    }

    /// Whether the source re-reads a partition from a committed position (Kafka, Kinesis).
    pub fn is_durable(self) -> bool {
        matches!(self, SourceKind::Kafka | SourceKind::Kinesis)
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record, kept for inspection: the item every dead-letter output receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why.
    pub reason: RejectReason,
    /// The field at fault, if any.
    pub field: Option<Field>,
    /// Where it came from.
    pub source: SourceKind,
    /// Partition or shard.
    pub partition: String,
    /// Offset or sequence within the partition.
    pub position: u64,
    /// When it was rejected, epoch ms.
    pub at: Millis,
    /// The record's bytes, cut at 64 KiB.
    pub raw: Vec<u8>,
}

impl DeadLetter {
    /// `source:partition@position`, as the dead-letter streams label a record's origin.
    pub fn origin(&self) -> String {
        format!("{}:{}@{}", self.source, self.partition, self.position)
    }
}

/// A read of stored summaries (`GET /api/summaries`), answered by either store.
#[derive(Debug, Clone, Default)]
pub struct SummaryQuery {
    /// Only this unicorn.
    pub name: Option<String>,
    /// Window start ≥ this.
    pub from: Option<Millis>,
    /// Window start ≤ this.
    pub to: Option<Millis>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// A dead letter as the API shows it.
#[derive(Debug, serde::Serialize)]
pub struct DeadLetterView {
    /// Sequence number in the embedded store; the rejection time (epoch ms) in DynamoDB.
    pub id: u64,
    /// Reject reason.
    pub reason: String,
    /// Field at fault.
    pub field: Option<String>,
    /// Origin.
    pub origin: Origin,
    /// Rejection time, workshop format.
    pub received: String,
    /// Raw bytes as text (invalid UTF-8 replaced).
    pub raw: String,
}

/// Where a dead letter came from.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Origin {
    /// Source kind.
    pub source: String,
    /// Partition or shard.
    pub partition: String,
    /// Offset or sequence.
    pub offset: u64,
}
