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

    /// Count one attempt; `RATE_LIMITED` when the client's network or the email is over its
    /// limit.
    pub fn check(&self, ip: &str, email: &str) -> Result<(), AppError> {
        let network = network_key(ip);
        for (limiter, key) in [(&self.by_ip, network.as_str()), (&self.by_email, email)] {
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

/// The throttling key of an address: an IPv4 address itself, an IPv6 address's /64 (one
/// subscriber's network: a /64 holds 2^64 addresses, so keying by address would give one
/// client 2^64 budgets).
pub fn network_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(network_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            network_key("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(network_key("::ffff:1.2.3.4"), "1.2.3.4");
        assert_eq!(network_key("1.2.3.4"), "1.2.3.4");
        let limiter = AuthRateLimiter::new(1, Duration::from_secs(10));
        limiter.check("2001:db8:1:2::1", "a@x.io").unwrap();
        assert!(limiter.check("2001:db8:1:2::2", "b@x.io").is_err());
        limiter.check("2001:db8:1:3::1", "c@x.io").unwrap();
    }

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
