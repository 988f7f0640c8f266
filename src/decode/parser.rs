//! The JSON reader: one pass over one flat object, strings borrowed from the input (owned only
//! to undo escapes), each field checked by the rules of CONTRACT §1 as it is read, the first
//! fault in document order kept.

use std::borrow::Cow;

use crate::record::{Field, Reject, RejectReason, Telemetry, MAX_NAME_BYTES};
use crate::time::{parse_status_time, TimeError};

/// The syntax is broken; nothing more to say.
#[derive(Debug)]
pub(super) struct Malformed;

type Syntax<T> = Result<T, Malformed>;

/// Fields gathered so far. A key given twice takes its last value, as in JavaScript and
/// serde_json: a later valid value clears an earlier fault of the same field.
#[derive(Default)]
struct Fields<'a> {
    name: Option<Cow<'a, str>>,
    status_time: Option<i64>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    distance: Option<f64>,
    health_points: Option<i64>,
    magic_points: Option<i64>,
    input_data: Option<Cow<'a, str>>,
    /// Per field (by `Field as usize`): the fault of its last occurrence and where it stood.
    faults: [Option<(u32, RejectReason)>; 8],
    /// Known keys seen so far, to order faults by position.
    seen: u32,
    /// Some fault was ever recorded (most records have none: skip the scan).
    any_fault: bool,
}

impl Fields<'_> {
    fn fault(&mut self, reason: RejectReason, field: Field) {
        self.faults[field as usize] = Some((self.seen, reason));
        self.any_fault = true;
    }

    /// The fault that stands first in the document, if any.
    /// Forgets an earlier value of `field` (it was given again as `null`).
    fn clear(&mut self, field: Field) {
        match field {
            Field::Name => self.name = None,
            Field::StatusTime => self.status_time = None,
            Field::Latitude => self.latitude = None,
            Field::Longitude => self.longitude = None,
            Field::Distance => self.distance = None,
            Field::HealthPoints => self.health_points = None,
            Field::MagicPoints => self.magic_points = None,
            Field::InputData => self.input_data = None,
        }
    }

    fn first_fault(&self) -> Option<Reject> {
        if !self.any_fault {
            return None;
        }
        (0..8)
            .filter_map(|i| self.faults[i].map(|(at, reason)| (at, reason, i)))
            .min_by_key(|&(at, _, _)| at)
            .map(|(_, reason, i)| Reject::field(reason, FIELDS[i]))
    }
}

/// The field a key names, if any (keys with escapes or not seen by the fast path).
fn field_of(key: &[u8]) -> Option<Field> {
    FIELDS.into_iter().find(|f| f.as_str().as_bytes() == key)
}

/// Fields by their index.
const FIELDS: [Field; 8] = [
    Field::Name,
    Field::StatusTime,
    Field::Latitude,
    Field::Longitude,
    Field::Distance,
    Field::HealthPoints,
    Field::MagicPoints,
    Field::InputData,
];

/// A string literal as read: the bytes between the quotes when there was no escape (valid
/// UTF-8, checked or ASCII), or the unescaped text.
enum Text<'a> {
    Raw(&'a [u8]),
    Unescaped(String),
}

impl<'a> Text<'a> {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Raw(b) => b,
            Text::Unescaped(s) => s.as_bytes(),
        }
    }

    fn into_str(self) -> Syntax<Cow<'a, str>> {
        match self {
            Text::Raw(b) => borrowed_str(b).map(Cow::Borrowed),
            Text::Unescaped(s) => Ok(Cow::Owned(s)),
        }
    }
}

/// A number as read: its text and whether it was written as an integer.
struct Number<'a> {
    text: &'a [u8],
    integer: bool,
}

pub(super) struct Parser<'a> {
    pub(super) s: &'a [u8],
    pub(super) i: usize,
}

pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> Parser<'a> {
    pub(super) fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    pub(super) fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            if !is_ws(b) {
                break;
            }
            self.i += 1;
        }
    }

    pub(super) fn expect(&mut self, b: u8) -> Syntax<()> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// Only whitespace may follow.
    pub(super) fn end(&mut self) -> Syntax<()> {
        self.skip_ws();
        if self.i == self.s.len() {
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// The whole record: `{ "key": value, … }` and nothing after it.
    pub(super) fn object(&mut self) -> Syntax<Result<Telemetry<'a>, Reject>> {
        self.expect(b'{')?;
        let mut f = Fields::default();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                self.skip_ws();
                let known = self.known_key();
                let key = match known {
                    Some(_) => None,
                    None => Some(self.text()?),
                };
                self.skip_ws();
                self.expect(b':')?;
                self.skip_ws();
                let field = match (known, &key) {
                    (Some(field), _) => Some(field),
                    (None, Some(key)) => field_of(key.bytes()),
                    (None, None) => None,
                };
                match field {
                    Some(field) => self.field(field, &mut f)?,
                    None => self.skip_value()?,
                }
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(Malformed),
                }
            }
        }
        self.end()?;
        Ok(finish(f))
    }

    /// Reads the value of `key` into `f`, or skips it when the key is unknown.
    /// Fast path for the keys every record has: `"Name"` … `"InputData"` spelled plainly.
    /// Consumes the key and returns its field, or consumes nothing.
    fn known_key(&mut self) -> Option<Field> {
        let rest = self.s.get(self.i..)?;
        let (field, spelled): (Field, &[u8]) = match rest.get(1)? {
            b'N' => (Field::Name, b"\"Name\""),
            b'S' => (Field::StatusTime, b"\"StatusTime\""),
            b'L' if rest.get(2) == Some(&b'a') => (Field::Latitude, b"\"Latitude\""),
            b'L' => (Field::Longitude, b"\"Longitude\""),
            b'D' => (Field::Distance, b"\"Distance\""),
            b'H' => (Field::HealthPoints, b"\"HealthPoints\""),
            b'M' => (Field::MagicPoints, b"\"MagicPoints\""),
            b'I' => (Field::InputData, b"\"InputData\""),
            _ => return None,
        };
        if rest.starts_with(spelled) {
            self.i += spelled.len();
            Some(field)
        } else {
            None
        }
    }

    /// Reads the value of `field` into `f`.
    fn field(&mut self, field: Field, f: &mut Fields<'a>) -> Syntax<()> {
        f.seen += 1;
        f.faults[field as usize] = None;
        match self.peek() {
            Some(b'n') => {
                // `null` counts as absent; InputData is optional anyway.
                self.literal(b"null")?;
                f.clear(field);
                return Ok(());
            }
            Some(b'"') => {
                let text = self.text()?;
                match field {
                    Field::Name => {
                        let name = text.into_str()?;
                        match check_name(&name) {
                            Ok(()) => f.name = Some(name),
                            Err(reason) => f.fault(reason, field),
                        }
                    }
                    Field::StatusTime => match parse_status_time(text.bytes()) {
                        Ok(t) => f.status_time = Some(t),
                        Err(TimeError::Format) => f.fault(RejectReason::BadType, field),
                        Err(TimeError::Range) => f.fault(RejectReason::OutOfRange, field),
                    },
                    Field::InputData => f.input_data = Some(text.into_str()?),
                    _ => f.fault(RejectReason::BadType, field),
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let n = self.number()?;
                match field {
                    Field::Latitude => f.latitude = ranged(f, field, &n, 90.0),
                    Field::Longitude => f.longitude = ranged(f, field, &n, 180.0),
                    Field::Distance => match to_f64(&n) {
                        Some(v) if v.is_finite() && v >= 0.0 => f.distance = Some(v),
                        _ => f.fault(RejectReason::OutOfRange, field),
                    },
                    Field::HealthPoints => f.health_points = integer(f, field, &n),
                    Field::MagicPoints => f.magic_points = integer(f, field, &n),
                    _ => f.fault(RejectReason::BadType, field),
                }
            }
            _ => {
                self.skip_value()?;
                f.fault(RejectReason::BadType, field);
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Syntax<()> {
        if self.s.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// A string literal. Valid UTF-8 is guaranteed: ASCII needs no check, anything else is
    /// checked here (only names and unknown fields carry it in practice).
    fn text(&mut self) -> Syntax<Text<'a>> {
        self.expect(b'"')?;
        let start = self.i;
        let rest = self.s.get(start..).unwrap_or_default();
        let n = memchr::memchr2(b'"', b'\\', rest).ok_or(Malformed)?;
        let raw = &rest[..n];
        // One pass, which vectorises: the smallest byte finds control characters, the union of
        // all bytes finds non-ASCII.
        let (low, high) = raw
            .iter()
            .fold((u8::MAX, 0u8), |(lo, hi), &b| (lo.min(b), hi | b));
        if low < 0x20 {
            return Err(Malformed);
        }
        if high >= 0x80 {
            std::str::from_utf8(raw).map_err(|_| Malformed)?;
        }
        if rest[n] == b'"' {
            self.i = start + n + 1;
            Ok(Text::Raw(raw))
        } else {
            self.i = start + n;
            let prefix = borrowed_str(raw)?;
            self.escaped_string(prefix).map(Text::Unescaped)
        }
    }

    /// A string literal where its text is not needed (unknown fields).
    fn string(&mut self) -> Syntax<()> {
        self.text().map(drop)
    }

    /// The rest of a string that holds escapes, from the first backslash.
    fn escaped_string(&mut self, prefix: &str) -> Syntax<String> {
        let mut out = String::with_capacity(prefix.len() + 16);
        out.push_str(prefix);
        loop {
            let run_start = self.i;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(borrowed_str(&self.s[run_start..self.i])?);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let c = self.unicode_escape()?;
                            out.push(c);
                            continue;
                        }
                        _ => return Err(Malformed),
                    };
                    self.i += 1;
                    out.push(c);
                }
                _ => return Err(Malformed),
            }
        }
    }

    /// After `\u`: four hex digits, and a second `\uXXXX` when the first is a high surrogate.
    fn unicode_escape(&mut self) -> Syntax<char> {
        let hi = self.hex4()?;
        let code = match hi {
            0xD800..=0xDBFF => {
                self.literal(b"\\u")?;
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(Malformed);
                }
                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(Malformed),
            _ => hi,
        };
        char::from_u32(code).ok_or(Malformed)
    }

    fn hex4(&mut self) -> Syntax<u32> {
        let digits = self.s.get(self.i..self.i + 4).ok_or(Malformed)?;
        let mut v = 0u32;
        for &b in digits {
            let d = char::from(b).to_digit(16).ok_or(Malformed)?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }

    /// A number per the JSON grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Syntax<Number<'a>> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Malformed),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integer = false;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            integer = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(Number {
            text: &self.s[start..self.i],
            integer,
        })
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Syntax<()> {
        let start = self.i;
        self.digits();
        if self.i == start {
            Err(Malformed)
        } else {
            Ok(())
        }
    }

    /// Skips any JSON value, checking its syntax. Nesting is tracked in a bit stack, without
    /// recursion; deeper than 128 levels is refused as serde_json refuses it.
    pub(super) fn skip_value(&mut self) -> Syntax<()> {
        // Bit n of `stack` is 1 when level n is an object, 0 when an array.
        let mut stack: u128 = 0;
        let mut depth: u32 = 0;
        loop {
            // A value.
            self.skip_ws();
            match self.peek() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(open @ (b'{' | b'[')) => {
                    if depth == 128 {
                        return Err(Malformed);
                    }
                    self.i += 1;
                    let object = open == b'{';
                    if object {
                        stack |= 1 << depth;
                    } else {
                        stack &= !(1 << depth);
                    }
                    depth += 1;
                    self.skip_ws();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        depth -= 1;
                    } else {
                        if object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(Malformed),
            }
            // After a value: close containers or move to the next element.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let object = stack & (1 << (depth - 1)) != 0;
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if object {
                            self.skip_ws();
                            self.member_key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    Some(b']') if !object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    _ => return Err(Malformed),
                }
            }
        }
    }

    /// `"key" :` inside a skipped object.
    fn member_key(&mut self) -> Syntax<()> {
        self.string()?;
        self.skip_ws();
        self.expect(b':')
    }
}

