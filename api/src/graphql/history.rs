//! The read side: the history feed and usage aggregates.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

use super::completions::{CallStatus, PromptLog};
use super::cursor;
use super::scalars::Int64;
use crate::app::AppState;
use crate::auth::{SignedIn, Viewer};
use crate::error::AppError;
use crate::service::history::{self, Filter, Window};
use crate::service::usage;

/// Largest page `first`/`last` may ask for.
pub const MAX_PAGE: i32 = 100;
/// Page size when neither `first` nor `last` is given.
pub const DEFAULT_PAGE: u64 = 20;
/// Longest `usage` window.
pub const MAX_USAGE_DAYS: i64 = 400;

/// Narrows the history feed.
#[derive(InputObject, Default)]
pub struct HistoryFilter {
    /// Only calls to this model.
    pub model: Option<String>,
    /// Only calls that ended so.
    pub status: Option<CallStatus>,
}

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

/// Start of the UTC calendar month `at` is in, and of the next one.
pub fn month_window(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists");
    let (y, m) = if at.month() == 12 {
        (at.year() + 1, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists");
    (start, end)
}

fn page_size(name: &str, n: i32) -> Result<u64, AppError> {
    if (0..=MAX_PAGE).contains(&n) {
        Ok(n as u64)
    } else {
        Err(AppError::bad_input(format!(
            "{name} must be from 0 to {MAX_PAGE}"
        )))
    }
}

#[derive(Default)]
pub struct HistoryQuery;

#[Object]
impl HistoryQuery {
    /// The signed-in user's calls, newest first, as a Relay connection. Page forward with
    /// `first`/`after` or backward with `last`/`before` (at most 100 per page; 20 by default).
    /// Cursors are opaque and valid only for the caller's own feed.
    #[graphql(
        guard = "SignedIn",
        complexity = "first.or(last).map_or(DEFAULT_PAGE as usize, |n| n.max(0) as usize) * child_complexity + 1"
    )]
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        filter: Option<HistoryFilter>,
    ) -> async_graphql::Result<Connection<String, PromptLog>> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let secret = state.config.auth.secret.expose().as_bytes();
        let user_id = viewer.user.id.as_str();
        let decode = |c: &str| cursor::decode(secret, user_id, c);
        let window = match (first, last) {
            (Some(_), Some(_)) => {
                return Err(AppError::bad_input("give first or last, not both").into());
            }
            (_, Some(last)) => {
                if after.is_some() {
                    return Err(
                        AppError::bad_input("last pages backward: use before, not after").into(),
                    );
                }
                Window::Backward {
                    last: page_size("last", last)?,
                    before: before.as_deref().map(decode).transpose()?,
                }
            }
            (first, None) => {
                if before.is_some() {
                    return Err(
                        AppError::bad_input("first pages forward: use after, not before").into(),
                    );
                }
                Window::Forward {
                    first: first.map_or(Ok(DEFAULT_PAGE), |n| page_size("first", n))?,
                    after: after.as_deref().map(decode).transpose()?,
                }
            }
        };
        let filter = filter.unwrap_or_default();
        let filter = Filter {
            model: filter.model,
            status: filter.status.map(Into::into),
        };
        let page = history::page(&state.db, user_id, &filter, window).await?;
        let mut connection = Connection::new(page.has_previous_page, page.has_next_page);
        connection.edges.extend(page.logs.into_iter().map(|log| {
            Edge::new(
                cursor::encode(secret, user_id, (&log).into()),
                PromptLog(log),
            )
        }));
        Ok(connection)
    }

    /// The signed-in user's usage in `[from, to)`: totals, per model and per UTC day. The
    /// window defaults to the current UTC calendar month and may span at most 400 days.
    #[graphql(guard = "SignedIn")]
    async fn usage(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<UsageSummary> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let (month_start, month_end) = month_window(Utc::now());
        let from = from.unwrap_or(month_start);
        let to = to.unwrap_or(month_end);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_windows_are_utc_calendar_months() {
        let (a, b) = month_window(Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap());
        assert_eq!(a, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(b, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }
}
