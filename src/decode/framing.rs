//! Framing: where the records of a payload are. A payload is NDJSON (one record a line, blank
//! lines skipped) or one JSON array of records; both are cut into byte ranges, with no copy.

use super::parser::{is_ws, Parser};

/// Whether a line holds no record: empty, or only JSON whitespace (space, tab, CR, LF). The one
/// rule for every source, so a line means the same over HTTP and in a file.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| is_ws(*b))
}

/// The byte ranges of the records of an NDJSON payload: its non-blank lines. A trailing `\n`
/// (or `\r\n`) is allowed.
pub fn split_record_ranges(payload: &[u8]) -> Vec<std::ops::Range<usize>> {
    record_lines(payload).0
}

/// As [`split_record_ranges`], and whether the payload holds no CR: then no record holds a
/// line break of any kind (found on the same pass, so that the archive need not look again).
pub fn record_lines(payload: &[u8]) -> (Vec<std::ops::Range<usize>>, bool) {
    let mut out = Vec::new();
    let mut start = 0;
    let mut plain = true;
    for at in memchr::memchr2_iter(b'\n', b'\r', payload).chain(std::iter::once(payload.len())) {
        if payload.get(at) == Some(&b'\r') {
            plain = false;
            continue;
        }
        let line = &payload[start..at];
        if !is_blank(line) {
            out.push(start..at);
        }
        start = at + 1;
    }
    (out, plain)
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
