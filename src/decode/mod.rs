//! Bytes → [`Telemetry`]: a JSON reader specialised for one flat object, with every validation
//! rule of CONTRACT §1 and its reject reason.
//!
//! Sits between the sources (which hand over raw payloads) and the window engine. It is the
//! hottest code in the service, so it reads the object in one pass, borrows strings from the
//! input (allocating only to undo JSON escapes, never more than the input's size), and never
//! panics: every index is checked, and arbitrary bytes are fed to it in the test suite.
//!
//! Two readers: `usual` takes the record producers write (plain keys, no whitespace or escapes,
//! valid values) in one tight pass, rounding its decimals by Eisel–Lemire (`lemire`), and steps
//! aside for anything else; `parser` reads any JSON and alone decides every reject.
//!
//! Precedence when a record has several faults: size first (`too_large`, unread), then syntax
//! (`malformed_json` wins over anything found before the syntax error), then the first field
//! fault in document order (`bad_type`, `out_of_range`), then `missing_field`.

mod framing;
mod lemire;
mod parser;
mod usual;

use std::borrow::Cow;

pub use framing::{array_elements, is_blank, record_lines, split_record_ranges};
pub use parser::is_valid_name;
use parser::{Malformed, Parser};

use crate::record::{Reject, RejectReason, Telemetry, MAX_RECORD_BYTES};

/// A decoded record whose strings are ranges into the buffer it was decoded from (or owned,
/// where JSON escapes had to be undone): it travels to another thread beside that buffer (a
/// chunk, a request's `Bytes`) and is read back there as a [`Telemetry`] without decoding again
/// and without an allocation per record.
#[derive(Debug, Clone)]
pub struct Detached {
    name: Span,
    status_time: crate::time::Millis,
    latitude: f64,
    longitude: f64,
    distance: f64,
    health_points: i64,
    magic_points: i64,
    input_data: Option<Span>,
}

/// A string of a [`Detached`] record.
#[derive(Debug, Clone)]
enum Span {
    At(std::ops::Range<usize>),
    Owned(Box<str>),
}

/// Where `s` lies within `base` when it was borrowed from those very bytes (a decoded string
/// without escapes), else `None` (an unescaped string lives elsewhere).
pub fn range_in(s: &str, base: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = (s.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
    (start <= base.len() && s.len() <= base.len() - start).then(|| start..start + s.len())
}

impl Span {
    fn new(s: Cow<'_, str>, base: &[u8]) -> Span {
        match range_in(&s, base) {
            Some(range) => Span::At(range),
            None => Span::Owned(s.into_owned().into_boxed_str()),
        }
    }

    fn get<'a>(&'a self, base: &'a [u8]) -> Cow<'a, str> {
        match self {
            // The range was cut from a `&str` borrowed from these very bytes, so it is UTF-8.
            Span::At(r) => Cow::Borrowed(
                base.get(r.clone())
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or_default(),
            ),
            Span::Owned(s) => Cow::Borrowed(&**s),
        }
    }

    fn get_in<'a>(&'a self, text: &'a str) -> Cow<'a, str> {
        match self {
            // The range lies between two quotes (ASCII), so it falls on character boundaries.
            Span::At(r) => Cow::Borrowed(text.get(r.clone()).unwrap_or_default()),
            Span::Owned(s) => Cow::Borrowed(&**s),
        }
    }
}

impl Detached {
    /// `record`, decoded from bytes within `base`, with its borrowed strings as ranges of `base`.
    pub fn new(record: Telemetry<'_>, base: &[u8]) -> Self {
        Detached {
            name: Span::new(record.name, base),
            status_time: record.status_time,
            latitude: record.latitude,
            longitude: record.longitude,
            distance: record.distance,
            health_points: record.health_points,
            magic_points: record.magic_points,
            input_data: record.input_data.map(|d| Span::new(d, base)),
        }
    }

    /// The record again, borrowing from `base`: the same bytes it was decoded from.
    pub fn telemetry<'a>(&'a self, base: &'a [u8]) -> Telemetry<'a> {
        self.with_strings(|span| span.get(base))
    }

    /// As [`Detached::telemetry`], from the same bytes already known to be UTF-8 (no check of
    /// each string again).
    pub fn telemetry_in<'a>(&'a self, text: &'a str) -> Telemetry<'a> {
        self.with_strings(|span| span.get_in(text))
    }

    fn with_strings<'a>(&'a self, get: impl Fn(&'a Span) -> Cow<'a, str>) -> Telemetry<'a> {
        Telemetry {
            name: get(&self.name),
            status_time: self.status_time,
            latitude: self.latitude,
            longitude: self.longitude,
            distance: self.distance,
            health_points: self.health_points,
            magic_points: self.magic_points,
            input_data: self.input_data.as_ref().map(get),
        }
    }
}

