//! Reads of the per-user monthly rollup (`usage_monthly`). The database keeps it: a trigger on
//! `token_usage` adds every usage row, whoever writes it (this server, or another app sharing
//! the database), in the same transaction (migrations 0006 and 0007).

use std::collections::HashMap;

use entity::usage_monthly;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::error::{AppError, AppResult};
use crate::time::{month_key, now_micros};

/// Lock the user's rollup row for `month` (creating it) and return the tokens metered in it, so
/// admissions of one user run one at a time on both databases: the first statement of the
/// transaction is a write to that row.
pub async fn lock_month(db: &impl ConnectionTrait, user_id: &str, month: &str) -> AppResult<i64> {
    // Only the key: the counters start at their defaults, and the request role may write
    // nothing else of this table (migration 0009).
    usage_monthly::Entity::insert(usage_monthly::ActiveModel {
        user_id: Set(user_id.to_owned()),
        month: Set(month.to_owned()),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::columns([usage_monthly::Column::UserId, usage_monthly::Column::Month])
            .value(
                usage_monthly::Column::Calls,
                Expr::col((usage_monthly::Entity, usage_monthly::Column::Calls)),
            )
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    usage_monthly::Entity::find_by_id((user_id.to_owned(), month.to_owned()))
        .one(db)
        .await?
        .map(|m| m.prompt_tokens + m.completion_tokens)
        .ok_or_else(|| AppError::internal("usage rollup row missing right after its upsert"))
}

/// Tokens metered this UTC month for each user (0 for users without usage), in one query.
pub async fn tokens_this_month(
    db: &impl ConnectionTrait,
    user_ids: &[String],
) -> AppResult<HashMap<String, i64>> {
    let rows = usage_monthly::Entity::find()
        .filter(usage_monthly::Column::UserId.is_in(user_ids.iter().cloned()))
        .filter(usage_monthly::Column::Month.eq(month_key(now_micros())))
        .all(db)
        .await?;
    let mut used: HashMap<String, i64> = user_ids.iter().map(|k| (k.clone(), 0)).collect();
    for r in rows {
        used.insert(r.user_id, r.prompt_tokens + r.completion_tokens);
    }
    Ok(used)
}