/// Characters that are invisible or change how the text around them is shown: Unicode's format
/// characters (category Cf), the line and paragraph separators, variation selectors, and the
/// blank fillers that look like nothing (Hangul fillers, the braille blank).
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

fn borrowed_str(raw: &[u8]) -> Syntax<&str> {
    std::str::from_utf8(raw).map_err(|_| Malformed)
}

/// A name is 1 to 64 bytes with no control character, and none that is invisible or reorders
/// text (Unicode's format characters: a zero-width space or a right-to-left override makes a
/// name that looks like another on the dashboard and in mails).
fn check_name(name: &str) -> Result<(), RejectReason> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(RejectReason::OutOfRange)
    }
}

/// Whether `name` is a unicorn's name by the rules of CONTRACT §1: 1 to 64 bytes with no control
/// character and no Unicode format character (invisible, or reordering the text around it);
/// also the rule for names in subscription filters.
pub fn is_valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return false;
    }
    // The hot path: fleets name their unicorns in ASCII, where only control bytes are refused.
    if name.is_ascii() {
        return !name.bytes().any(|b| b < 0x20 || b == 0x7f);
    }
    let hidden = |c: char| c.is_control() || is_format(c);
    !name.chars().any(hidden)
}

/// The number's value, correctly rounded (the JSON grammar was checked while reading it).
fn to_f64(n: &Number<'_>) -> Option<f64> {
    fast_float2::parse(n.text).ok()
}