/// Decodes one record.
///
/// # Errors
/// A [`Reject`] with the contract's reason and, where one field is to blame, the field.
pub fn decode(bytes: &[u8]) -> Result<Telemetry<'_>, Reject> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(Reject::new(RejectReason::TooLarge));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => decode_text(text),
        Err(_) => general(bytes),
    }
}

/// Decodes one record that is known to be UTF-8 (a line of a chunk checked whole, which costs
/// less than checking each of its strings).
///
/// # Errors
/// As [`decode`].
pub fn decode_text(text: &str) -> Result<Telemetry<'_>, Reject> {
    if text.len() <= MAX_RECORD_BYTES {
        if let Some(record) = usual::usual(text) {
            return Ok(record);
        }
    }
    general(text.as_bytes())
}

/// Decodes the record at `range` of `bytes`. `text` is `bytes` itself when the whole was checked
/// as UTF-8 (then the record is not checked again); `None` when it was not, or failed.
///
/// # Errors
/// As [`decode`].
pub fn decode_at<'a>(
    bytes: &'a [u8],
    text: Option<&'a str>,
    range: std::ops::Range<usize>,
) -> Result<Telemetry<'a>, Reject> {
    match text.and_then(|text| text.get(range.clone())) {
        Some(record) => decode_text(record),
        None => decode(bytes.get(range).unwrap_or_default()),
    }
}

