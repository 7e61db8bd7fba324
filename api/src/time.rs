//! Time, in one place: the clock as each kind of column stores it, UTC months and days, and the
//! range of instants the server accepts from clients.
//!
//! Two precisions, on purpose: Better Auth's `timestamp` columns (`user`, `session`, `account`)
//! hold what a JavaScript `Date` holds, milliseconds; our `timestamptz` columns hold what both
//! databases store, microseconds. Values are truncated before they are written, so what a row
//! holds equals what the code compared against.

use chrono::{DateTime, Datelike, Duration, NaiveDateTime, TimeZone, Utc};

/// Now, truncated to microseconds (our `timestamptz` columns).
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    now - Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 1_000))
}

/// Now, truncated to milliseconds, without a zone (Better Auth's `timestamp` columns, UTC).
pub fn now_millis_naive() -> NaiveDateTime {
    let now = Utc::now();
    (now - Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 1_000_000))).naive_utc()
}

/// The rollup key of the UTC month `at` falls in: `YYYY-MM`.
pub fn month_key(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

/// The UTC day `at` falls in: `YYYY-MM-DD`.
pub fn day_key(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// Start of the UTC calendar month `at` is in, and of the next one. `None` only at the far end
/// of chrono's range (see [`in_accepted_range`]).
pub fn month_window(at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let start = Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()?;
    let (y, m) = if at.month() == 12 {
        (at.year().checked_add(1)?, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()?;
    Some((start, end))
}

/// Midnight UTC at or before `t`.
pub fn floor_day(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(t, |m| m.and_utc())
}

/// Midnight UTC at or after `t` (`t` itself at the far end of chrono's range).
pub fn ceil_day(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_day(t);
    if floor == t {
        t
    } else {
        floor.checked_add_signed(Duration::days(1)).unwrap_or(t)
    }
}

/// The instants a client may name (`usage(from:, to:)`): years 1970 to 9999. Both databases
/// store them, RFC 3339 text sorts them correctly (four-digit years), and date arithmetic on
/// them cannot overflow.
pub fn in_accepted_range(t: DateTime<Utc>) -> bool {
    (1970..=9999).contains(&t.year())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn precisions_are_what_the_columns_hold() {
        assert_eq!(now_micros().timestamp_subsec_nanos() % 1_000, 0);
        assert_eq!(
            now_millis_naive().and_utc().timestamp_subsec_nanos() % 1_000_000,
            0
        );
    }

    #[test]
    fn months_are_utc_calendar_months() {
        let last = t("2026-12-31T23:59:59Z");
        assert_eq!(month_key(last), "2026-12");
        assert_eq!(month_key(last + Duration::seconds(1)), "2027-01");
        assert_eq!(
            month_window(last),
            Some((t("2026-12-01T00:00:00Z"), t("2027-01-01T00:00:00Z")))
        );
        assert_eq!(day_key(last), "2026-12-31");
    }

    #[test]
    fn day_boundaries() {
        assert_eq!(
            floor_day(t("2026-11-26T13:00:00Z")),
            t("2026-11-26T00:00:00Z")
        );
        assert_eq!(
            ceil_day(t("2026-11-26T13:00:00Z")),
            t("2026-11-27T00:00:00Z")
        );
        assert_eq!(
            ceil_day(t("2026-11-26T00:00:00Z")),
            t("2026-11-26T00:00:00Z")
        );
        assert_eq!(
            floor_day(t("2026-11-26T00:00:00Z")),
            t("2026-11-26T00:00:00Z")
        );
    }

    #[test]
    fn the_far_end_of_the_calendar_neither_panics_nor_is_accepted() {
        let far = DateTime::<Utc>::MAX_UTC;
        assert!(!in_accepted_range(far));
        assert_eq!(ceil_day(far), far);
        assert!(month_window(far).is_none());
        assert!(!in_accepted_range(t("1969-12-31T23:59:59Z")));
        assert!(in_accepted_range(t("9999-12-31T23:59:59Z")));
    }
}
