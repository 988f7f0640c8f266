//! The usual record, read in one tight pass: the seven fields (and `InputData`) each once, keys
//! spelled plainly, no whitespace, no escapes, every value valid — what producers write. Numbers
//! are converted while they are scanned (eight digits at a time), and a decimal of up to 19
//! digits is rounded correctly by Eisel–Lemire (`lemire.rs`); longer ones go to `fast_float2`.
//!
//! Anything unusual — whitespace, an unknown or repeated key, an escape, a fault — returns
//! `None`, and the general parser reads the record from the start. So this path decides nothing
//! about rejects: it accepts a subset of what the general parser accepts, with the same values,
//! and `tests/decode_fuzz.rs` and the tests below hold it to that.

use std::borrow::Cow;

use crate::record::{Telemetry, MAX_NAME_BYTES};
use crate::time::parse_status_time;

use super::lemire;
use super::parser::is_valid_name;

/// A bit per field, to require each once.
const NAME: u8 = 1;
const STATUS_TIME: u8 = 1 << 1;
const LATITUDE: u8 = 1 << 2;
const LONGITUDE: u8 = 1 << 3;
const DISTANCE: u8 = 1 << 4;
const HEALTH_POINTS: u8 = 1 << 5;
const MAGIC_POINTS: u8 = 1 << 6;
const INPUT_DATA: u8 = 1 << 7;
const REQUIRED: u8 = INPUT_DATA - 1;

/// The record, when it is usual and valid; `None` sends it to the general parser.
pub(super) fn usual(s: &str) -> Option<Telemetry<'_>> {
    let mut rest = s.strip_prefix("{\"")?;
    let mut seen = 0u8;
    let mut t = Telemetry {
        name: Cow::Borrowed(""),
        status_time: 0,
        latitude: 0.0,
        longitude: 0.0,
        distance: 0.0,
        health_points: 0,
        magic_points: 0,
        input_data: None,
    };
    loop {
        let field = match rest.as_bytes().first()? {
            b'N' => {
                let (name, after) = string(rest.strip_prefix("Name\":\"")?)?;
                if !is_usual_name(name) {
                    return None;
                }
                t.name = Cow::Borrowed(name);
                rest = after;
                NAME
            }
            b'S' => {
                let (time, after) = string(rest.strip_prefix("StatusTime\":\"")?)?;
                t.status_time = parse_status_time(time.as_bytes()).ok()?;
                rest = after;
                STATUS_TIME
            }
            b'L' if rest.as_bytes().get(1) == Some(&b'a') => {
                let (v, after) = float_in(rest.strip_prefix("Latitude\":")?, -90.0, 90.0)?;
                t.latitude = v;
                rest = after;
                LATITUDE
            }
            b'L' => {
                let (v, after) = float_in(rest.strip_prefix("Longitude\":")?, -180.0, 180.0)?;
                t.longitude = v;
                rest = after;
                LONGITUDE
            }
            b'D' => {
                // -0 passes (as -0.0, as in the general parser); a long enough spelling rounds
                // to infinity, which does not.
                let (v, after) = float_in(rest.strip_prefix("Distance\":")?, 0.0, f64::MAX)?;
                t.distance = v;
                rest = after;
                DISTANCE
            }
            b'H' => {
                let (v, after) = integer(rest.strip_prefix("HealthPoints\":")?)?;
                t.health_points = v;
                rest = after;
                HEALTH_POINTS
            }
            b'M' => {
                let (v, after) = integer(rest.strip_prefix("MagicPoints\":")?)?;
                t.magic_points = v;
                rest = after;
                MAGIC_POINTS
            }
            b'I' => {
                let (data, after) = string(rest.strip_prefix("InputData\":\"")?)?;
                t.input_data = Some(Cow::Borrowed(data));
                rest = after;
                INPUT_DATA
            }
            _ => return None,
        };
        if seen & field != 0 {
            return None;
        }
        seen |= field;
        match rest.as_bytes() {
            [b',', b'"', ..] => rest = rest.get(2..)?,
            [b'}'] => break,
            _ => return None,
        }
    }
    (seen & REQUIRED == REQUIRED).then_some(t)
}

