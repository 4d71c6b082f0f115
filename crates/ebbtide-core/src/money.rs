//! Money as integers.
//!
//! Cost reports must add up to the micro-dollar across millions of
//! instance-seconds, so no `f64` ever holds money. Prices are micro-dollars
//! per hour; accrued cost is kept in [`CostAccum`] (micro-dollar-milliseconds
//! per hour) so splitting an instance's cost between its jobs loses nothing.

use std::ops::{Add, AddAssign};
use std::time::Duration;

use crate::time::duration_millis;

const MILLIS_PER_HOUR: u128 = 3_600_000;

/// Micro-dollars in a dollar: the one money unit every crate counts in.
pub const MICROS_PER_DOLLAR: i64 = 1_000_000;

/// An amount of money in micro-dollars (1 USD = [`MICROS_PER_DOLLAR`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i64);

impl Micros {
    /// Zero dollars.
    pub const ZERO: Micros = Micros(0);

    /// Whole dollars, for readable configs and tests.
    pub const fn from_dollars(d: i64) -> Self {
        Micros(d.saturating_mul(MICROS_PER_DOLLAR))
    }

    /// Dollars as written by a person or a price list (`0.0416`), rounded
    /// to the micro-dollar; `None` unless finite and within ±1e9 dollars.
    pub fn from_dollars_f64(d: f64) -> Option<Self> {
        (d.is_finite() && d.abs() <= 1e9)
            .then(|| Micros((d * MICROS_PER_DOLLAR as f64).round() as i64))
    }

    /// The amount in dollars, for display and charts only (never summed).
    pub fn as_dollars(self) -> f64 {
        self.0 as f64 / MICROS_PER_DOLLAR as f64
    }
}

impl Add for Micros {
    type Output = Micros;
    fn add(self, rhs: Micros) -> Micros {
        Micros(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Micros {
    fn add_assign(&mut self, rhs: Micros) {
        *self = *self + rhs;
    }
}

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let unit = MICROS_PER_DOLLAR.unsigned_abs();
        write!(f, "{sign}${}.{:06}", abs / unit, abs % unit)
    }
}

/// A price per instance-hour in micro-dollars; cloud list prices are hourly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PricePerHour(pub Micros);

impl PricePerHour {
    /// Free (owned hardware, or an unknown price).
    pub const ZERO: PricePerHour = PricePerHour(Micros::ZERO);

    /// Exact cost of running at this price for `d`, as an accumulator.
    pub fn cost_for(self, d: Duration) -> CostAccum {
        let price = u128::try_from(self.0.0.max(0)).unwrap_or(0);
        CostAccum(price * u128::from(duration_millis(d)))
    }
}

/// Accrued cost in micro-dollar-milliseconds per hour (1/3,600,000 µ$).
///
/// Accruing in this unit is exact for any price and duration in whole
/// milliseconds; only [`CostAccum::to_micros`] rounds, once, at report time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CostAccum(pub u128);

impl CostAccum {
    /// Nothing accrued.
    pub const ZERO: CostAccum = CostAccum(0);

    /// Rounds down to whole micro-dollars.
    pub fn to_micros(self) -> Micros {
        Micros(i64::try_from(self.0 / MILLIS_PER_HOUR).unwrap_or(i64::MAX))
    }

    /// Splits into `parts` equal shares plus the remainder, so that
    /// `share * parts + remainder == self` exactly.
    pub fn split(self, parts: u32) -> (CostAccum, CostAccum) {
        if parts == 0 {
            return (CostAccum::ZERO, self);
        }
        let p = u128::from(parts);
        (CostAccum(self.0 / p), CostAccum(self.0 % p))
    }

    /// `self * n`, for adding several equal shares.
    pub fn times(self, n: u32) -> CostAccum {
        CostAccum(self.0 * u128::from(n))
    }
}

impl Add for CostAccum {
    type Output = CostAccum;
    fn add(self, rhs: CostAccum) -> CostAccum {
        CostAccum(self.0 + rhs.0)
    }
}

impl AddAssign for CostAccum {
    fn add_assign(&mut self, rhs: CostAccum) {
        self.0 += rhs.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_as_written_round_to_the_micro_dollar_and_nonsense_is_refused() {
        assert_eq!(Micros::from_dollars_f64(0.0416), Some(Micros(41_600)));
        assert_eq!(Micros::from_dollars_f64(0.000_000_4), Some(Micros(0)));
        assert_eq!(Micros::from_dollars_f64(0.000_000_6), Some(Micros(1)));
        assert_eq!(Micros::from_dollars_f64(f64::NAN), None);
        assert_eq!(Micros::from_dollars_f64(2e9), None);
        assert_eq!(Micros(1_500_000).as_dollars(), 1.5);
        assert_eq!(Micros::from_dollars(3).to_string(), "$3.000000");
    }

    #[test]
    fn one_hour_at_a_price_costs_exactly_that_price() {
        let p = PricePerHour(Micros(96_000));
        assert_eq!(
            p.cost_for(Duration::from_secs(3600)).to_micros(),
            Micros(96_000)
        );
    }

    #[test]
    fn splitting_a_cost_loses_nothing() {
        let c = PricePerHour(Micros(96_001)).cost_for(Duration::from_millis(12_345));
        let (share, rest) = c.split(7);
        assert_eq!(share.times(7) + rest, c);
    }

    #[test]
    fn micros_display_as_dollars() {
        assert_eq!(Micros(1_234_567).to_string(), "$1.234567");
        assert_eq!(Micros(-5).to_string(), "-$0.000005");
    }
}
