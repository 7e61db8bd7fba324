//! The monthly token budget (soft cap, UTC calendar month, 0 = unlimited).
//!
//! A call is admitted only while the month's metered tokens plus what the user's in-flight calls
//! may still use (their reservations) is under the budget; an admitted call then reserves its own
//! maximum (prompt tokens + maxTokens). Admission happens one call at a time per user (the
//! rollup row is locked), so N simultaneous calls overshoot the budget by at most one call's
//! reservation.

/// Whether a user with `budget` (0 = unlimited), `used` tokens metered this month and `reserved`
/// tokens held by in-flight calls may start another call.
pub fn admits(budget: i64, used: i64, reserved: i64) -> bool {
    budget <= 0 || used.saturating_add(reserved) < budget
}

#[cfg(test)]
mod tests {
    use super::*;

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