/// A string's text up to its closing quote, and what follows the quote, when the string has no
/// escape and no control character.
fn string(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    // Eight bytes at a time while there are eight, then one by one.
    let end = loop {
        match bytes.get(i..i + 8).and_then(|b| b.try_into().ok()) {
            Some(eight) => match stops(u64::from_le_bytes(eight)) {
                0 => i += 8,
                found => break i + found.trailing_zeros() as usize / 8,
            },
            None => {
                let tail = bytes.get(i..)?;
                break i + tail
                    .iter()
                    .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            }
        }
    };
    match bytes[end] {
        b'"' => Some((s.get(..end)?, s.get(end + 1..)?)),
        _ => None,
    }
}

/// The high bit of each byte of `v` (little-endian) that is a quote, a backslash or a control
/// character — exactly for the lowest such byte; bytes above it may be marked in error, which
/// does not matter, since only the first is used.
fn stops(v: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte below n (≤ 0x80) borrows when n is subtracted; `!v` drops bytes ≥ 0x80.
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    below(v ^ (ONES * u64::from(b'"')), 1)
        | below(v ^ (ONES * u64::from(b'\\')), 1)
        | below(v, 0x20)
}

/// A valid name, checked quickly when it is ASCII (the string had no control byte below 0x20).
fn is_usual_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return false;
    }
    if name.bytes().all(|b| b < 0x7f) {
        return true;
    }
    is_valid_name(name)
}

/// The value of eight ASCII digits at the start of `s`, when there are eight.
fn eight_digits(s: &[u8]) -> Option<u64> {
    let v = u64::from_le_bytes(s.get(..8)?.try_into().ok()?);
    // Every byte is 0x30..=0x39: its high nibble is 3, and adding 6 does not carry out of it.
    let digits = (v & 0xF0F0_F0F0_F0F0_F0F0) == 0x3030_3030_3030_3030
        && (v.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) == 0x3030_3030_3030_3030;
    if !digits {
        return None;
    }
    // Pairs, then fours, then all eight (the first digit is the lowest byte).
    let v = v - 0x3030_3030_3030_3030;
    let v = v * 10 + (v >> 8);
    // Two multiplications place the four pairs' weighted sum in the upper half (the rest of
    // each product wraps away, as intended).
    let v = (v & 0x0000_00FF_0000_00FF)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32)))
        >> 32;
    Some(v)
}

/// The ASCII digits at the start of `s`, accumulated into `m` (wrapping past 19 of them): how
/// many there were.
fn digits(s: &[u8], m: &mut u64) -> usize {
    let mut n = 0;
    while let Some(v) = s.get(n..).and_then(eight_digits) {
        *m = m.wrapping_mul(100_000_000).wrapping_add(v);
        n += 8;
    }
    while let Some(&b) = s.get(n) {
        if !b.is_ascii_digit() {
            break;
        }
        *m = m.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
        n += 1;
    }
    n
}

/// A number spelled `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, correctly rounded, and what follows it.
fn float(s: &str) -> Option<(f64, &str)> {
    let bytes = s.as_bytes();
    let negative = bytes.first() == Some(&b'-');
    let body = bytes.get(usize::from(negative)..)?;
    let mut m = 0u64;
    let whole = digits(body, &mut m);
    if whole == 0 || (whole > 1 && body[0] == b'0') {
        return None;
    }
    let mut len = whole;
    let mut fraction = 0;
    if body.get(len) == Some(&b'.') {
        fraction = digits(body.get(len + 1..)?, &mut m);
        if fraction == 0 {
            return None;
        }
        len += 1 + fraction;
    }
    if matches!(body.get(len), Some(b'e' | b'E')) {
        return None;
    }
    let (text, after) = s.split_at_checked(usize::from(negative) + len)?;
    // Up to 19 digits, m is exact: an integer converts by the cast (which rounds to nearest,
    // ties to even), a decimal by Eisel–Lemire; longer spellings go to fast_float2.
    #[allow(clippy::cast_precision_loss)] // rounded correctly, as said
    let magnitude = match (whole + fraction <= 19, fraction, m) {
        (false, ..) => None,
        (true, _, 0) => Some(0.0),
        (true, 0, m) => Some(m as f64),
        (true, fraction, m) => lemire::quotient(m, fraction),
    };
    let v = match magnitude {
        Some(v) if negative => -v,
        Some(v) => v,
        None => fast_float2::parse(text).ok()?,
    };
    Some((v, after))
}

/// A number as [`float`], when it lies within `low..=high`.
fn float_in(s: &str, low: f64, high: f64) -> Option<(f64, &str)> {
    float(s).filter(|(v, _)| (low..=high).contains(v))
}

