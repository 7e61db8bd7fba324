//! The per-user profile (1:1 with `user`).

use chrono::{Datelike, TimeZone, Utc};
use entity::{token_usage, user_profiles};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QuerySelect, Set,
};

use crate::config::ProfileDefaults;
use crate::error::{AppError, AppResult};

/// The user's profile, created with the defaults if missing (users who signed up through a
/// Better Auth app sharing the database have none yet).
pub async fn get_or_create(
    db: &impl ConnectionTrait,
    user_id: &str,
    defaults: &ProfileDefaults,
) -> AppResult<user_profiles::Model> {
    if let Some(p) = find(db, user_id).await? {
        return Ok(p);
    }
    user_profiles::Entity::insert(user_profiles::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        user_id: Set(user_id.to_owned()),
        display_name: Set(None),
        default_model: Set(defaults.model.clone()),
        monthly_token_budget: Set(defaults.monthly_token_budget),
        created_at: Set(Utc::now()),
    })
    .on_conflict_do_nothing_on([user_profiles::Column::UserId])
    .exec(db)
    .await?;
    find(db, user_id)
        .await?
        .ok_or_else(|| AppError::internal("profile vanished right after it was created"))
}

async fn find(db: &impl ConnectionTrait, user_id: &str) -> AppResult<Option<user_profiles::Model>> {
    Ok(user_profiles::Entity::find()
        .filter(user_profiles::Column::UserId.eq(user_id))
        .one(db)
        .await?)
}

/// Longest display name accepted.
pub const DISPLAY_NAME_MAX: usize = 100;
/// Longest model id accepted.
pub const MODEL_ID_MAX: usize = 200;

/// Apply the given changes to the user's profile (`None` leaves a field as it is).
pub async fn update(
    db: &impl ConnectionTrait,
    user_id: &str,
    defaults: &ProfileDefaults,
    display_name: Option<&str>,
    default_model: Option<&str>,
) -> AppResult<user_profiles::Model> {
    let display_name = display_name.map(str::trim);
    if display_name.is_some_and(|n| n.chars().count() > DISPLAY_NAME_MAX) {
        return Err(AppError::bad_input(format!(
            "displayName must be at most {DISPLAY_NAME_MAX} characters"
        )));
    }
    let default_model = default_model.map(str::trim);
    if default_model.is_some_and(|m| {
        m.is_empty() || m.len() > MODEL_ID_MAX || m.chars().any(char::is_whitespace)
    }) {
        return Err(AppError::bad_input(
            "defaultModel must be a model id such as gpt-4o-mini",
        ));
    }
    let profile = get_or_create(db, user_id, defaults).await?;
    if display_name.is_none() && default_model.is_none() {
        return Ok(profile);
    }
    let mut edit: user_profiles::ActiveModel = profile.into();
    if let Some(name) = display_name {
        edit.display_name = Set((!name.is_empty()).then(|| name.to_owned()));
    }
    if let Some(model) = default_model {
        edit.default_model = Set(model.to_owned());
    }
    Ok(edit.update(db).await?)
}

/// Start of the current UTC calendar month.
pub fn month_start(now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month at midnight UTC exists")
}

#[derive(FromQueryResult)]
struct Total {
    total: Option<i64>,
}

/// Prompt plus completion tokens metered for the user since the start of this UTC month.
pub async fn tokens_used_this_month(db: &impl ConnectionTrait, user_id: &str) -> AppResult<i64> {
    let since = month_start(Utc::now());
    let row = token_usage::Entity::find()
        .select_only()
        .column_as(
            Expr::col(token_usage::Column::PromptTokens)
                .add(Expr::col(token_usage::Column::CompletionTokens))
                .sum(),
            "total",
        )
        .filter(token_usage::Column::UserId.eq(user_id))
        .filter(token_usage::Column::CreatedAt.gte(since))
        .into_model::<Total>()
        .one(db)
        .await?;
    Ok(row.and_then(|r| r.total).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_at_midnight_utc_on_the_first() {
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 19, 41, 3).unwrap();
        assert_eq!(
            month_start(t),
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
        );
    }
}
