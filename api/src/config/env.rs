//! Reading variables: every problem is collected (not just the first), and values that may be
//! secret are never echoed back.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// A string that never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads variables and collects problems instead of stopping at the first.
pub struct Env {
    vars: HashMap<String, String>,
    pub problems: Vec<String>,
}

impl Env {
    pub fn new(vars: HashMap<String, String>) -> Self {
        Self {
            vars,
            problems: Vec::new(),
        }
    }

    /// The variable's value; unset and empty are the same.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn problem(&mut self, name: &str, expected: &str) {
        let shown = match self.get(name) {
            // Never echo a value that may be a secret or contain a password.
            Some(_)
                if ["SECRET", "KEY", "URL", "PRICES"]
                    .iter()
                    .any(|s| name.contains(s)) =>
            {
                String::new()
            }
            Some(v) => format!(" (got {v:?})"),
            None => String::new(),
        };
        self.problems.push(format!("{name} {expected}{shown}"));
    }

    pub fn parse<T: std::str::FromStr>(&mut self, name: &str, default: T, expected: &str) -> T {
        self.parse_where(name, default, |_| true, expected)
    }

    /// The parsed value, or `default` when unset. A bad value is recorded as a problem (and
    /// `default` returned so reading can go on and report every problem at once).
    pub fn parse_where<T: std::str::FromStr>(
        &mut self,
        name: &str,
        default: T,
        valid: impl Fn(&T) -> bool,
        expected: &str,
    ) -> T {
        match self.get(name) {
            None => default,
            Some(raw) => match raw.parse::<T>() {
                Ok(v) if valid(&v) => v,
                _ => {
                    self.problem(name, &format!("must be {expected}"));
                    default
                }
            },
        }
    }

    pub fn seconds(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_secs(self.parse_where(
            name,
            default,
            |s: &u64| *s >= 1 && *s <= 86_400,
            "a whole number of seconds from 1 to 86400",
        ))
    }

    pub fn millis(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_millis(self.parse_where(
            name,
            default,
            |ms: &u64| *ms >= 1 && *ms <= 3_600_000,
            "a whole number of milliseconds from 1 to 3600000",
        ))
    }

    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            None => default,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(_) => {
                self.problem(name, "must be true or false");
                default
            }
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
    fn unset_and_blank_are_the_default_and_bad_values_are_collected() {
        let mut e = env(&[("A", "  "), ("B", "x"), ("C", "0"), ("D", "yes")]);
        assert_eq!(e.parse("A", 7u32, "a number"), 7);
        assert_eq!(e.parse("B", 7u32, "a number"), 7);
        assert_eq!(e.seconds("C", 5), Duration::from_secs(5));
        assert!(e.flag("D", false));
        assert_eq!(e.problems.len(), 2, "{:?}", e.problems);
        assert!(e.problems[0].starts_with("B must be a number (got \"x\")"));
    }

    #[test]
    fn values_of_secret_looking_names_are_never_echoed() {
        let mut e = env(&[
            ("API_KEY", "sk-123"),
            ("DATABASE_URL", "postgres://u:pw@h/d"),
        ]);
        e.problem("API_KEY", "is wrong");
        e.problem("DATABASE_URL", "is wrong");
        let all = e.problems.join("\n");
        assert!(!all.contains("sk-123") && !all.contains("pw"), "{all}");
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "Secret(***)");
    }
}