/// The general parser: any JSON, every rule, every reject reason.
fn general(bytes: &[u8]) -> Result<Telemetry<'_>, Reject> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(Reject::new(RejectReason::TooLarge));
    }
    let mut p = Parser { s: bytes, i: 0 };
    p.skip_ws();
    if p.peek() != Some(b'{') {
        // Valid JSON that is not an object is the wrong type of record; anything else is not JSON.
        return match p.skip_value().and_then(|()| p.end()) {
            Ok(()) => Err(Reject::new(RejectReason::BadType)),
            Err(Malformed) => Err(Reject::new(RejectReason::MalformedJson)),
        };
    }
    p.object()
        .map_err(|Malformed| Reject::new(RejectReason::MalformedJson))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Field;

    /// Look-alike names: an invisible or reordering character is out of range, as control
    /// characters are.
    #[test]
    fn names_with_invisible_or_reordering_characters_are_out_of_range() {
        for name in [
            "Shadow\u{202E}xafdaw",
            "Shadow\u{200B}fax",
            "\u{FEFF}Shadowfax",
            "Sha\u{2066}dowfax",
            "Shadowfax\u{2028}Bcc",
            "Shadow\u{3164}fax",
            "Shadowfax\u{FE0F}",
        ] {
            let record = GOOD.replace("\"Shadowfax\"", &serde_json::to_string(name).unwrap());
            assert_eq!(
                decode(record.as_bytes()).err().map(|r| (r.reason, r.field)),
                Some((OutOfRange, Some(Field::Name))),
                "{name:?}"
            );
        }
        let accented = GOOD.replace("\"Shadowfax\"", "\"Ombre-Fée Ålesund\"");
        assert!(decode(accented.as_bytes()).is_ok());
    }
    use RejectReason::*;

    const GOOD: &str = r#"{"Distance":29.83712,"HealthPoints":151,"Latitude":40.749167,"Longitude":-73.985184,"MagicPoints":148,"Name":"Shadowfax","StatusTime":"2018-03-18 03:20:01.189"}"#;

    /// A reject's reason and field name, or `None` when the record is accepted.
    type Verdict = Option<(RejectReason, Option<&'static str>)>;

    fn reason(s: &str) -> Verdict {
        decode(s.as_bytes())
            .err()
            .map(|r| (r.reason, r.field.map(Field::as_str)))
    }

    /// GOOD with one key's value replaced by `value` (or the key dropped when `None`).
    fn with(key: &str, value: Option<&str>) -> String {
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(GOOD).unwrap();
        v.remove(key);
        let mut s = serde_json::to_string(&v).unwrap();
        if let Some(value) = value {
            s.pop();
            s.push_str(&format!(",\"{key}\":{value}}}"));
        }
        s
    }

    /// A detached record reads back the same from its bytes and from its checked text, whether
    /// its name lies in them (plain) or was owned (escaped).
    #[test]
    fn detached_records_read_back_whole() {
        let escaped = with("Name", Some(r#""Fela\u0072\u00f3f""#));
        for text in [GOOD, escaped.as_str()] {
            let record = decode(text.as_bytes()).unwrap();
            let detached = Detached::new(record.clone(), text.as_bytes());
            assert_eq!(detached.telemetry(text.as_bytes()), record);
            assert_eq!(detached.telemetry_in(text), record);
        }
    }

    #[test]
    fn decodes_the_workshop_record() {
        let t = decode(GOOD.as_bytes()).unwrap();
        assert_eq!(t.name, "Shadowfax");
        assert!(matches!(t.name, Cow::Borrowed(_)));
        assert_eq!(t.status_time, 1_521_343_201_189);
        assert_eq!(t.latitude, 40.749167);
        assert_eq!(t.longitude, -73.985184);
        assert_eq!(t.distance, 29.83712);
        assert_eq!((t.health_points, t.magic_points), (151, 148));
        assert_eq!(t.input_data, None);
    }

    #[test]
    fn key_order_whitespace_unknown_fields_and_input_data() {
        let s = "  {\r\n \"Name\" : \"Bucephalus\" ,\"Extra\":{\"a\":[1,2.5e3,{\"b\":null}],\"c\":true},\
                 \"StatusTime\":\"2018-03-18T03:20:01Z\",\"MagicPoints\":-3,\"HealthPoints\":0,\
                 \"Distance\":0,\"Longitude\":180,\"Latitude\":-90.0,\"InputData\":\"Unicornerror\"}\r\n";
        let t = decode(s.as_bytes()).unwrap();
        assert_eq!(t.name, "Bucephalus");
        assert_eq!(t.input_data.as_deref(), Some("Unicornerror"));
        assert_eq!((t.latitude, t.longitude, t.distance), (-90.0, 180.0, 0.0));
    }

    #[test]
    fn escaped_and_unicode_names() {
        let escaped = with("Name", Some(r#""Fela\u0072\u00f3f \ud83e\udd84 \"q\"""#));
        let t = decode(escaped.as_bytes()).unwrap();
        assert_eq!(t.name, "Felaróf 🦄 \"q\"");
        let plain = with("Name", Some("\"Felaróf\""));
        let t = decode(plain.as_bytes()).unwrap();
        assert_eq!(t.name, "Felaróf");
        assert!(matches!(t.name, Cow::Borrowed(_)));
    }

    #[test]
    fn name_rules() {
        assert_eq!(
            reason(&with("Name", Some("\"\""))),
            Some((OutOfRange, Some("Name")))
        );
        let long = format!("\"{}\"", "é".repeat(33)); // 66 bytes
        assert_eq!(
            reason(&with("Name", Some(&long))),
            Some((OutOfRange, Some("Name")))
        );
        let ok = format!("\"{}\"", "é".repeat(32)); // 64 bytes
        assert_eq!(reason(&with("Name", Some(&ok))), None);
        assert_eq!(
            reason(&with("Name", Some(r#""a\nb""#))),
            Some((OutOfRange, Some("Name")))
        );
        assert_eq!(
            reason(&with("Name", Some("\"a\u{7f}b\""))),
            Some((OutOfRange, Some("Name")))
        );
        assert_eq!(
            reason(&with("Name", Some("\"a\u{85}b\""))),
            Some((OutOfRange, Some("Name")))
        );
        assert_eq!(
            reason(&with("Name", Some("42"))),
            Some((BadType, Some("Name")))
        );
        assert_eq!(
            reason(&with("Name", None)),
            Some((MissingField, Some("Name")))
        );
        assert_eq!(
            reason(&with("Name", Some("null"))),
            Some((MissingField, Some("Name")))
        );
    }

    #[test]
    fn number_rules() {
        let cases: &[(&str, &str, Verdict)] = &[
            ("Latitude", "90.0001", Some((OutOfRange, Some("Latitude")))),
            ("Latitude", "-90", None),
            ("Longitude", "-180.5", Some((OutOfRange, Some("Longitude")))),
            ("Longitude", "1e400", Some((OutOfRange, Some("Longitude")))),
            ("Distance", "-0.1", Some((OutOfRange, Some("Distance")))),
            ("Distance", "1e309", Some((OutOfRange, Some("Distance")))),
            ("Distance", "\"30\"", Some((BadType, Some("Distance")))),
            ("Distance", "true", Some((BadType, Some("Distance")))),
            ("Distance", "[30]", Some((BadType, Some("Distance")))),
            ("HealthPoints", "9223372036854775807", None),
            ("HealthPoints", "-9223372036854775808", None),
            (
                "HealthPoints",
                "9223372036854775808",
                Some((OutOfRange, Some("HealthPoints"))),
            ),
            (
                "MagicPoints",
                "-9223372036854775809",
                Some((OutOfRange, Some("MagicPoints"))),
            ),
            ("MagicPoints", "150.0", Some((BadType, Some("MagicPoints")))),
            ("MagicPoints", "15e1", Some((BadType, Some("MagicPoints")))),
            ("MagicPoints", "-0", None),
            ("HealthPoints", "01", Some((MalformedJson, None))),
            ("HealthPoints", "+1", Some((MalformedJson, None))),
            ("Distance", ".5", Some((MalformedJson, None))),
            ("Distance", "5.", Some((MalformedJson, None))),
            ("Distance", "NaN", Some((MalformedJson, None))),
            ("InputData", "3", Some((BadType, Some("InputData")))),
            ("InputData", "null", None),
        ];
        for (key, value, want) in cases {
            assert_eq!(reason(&with(key, Some(value))), *want, "{key}: {value}");
        }
    }

    #[test]
    fn time_rules() {
        assert_eq!(
            reason(&with("StatusTime", Some("\"yesterday\""))),
            Some((BadType, Some("StatusTime")))
        );
        assert_eq!(
            reason(&with("StatusTime", Some("\"2018-02-30 00:00:00\""))),
            Some((OutOfRange, Some("StatusTime")))
        );
        assert_eq!(
            reason(&with("StatusTime", Some("1521343201"))),
            Some((BadType, Some("StatusTime")))
        );
        assert_eq!(
            reason(&with("StatusTime", Some(r#""2018-03-18\u002003:20:01""#))),
            None
        );
    }

    #[test]
    fn malformed_and_wrong_shapes() {
        for bad in [
            "",
            "{",
            "}",
            "{\"Name\"}",
            "{\"Name\":}",
            "{,}",
            "{\"a\":1,}",
            "{'a':1}",
            "nul",
            "[1,2",
            "{\"a\":[1,}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\udc00x\"}",
            "{\"a\":\"tab\there\"}",
            "{} {}",
            "{}x",
            "\u{feff}{}",
            "{\"a\":tru}",
            "{\"a\":[}]}",
        ] {
            assert_eq!(reason(bad), Some((MalformedJson, None)), "{bad:?}");
        }
        assert_eq!(
            reason(&format!("{}{}", "[".repeat(200), "]".repeat(200))),
            Some((MalformedJson, None))
        );
        for not_object in ["[]", "1", "\"x\"", "null", " [ {\"Name\":1} ] "] {
            assert_eq!(reason(not_object), Some((BadType, None)), "{not_object:?}");
        }
        assert_eq!(reason("{}"), Some((MissingField, Some("Name"))));
        // Invalid UTF-8 inside a string is malformed.
        let mut bytes = with("Name", Some("\"ab\"")).into_bytes();
        let at = bytes.windows(2).position(|w| w == b"ab").unwrap();
        bytes[at] = 0xff;
        assert_eq!(decode(&bytes).unwrap_err().reason, MalformedJson);
        // A syntax error after a field fault is still malformed.
        assert_eq!(reason("{\"Latitude\":100,"), Some((MalformedJson, None)));
    }

    #[test]
    fn first_fault_in_document_order_wins() {
        let s = r#"{"Latitude":100,"Name":5,"StatusTime":"2018-03-18 03:20:01"}"#;
        assert_eq!(reason(s), Some((OutOfRange, Some("Latitude"))));
    }

    #[test]
    fn too_large_is_not_parsed() {
        let pad = "x".repeat(MAX_RECORD_BYTES);
        let big = with("Pad", Some(&format!("\"{pad}\"")));
        assert_eq!(reason(&big), Some((TooLarge, None)));
        let just_fits = with(
            "Pad",
            Some(&format!(
                "\"{}\"",
                &pad[..MAX_RECORD_BYTES - GOOD.len() - 10]
            )),
        );
        assert!(just_fits.len() <= MAX_RECORD_BYTES);
        assert_eq!(reason(&just_fits), None);
    }

    #[test]
    fn splits_arrays_into_elements() {
        let payload = format!(" [ {GOOD} ,\n{{\"a\":[1,{{}}]}} , 3 ] ");
        let ranges = array_elements(payload.as_bytes()).unwrap();
        assert_eq!(ranges.len(), 3);
        assert!(decode(&payload.as_bytes()[ranges[0].clone()]).is_ok());
        assert_eq!(&payload[ranges[2].clone()], "3");
        assert_eq!(array_elements(b"[]"), Some(vec![]));
        for bad in ["[", "[1,]", "[1] x", "{}", "[1 2]"] {
            assert_eq!(array_elements(bad.as_bytes()), None, "{bad}");
        }
        let lines = split_record_ranges(b"a\n\n b \r\nc");
        assert_eq!(lines, vec![0..1, 3..7, 8..9]);
    }

    #[test]
    fn splits_payloads_into_lines() {
        let payload = format!("{GOOD}\n\n  \r\n{GOOD}\r\n{GOOD}");
        let lines = split_record_ranges(payload.as_bytes());
        assert_eq!(lines.len(), 3);
        for line in lines {
            assert!(decode(&payload.as_bytes()[line]).is_ok());
        }
        assert!(split_record_ranges(b"").is_empty());
        assert_eq!(split_record_ranges(format!("{GOOD}\n").as_bytes()).len(), 1);
        // A form feed is not JSON whitespace: that line is a (malformed) record, everywhere.
        assert!(!is_blank(b"\x0c"));
        assert_eq!(split_record_ranges(b"\x0c\n").len(), 1);
        // Plain: no CR anywhere, so no record holds a line break; the ranges are the same.
        assert_eq!(record_lines(b"a\n\nb\n"), (vec![0..1, 3..4], true));
        assert_eq!(record_lines(b"a\r\nb"), (vec![0..2, 3..4], false));
        assert_eq!(record_lines(b"a\nb\rc\n"), (vec![0..1, 2..5], false));
        assert_eq!(record_lines(b""), (vec![], true));
    }
}
