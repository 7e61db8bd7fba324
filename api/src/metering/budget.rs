//! The monthly token budget (soft cap, UTC calendar month, 0 = unlimited).
//!
//! A call is admitted only while the month's metered tokens plus what the user's in-flight calls
//! may still use (their reservations) is under the budget; an admitted call then reserves its own
//! maximum (prompt tokens + maxTokens). Admission happens one call at a time per user (the
//! rollup row is locked), so N simultaneous calls overshoot the budget by at most one call's
//! reservation.

use chrono::{DateTime, Datelike, Utc};

/// The rollup key of the UTC month `at` falls in: `YYYY-MM`.
pub fn month_key(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

/// Whether a user with `budget` (0 = unlimited), `used` tokens metered this month and `reserved`
/// tokens held by in-flight calls may start another call.
pub fn admits(budget: i64, used: i64, reserved: i64) -> bool {
    budget <= 0 || used.saturating_add(reserved) < budget
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn months_are_utc() {
        let t = Utc.with_ymd_and_hms(2026, 1, 31, 23, 59, 59).unwrap();
        assert_eq!(month_key(t), "2026-01");
        assert_eq!(month_key(t + chrono::Duration::seconds(1)), "2026-02");
    }

    #[test]
    fn admission_is_strictly_under_the_budget() {
        assert!(admits(0, i64::MAX, i64::MAX), "0 means unlimited");
        assert!(admits(1000, 0, 0));
        assert!(admits(1000, 600, 399));
        assert!(!admits(1000, 600, 400));
        assert!(!admits(1000, 1000, 0));
        assert!(!admits(1000, i64::MAX, 1));
    }
}
