//! The per-user profile (1:1 with `user`).

use std::collections::HashMap;

use entity::{usage_monthly, user_profiles};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, JoinType, QueryFilter,
    QuerySelect, Set,
};

use crate::config::ProfileDefaults;
use crate::error::{AppError, AppResult};
use crate::metering::rollup;
pub use crate::metering::rollup::Metered;

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
        created_at: Set(crate::time::now_micros()),
    })
    .on_conflict_do_nothing_on([user_profiles::Column::UserId])
    .exec(db)
    .await?;
    find(db, user_id)
        .await?
        .ok_or_else(|| AppError::internal("profile vanished right after it was created"))
}

/// The profiles of `user_ids` in one query, missing ones created with the defaults.
pub async fn get_or_create_many(
    db: &impl ConnectionTrait,
    user_ids: &[String],
    defaults: &ProfileDefaults,
) -> AppResult<HashMap<String, user_profiles::Model>> {
    let found = user_profiles::Entity::find()
        .filter(
            user_profiles::Column::UserId.is_in(crate::grouped::padded(user_ids.iter().cloned())),
        )
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.user_id.clone(), p))
        .collect();
    create_missing(db, user_ids, defaults, found, |p| p).await
}

/// `found` completed with a profile for each of `user_ids` it lacks (created with the defaults,
/// one at a time: users without one are rare), made into a value by `made`.
async fn create_missing<V>(
    db: &impl ConnectionTrait,
    user_ids: &[String],
    defaults: &ProfileDefaults,
    mut found: HashMap<String, V>,
    made: impl Fn(user_profiles::Model) -> V,
) -> AppResult<HashMap<String, V>> {
    for user_id in user_ids {
        if !found.contains_key(user_id) {
            let created = get_or_create(db, user_id, defaults).await?;
            found.insert(user_id.clone(), made(created));
        }
    }
    Ok(found)
}

/// [`get_or_create_many`], with each user's tokens of `month` (`YYYY-MM`) from the monthly
/// rollup read in the same statement: a usage meter (`profile { tokensUsedThisMonth }`) costs
/// one statement, not two.
pub async fn get_or_create_many_metered(
    db: &impl ConnectionTrait,
    user_ids: &[String],
    defaults: &ProfileDefaults,
    month: &str,
) -> AppResult<HashMap<String, Metered>> {
    let found = user_profiles::Entity::find()
        .filter(
            user_profiles::Column::UserId.is_in(crate::grouped::padded(user_ids.iter().cloned())),
        )
        .join(JoinType::LeftJoin, rollup::of_month(month))
        .select_also(usage_monthly::Entity)
        .all(db)
        .await?
        .into_iter()
        .map(|(profile, rollup)| {
            let used = rollup.map_or(0, |r| r.prompt_tokens + r.completion_tokens);
            (profile.user_id.clone(), Metered::read(profile, used))
        })
        .collect();
    create_missing(db, user_ids, defaults, found, |profile| Metered {
        profile,
        tokens_this_month: None,
    })
    .await
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
    if display_name.is_some_and(|n| n.chars().count() > DISPLAY_NAME_MAX || n.contains('\0')) {
        return Err(AppError::bad_input(format!(
            "displayName must be at most {DISPLAY_NAME_MAX} characters, without U+0000"
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
