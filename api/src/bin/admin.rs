//! Operator commands, against the database the server uses (`DATABASE_URL_DIRECT`, else
//! `DATABASE_URL`, else the embedded SQLite file):
//!
//! ```text
//! cargo run -p api --bin admin -- set-budget <email> <tokens>   # monthly token budget, 0 = unlimited
//! cargo run -p api --bin admin -- show-budget <email>
//! cargo run -p api --bin admin -- set-limits <email> <concurrent> <per-minute>   # each a number (0 = unlimited) or `default`
//! ```
//!
//! Budgets are the operator's to set: there is no GraphQL operation for users to change their own.

#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use api::config::Config;
use api::service::admin;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["set-budget", email, tokens] => match tokens.parse::<i64>() {
            Ok(t) if t >= 0 => admin::set_budget(&config, email, t).await,
            _ => Err(format!(
                "tokens must be a whole number of at least 0, not {tokens:?}"
            )),
        },
        ["show-budget", email] => admin::show_budget(&config, email).await,
        ["set-limits", email, concurrent, per_minute] => {
            match (limit(concurrent), limit(per_minute)) {
                (Ok(c), Ok(m)) => admin::set_limits(&config, email, c, m).await,
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        _ => Err(
            "usage: admin set-budget <email> <tokens> | admin show-budget <email> | admin set-limits <email> <concurrent> <per-minute>"
                .into(),
        ),
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// A limit argument: a whole number (0 = unlimited) or `default`.
fn limit(arg: &str) -> Result<Option<i32>, String> {
    match arg {
        "default" => Ok(None),
        n => match n.parse::<i32>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => Err(format!(
                "a limit is a whole number of at least 0 or `default`, not {n:?}"
            )),
        },
    }
}
