//! Usage aggregates: the signed-in user's calls, tokens and cost over a window.

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::scalars::Int64;
use crate::auth::{SignedIn, Viewer};
use crate::error::AppError;
use crate::service::usage;
use crate::state::AppState;
use crate::time;

/// Longest `usage` window.
pub const MAX_USAGE_DAYS: i64 = 400;

/// Calls, tokens and cost of a group of calls.
#[derive(SimpleObject)]
pub struct ModelUsage {
    /// The model id.
    pub model: String,
    /// Metered calls.
    pub calls: i32,
    /// Prompt tokens metered.
    pub prompt_tokens: Int64,
    /// Completion tokens metered.
    pub completion_tokens: Int64,
    /// Micro-cents (1 USD = 10^8).
    pub cost_microcents: Int64,
}

/// Usage of one UTC day.
#[derive(SimpleObject)]
pub struct DailyUsage {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: NaiveDate,
    /// Metered calls.
    pub calls: i32,
    /// Prompt tokens metered.
    pub prompt_tokens: Int64,
    /// Completion tokens metered.
    pub completion_tokens: Int64,
    /// Micro-cents (1 USD = 10^8).
    pub cost_microcents: Int64,
}

/// The caller's usage in a window `[from, to)`.
#[derive(SimpleObject)]
pub struct UsageSummary {
    /// Start of the window (included).
    pub from: DateTime<Utc>,
    /// End of the window (excluded).
    pub to: DateTime<Utc>,
    /// Metered calls (every upstream call, whatever its outcome).
    pub calls: i32,
    /// Prompt tokens metered.
    pub prompt_tokens: Int64,
    /// Completion tokens metered.
    pub completion_tokens: Int64,
    /// Micro-cents (1 USD = 10^8).
    pub cost_microcents: Int64,
    /// Per model, by model id.
    pub by_model: Vec<ModelUsage>,
    /// Per UTC day with any usage, oldest first.
    pub by_day: Vec<DailyUsage>,
}

fn int(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[derive(Default)]
pub struct UsageQuery;

#[Object]
impl UsageQuery {
    /// The signed-in user's usage in `[from, to)`: totals, per model and per UTC day. The
    /// window defaults to the current UTC calendar month and may span at most 400 days.
    #[graphql(
        guard = "SignedIn",
        complexity = "5 * super::QUERY_COST + child_complexity"
    )]
    async fn usage(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<UsageSummary> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let (month_start, month_end) = time::month_window(time::now_micros())
            .ok_or_else(|| AppError::internal("the clock is past the calendar's end"))?;
        let from = from.unwrap_or(month_start);
        let to = to.unwrap_or(month_end);
        if !time::in_accepted_range(from) || !time::in_accepted_range(to) {
            return Err(
                AppError::bad_input("from and to must be in the years 1970 to 9999").into(),
            );
        }
        if from >= to {
            return Err(AppError::bad_input("from must be before to").into());
        }
        if to - from > Duration::days(MAX_USAGE_DAYS) {
            return Err(AppError::bad_input(format!(
                "the window may span at most {MAX_USAGE_DAYS} days"
            ))
            .into());
        }
        let s = usage::summary(&state.db, &viewer.user.id, from, to).await?;
        Ok(UsageSummary {
            from,
            to,
            calls: int(s.totals.calls),
            prompt_tokens: Int64(s.totals.prompt_tokens),
            completion_tokens: Int64(s.totals.completion_tokens),
            cost_microcents: Int64(s.totals.cost_microcents),
            by_model: s
                .by_model
                .into_iter()
                .map(|m| ModelUsage {
                    model: m.model,
                    calls: int(m.calls),
                    prompt_tokens: Int64(m.prompt_tokens),
                    completion_tokens: Int64(m.completion_tokens),
                    cost_microcents: Int64(m.cost_microcents),
                })
                .collect(),
            by_day: s
                .by_day
                .into_iter()
                .filter_map(|d| {
                    Some(DailyUsage {
                        day: NaiveDate::parse_from_str(&d.day, "%Y-%m-%d").ok()?,
                        calls: int(d.calls),
                        prompt_tokens: Int64(d.prompt_tokens),
                        completion_tokens: Int64(d.completion_tokens),
                        cost_microcents: Int64(d.cost_microcents),
                    })
                })
                .collect(),
        })
    }
}
