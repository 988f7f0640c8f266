//! Fault injection for the simulated fleet: broken, out-of-order, late and too-late records at
//! chosen rates, so that the pipeline's reject, reorder and restatement paths see real traffic.
//!
//! Delays are calibrated for the workshop cadence (one record per unicorn per second) and the
//! default window settings (60 s windows, 5 s out-of-orderness, 60 s allowed lateness): an
//! out-of-order record stays inside the out-of-orderness bound, a late one lands after its
//! window closed but inside the allowed lateness, a too-late one after that.

use std::fmt;
use std::str::FromStr;

use crate::Rng;

/// How a reading is held back or broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Written broken in place of the record (see [`Malformation`]).
    Malformed,
    /// Released 0.5–2 s of simulated time later.
    OutOfOrder,
    /// Released 6–55 s after its minute window closed.
    Late,
    /// Released 66–126 s after its minute window closed.
    TooLate,
}

impl Fault {
    /// When a held-back reading with event time `t` is released, in simulated time.
    pub fn release_ms(self, t: i64, rng: &mut Rng) -> i64 {
        let window_end = (t.div_euclid(60_000) + 1) * 60_000;
        match self {
            Fault::Malformed => t,
            Fault::OutOfOrder => t + 500 + rng.below(1_500) as i64,
            Fault::Late => window_end + 6_000 + rng.below(49_000) as i64,
            Fault::TooLate => window_end + 66_000 + rng.below(60_000) as i64,
        }
    }
}

/// The ways a record is written broken; used in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformation {
    /// Cut in the middle: `malformed_json`.
    Truncated,
    /// Without `StatusTime`: `missing_field`.
    MissingField,
    /// `Distance` as a string: `bad_type`.
    BadType,
    /// `Latitude` 123.4: `out_of_range`.
    OutOfRange,
}

impl Malformation {
    /// Every kind, in the order they are used.
    pub const ALL: [Malformation; 4] = [
        Malformation::Truncated,
        Malformation::MissingField,
        Malformation::BadType,
        Malformation::OutOfRange,
    ];
}

/// Probability per record of each fault (independent of the others; their sum is at most 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// Written broken.
    pub malformed: f64,
    /// Out of order within the bound.
    pub out_of_order: f64,
    /// Late but inside the allowed lateness.
    pub late: f64,
    /// Beyond the allowed lateness.
    pub too_late: f64,
}

impl FaultRates {
    /// Draws the fault for one record, if any.
    pub fn pick(&self, rng: &mut Rng) -> Option<Fault> {
        if self.malformed + self.out_of_order + self.late + self.too_late <= 0.0 {
            return None;
        }
        let mut u = rng.next_f64();
        for (rate, fault) in [
            (self.malformed, Fault::Malformed),
            (self.out_of_order, Fault::OutOfOrder),
            (self.late, Fault::Late),
            (self.too_late, Fault::TooLate),
        ] {
            if u < rate {
                return Some(fault);
            }
            u -= rate;
        }
        None
    }
}

/// Why a `--faults` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultsError(String);

impl fmt::Display for FaultsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FaultsError {}

impl FromStr for FaultRates {
    type Err = FaultsError;

    /// `malformed=0.01,out-of-order=0.05,late=0.01,too-late=0.001` (any subset, any order).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut rates = FaultRates::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| FaultsError(format!("expected KIND=RATE, got {part:?}")))?;
            let rate: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    FaultsError(format!(
                        "rate of {key} must be a number from 0 to 1, got {value:?}"
                    ))
                })?;
            let slot = match key.trim() {
                "malformed" => &mut rates.malformed,
                "out-of-order" => &mut rates.out_of_order,
                "late" => &mut rates.late,
                "too-late" => &mut rates.too_late,
                other => {
                    return Err(FaultsError(format!(
                        "unknown fault {other:?}: use malformed, out-of-order, late or too-late"
                    )))
                }
            };
            *slot = rate;
        }
        let total = rates.malformed + rates.out_of_order + rates.late + rates.too_late;
        if total > 1.0 {
            return Err(FaultsError(format!(
                "fault rates add up to {total}, more than 1"
            )));
        }
        Ok(rates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        let r: FaultRates = "malformed=0.01, out-of-order=0.05,late=0.02,too-late=0.001"
            .parse()
            .unwrap();
        assert_eq!(
            r,
            FaultRates {
                malformed: 0.01,
                out_of_order: 0.05,
                late: 0.02,
                too_late: 0.001
            }
        );
        assert_eq!("".parse::<FaultRates>().unwrap(), FaultRates::default());
        for bad in [
            "late",
            "late=2",
            "late=x",
            "slow=0.1",
            "late=0.6,too-late=0.6",
        ] {
            assert!(bad.parse::<FaultRates>().is_err(), "{bad}");
        }
    }

    #[test]
    fn picks_at_the_given_rates() {
        let rates = FaultRates {
            malformed: 0.1,
            out_of_order: 0.2,
            late: 0.0,
            too_late: 0.05,
        };
        let mut rng = Rng::new(9);
        let mut n = [0u32; 5];
        for _ in 0..100_000 {
            let i = match rates.pick(&mut rng) {
                Some(Fault::Malformed) => 0,
                Some(Fault::OutOfOrder) => 1,
                Some(Fault::Late) => 2,
                Some(Fault::TooLate) => 3,
                None => 4,
            };
            n[i] += 1;
        }
        assert!((9_000..11_000).contains(&n[0]), "{n:?}");
        assert!((19_000..21_000).contains(&n[1]), "{n:?}");
        assert_eq!(n[2], 0);
        assert!((4_000..6_000).contains(&n[3]), "{n:?}");
    }
}
