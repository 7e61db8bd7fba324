//! What calls may ask for, what they cost, who runs them, and what new users start with:
//! `MAX_PROMPT_CHARS`, `MAX_COMPLETION_TOKENS`, `DEFAULT_MAX_TOKENS`, `MODEL_PRICES`,
//! `INSTANCE_ID`, `CALL_LEASE_SECS`, `DEFAULT_MODEL`, `DEFAULT_MONTHLY_TOKEN_BUDGET`,
//! `USER_MAX_CONVERSATIONS`, `CONTEXT_MAX_TURNS`.

use std::time::Duration;

use super::env::Env;
use crate::metering::prices::PriceTable;

/// Limits on calls, the price table, and this process as the runner of calls.
#[derive(Clone, Debug)]
pub struct CallsConfig {
    /// `MAX_PROMPT_CHARS` (default 32 000).
    pub max_prompt_chars: usize,
    /// `MAX_COMPLETION_TOKENS` (default 4096): the largest `maxTokens` a call may ask for.
    pub max_completion_tokens: u32,
    /// `DEFAULT_MAX_TOKENS` (default 1024): `maxTokens` when a call gives none.
    pub default_max_tokens: u32,
    /// The models routed to and their prices: the defaults, with `MODEL_PRICES` applied.
    pub prices: PriceTable,
    /// `INSTANCE_ID` (default `HOSTNAME:PORT`): this process among replicas sharing a database.
    /// Keep it stable across restarts of the same replica, unique among live ones: a restarted
    /// replica finalises the calls its previous life left in flight at once.
    pub instance_id: String,
    /// `CALL_LEASE_SECS` (default 60): a running call's lease, renewed every third of it; calls
    /// whose lease lapsed (their process died) are finalised by any replica.
    pub lease: Duration,
    /// `CALL_FINALISE_RETRY_SECS` (default 60): how long a call's finalisation is retried
    /// while the database is unreachable or busy; after that the call is left to a lease sweep.
    pub finalise_retry: Duration,
    /// `CALL_CHECKPOINT_MS` (default 1000): how often running calls' relayed text is saved
    /// beside their lease, so a crash loses at most this much of a stream.
    pub checkpoint: Duration,
    /// `USER_MAX_CONCURRENT_CALLS` (default 4, 0 = unlimited): calls one user may have in flight,
    /// across replicas. An operator may override it per user (`admin set-limits`).
    pub max_concurrent_calls: u32,
    /// `USER_CALLS_PER_MINUTE` (default 20, 0 = unlimited): calls one user may start in any 60 s,
    /// across replicas; overridable per user like the above.
    pub calls_per_minute: u32,
    /// `USER_MAX_CONVERSATIONS` (default 10 000, 0 = unlimited): conversations one user may
    /// keep (archived ones count: nothing is ever deleted), so one free account cannot fill
    /// the database with empty conversations.
    pub max_conversations: u32,
    /// `CONTEXT_MAX_TURNS` (default 256, at least 1): the most earlier turns a conversation's
    /// call sends, however many the context window would hold, so that the work before a call
    /// (reading and counting its context) stays bounded for conversations of thousands of
    /// short turns.
    pub context_max_turns: usize,
}

/// The profile a new user gets.
#[derive(Clone, Debug)]
pub struct ProfileDefaults {
    /// `DEFAULT_MODEL` (default `gpt-4o-mini`, the `user_profiles.default_model` column default).
    pub model: String,
    /// `DEFAULT_MONTHLY_TOKEN_BUDGET`: 0 is unlimited. Default: 100,000 tokens when a real
    /// upstream is configured (`OPENAI_BASE_URL`: open sign-up must not mean unlimited spend),
    /// 0 with the built-in local upstream, which costs nothing.
    pub monthly_token_budget: i64,
}

