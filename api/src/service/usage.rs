//! Usage aggregates over a window, computed by the database (GROUP BY over `token_usage`'s
//! `idx_usage_user_time`), identical on PostgreSQL and SQLite.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};

use crate::error::AppResult;

/// Calls, tokens and cost of one group (or of the whole window).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_microcents: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, FromQueryResult)]
pub struct ModelRow {
    pub model: String,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_microcents: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, FromQueryResult)]
pub struct DayRow {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_microcents: i64,
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub totals: Totals,
    pub by_model: Vec<ModelRow>,
    pub by_day: Vec<DayRow>,
}

const SUMS_PG: &str = "count(*)::bigint AS calls, \
    coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens, \
    coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens, \
    coalesce(sum(cost_microcents), 0)::bigint AS cost_microcents";
const SUMS_SQLITE: &str = "count(*) AS calls, \
    coalesce(sum(prompt_tokens), 0) AS prompt_tokens, \
    coalesce(sum(completion_tokens), 0) AS completion_tokens, \
    coalesce(sum(cost_microcents), 0) AS cost_microcents";

/// The user's usage in `[from, to)`.
pub async fn summary(
    db: &impl ConnectionTrait,
    user_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AppResult<Summary> {
    let backend = db.get_database_backend();
    let (sums, day, window) = match backend {
        DbBackend::Postgres => (
            SUMS_PG,
            "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            "user_id = $1 AND created_at >= $2 AND created_at < $3",
        ),
        // Timestamps are stored as RFC 3339 text in UTC: the first ten characters are the UTC day.
        _ => (
            SUMS_SQLITE,
            "substr(created_at, 1, 10)",
            "user_id = ? AND created_at >= ? AND created_at < ?",
        ),
    };
    let values = || -> Vec<Value> { vec![user_id.into(), from.into(), to.into()] };
    let stmt = |sql: String| Statement::from_sql_and_values(backend, sql, values());
    let by_model = ModelRow::find_by_statement(stmt(format!(
        "SELECT model, {sums} FROM token_usage WHERE {window} GROUP BY model ORDER BY model"
    )))
    .all(db)
    .await?;
    let by_day = DayRow::find_by_statement(stmt(format!(
        "SELECT {day} AS day, {sums} FROM token_usage WHERE {window} GROUP BY {day} ORDER BY day"
    )))
    .all(db)
    .await?;
    // The totals are the sum of the per-model rows, so the two always agree (no separate total
    // that a commit between two statements could make differ).
    let totals = by_model.iter().fold(Totals::default(), |t, m| Totals {
        calls: t.calls + m.calls,
        prompt_tokens: t.prompt_tokens + m.prompt_tokens,
        completion_tokens: t.completion_tokens + m.completion_tokens,
        cost_microcents: t.cost_microcents + m.cost_microcents,
    });
    Ok(Summary {
        totals,
        by_model,
        by_day,
    })
}