fn ranged(f: &mut Fields<'_>, field: Field, n: &Number<'_>, limit: f64) -> Option<f64> {
    match to_f64(n) {
        Some(v) if v.is_finite() && (-limit..=limit).contains(&v) => Some(v),
        _ => {
            f.fault(RejectReason::OutOfRange, field);
            None
        }
    }
}

fn integer(f: &mut Fields<'_>, field: Field, n: &Number<'_>) -> Option<i64> {
    if !n.integer {
        f.fault(RejectReason::BadType, field);
        return None;
    }
    let (negative, digits) = match n.text {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    let mut v: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        // Accumulate toward the negative side so that i64::MIN fits.
        match v.checked_mul(10).and_then(|v| v.checked_sub(d)) {
            Some(next) => v = next,
            None => {
                f.fault(RejectReason::OutOfRange, field);
                return None;
            }
        }
    }
    if negative {
        Some(v)
    } else if let Some(v) = v.checked_neg() {
        Some(v)
    } else {
        f.fault(RejectReason::OutOfRange, field);
        None
    }
}

fn finish(f: Fields<'_>) -> Result<Telemetry<'_>, Reject> {
    if let Some(fault) = f.first_fault() {
        return Err(fault);
    }
    let missing = |field| Reject::field(RejectReason::MissingField, field);
    Ok(Telemetry {
        name: f.name.ok_or_else(|| missing(Field::Name))?,
        status_time: f.status_time.ok_or_else(|| missing(Field::StatusTime))?,
        latitude: f.latitude.ok_or_else(|| missing(Field::Latitude))?,
        longitude: f.longitude.ok_or_else(|| missing(Field::Longitude))?,
        distance: f.distance.ok_or_else(|| missing(Field::Distance))?,
        health_points: f
            .health_points
            .ok_or_else(|| missing(Field::HealthPoints))?,
        magic_points: f.magic_points.ok_or_else(|| missing(Field::MagicPoints))?,
        input_data: f.input_data,
    })
}
