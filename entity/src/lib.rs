//! SeaORM entities for every table, in the shape `sea-orm-cli generate entity` gives them, plus the
//! typed [`prompt_logs::CallStatus`]. No business logic lives here.
//!
//! Better Auth's tables use `timestamp` without time zone; their `DateTime` (naive) fields hold
//! UTC by convention, as Better Auth writes them. The AI-app tables use `timestamptz`
//! ([`sea_orm::prelude::DateTimeUtc`]).

pub mod account;
pub mod call_reservations;
pub mod conversation_turns;
pub mod conversations;
pub mod prelude;
pub mod prompt_log_usage;
pub mod prompt_logs;
pub mod session;
pub mod token_usage;
pub mod usage_daily;
pub mod usage_monthly;
pub mod user;
pub mod user_limits;
pub mod user_profiles;
pub mod verification;
