//! `WS_*`: what one WebSocket connection, one user and one network may hold open.

use std::time::Duration;

use super::env::Env;

/// Limits of the WebSocket transport.
#[derive(Clone, Debug)]
pub struct WebSocketConfig {
    /// `WS_INIT_TIMEOUT_MS` (default 3000, as graphql-ws's own server): a socket that sends no
    /// `connection_init` by then is closed (4408).
    pub init_timeout: Duration,
    /// `WS_KEEPALIVE_SECS` (default 12): the server pings every socket this often (a WebSocket
    /// ping frame, and `ka` on the legacy protocol) and drops one that sent nothing, not even a
    /// pong, for two intervals.
    pub keepalive: Duration,
    /// `WS_MAX_OPERATIONS` (default 16): operations running at once on one socket.
    pub max_operations: usize,
    /// `WS_MAX_SOCKETS_PER_USER` (default 16, 0 = unlimited): open sockets of one user.
    pub max_sockets_per_user: usize,
    /// `WS_MAX_SOCKETS_PER_IP` (default 256, 0 = unlimited): open sockets from one client
    /// network (an IPv4 address, an IPv6 /64), signed in or not.
    pub max_sockets_per_ip: usize,
    /// `WS_MAX_SOCKETS` (default 10000, 0 = unlimited): open sockets in this process, all
    /// holders together.
    pub max_sockets: usize,
    /// `WS_MAX_ANONYMOUS_SOCKETS` (default 1000, 0 = unlimited): sockets in this process that
    /// initialised without signing in, so they cannot fill `WS_MAX_SOCKETS` for signed-in users.
    pub max_anonymous_sockets: usize,
    /// `WS_SESSION_CHECK_SECS` (default 10): how often a socket re-reads its session, so that a
    /// session ended elsewhere (another replica, a Better Auth app, expiry) stops it within
    /// this time. A sign-out on this server stops its sockets at once.
    pub session_check: Duration,
}

impl WebSocketConfig {
    pub fn read(env: &mut Env) -> Self {
        // Bounded above too: a timer far in the future would overflow.
        let at_least_one = |n: &u64| (1..=86_400).contains(n);
        let init_ms = env.parse_where(
            "WS_INIT_TIMEOUT_MS",
            3000u64,
            |n| (10..=600_000).contains(n),
            "a number of milliseconds from 10 to 600000",
        );
        let keepalive = env.parse_where(
            "WS_KEEPALIVE_SECS",
            12u64,
            at_least_one,
            "a whole number of seconds from 1 to 86400",
        );
        let session_check = env.parse_where(
            "WS_SESSION_CHECK_SECS",
            10u64,
            at_least_one,
            "a whole number of seconds from 1 to 86400",
        );
        WebSocketConfig {
            init_timeout: Duration::from_millis(init_ms),
            keepalive: Duration::from_secs(keepalive),
            max_operations: env.parse_where(
                "WS_MAX_OPERATIONS",
                16usize,
                |n| *n >= 1,
                "a whole number of at least 1",
            ),
            max_sockets_per_user: env.parse(
                "WS_MAX_SOCKETS_PER_USER",
                16usize,
                "a whole number, 0 for unlimited",
            ),
            max_sockets: env.parse(
                "WS_MAX_SOCKETS",
                10_000usize,
                "a whole number, 0 for unlimited",
            ),
            max_anonymous_sockets: env.parse(
                "WS_MAX_ANONYMOUS_SOCKETS",
                1000usize,
                "a whole number, 0 for unlimited",
            ),
            max_sockets_per_ip: env.parse(
                "WS_MAX_SOCKETS_PER_IP",
                256usize,
                "a whole number, 0 for unlimited",
            ),
            session_check: Duration::from_secs(session_check),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> (WebSocketConfig, Vec<String>) {
        let mut env = Env::new(
            vars.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let cfg = WebSocketConfig::read(&mut env);
        (cfg, env.problems)
    }

    #[test]
    fn defaults_and_bounds() {
        let (c, problems) = read(&[]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.init_timeout, Duration::from_secs(3));
        assert_eq!(c.keepalive, Duration::from_secs(12));
        assert_eq!(
            (
                c.max_operations,
                c.max_sockets_per_user,
                c.max_sockets_per_ip
            ),
            (16, 16, 256)
        );
        let (_, problems) = read(&[
            ("WS_INIT_TIMEOUT_MS", "0"),
            ("WS_MAX_OPERATIONS", "0"),
            ("WS_KEEPALIVE_SECS", "x"),
        ]);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
