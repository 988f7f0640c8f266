//! Event-time arithmetic: parsing the two `StatusTime` spellings of CONTRACT §1 into UTC
//! milliseconds since the Unix epoch, and formatting window bounds back into the workshop's
//! fixed-width `YYYY-MM-DD HH:MM:SS.mmm`.
//!
//! Sits under `decode` (parsing) and `record` (formatting). Written by hand rather than with a
//! date crate because it runs once per record on the hot path: no allocation, no locale, no
//! time-zone database — just the civil-calendar algorithm and fixed-position digit reads.

use std::cell::Cell;
use std::fmt::Write as _;

/// Milliseconds since 1970-01-01T00:00:00Z; negative before it.
pub type Millis = i64;

const MS_PER_SEC: i64 = 1_000;
const MS_PER_DAY: i64 = 86_400_000;

/// Why a `StatusTime` string is not a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// Not in either accepted spelling (wrong length, separators or non-digits).
    Format,
    /// Well formed, but a field is outside the calendar (month 13, 30 February, hour 24, offset 25:00).
    Range,
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fff]` (read as UTC) or RFC 3339 (`T` or space separator,
/// `Z` or `±HH:MM` offset, required with `T`; any number of fraction digits) into epoch
/// milliseconds.
///
/// Fractions finer than a millisecond are truncated toward the past.
///
/// # Errors
/// [`TimeError::Format`] when the text matches neither spelling, [`TimeError::Range`] when it
/// does but names no real instant.
pub fn parse_status_time(s: &[u8]) -> Result<Millis, TimeError> {
    // Date and time: "YYYY-MM-DD?HH:MM:SS" is 19 bytes at fixed positions.
    let Some(date) = s.first_chunk::<10>() else {
        return Err(TimeError::Format);
    };
    if s.len() < 19 {
        return Err(TimeError::Format);
    }
    let days = day_number(date)?;
    let hour = digits(s, 11, 2)?;
    let minute = digits(s, 14, 2)?;
    let second = digits(s, 17, 2)?;
    if s[13] != b':' || s[16] != b':' {
        return Err(TimeError::Format);
    }
    if !matches!(s[10], b' ' | b'T' | b't') {
        return Err(TimeError::Format);
    }
    let mut i = 19;
    let mut millis = 0i64;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return Err(TimeError::Format);
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_minutes = match &s[i..] {
        // No offset: the workshop's spelling, which has a space; `T` without an offset would be
        // an ambiguous local time.
        [] if s[10] == b' ' => 0,
        [] => return Err(TimeError::Format),
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = two(*h1, *h2)?;
            let om = two(*m1, *m2)?;
            if oh > 23 || om > 59 {
                return Err(TimeError::Range);
            }
            let total = oh * 60 + om;
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return Err(TimeError::Format),
    };
    let days = days.ok_or(TimeError::Range)?;
    if hour > 23 || minute > 59 || second > 59 {
        return Err(TimeError::Range);
    }
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Ok(secs * MS_PER_SEC + millis)
}

thread_local! {
    /// The last date this thread read and its day number: records come in long runs of the same
    /// day, and the calendar arithmetic costs more than comparing ten bytes.
    /// It starts as a true pair: any key that matches must be a date that was read correctly.
    static LAST_DATE: Cell<([u8; 10], i64)> = const { Cell::new((*b"1970-01-01", 0)) };
}

/// The day number of `YYYY-MM-DD` since 1970-01-01, `None` when the calendar has no such day.
///
/// # Errors
/// [`TimeError::Format`] when it is not spelled so.
fn day_number(date: &[u8; 10]) -> Result<Option<i64>, TimeError> {
    let (last, days) = LAST_DATE.get();
    if last == *date {
        return Ok(Some(days));
    }
    let year = digits(date, 0, 4)?;
    let month = digits(date, 5, 2)?;
    let day = digits(date, 8, 2)?;
    if date[4] != b'-' || date[7] != b'-' {
        return Err(TimeError::Format);
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Ok(None);
    }
    let days = days_from_civil(year, month, day);
    LAST_DATE.set((*date, days));
    Ok(Some(days))
}

fn digits(s: &[u8], at: usize, n: usize) -> Result<i64, TimeError> {
    let mut v = 0i64;
    for &b in &s[at..at + n] {
        if !b.is_ascii_digit() {
            return Err(TimeError::Format);
        }
        v = v * 10 + i64::from(b - b'0');
    }
    Ok(v)
}

fn two(a: u8, b: u8) -> Result<i64, TimeError> {
    if a.is_ascii_digit() && b.is_ascii_digit() {
        Ok(i64::from(a - b'0') * 10 + i64::from(b - b'0'))
    } else {
        Err(TimeError::Format)
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `t` in the workshop's fixed-width UTC format `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn write_status_time(out: &mut String, t: Millis) {
    let days = t.div_euclid(MS_PER_DAY);
    let ms_of_day = t.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let secs = ms_of_day / MS_PER_SEC;
    let ms = ms_of_day % MS_PER_SEC;
    if !(0..=9_999).contains(&year) {
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{ms:03}",
            secs / 3_600,
            secs / 60 % 60,
            secs % 60
        );
        return;
    }
    // The common case by hand: `write!` costs more than the rest of a record's JSON.
    let mut text = *b"0000-00-00 00:00:00.000";
    for (at, width, v) in [
        (0, 4, year),
        (5, 2, month),
        (8, 2, day),
        (11, 2, secs / 3_600),
        (14, 2, secs / 60 % 60),
        (17, 2, secs % 60),
        (20, 3, ms),
    ] {
        let mut v = v;
        for i in (at..at + width).rev() {
            text[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    // Digits and punctuation only: ASCII.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

/// The wall clock, epoch milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
        })
}

