//! A deliberately simple reference implementation of CONTRACT §1–2, written from the contract's
//! text and sharing no code with the engine: serde_json for JSON, chrono for time, a BTreeMap
//! per (window, name), and the watermark recomputed per record. Slow and obviously right; tests
//! compare the engine against it on the same bytes.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::Value;

pub const SIZE: i64 = 60_000;
pub const OOO: i64 = 5_000;
pub const LATENESS: i64 = 60_000;

/// One expected summary, keyed by (window start, name).
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub distance: f64,
    pub min_health: i64,
    pub max_health: i64,
    pub min_magic: i64,
    pub max_magic: i64,
    pub records: u64,
    pub revision: u64,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub summaries: BTreeMap<(i64, String), Expected>,
    /// Rejects by contract reason.
    pub rejects: BTreeMap<&'static str, u64>,
    pub accepted: u64,
    /// Alert state changes of CONTRACT §7 under the two default rules, in order:
    /// (rule, name, state, value, StatusTime ms).
    pub alerts: Vec<(String, String, String, i64, i64)>,
}

/// The two default alert rules, written from CONTRACT §7: below 100 fires, at or above the
/// clear level (105: 100 + the default hysteresis of 5) resolves, and a record older than the
/// unicorn's newest is ignored.
#[derive(Default)]
struct AlertState {
    newest: Option<i64>,
    /// Firing, for low-health and low-magic.
    firing: [bool; 2],
}

impl AlertState {
    fn see(
        &mut self,
        (name, t, health, magic): (&str, i64, i64, i64),
        clear: i64,
        out: &mut Vec<(String, String, String, i64, i64)>,
    ) {
        if self.newest.is_some_and(|n| t < n) {
            return;
        }
        self.newest = Some(t);
        for (i, (rule, value)) in [("low-health", health), ("low-magic", magic)]
            .into_iter()
            .enumerate()
        {
            let change = if !self.firing[i] && value < 100 {
                "firing"
            } else if self.firing[i] && value >= clear {
                "resolved"
            } else {
                continue;
            };
            self.firing[i] = change == "firing";
            out.push((rule.into(), name.into(), change.into(), value, t));
        }
    }
}

/// The contract's two spellings, by shape: `YYYY-MM-DD?HH:MM:SS`, then an optional fraction,
/// then nothing, `Z`/`z` or `±HH:MM`. (chrono alone is laxer: it takes one-digit fields.)
fn shaped_like_a_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digit_at = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let fixed = b.len() >= 19
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .into_iter()
            .all(digit_at)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[13] == b':'
        && b[16] == b':'
        && matches!(b[10], b' ' | b'T' | b't');
    if !fixed {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    let r = rest.as_bytes();
    match r.len() {
        0 => b[10] == b' ',
        1 => matches!(r[0], b'Z' | b'z'),
        6 => {
            matches!(r[0], b'+' | b'-')
                && r[3] == b':'
                && [1, 2, 4, 5].iter().all(|&i| r[i].is_ascii_digit())
        }
        _ => false,
    }
}

/// Parses `StatusTime` per the contract with chrono: the workshop format as UTC, or RFC 3339.
/// `Err("bad_type")` when the text is not shaped like a time, `Err("out_of_range")` when it is
/// but names no real instant.
pub fn status_time(s: &str) -> Result<i64, &'static str> {
    if !shaped_like_a_time(s) {
        return Err("bad_type");
    }
    // chrono takes a leap second ":60"; the contract does not.
    if &s[17..19] == "60" {
        return Err("out_of_range");
    }
    parse_time(s).ok_or("out_of_range")
}

/// Parses a time with chrono alone.
pub fn parse_time(s: &str) -> Option<i64> {
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    // chrono's RFC 3339 parser accepts 'T', 't' or ' ' and 'Z', 'z' or an offset.
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A JSON value's kind, from its raw text (already known to be valid JSON).
enum Kind<'a> {
    Null,
    Str(String),
    /// The number's literal text.
    Num(&'a str),
    Other,
}

fn kind(raw: &RawValue) -> Kind<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b'"') => Kind::Str(serde_json::from_str(text).expect("valid string")),
        Some(b'-' | b'0'..=b'9') => Kind::Num(text),
        _ => Kind::Other,
    }
}