/// An integer spelled `-?(0|[1-9][0-9]*)` of up to 18 digits (longer ones go to the general
/// parser, which checks the `i64` range), and what follows it.
fn integer(s: &str) -> Option<(i64, &str)> {
    let bytes = s.as_bytes();
    let negative = bytes.first() == Some(&b'-');
    let body = bytes.get(usize::from(negative)..)?;
    let mut m = 0u64;
    let n = digits(body, &mut m);
    if n == 0 || n > 18 || (n > 1 && body[0] == b'0') {
        return None;
    }
    if matches!(body.get(n), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let v = i64::try_from(m).ok()?;
    Some((
        if negative { -v } else { v },
        s.get(usize::from(negative) + n..)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::general;
    use stampede_producers::Rng;

    const USUAL: &str = r#"{"Distance":29.580579992034956,"HealthPoints":150,"Latitude":40.74930157081851,"Longitude":-73.98488081957345,"MagicPoints":150,"Name":"Shadowfax","StatusTime":"2018-03-18 03:20:00.378"}"#;

    /// The numbers' bits, which `==` does not tell apart for -0.0 and 0.0.
    fn bits(t: &Telemetry<'_>) -> [u64; 3] {
        [t.latitude, t.longitude, t.distance].map(f64::to_bits)
    }

    fn agrees(s: &str) {
        let fast = usual(s);
        let general = general(s.as_bytes());
        if let Some(fast) = &fast {
            assert_eq!(Some(fast), general.as_ref().ok(), "{s}");
            assert_eq!(Some(bits(fast)), general.as_ref().ok().map(bits), "{s}");
        }
    }

    #[test]
    fn reads_what_producers_write_as_the_general_parser_does() {
        let t = usual(USUAL).expect("the usual record takes the usual path");
        assert_eq!(Ok(&t), general(USUAL.as_bytes()).as_ref());
        assert_eq!(
            (t.distance, t.latitude),
            (29.580579992034956, 40.74930157081851)
        );
        let with_data = USUAL.replace("}", ",\"InputData\":\"Unicornerror ü\"}");
        assert!(usual(&with_data).is_some());
        agrees(&with_data);
        let reordered = r#"{"Name":"Ombre-Fée","StatusTime":"2018-03-18T03:20:00Z","Latitude":-90,"Longitude":180.0,"Distance":-0,"HealthPoints":-5,"MagicPoints":0}"#;
        assert!(usual(reordered).is_some());
        agrees(reordered);
    }

    #[test]
    fn leaves_the_unusual_to_the_general_parser() {
        for unusual in [
            USUAL.replace(":150,", ": 150,"),
            USUAL.replace("Shadowfax", "Shadow\\u0066ax"),
            USUAL.replace("{", "{\"Extra\":1,"),
            USUAL.replace("}", ",\"Name\":\"Twice\"}"),
            USUAL.replace("}", "} "),
            USUAL.replace("\"HealthPoints\":150,", ""),
            USUAL.replace(":150,", ":1.5e2,"),
            USUAL.replace("29.580579992034956", "2.9e1"),
            USUAL.replace("29.580579992034956", "-1"),
            USUAL.replace("40.74930157081851", "90.5"),
            USUAL.replace("-73.98488081957345", "-180.000000000001"),
            USUAL.replace("29.580579992034956", &format!("1{}", "0".repeat(400))),
            USUAL.replace("Shadowfax", "Shadow\u{200B}fax"),
            USUAL.replace("Shadowfax", ""),
            USUAL.replace(":150,", ":1234567890123456789,"),
            USUAL.replace("}", ",\"InputData\":null}"),
        ] {
            assert!(usual(&unusual).is_none(), "{unusual}");
        }
    }

    /// Numbers of every length, checked against the standard library's parser.
    #[test]
    fn numbers_are_correctly_rounded() {
        let mut rng = Rng::new(7);
        for i in 0..200_000u64 {
            let whole = rng.below(1_000);
            let digits = (i % 22) as usize;
            let fraction: String = (0..digits)
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect();
            let text = if digits == 0 {
                format!("{whole}")
            } else {
                format!("{whole}.{fraction}")
            };
            let want: f64 = text.parse().expect("a number");
            let (got, rest) = float(&text).expect("plain decimal");
            assert_eq!((got.to_bits(), rest), (want.to_bits(), ""), "{text}");
            let (got, _) = float(&format!("-{text}")).expect("negative");
            assert_eq!(got.to_bits(), (-want).to_bits(), "-{text}");
        }
        // Exactly halfway between two doubles (2^52 + 1/2): to the even one; a hair above: up.
        for (text, want) in [
            ("4503599627370496.5", 4_503_599_627_370_496.0_f64),
            ("4503599627370497.5", 4_503_599_627_370_498.0),
            ("4503599627370496.501", 4_503_599_627_370_497.0),
            ("9007199254740993", 9_007_199_254_740_992.0),
            ("9007199254740995", 9_007_199_254_740_996.0),
            ("18446744073709551615", 18_446_744_073_709_551_615.0),
            ("9999999999999999999", 1e19),
            ("0.9999999999999999999", 1.0),
            // Mantissas on either side of 2^53.
            ("9007199254740992", 9_007_199_254_740_992.0),
            ("900719925474099.2", 900_719_925_474_099.2),
            ("0.9007199254740993", 0.900_719_925_474_099_3),
        ] {
            assert_eq!(
                float(text).map(|(v, _)| v.to_bits()),
                Some(want.to_bits()),
                "{text}"
            );
            assert_eq!(
                text.parse::<f64>().map(f64::to_bits),
                Ok(want.to_bits()),
                "{text}"
            );
        }
        // The shortest spellings of doubles, as producers write them.
        for _ in 0..200_000 {
            let v = f64::from_bits(rng.below(u64::MAX)) % 1e6;
            if v.is_finite() {
                let text = format!("{v}");
                let (got, _) = float(&text).expect("shortest spelling");
                assert_eq!(got.to_bits(), v.to_bits(), "{text}");
            }
        }
    }

    #[test]
    fn strings_end_at_the_first_quote_and_refuse_escapes_and_controls() {
        for (text, want) in [
            ("\"", Some(("", ""))),
            ("abc\",x", Some(("abc", ",x"))),
            ("abcdefgh\"", Some(("abcdefgh", ""))),
            ("abcdefghijklmnop\"}", Some(("abcdefghijklmnop", "}"))),
            ("Ombre-Fée Ålesund\",", Some(("Ombre-Fée Ålesund", ","))),
            ("abcdefg\\\"\"", None),
            ("abc\tdefgh\"", None),
            ("abcdefghij\u{7f}\"", Some(("abcdefghij\u{7f}", ""))),
            ("abcdefghij", None),
            ("", None),
        ] {
            assert_eq!(string(text), want, "{text:?}");
        }
        // The first stop in every position of the eight, with other stops after it.
        for at in 0..8 {
            for stop in ["\"", "\\", "\n", "\u{1}"] {
                let text = format!("{}{stop}x\"\\\u{0}yyyyyyyy", "a".repeat(at));
                let found = string(&text).map(|(t, _)| t.len());
                assert_eq!(found, (stop == "\"").then_some(at), "{text:?}");
            }
        }
    }

    #[test]
    fn integers_of_every_length() {
        for n in 1..=18u32 {
            let v = 10i64.pow(n) - 1;
            assert_eq!(integer(&format!("{v},")), Some((v, ",")));
            assert_eq!(integer(&format!("-{v}}}")), Some((-v, "}")));
        }
        assert_eq!(integer("0"), Some((0, "")));
        for refused in ["01", "-", "", "1.0", "1e2", "x", "1234567890123456789"] {
            assert_eq!(integer(refused), None, "{refused}");
        }
    }

    /// Every one-byte change of the usual record: the fast path either steps aside or agrees.
    #[test]
    fn one_byte_changes_agree() {
        let bytes: &[u8] = b" \"\\,:{}-.0159eE+xN\x7f";
        for at in 0..USUAL.len() {
            let mut deleted = USUAL.as_bytes().to_vec();
            deleted.remove(at);
            if let Ok(s) = std::str::from_utf8(&deleted) {
                agrees(s);
            }
            for &b in bytes {
                let mut changed = USUAL.as_bytes().to_vec();
                changed[at] = b;
                if let Ok(s) = std::str::from_utf8(&changed) {
                    agrees(s);
                }
                changed.insert(at, b);
                if let Ok(s) = std::str::from_utf8(&changed) {
                    agrees(s);
                }
            }
        }
    }
}
