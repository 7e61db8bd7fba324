//! Reads of the per-user monthly rollup (`usage_monthly`). The database keeps it: a trigger on
//! `token_usage` adds every usage row, whoever writes it (this server, or another app sharing
//! the database), in the same transaction (migrations 0006 and 0007).

use std::collections::HashMap;

use entity::{usage_monthly, user_profiles};
use sea_orm::sea_query::{Expr, ExprTrait, IntoCondition, OnConflict, Value};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, RelationDef, Set, Statement,
};

use crate::error::{AppError, AppResult};
use crate::time::{month_key, now_micros};

/// Lock the users' rollup rows for `month` (creating them) and return the tokens metered in
/// each, so admissions of one user run one at a time on both databases: the first statement of
/// the transaction is a write to those rows. `user_ids` must be sorted and distinct: concurrent
/// transactions then take the locks in one order and cannot deadlock on them.
///
/// On PostgreSQL one statement: the upsert returns the rows it locked (their newest version,
/// even after waiting for another transaction to commit it), with the users as one array (one
/// statement text for any number). On SQLite the upsert, then a read.
pub async fn lock_months(
    db: &impl ConnectionTrait,
    user_ids: &[&str],
    month: &str,
) -> AppResult<HashMap<String, i64>> {
    debug_assert!(user_ids.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
    // Only the key: the counters start at their defaults, and the request role may write
    // nothing else of this table (migration 0009).
    let rows: Vec<(String, i64)> = if db.get_database_backend() == DbBackend::Postgres {
        let sql = r#"INSERT INTO "usage_monthly" ("user_id", "month")
SELECT u.user_id, $2 FROM UNNEST($1::text[]) WITH ORDINALITY AS u(user_id, n) ORDER BY u.n
ON CONFLICT ("user_id", "month") DO UPDATE SET "calls" = "usage_monthly"."calls"
RETURNING "user_id", "prompt_tokens" + "completion_tokens" AS "used""#;
        let users: Vec<String> = user_ids.iter().map(|u| (*u).to_owned()).collect();
        let locked = Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [Value::from(users), Value::from(month.to_owned())],
        );
        db.query_all_raw(locked)
            .await?
            .iter()
            .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
            .collect::<Result<_, sea_orm::DbErr>>()?
    } else {
        upsert_then_read(db, user_ids, month).await?
    };
    if rows.len() != user_ids.len() {
        return Err(AppError::internal(
            "usage rollup rows missing right after their upsert",
        ));
    }
    Ok(rows.into_iter().collect())
}

/// SQLite's `lock_months`: the upsert, then the rows it wrote.
async fn upsert_then_read(
    db: &impl ConnectionTrait,
    user_ids: &[&str],
    month: &str,
) -> AppResult<Vec<(String, i64)>> {
    usage_monthly::Entity::insert_many(user_ids.iter().map(|user| usage_monthly::ActiveModel {
        user_id: Set((*user).to_owned()),
        month: Set(month.to_owned()),
        ..Default::default()
    }))
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
    let rows = usage_monthly::Entity::find()
        .filter(
            usage_monthly::Column::UserId.is_in(crate::grouped::padded(user_ids.iter().copied())),
        )
        .filter(usage_monthly::Column::Month.eq(month))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|m| (m.user_id, m.prompt_tokens + m.completion_tokens))
        .collect())
}

/// Tokens metered this UTC month for each user (0 for users without usage), in one query.
pub async fn tokens_this_month(
    db: &impl ConnectionTrait,
    user_ids: &[String],
) -> AppResult<HashMap<String, i64>> {
    let rows = usage_monthly::Entity::find()
        .filter(
            usage_monthly::Column::UserId.is_in(crate::grouped::padded(user_ids.iter().cloned())),
        )
        .filter(usage_monthly::Column::Month.eq(month_key(now_micros())))
        .all(db)
        .await?;
    let mut used: HashMap<String, i64> = user_ids.iter().map(|k| (k.clone(), 0)).collect();
    for r in rows {
        used.insert(r.user_id, r.prompt_tokens + r.completion_tokens);
    }
    Ok(used)
}

/// A profile with the tokens its user has metered this UTC month (what the budget is
/// checked against), when they were read with it.
#[derive(Clone, Debug)]
pub struct Metered {
    pub profile: user_profiles::Model,
    /// None for a profile created by this read: ask the rollup.
    pub tokens_this_month: Option<i64>,
}

impl Metered {
    /// A profile read with its user's `tokens` this month (0 when the rollup has no row).
    pub fn read(profile: user_profiles::Model, tokens: i64) -> Self {
        Metered {
            profile,
            tokens_this_month: Some(tokens),
        }
    }
}

/// `user_profiles` to its user's row of `month` (`YYYY-MM`) in the monthly rollup, for a left
/// join: the profile's user's tokens that month, read with the profile.
pub fn of_month(month: &str) -> RelationDef {
    let month = month.to_owned();
    user_profiles::Entity::belongs_to(usage_monthly::Entity)
        .from(user_profiles::Column::UserId)
        .to(usage_monthly::Column::UserId)
        .on_condition(move |_, rollup| {
            Expr::col((rollup, usage_monthly::Column::Month))
                .eq(month.clone())
                .into_condition()
        })
        .into()
}