/// The contract's verdict on one record: Ok((name, time, distance, health, magic)) or a reason.
/// Numbers are judged from their literal text: floats parsed by std (correctly rounded),
/// integers by JSON's grammar (no fraction, no exponent) and the i64 range.
pub fn validate(line: &[u8]) -> Result<(String, i64, f64, i64, i64), &'static str> {
    if line.len() > 64 * 1024 {
        return Err("too_large");
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(_) => {}
        // A number beyond f64 is valid JSON that serde_json will not build; check the syntax only.
        Err(e) if e.to_string().contains("number out of range") => {
            serde_json::from_slice::<IgnoredAny>(line).map_err(|_| "malformed_json")?;
        }
        Err(_) => return Err("malformed_json"),
    }
    // Duplicate keys: the map keeps the last, as the contract's JSON reading does.
    let m: BTreeMap<String, &RawValue> = serde_json::from_slice(line).map_err(|_| "bad_type")?;
    let get = |k: &str| {
        m.get(k)
            .map(|r| kind(r))
            .filter(|v| !matches!(v, Kind::Null))
    };
    let name = match get("Name") {
        None => return Err("missing_field"),
        Some(Kind::Str(s)) => s,
        Some(_) => return Err("bad_type"),
    };
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err("out_of_range");
    }
    let time = match get("StatusTime") {
        None => return Err("missing_field"),
        Some(Kind::Str(s)) => status_time(&s)?,
        Some(_) => return Err("bad_type"),
    };
    let float = |k: &str, lo: f64, hi: f64| match get(k) {
        None => Err("missing_field"),
        Some(Kind::Num(text)) => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= lo && *f <= hi)
            .ok_or("out_of_range"),
        Some(_) => Err("bad_type"),
    };
    float("Latitude", -90.0, 90.0)?;
    float("Longitude", -180.0, 180.0)?;
    let distance = float("Distance", 0.0, f64::MAX)?;
    let int = |k: &str| match get(k) {
        None => Err("missing_field"),
        Some(Kind::Num(text)) if text.contains(['.', 'e', 'E']) => Err("bad_type"),
        Some(Kind::Num(text)) => text.parse::<i64>().map_err(|_| "out_of_range"),
        Some(_) => Err("bad_type"),
    };
    if get("InputData").is_some_and(|v| !matches!(v, Kind::Str(_))) {
        return Err("bad_type");
    }
    let health = int("HealthPoints")?;
    let magic = int("MagicPoints")?;
    Ok((name, time, distance, health, magic))
}

/// Runs the lines (one partition, in order) through the contract's windowing.
pub fn run<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    run_with_clear(lines, 105)
}

/// As [`run`], the alert rules resolving at `clear` (100 + the hysteresis).
pub fn run_with_clear<'a>(lines: impl IntoIterator<Item = &'a [u8]>, clear: i64) -> Outcome {
    let mut out = Outcome::default();
    let mut max_event: Option<i64> = None;
    let mut alerts: BTreeMap<String, AlertState> = BTreeMap::new();
    for line in lines {
        if line
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            continue;
        }
        let (name, t, distance, health, magic) = match validate(line) {
            Ok(r) => r,
            Err(reason) => {
                *out.rejects.entry(reason).or_default() += 1;
                continue;
            }
        };
        let watermark = max_event.map(|m| m - OOO);
        let start = t.div_euclid(SIZE) * SIZE;
        let end = start + SIZE;
        if watermark.is_some_and(|w| end + LATENESS <= w) {
            *out.rejects.entry("too_late").or_default() += 1;
            continue;
        }
        let late = watermark.is_some_and(|w| end <= w);
        out.accepted += 1;
        max_event = Some(max_event.map_or(t, |m| m.max(t)));
        alerts.entry(name.clone()).or_default().see(
            (&name, t, health, magic),
            clear,
            &mut out.alerts,
        );
        let e = out.summaries.entry((start, name)).or_insert(Expected {
            distance: 0.0,
            min_health: i64::MAX,
            max_health: i64::MIN,
            min_magic: i64::MAX,
            max_magic: i64::MIN,
            records: 0,
            revision: 0,
        });
        e.distance += distance;
        e.min_health = e.min_health.min(health);
        e.max_health = e.max_health.max(health);
        e.min_magic = e.min_magic.min(magic);
        e.max_magic = e.max_magic.max(magic);
        e.records += 1;
        e.revision += u64::from(late);
    }
    out
}

/// The engine's NDJSON output turned into the same shape, checking the line order on the way.
pub fn parse_output(ndjson: &[u8]) -> BTreeMap<(i64, String), Expected> {
    let mut map = BTreeMap::new();
    let mut last_key: Option<(String, String)> = None;
    for line in ndjson.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).expect("summary is JSON");
        let name = v["Name"].as_str().unwrap().to_owned();
        let start_text = v["StatusTime"].as_str().unwrap().to_owned();
        let start = parse_time(&start_text).unwrap();
        assert_eq!(
            parse_time(v["WindowEnd"].as_str().unwrap()),
            Some(start + SIZE)
        );
        let key = (start_text, name.clone());
        if let Some(last) = &last_key {
            assert!(
                *last < key,
                "output not ordered by (StatusTime, Name): {last:?} then {key:?}"
            );
        }
        last_key = Some(key);
        let i = |k: &str| v[k].as_i64().unwrap();
        map.insert(
            (start, name),
            Expected {
                distance: raw_number(line, "Distance"),
                min_health: i("MinHealthPoints"),
                max_health: i("MaxHealthPoints"),
                min_magic: i("MinMagicPoints"),
                max_magic: i("MaxMagicPoints"),
                records: v["Records"].as_u64().unwrap(),
                revision: v["Revision"].as_u64().unwrap(),
            },
        );
    }
    map
}

/// A number field of a JSON object, parsed exactly from its literal text.
fn raw_number(line: &[u8], key: &str) -> f64 {
    let m: BTreeMap<String, &RawValue> = serde_json::from_slice(line).unwrap();
    m[key].get().parse().unwrap()
}
