//! Operator work (the `admin` binary): budgets are set here, not by users.

use entity::{user, user_profiles};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

use crate::db::Db;

use crate::config::Config;
use crate::metering::rollup;
use crate::service::accounts::Email;
use crate::service::profiles;

/// Operator commands are one-off, so they use the direct endpoint.
async fn connect(config: &Config) -> Result<Db, String> {
    crate::db::connect_direct(&config.database, 1)
        .await
        .map(Db::orm)
        .map_err(|e| format!("could not connect to the database: {e}"))
}

async fn find_user(db: &Db, email: &str) -> Result<user::Model, String> {
    let email = Email::parse(email).map_err(|e| e.message())?;
    user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(db)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no user with email {}", email.as_str()))
}

/// Set a user's monthly token budget (0 = unlimited).
pub async fn set_budget(config: &Config, email: &str, tokens: i64) -> Result<String, String> {
    let db = connect(config).await?;
    let user = find_user(&db, email).await?;
    let profile = profiles::get_or_create(&db, &user.id, &config.defaults)
        .await
        .map_err(|e| e.message())?;
    let mut edit: user_profiles::ActiveModel = profile.into();
    edit.monthly_token_budget = Set(tokens);
    edit.update(&db).await.map_err(|e| e.to_string())?;
    Ok(format!(
        "{}: monthly token budget set to {tokens}{}",
        user.email,
        if tokens == 0 { " (unlimited)" } else { "" }
    ))
}

/// A user's budget and this month's use.
pub async fn show_budget(config: &Config, email: &str) -> Result<String, String> {
    let db = connect(config).await?;
    let user = find_user(&db, email).await?;
    let profile = profiles::get_or_create(&db, &user.id, &config.defaults)
        .await
        .map_err(|e| e.message())?;
    let used = rollup::tokens_this_month(&db, std::slice::from_ref(&user.id))
        .await
        .map_err(|e| e.message())?
        .get(&user.id)
        .copied()
        .unwrap_or(0);
    Ok(format!(
        "{}: budget {} tokens/month, used {used} this month",
        user.email, profile.monthly_token_budget
    ))
}

/// Override a user's call limits (`None`: back to the server's default; `Some(0)`: unlimited).
pub async fn set_limits(
    config: &Config,
    email: &str,
    max_concurrent_calls: Option<i32>,
    calls_per_minute: Option<i32>,
) -> Result<String, String> {
    use entity::user_limits;
    use sea_orm::sea_query::OnConflict;
    let db = connect(config).await?;
    let user = find_user(&db, email).await?;
    user_limits::Entity::insert(user_limits::ActiveModel {
        user_id: Set(user.id.clone()),
        max_concurrent_calls: Set(max_concurrent_calls),
        calls_per_minute: Set(calls_per_minute),
        updated_at: Set(crate::time::now_micros()),
    })
    .on_conflict(
        OnConflict::column(user_limits::Column::UserId)
            .update_columns([
                user_limits::Column::MaxConcurrentCalls,
                user_limits::Column::CallsPerMinute,
                user_limits::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec(&db)
    .await
    .map_err(|e| e.to_string())?;
    let show = |v: Option<i32>, default: u32| match v {
        None => format!("default ({default})"),
        Some(0) => "unlimited".to_owned(),
        Some(n) => n.to_string(),
    };
    Ok(format!(
        "{}: at most {} calls at once, {} per minute",
        user.email,
        show(max_concurrent_calls, config.calls.max_concurrent_calls),
        show(calls_per_minute, config.calls.calls_per_minute)
    ))
}
