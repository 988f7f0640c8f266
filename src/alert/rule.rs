//! What a rule is and what it produces: the measure it watches, its threshold, direction and
//! clear level, and the [`Change`] of state it gives, with the JSON and text the outputs write.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::record::{write_f64, write_json_string, Telemetry};
use crate::time::{write_status_time, Millis};

/// The field a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// `HealthPoints`.
    HealthPoints,
    /// `MagicPoints`.
    MagicPoints,
    /// `Distance` (metres since the previous record).
    Distance,
}

impl Measure {
    /// Its name in records and rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::HealthPoints => "HealthPoints",
            Measure::MagicPoints => "MagicPoints",
            Measure::Distance => "Distance",
        }
    }

    /// Parses a rule's `field`.
    pub fn parse(s: &str) -> Option<Measure> {
        [
            Measure::HealthPoints,
            Measure::MagicPoints,
            Measure::Distance,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }

    #[inline]
    pub(super) fn value(self, r: &Telemetry<'_>) -> Value {
        match self {
            Measure::HealthPoints => Value::Int(r.health_points),
            Measure::MagicPoints => Value::Int(r.magic_points),
            Measure::Distance => Value::Float(r.distance),
        }
    }

    /// A value kept in a checkpoint, as the field's type.
    pub(super) fn stored(self, v: f32) -> Value {
        match self {
            Measure::HealthPoints | Measure::MagicPoints => Value::Int(v as i64),
            Measure::Distance => Value::Float(f64::from(v)),
        }
    }
}

/// A field's value as the record had it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Health and magic points.
    Int(i64),
    /// Distance.
    Float(f64),
}

impl Value {
    #[inline]
    pub(super) fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Float(v) => v,
        }
    }

    /// As JSON (and as a mail shows it).
    pub fn write_json(self, out: &mut String) {
        match self {
            Value::Int(v) => {
                let _ = write!(out, "{v}");
            }
            // As the record spells it: a float keeps its fraction.
            Value::Float(v) => write_f64(out, v),
        }
    }
}

/// A threshold as text: whole ones without a fraction.
pub fn number_text(v: f64) -> String {
    let mut s = String::new();
    write_number(&mut s, v);
    s
}

/// Writes a threshold as a JSON number: whole ones without a fraction (`100`, not `100.0`).
fn write_number(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        write_f64(out, v);
    }
}

/// Which side of the threshold is trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `below = N`: values < N.
    Below,
    /// `above = N`: values > N.
    Above,
}

/// One alert rule (CONTRACT §7).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name, e.g. `low-health`.
    pub name: Arc<str>,
    /// The field it watches.
    pub field: Measure,
    /// Below or above.
    pub direction: Direction,
    /// The threshold.
    pub threshold: f64,
    /// The level at which a firing alert resolves (≥ it for `below`, ≤ for `above`).
    pub clear: f64,
    /// How long (event time) the condition must hold before the rule fires.
    pub for_ms: Millis,
}

impl Rule {
    /// The two default rules, `low-health` and `low-magic`: below 100, clearing at 100 +
    /// `hysteresis`.
    pub fn defaults(hysteresis: f64) -> Vec<Rule> {
        [
            ("low-health", Measure::HealthPoints),
            ("low-magic", Measure::MagicPoints),
        ]
        .into_iter()
        .map(|(name, field)| Rule {
            name: name.into(),
            field,
            direction: Direction::Below,
            threshold: 100.0,
            clear: 100.0 + hysteresis,
            for_ms: 0,
        })
        .collect()
    }

    #[inline]
    pub(super) fn holds(&self, v: f64) -> bool {
        match self.direction {
            Direction::Below => v < self.threshold,
            Direction::Above => v > self.threshold,
        }
    }

    #[inline]
    pub(super) fn clears(&self, v: f64) -> bool {
        match self.direction {
            Direction::Below => v >= self.clear,
            Direction::Above => v <= self.clear,
        }
    }
}

/// `firing` or `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The condition held (for `for_secs`).
    Firing,
    /// The value crossed the clear level.
    Resolved,
}

impl State {
    /// As in the contract.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// One state change of one (rule, unicorn).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The rule's name.
    pub rule: Arc<str>,
    /// The unicorn.
    pub name: String,
    /// The new state.
    pub state: State,
    /// The field the rule watches.
    pub field: Measure,
    /// The value on the record that caused the change.
    pub value: Value,
    /// The rule's threshold.
    pub threshold: f64,
    /// Which side of the threshold is trouble.
    pub direction: Direction,
    /// The level at which the rule clears.
    pub clear: f64,
    /// `StatusTime` of the record that caused the change.
    pub status_time: Millis,
}

impl Change {
    /// `Rule/Name/StatusTime`: the same every time the same data is processed.
    pub fn alert_id(&self) -> String {
        let mut id = String::with_capacity(self.rule.len() + self.name.len() + 26);
        self.write_alert_id(&mut id);
        id
    }

    pub(super) fn write_alert_id(&self, out: &mut String) {
        out.push_str(&self.rule);
        out.push('/');
        out.push_str(&self.name);
        out.push('/');
        write_status_time(out, self.status_time);
    }

    /// The change as the JSON object of CONTRACT §7.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"AlertId\":");
        let mut id = String::new();
        self.write_alert_id(&mut id);
        write_json_string(out, &id);
        out.push_str(",\"Rule\":");
        write_json_string(out, &self.rule);
        out.push_str(",\"Name\":");
        write_json_string(out, &self.name);
        out.push_str(",\"State\":\"");
        out.push_str(self.state.as_str());
        out.push_str("\",\"Field\":\"");
        out.push_str(self.field.as_str());
        out.push_str("\",\"Value\":");
        self.value.write_json(out);
        out.push_str(",\"Threshold\":");
        write_number(out, self.threshold);
        out.push_str(",\"StatusTime\":\"");
        write_status_time(out, self.status_time);
        out.push_str("\"}");
    }
}
