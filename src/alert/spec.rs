//! Alert rules as the configuration writes them (`[[alerts.rules]]` of CONTRACT §7), checked
//! and turned into [`Rule`]s: each error names the key at fault.

use serde::Deserialize;

use super::{Direction, Measure, Rule};
use crate::time::Millis;

/// One `[[alerts.rules]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The rule's name (in alert ids, mails and filters).
    pub name: String,
    /// `HealthPoints`, `MagicPoints` or `Distance`.
    pub field: String,
    /// Fires below this (give `below` or `above`).
    #[serde(default, deserialize_with = "optional_number")]
    pub below: Option<f64>,
    /// Fires above this.
    #[serde(default, deserialize_with = "optional_number")]
    pub above: Option<f64>,
    /// Resolves at this level; default the threshold ± `alerts.hysteresis`.
    #[serde(default, deserialize_with = "optional_number")]
    pub clear: Option<f64>,
    /// Event time the condition must hold before the rule fires.
    #[serde(default)]
    pub for_secs: u64,
}

/// A TOML number, whole or not.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Whole(i64),
    Float(f64),
}

/// A TOML number, whole or not, as an `f64`.
///
/// # Errors
/// Not a number.
pub fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(match Number::deserialize(d)? {
        Number::Whole(n) => n as f64,
        Number::Float(f) => f,
    })
}

/// As [`number`], for a key that may be left out.
///
/// # Errors
/// Not a number.
pub fn optional_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    number(d).map(Some)
}

/// A rule that cannot work: the key (as `alerts.rules[I].KEY`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The key at fault.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The rules `specs` describe, each resolving `hysteresis` past its threshold unless it says
/// `clear`.
///
/// # Errors
/// The first rule that cannot work, naming its key.
pub fn rules(specs: &[RuleSpec], hysteresis: f64) -> Result<Vec<Rule>, SpecError> {
    let mut rules: Vec<Rule> = Vec::with_capacity(specs.len());
    for (i, r) in specs.iter().enumerate() {
        let key = |k: &str| format!("alerts.rules[{i}].{k}");
        let name_ok = !r.name.is_empty()
            && r.name.len() <= 64
            && r.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(err(
                &key("name"),
                format!("{:?}: 1 to 64 letters, digits, '-' or '_'", r.name),
            ));
        }
        if rules.iter().any(|other| *other.name == *r.name) {
            return Err(err(&key("name"), format!("{:?} is used twice", r.name)));
        }
        let field = Measure::parse(&r.field).ok_or_else(|| {
            err(
                &key("field"),
                format!("{:?}: use HealthPoints, MagicPoints or Distance", r.field),
            )
        })?;
        let (direction, threshold) = match (r.below, r.above) {
            (Some(t), None) => (Direction::Below, t),
            (None, Some(t)) => (Direction::Above, t),
            _ => {
                return Err(err(
                    &key("below"),
                    "give exactly one of below = N or above = N",
                ))
            }
        };
        let clear = r.clear.unwrap_or(match direction {
            Direction::Below => threshold + hysteresis,
            Direction::Above => threshold - hysteresis,
        });
        let clear_ok = match direction {
            Direction::Below => clear >= threshold,
            Direction::Above => clear <= threshold,
        };
        if !threshold.is_finite() || !clear.is_finite() || !clear_ok {
            return Err(err(
                &key("clear"),
                format!(
                    "{clear} must be on the healthy side of the threshold {threshold} ({} it)",
                    if direction == Direction::Below {
                        "at or above"
                    } else {
                        "at or below"
                    }
                ),
            ));
        }
        let for_ms = Millis::try_from(r.for_secs)
            .ok()
            .filter(|s| *s <= 86_400)
            .map(|s| s * 1_000)
            .ok_or_else(|| err(&key("for_secs"), "from 0 to 86400 (a day)"))?;
        rules.push(Rule {
            name: r.name.as_str().into(),
            field,
            direction,
            threshold,
            clear,
            for_ms,
        });
    }
    Ok(rules)
}
