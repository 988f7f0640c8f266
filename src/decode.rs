//! Bytes → [`Telemetry`]: a JSON reader specialised for one flat object, with every validation
//! rule of CONTRACT §1 and its reject reason.
//!
//! Sits between the sources (which hand over raw payloads) and the window engine. It is the
//! hottest code in the service, so it reads the object in one pass, borrows strings from the
//! input (allocating only to undo JSON escapes, never more than the input's size), and never
//! panics: every index is checked, and arbitrary bytes are fed to it in the test suite.
//!
//! Precedence when a record has several faults: size first (`too_large`, unread), then syntax
//! (`malformed_json` wins over anything found before the syntax error), then the first field
//! fault in document order (`bad_type`, `out_of_range`), then `missing_field`.

use std::borrow::Cow;

use crate::record::{Field, Reject, RejectReason, Telemetry, MAX_NAME_BYTES, MAX_RECORD_BYTES};
use crate::time::{parse_status_time, TimeError};

/// Whether a line holds no record: empty, or only JSON whitespace (space, tab, CR, LF). The one
/// rule for every source, so a line means the same over HTTP and in a file.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| is_ws(*b))
}

/// The byte ranges of the records of an NDJSON payload: its non-blank lines. A trailing `\n`
/// (or `\r\n`) is allowed.
pub fn split_record_ranges(payload: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', payload).chain(std::iter::once(payload.len())) {
        let line = &payload[start..end];
        if !is_blank(line) {
            out.push(start..end);
        }
        start = end + 1;
    }
    out
}

/// The byte ranges of the elements of a JSON array payload, or `None` when the payload is not a
/// well-formed array. Elements are not validated beyond their JSON syntax.
pub fn array_elements(payload: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut p = Parser { s: payload, i: 0 };
    p.skip_ws();
    p.expect(b'[').ok()?;
    let mut out = Vec::new();
    p.skip_ws();
    if p.peek() == Some(b']') {
        p.i += 1;
    } else {
        loop {
            p.skip_ws();
            let start = p.i;
            p.skip_value().ok()?;
            out.push(start..p.i);
            p.skip_ws();
            match p.peek() {
                Some(b',') => p.i += 1,
                Some(b']') => {
                    p.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    p.end().ok()?;
    Some(out)
}

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

impl Span {
    fn new(s: Cow<'_, str>, base: &[u8]) -> Span {
        if let Cow::Borrowed(b) = &s {
            let start = (b.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
            if start <= base.len() && b.len() <= base.len() - start {
                return Span::At(start..start + b.len());
            }
        }
        Span::Owned(s.into_owned().into_boxed_str())
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
        Telemetry {
            name: self.name.get(base),
            status_time: self.status_time,
            latitude: self.latitude,
            longitude: self.longitude,
            distance: self.distance,
            health_points: self.health_points,
            magic_points: self.magic_points,
            input_data: self.input_data.as_ref().map(|t| t.get(base)),
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

/// The syntax is broken; nothing more to say.
#[derive(Debug)]
struct Malformed;

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

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            if !is_ws(b) {
                break;
            }
            self.i += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Syntax<()> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// Only whitespace may follow.
    fn end(&mut self) -> Syntax<()> {
        self.skip_ws();
        if self.i == self.s.len() {
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// The whole record: `{ "key": value, … }` and nothing after it.
    fn object(&mut self) -> Syntax<Result<Telemetry<'a>, Reject>> {
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
    fn skip_value(&mut self) -> Syntax<()> {
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

fn borrowed_str(raw: &[u8]) -> Syntax<&str> {
    std::str::from_utf8(raw).map_err(|_| Malformed)
}

fn check_name(name: &str) -> Result<(), RejectReason> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        Err(RejectReason::OutOfRange)
    } else {
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
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
    }
}
