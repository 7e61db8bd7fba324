//! `OPENAI_*` and `LLM_*_TIMEOUT_MS`: the OpenAI-compatible upstream and how long to wait for it.

use std::time::Duration;

use url::Url;

use super::env::{Env, Secret};

/// The OpenAI-compatible upstream.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `OPENAI_BASE_URL`, e.g. `https://api.openai.com/v1`. Unset: the built-in local upstream.
    pub base_url: Option<Url>,
    /// `OPENAI_API_KEY`.
    pub api_key: Option<Secret>,
    /// `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID` (OpenAI's `OpenAI-Organization` and
    /// `OpenAI-Project` headers), if set.
    pub organization: Option<String>,
    pub project: Option<String>,
    /// `LLM_CONNECT_TIMEOUT_MS` (default 10 000).
    pub connect_timeout: Duration,
    /// `LLM_FIRST_TOKEN_TIMEOUT_MS` (default 60 000): from sending the request to the first token.
    pub first_token_timeout: Duration,
    /// `LLM_IDLE_TIMEOUT_MS` (default 30 000): the longest gap between two chunks.
    pub idle_timeout: Duration,
}

impl UpstreamConfig {
    pub fn read(env: &mut Env) -> Self {
        let base_url = env
            .get("OPENAI_BASE_URL")
            .and_then(|raw| match Url::parse(&raw) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
                _ => {
                    env.problem(
                        "OPENAI_BASE_URL",
                        "must be an http:// or https:// URL such as https://api.openai.com/v1",
                    );
                    None
                }
            });
        // Sent as headers: a value with a control character (a pasted line break) would fail
        // every call, so it is refused at start-up. Keys and ids are printable ASCII; so must
        // these be.
        let mut header = |name: &str| {
            let value = env.get(name)?;
            if value.bytes().all(|b| b.is_ascii_graphic()) {
                return Some(value);
            }
            env.problem(
                name,
                "must be printable ASCII without spaces or line breaks",
            );
            None
        };
        let api_key = header("OPENAI_API_KEY").map(Secret::new);
        let organization = header("OPENAI_ORG_ID");
        let project = header("OPENAI_PROJECT_ID");
        UpstreamConfig {
            base_url,
            api_key,
            organization,
            project,
            connect_timeout: env.millis("LLM_CONNECT_TIMEOUT_MS", 10_000),
            first_token_timeout: env.millis("LLM_FIRST_TOKEN_TIMEOUT_MS", 60_000),
            idle_timeout: env.millis("LLM_IDLE_TIMEOUT_MS", 30_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> (UpstreamConfig, Vec<String>) {
        let mut env = Env::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let c = UpstreamConfig::read(&mut env);
        (c, env.problems)
    }

    #[test]
    fn keys_that_cannot_be_a_header_are_refused() {
        for bad in ["sk-a\nbc", "sk abc", "sk-\u{e9}"] {
            let (c, problems) = read(&[
                ("OPENAI_API_KEY", bad),
                ("OPENAI_ORG_ID", bad),
                ("OPENAI_PROJECT_ID", bad),
            ]);
            assert!(c.api_key.is_none() && c.organization.is_none() && c.project.is_none());
            assert_eq!(problems.len(), 3, "{bad:?}");
        }
        let (c, problems) = read(&[("OPENAI_API_KEY", "sk-proj-AZaz09_-")]);
        assert!(problems.is_empty());
        assert_eq!(c.api_key.unwrap().expose(), "sk-proj-AZaz09_-");
    }

    #[test]
    fn unset_means_the_local_upstream_with_default_timeouts() {
        let (c, problems) = read(&[]);
        assert!(problems.is_empty());
        assert!(c.base_url.is_none() && c.api_key.is_none());
        assert_eq!(c.first_token_timeout, Duration::from_secs(60));
    }

    #[test]
    fn a_bad_url_is_reported_without_its_value() {
        let (_, problems) = read(&[
            ("OPENAI_BASE_URL", "ftp://key:sk-1@x"),
            ("LLM_IDLE_TIMEOUT_MS", "0"),
        ]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(!problems[0].contains("sk-1"));
    }
}