/// `t` in the workshop's format, as a new string.
pub fn format_status_time(t: Millis) -> String {
    let mut s = String::with_capacity(23);
    write_status_time(&mut s, t);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Millis, TimeError> {
        parse_status_time(s.as_bytes())
    }

    #[test]
    fn written_times_read_back_across_the_years_written_by_hand() {
        // From 0000-01-01 to 9999-12-31, the hand-written digits; beyond, `write!`'s.
        for t in (-62_167_219_200_000..253_402_300_800_000).step_by(86_399_999_937) {
            let text = format_status_time(t);
            assert_eq!(text.len(), 23, "{text}");
            assert_eq!(p(&text), Ok(t), "{text}");
        }
        assert_eq!(
            format_status_time(1_521_343_201_189),
            "2018-03-18 03:20:01.189"
        );
        assert_eq!(
            format_status_time(-62_167_219_200_001),
            "-001-12-31 23:59:59.999"
        );
    }

    /// The memo of the last date read never changes an answer.
    #[test]
    fn the_same_day_again_and_the_next() {
        assert_eq!(p("2018-03-18 03:20:01"), Ok(1_521_343_201_000));
        assert_eq!(p("2018-03-18 03:20:02"), Ok(1_521_343_202_000));
        assert_eq!(p("2018-03-18 24:00:00"), Err(TimeError::Range));
        assert_eq!(p("2018-03-18x03:20:01"), Err(TimeError::Format));
        assert_eq!(p("2018-02-29 00:00:00"), Err(TimeError::Range));
        assert_eq!(p("2018-02-29 00:00:0x"), Err(TimeError::Format));
        assert_eq!(p("2018-03-19 03:20:01"), Ok(1_521_429_601_000));
        assert_eq!(p("2018-03-18 03:20:01"), Ok(1_521_343_201_000));
        // A fresh thread's memo holds no date that was not read.
        std::thread::spawn(|| {
            assert_eq!(p("\0\0\0\0\0\0\0\0\0\0 00:00:00"), Err(TimeError::Format));
            assert_eq!(p("1970-01-01 00:00:01"), Ok(1_000));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn workshop_format_is_utc() {
        // 2018-03-18 03:20:01.189 UTC = 1521343201189 ms (checked with `date -u -d`).
        assert_eq!(p("2018-03-18 03:20:01.189"), Ok(1_521_343_201_189));
        assert_eq!(p("2018-03-18 03:20:01"), Ok(1_521_343_201_000));
        assert_eq!(p("1970-01-01 00:00:00.000"), Ok(0));
    }

    #[test]
    fn rfc3339_with_offsets() {
        assert_eq!(p("2018-03-18T03:20:01.189Z"), Ok(1_521_343_201_189));
        assert_eq!(p("2018-03-18t03:20:01.189z"), Ok(1_521_343_201_189));
        assert_eq!(p("2018-03-18T05:20:01.189+02:00"), Ok(1_521_343_201_189));
        assert_eq!(p("2018-03-17T22:20:01.189-05:00"), Ok(1_521_343_201_189));
        assert_eq!(p("2018-03-18 03:20:01+00:00"), Ok(1_521_343_201_000));
    }

    #[test]
    fn fractions_of_any_length() {
        assert_eq!(p("1970-01-01 00:00:00.5"), Ok(500));
        assert_eq!(p("1970-01-01 00:00:00.05"), Ok(50));
        assert_eq!(p("1970-01-01T00:00:00.123456789Z"), Ok(123));
        assert_eq!(p("1970-01-01 00:00:00."), Err(TimeError::Format));
    }

    #[test]
    fn before_the_epoch() {
        assert_eq!(p("1969-12-31 23:59:59.999"), Ok(-1));
        assert_eq!(p("0000-01-01 00:00:00"), Ok(-62_167_219_200_000));
    }

    #[test]
    fn rejects_bad_spellings_and_ranges() {
        for bad in [
            "",
            "2018-03-18",
            "2018/03/18 03:20:01",
            "2018-03-18_03:20:01",
            "2018-03-18 03:20:01 ",
            "2018-03-18 03:20:01+0200",
            "2018-03-18 3:20:01.000",
            "２０１８-03-18 03:20:01",
            "2018-03-18T03:20:01",
            "2018-03-18T03:20:01.189",
        ] {
            assert_eq!(p(bad), Err(TimeError::Format), "{bad:?}");
        }
        for bad in [
            "2018-13-01 00:00:00",
            "2018-00-01 00:00:00",
            "2018-02-29 00:00:00",
            "2018-04-31 00:00:00",
            "2018-01-01 24:00:00",
            "2018-01-01 00:60:00",
            "2018-01-01 00:00:60",
            "2018-01-01T00:00:00+24:00",
        ] {
            assert_eq!(p(bad), Err(TimeError::Range), "{bad:?}");
        }
        assert!(p("2016-02-29 00:00:00").is_ok());
        assert!(p("2000-02-29 00:00:00").is_ok());
        assert_eq!(p("1900-02-29 00:00:00"), Err(TimeError::Range));
    }

    #[test]
    fn format_round_trips_over_the_calendar() {
        assert_eq!(
            format_status_time(1_521_343_200_000),
            "2018-03-18 03:20:00.000"
        );
        assert_eq!(format_status_time(-1), "1969-12-31 23:59:59.999");
        // Every day from 1600 to 2400 at a few times of day.
        let mut t = p("1600-01-01 00:00:00").unwrap();
        let end = p("2400-12-31 00:00:00").unwrap();
        while t < end {
            for offset in [0, 1, 43_200_123, MS_PER_DAY - 1] {
                let s = format_status_time(t + offset);
                assert_eq!(p(&s), Ok(t + offset), "{s}");
            }
            t += MS_PER_DAY * 7 + 3_600_000;
        }
    }
}
