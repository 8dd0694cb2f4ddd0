//! Billing periods, for policies' `billing` hooks: which periods are due
//! since a contract was last billed, and calendar-month arithmetic.

use time::{Date, OffsetDateTime};

use crate::wire::{BillingInput, CycleUnit, Period, Timestamp};

/// Every period that started at or before `now` and has not been billed,
/// oldest first: one normally, several when catching up; `start` inclusive,
/// `end` exclusive.
///
/// # Errors
///
/// A message naming the problem: a cycle of `0`, more than `max` periods
/// due, or dates out of range.
pub fn due_periods(
    input: &BillingInput,
    now: Timestamp,
    max: usize,
) -> Result<Vec<Period>, String> {
    let cycle = input.cycle;
    if cycle.every == 0 {
        return Err("the billing cycle's `every` is `0`".to_owned());
    }
    let anchor = input.billed_until.get();
    let boundary = |k: u32| -> Result<Timestamp, String> {
        let steps = k.checked_mul(cycle.every).ok_or("billing cycle overflow")?;
        let at = match cycle.unit {
            CycleUnit::Day => anchor.checked_add(time::Duration::days(i64::from(steps))),
            CycleUnit::Month => add_months(anchor, steps),
        };
        at.map(Timestamp)
            .ok_or_else(|| format!("period {k} after {} is out of range", input.billed_until))
    };
    let mut periods = Vec::new();
    let mut start = boundary(0)?;
    while start <= now {
        if periods.len() == max {
            return Err(format!(
                "more than {max} periods are due since {}",
                input.billed_until
            ));
        }
        let end = boundary(periods.len() as u32 + 1)?;
        periods.push(Period { start, end });
        start = end;
    }
    Ok(periods)
}

/// `at` plus `months` calendar months; a day past the end of the target
/// month becomes its last day (Jan 31 + 1 month = Feb 28); `None` out of
/// range.
pub fn add_months(at: OffsetDateTime, months: u32) -> Option<OffsetDateTime> {
    let index =
        at.year() * 12 + i32::from(u8::from(at.month())) - 1 + i32::try_from(months).ok()?;
    let year = index.div_euclid(12);
    let month = time::Month::try_from(u8::try_from(index.rem_euclid(12) + 1).ok()?).ok()?;
    let day = at.day().min(month.length(year));
    Some(at.replace_date(Date::from_calendar_date(year, month, day).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        text.parse::<Timestamp>().expect("timestamp").get()
    }

    #[test]
    fn month_arithmetic_clamps_to_the_end_of_month() {
        assert_eq!(
            add_months(at("2026-01-31T00:00:00Z"), 1),
            Some(at("2026-02-28T00:00:00Z"))
        );
        assert_eq!(
            add_months(at("2026-11-30T08:00:00Z"), 3),
            Some(at("2027-02-28T08:00:00Z"))
        );
        assert_eq!(
            add_months(at("2028-01-31T00:00:00Z"), 1),
            Some(at("2028-02-29T00:00:00Z"))
        );
        assert_eq!(
            add_months(at("2026-12-15T10:00:00Z"), 1),
            Some(at("2027-01-15T10:00:00Z"))
        );
    }
}