impl CallsConfig {
    /// `port` is the server's, for the default `INSTANCE_ID`.
    pub fn read(env: &mut Env, port: u16) -> Self {
        let max_prompt_chars = env.parse_where(
            "MAX_PROMPT_CHARS",
            32_000usize,
            |n| *n >= 1,
            "a whole number of at least 1",
        );
        let max_completion_tokens = env.parse_where(
            "MAX_COMPLETION_TOKENS",
            4096u32,
            |n| *n >= 1,
            "a whole number of at least 1",
        );
        let default_max_tokens = env.parse_where(
            "DEFAULT_MAX_TOKENS",
            1024u32.min(max_completion_tokens),
            |n| *n >= 1 && *n <= max_completion_tokens,
            "a whole number from 1 to MAX_COMPLETION_TOKENS",
        );
        let prices = match env.get("MODEL_PRICES") {
            None => PriceTable::defaults(),
            Some(json) => PriceTable::defaults()
                .with_overrides(&json)
                .unwrap_or_else(|why| {
                    env.problem("MODEL_PRICES", &why);
                    PriceTable::defaults()
                }),
        };
        let host_name = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| env.get("HOSTNAME"))
            .unwrap_or_else(|| "localhost".to_owned());
        let instance_id = env
            .get("INSTANCE_ID")
            .unwrap_or_else(|| format!("{host_name}:{port}"));
        let lease = env.seconds("CALL_LEASE_SECS", 60);
        if lease < Duration::from_secs(3) {
            env.problem("CALL_LEASE_SECS", "must be at least 3");
        }
        let finalise_retry = env.seconds("CALL_FINALISE_RETRY_SECS", 60);
        let checkpoint = Duration::from_millis(env.parse_where(
            "CALL_CHECKPOINT_MS",
            1000u64,
            |n| *n >= 10,
            "a number of milliseconds of at least 10",
        ));
        let max_concurrent_calls = env.parse(
            "USER_MAX_CONCURRENT_CALLS",
            4u32,
            "a whole number, 0 for unlimited",
        );
        let calls_per_minute = env.parse(
            "USER_CALLS_PER_MINUTE",
            20u32,
            "a whole number, 0 for unlimited",
        );
        let max_conversations = env.parse(
            "USER_MAX_CONVERSATIONS",
            10_000u32,
            "a whole number, 0 for unlimited",
        );
        let context_max_turns = env.parse_where(
            "CONTEXT_MAX_TURNS",
            256usize,
            |n| *n >= 1,
            "a whole number of at least 1",
        );
        CallsConfig {
            context_max_turns,
            max_conversations,
            max_concurrent_calls,
            calls_per_minute,
            max_prompt_chars,
            max_completion_tokens,
            default_max_tokens,
            prices,
            instance_id,
            lease,
            finalise_retry,
            checkpoint,
        }
    }
}

impl ProfileDefaults {
    /// Budget given to new profiles when a real upstream is configured and
    /// `DEFAULT_MONTHLY_TOKEN_BUDGET` is not.
    pub const PAID_UPSTREAM_BUDGET: i64 = 100_000;

    /// The default model must be one the price table routes to; `paid_upstream` when
    /// `OPENAI_BASE_URL` is set.
    pub fn read(env: &mut Env, prices: &PriceTable, paid_upstream: bool) -> Self {
        let model = env
            .get("DEFAULT_MODEL")
            .unwrap_or_else(|| "gpt-4o-mini".to_owned());
        if prices.get(&model).is_none() {
            env.problem(
                "DEFAULT_MODEL",
                "must be a model in the price table (see MODEL_PRICES)",
            );
        }
        let monthly_token_budget = env.parse_where(
            "DEFAULT_MONTHLY_TOKEN_BUDGET",
            if paid_upstream {
                Self::PAID_UPSTREAM_BUDGET
            } else {
                0
            },
            |n| *n >= 0,
            "a whole number of tokens, 0 for unlimited",
        );
        ProfileDefaults {
            model,
            monthly_token_budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn defaults() {
        let mut e = env(&[]);
        let c = CallsConfig::read(&mut e, 4000);
        let d = ProfileDefaults::read(&mut e, &c.prices, false);
        assert!(e.problems.is_empty(), "{:?}", e.problems);
        assert_eq!(
            (
                c.max_prompt_chars,
                c.max_completion_tokens,
                c.default_max_tokens
            ),
            (32_000, 4096, 1024)
        );
        assert!(c.instance_id.ends_with(":4000"));
        assert_eq!(c.lease, Duration::from_secs(60));
        assert_eq!(
            (d.model.as_str(), d.monthly_token_budget),
            ("gpt-4o-mini", 0)
        );
    }

    #[test]
    fn the_default_max_tokens_follows_a_lower_maximum_and_may_not_exceed_it() {
        let mut e = env(&[("MAX_COMPLETION_TOKENS", "256")]);
        assert_eq!(CallsConfig::read(&mut e, 0).default_max_tokens, 256);
        let mut e = env(&[
            ("MAX_COMPLETION_TOKENS", "256"),
            ("DEFAULT_MAX_TOKENS", "300"),
        ]);
        CallsConfig::read(&mut e, 0);
        assert!(
            e.problems[0].starts_with("DEFAULT_MAX_TOKENS"),
            "{:?}",
            e.problems
        );
    }

    #[test]
    fn the_default_model_must_be_priced_and_leases_long_enough() {
        let mut e = env(&[
            (
                "MODEL_PRICES",
                r#"{"local-llama": {"input": 0, "output": 0}, "gpt-4o-mini": null}"#,
            ),
            ("CALL_LEASE_SECS", "2"),
        ]);
        let c = CallsConfig::read(&mut e, 0);
        ProfileDefaults::read(&mut e, &c.prices, false);
        let names: Vec<&str> = e
            .problems
            .iter()
            .map(|p| p.split(' ').next().unwrap())
            .collect();
        assert_eq!(names, ["CALL_LEASE_SECS", "DEFAULT_MODEL"]);
    }
}
