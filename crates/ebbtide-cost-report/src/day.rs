//! UTC days: the ledger's charge period, named `YYYY-MM-DD` in reports,
//! keys and on the command line.

use std::fmt;
use std::str::FromStr;

use time::{Date, Month};

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;
/// Milliseconds in a day.
const DAY_MILLIS: i64 = 86_400_000;

/// A UTC day, as a day number since the Unix epoch (what the ledger keys on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub u64);

/// A day that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a day: expected YYYY-MM-DD on or after 1970-01-01 ({why})")]
pub struct DayError {
    input: String,
    why: String,
}

impl Day {
    /// The day containing `millis` since the epoch.
    pub fn of_millis(millis: u64) -> Day {
        Day(millis / 86_400_000)
    }

    /// Its calendar date.
    pub fn date(self) -> Date {
        let julian = i64::try_from(self.0).unwrap_or(i64::MAX) + UNIX_EPOCH_JULIAN_DAY;
        i32::try_from(julian)
            .ok()
            .and_then(|j| Date::from_julian_day(j).ok())
            .unwrap_or(Date::MAX)
    }

    /// Midnight starting the day, in ms since the epoch.
    pub fn start_millis(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX / DAY_MILLIS) * DAY_MILLIS
    }

    /// Midnight ending the day (exclusive), in ms since the epoch.
    pub fn end_millis(self) -> i64 {
        self.start_millis() + DAY_MILLIS
    }

    /// The first day of its month and the first day of the next: FOCUS's
    /// billing period.
    pub fn month(self) -> (Day, Day) {
        let date = self.date();
        let first = date.replace_day(1).unwrap_or(date);
        let next = match date.month() {
            Month::December => Date::from_calendar_date(date.year() + 1, Month::January, 1),
            m => Date::from_calendar_date(date.year(), m.next(), 1),
        }
        .unwrap_or(Date::MAX);
        (Day::from_date(first), Day::from_date(next))
    }

    fn from_date(date: Date) -> Day {
        Day(u64::try_from(i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY).unwrap_or(0))
    }

    /// The day after.
    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.date();
        write!(
            f,
            "{:04}-{:02}-{:02}",
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    }
}

impl FromStr for Day {
    type Err = DayError;

    fn from_str(s: &str) -> Result<Day, DayError> {
        let fail = |why: &str| DayError {
            input: s.to_string(),
            why: why.to_string(),
        };
        let mut parts = s.split('-');
        let (Some(y), Some(m), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail("three parts separated by '-'"));
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(fail("4-digit year, 2-digit month and day"));
        }
        let number = |p: &str, what: &str| {
            p.parse::<u16>()
                .map_err(|_| fail(&format!("{what} {p:?} is not a number")))
        };
        let year = i32::from(number(y, "year")?);
        let month = Month::try_from(u8::try_from(number(m, "month")?).unwrap_or(0))
            .map_err(|_| fail("month must be 01 to 12"))?;
        let day = u8::try_from(number(d, "day")?).unwrap_or(0);
        let date = Date::from_calendar_date(year, month, day)
            .map_err(|_| fail(&format!("{month} {year} has no day {day}")))?;
        if year < 1970 {
            return Err(fail("before the Unix epoch"));
        }
        Ok(Day::from_date(date))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_number_round_trips_through_its_name() {
        let day: Day = "2026-11-28".parse().expect("valid");
        assert_eq!(day, Day(20_785));
        assert_eq!(day.to_string(), "2026-11-28");
        assert_eq!(Day(0).to_string(), "1970-01-01");
        assert_eq!(day.start_millis(), 1_795_824_000_000);
    }

    #[test]
    fn the_billing_month_of_a_december_day_ends_in_january() {
        let day: Day = "2026-12-31".parse().expect("valid");
        let (first, next) = day.month();
        assert_eq!(first.to_string(), "2026-12-01");
        assert_eq!(next.to_string(), "2027-01-01");
    }

    #[test]
    fn malformed_days_are_refused_with_what_is_expected() {
        for (input, why) in [
            ("2026-02-30", "February 2026 has no day 30"),
            ("2026-13-01", "month must be 01 to 12"),
            ("26-11-28", "4-digit year"),
            ("2026/11/28", "three parts"),
            ("1969-12-31", "before the Unix epoch"),
        ] {
            let err = input.parse::<Day>().expect_err(input).to_string();
            assert!(
                err.contains(why) && err.contains("YYYY-MM-DD"),
                "{input}: {err}"
            );
        }
    }
}
