//! What one round of notifications says: its changes, the subject and text every channel
//! sends, and why a channel could not send it.

use std::fmt::Write as _;

use crate::alert::{Change, State};
use crate::output::ErrorKind;

/// Why a channel could not send.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Whether retrying can help.
    pub kind: ErrorKind,
    /// In words.
    pub message: String,
}

/// The changes of one round, with a number that channels use to resume a failed round.
#[derive(Debug)]
pub struct Round {
    /// Counts rounds from 1 in this process.
    pub number: u64,
    /// The changes, in the order they were made.
    pub changes: Vec<Change>,
}

/// `FIRING low-health: Shadowfax HealthPoints 99 < 100`, under 100 characters (SNS's limit for
/// a subject), for one change; for several, a count by state and the first names.
pub fn subject(changes: &[Change]) -> String {
    let mut s = String::new();
    match changes {
        [c] => {
            let mut value = String::new();
            c.value.write_json(&mut value);
            let op = match (c.state, c.direction) {
                (State::Firing, crate::alert::Direction::Below) => "<",
                (State::Firing, crate::alert::Direction::Above) => ">",
                (State::Resolved, crate::alert::Direction::Below) => ">=",
                (State::Resolved, crate::alert::Direction::Above) => "<=",
            };
            let level = match c.state {
                State::Firing => c.threshold,
                State::Resolved => c.clear,
            };
            let _ = write!(
                s,
                "{} {}: {} {} {value} {op} {}",
                c.state.as_str().to_uppercase(),
                c.rule,
                c.name,
                c.field.as_str(),
                crate::alert::number_text(level)
            );
        }
        _ => {
            let firing = changes.iter().filter(|c| c.state == State::Firing).count();
            let resolved = changes.len() - firing;
            let _ = write!(s, "{firing} firing, {resolved} resolved:");
            // Each unicorn once, in the order of its first change.
            let mut named: Vec<&str> = Vec::new();
            for c in changes {
                if named.contains(&c.name.as_str()) {
                    continue;
                }
                if s.len() + c.name.len() + 2 > 90 {
                    s.push_str(" ...");
                    break;
                }
                named.push(&c.name);
                let _ = write!(s, " {}", c.name);
            }
        }
    }
    truncate(&mut s, 99);
    s
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The readable text of a group of changes: one paragraph per change.
pub fn text(changes: &[Change], dashboard: &str) -> String {
    let mut out = String::new();
    for c in changes {
        let mut value = String::new();
        c.value.write_json(&mut value);
        let mut at = String::new();
        crate::time::write_status_time(&mut at, c.status_time);
        let _ = match c.state {
            State::Firing => writeln!(
                out,
                "FIRING  {rule}: {name}'s {field} is {value}, {side} the threshold of {t}.\n        Since {at} (event time).",
                rule = c.rule,
                name = c.name,
                field = c.field.as_str(),
                side = match c.direction {
                    crate::alert::Direction::Below => "below",
                    crate::alert::Direction::Above => "above",
                },
                t = crate::alert::number_text(c.threshold),
            ),
            State::Resolved => writeln!(
                out,
                "RESOLVED {rule}: {name}'s {field} is back at {value} (threshold {t}).\n        At {at} (event time).",
                rule = c.rule,
                name = c.name,
                field = c.field.as_str(),
                t = crate::alert::number_text(c.threshold),
            ),
        };
        let _ = writeln!(out, "        Alert id: {}\n", c.alert_id());
    }
    if !dashboard.is_empty() {
        let _ = writeln!(out, "The fleet, live: {dashboard}");
    }
    out
}
