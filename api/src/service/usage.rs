//! Usage aggregates over a window: whole days from the `usage_daily` rollup, the partial edge
//! days grouped from `token_usage` (see [`summary`]), identical on PostgreSQL and SQLite.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};

use crate::error::AppResult;
use crate::time::{ceil_day, day_key, floor_day};

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

/// One (UTC day, model) group, from the rollup or from the window's partial edge days.
#[derive(Debug, FromQueryResult)]
struct DayModelRow {
    day: String,
    model: String,
    calls: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_microcents: i64,
}

/// The user's usage in `[from, to)`.
///
/// Whole UTC days come from the `usage_daily` rollup (a few rows per day); only the partial
/// first and last day of the window are grouped from `token_usage` rows (through
/// `idx_usage_user_time`), so the cost does not grow with the user's history. Both parts are
/// one statement, so the answer is one consistent snapshot, and the totals, `byModel` and
/// `byDay` are sums of the same groups, so they always agree.
pub async fn summary(
    db: &impl ConnectionTrait,
    user_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AppResult<Summary> {
    let backend = db.get_database_backend();
    let (first_whole, end_whole) = (ceil_day(from), floor_day(to));
    // Whole days [first_whole, end_whole); raw rows in [from, first_whole) and [end_whole, to).
    // A window inside one day has no whole day: its rows are all raw.
    let (left_end, right_start, days) = if first_whole < end_whole {
        (first_whole, end_whole, (first_whole, end_whole))
    } else {
        (to, to, (first_whole, first_whole))
    };
    let (sums, day) = match backend {
        DbBackend::Postgres => (
            "count(*)::bigint, coalesce(sum(prompt_tokens), 0)::bigint, \
             coalesce(sum(completion_tokens), 0)::bigint, coalesce(sum(cost_microcents), 0)::bigint",
            "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        ),
        // Timestamps are RFC 3339 text in UTC: the first ten characters are the UTC day.
        _ => (
            "count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), \
             coalesce(sum(cost_microcents), 0)",
            "substr(created_at, 1, 10)",
        ),
    };
    // Numbered placeholders, which SQLite (through sqlx) takes as well as PostgreSQL.
    let sql = format!(
        "SELECT day, model, calls, prompt_tokens, completion_tokens, cost_microcents \
         FROM usage_daily WHERE user_id = $1 AND day >= $2 AND day < $3 \
         UNION ALL \
         SELECT {day} AS day, model, {sums} FROM token_usage \
         WHERE user_id = $1 AND ((created_at >= $4 AND created_at < $5) \
                              OR (created_at >= $6 AND created_at < $7)) \
         GROUP BY {day}, model"
    );
    let values: Vec<Value> = vec![
        user_id.into(),
        day_key(days.0).into(),
        day_key(days.1).into(),
        from.into(),
        left_end.into(),
        right_start.into(),
        to.into(),
    ];
    let groups =
        DayModelRow::find_by_statement(Statement::from_sql_and_values(backend, sql, values))
            .all(db)
            .await?;
    let mut by_model: std::collections::BTreeMap<String, Totals> = Default::default();
    let mut by_day: std::collections::BTreeMap<String, Totals> = Default::default();
    let mut totals = Totals::default();
    for g in groups {
        for t in [
            by_model.entry(g.model.clone()).or_default(),
            by_day.entry(g.day.clone()).or_default(),
            &mut totals,
        ] {
            t.calls += g.calls;
            t.prompt_tokens += g.prompt_tokens;
            t.completion_tokens += g.completion_tokens;
            t.cost_microcents += g.cost_microcents;
        }
    }
    Ok(Summary {
        totals,
        by_model: by_model
            .into_iter()
            .map(|(model, t)| ModelRow {
                model,
                calls: t.calls,
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                cost_microcents: t.cost_microcents,
            })
            .collect(),
        by_day: by_day
            .into_iter()
            .map(|(day, t)| DayRow {
                day,
                calls: t.calls,
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                cost_microcents: t.cost_microcents,
            })
            .collect(),
    })
}
