//! Sign-in and sign-up throttling per client IP and per email (Better Auth's default for these
//! paths: 3 attempts per 10 s). In memory, per process: with N replicas a client that reaches
//! all of them gets up to N times the limit (see the README).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::AppError;

/// Keys over this many trigger a sweep of idle entries, so memory stays bounded.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Clone)]
pub struct AuthRateLimiter {
    by_ip: Arc<DefaultKeyedRateLimiter<String>>,
    by_email: Arc<DefaultKeyedRateLimiter<String>>,
}

impl AuthRateLimiter {
    /// `max` attempts per `window` for each IP and for each email.
    pub fn new(max: u32, window: Duration) -> Self {
        let max = NonZeroU32::new(max.max(1)).expect("at least 1");
        let quota = Quota::with_period(window / max.get())
            .expect("a non-zero period")
            .allow_burst(max);
        Self {
            by_ip: Arc::new(RateLimiter::keyed(quota)),
            by_email: Arc::new(RateLimiter::keyed(quota)),
        }
    }

    /// Count one attempt; `RATE_LIMITED` when the IP or the email is over its limit.
    pub fn check(&self, ip: &str, email: &str) -> Result<(), AppError> {
        for (limiter, key) in [(&self.by_ip, ip), (&self.by_email, email)] {
            if limiter.len() > SWEEP_ABOVE {
                limiter.retain_recent();
            }
            if let Err(not_until) = limiter.check_key(&key.to_owned()) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(AppError::RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_per_window_per_ip_and_per_email() {
        let limiter = AuthRateLimiter::new(3, Duration::from_secs(10));
        for _ in 0..3 {
            limiter.check("1.1.1.1", "a@x.io").unwrap();
        }
        let err = limiter.check("1.1.1.1", "b@x.io").unwrap_err();
        assert_eq!(err.code(), "RATE_LIMITED");
        // Another IP is still welcome, but not for the email that was hammered.
        limiter.check("2.2.2.2", "c@x.io").unwrap();
        assert!(limiter.check("3.3.3.3", "a@x.io").is_err());
    }
}
