//! Sign-up and sign-in with email and password.

use email_address::EmailAddress;
use entity::{account, user, user_profiles};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, SqlErr,
};

use crate::auth::password::Hasher;
use crate::auth::session::{self, ClientInfo};
use crate::config::ProfileDefaults;
use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::time::{now_micros, now_millis_naive};

/// Better Auth's password length bounds.
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;
const NAME_MAX: usize = 256;

/// An email address as stored: trimmed, lower-cased, and valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> AppResult<Email> {
        let email = raw.trim().to_lowercase();
        if email.len() > 254 || !EmailAddress::is_valid(&email) || !email.contains('.') {
            return Err(AppError::bad_input("email is not a valid email address"));
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password within Better Auth's length bounds (checked before any hashing).
pub fn check_password(password: &str) -> AppResult<()> {
    let n = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(AppError::bad_input(format!(
            "password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters"
        )));
    }
    Ok(())
}

/// A display name as stored: trimmed, 1 to 256 characters.
pub fn check_name(name: &str) -> AppResult<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX || name.contains('\0') {
        return Err(AppError::bad_input(format!(
            "name must be 1 to {NAME_MAX} characters, without U+0000"
        )));
    }
    Ok(name)
}

/// A new account and its first session. `password` and `name` have passed [`check_password`]
/// and [`check_name`].
pub async fn sign_up(
    db: &Db,
    hasher: &Hasher,
    defaults: &ProfileDefaults,
    email: Email,
    password: String,
    name: &str,
    client: &ClientInfo,
) -> AppResult<(user::Model, entity::session::Model)> {
    if find_user(db, &email).await?.is_some() {
        return Err(AppError::EmailTaken);
    }
    let hash = hasher.hash(password).await?;

    // One transaction: a failure anywhere leaves nothing behind (dropping `txn` rolls back).
    let txn = db.begin().await?;
    let now = now_millis_naive();
    let user = user::ActiveModel {
        id: Set(session::random_id()),
        name: Set(name.to_owned()),
        email: Set(email.0),
        email_verified: Set(false),
        image: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await
    .map_err(|e| match e.sql_err() {
        // Someone else took the email between the check and the insert.
        Some(SqlErr::UniqueConstraintViolation(_)) => AppError::EmailTaken,
        _ => e.into(),
    })?;
    account::ActiveModel {
        id: Set(session::random_id()),
        account_id: Set(user.id.clone()),
        provider_id: Set("credential".into()),
        user_id: Set(user.id.clone()),
        access_token: Set(None),
        refresh_token: Set(None),
        id_token: Set(None),
        access_token_expires_at: Set(None),
        refresh_token_expires_at: Set(None),
        scope: Set(None),
        password: Set(Some(hash)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    user_profiles::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        user_id: Set(user.id.clone()),
        display_name: Set(None),
        default_model: Set(defaults.model.clone()),
        monthly_token_budget: Set(defaults.monthly_token_budget),
        created_at: Set(now_micros()),
    }
    .insert(&txn)
    .await?;
    let session = session::create(&txn, &user.id, client).await?;
    txn.commit().await?;
    Ok((user, session))
}

/// Check email and password and start a session. Unknown email and wrong password are the same
/// answer, after the same hashing work.
pub async fn sign_in(
    db: &Db,
    hasher: &Hasher,
    email: &Email,
    password: String,
    client: &ClientInfo,
) -> AppResult<(user::Model, entity::session::Model)> {
    let user = find_user(db, email).await?;
    let stored = match &user {
        Some(u) => account::Entity::find()
            .filter(account::Column::UserId.eq(u.id.as_str()))
            .filter(account::Column::ProviderId.eq("credential"))
            .one(db)
            .await?
            .and_then(|a| a.password),
        None => None,
    };
    let matches = hasher.verify(password, stored).await?;
    let Some(user) = user.filter(|_| matches) else {
        return Err(AppError::InvalidCredentials);
    };
    let session = session::create(db, &user.id, client).await?;
    Ok((user, session))
}

async fn find_user(db: &impl ConnectionTrait, email: &Email) -> AppResult<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_validated() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
        ] {
            assert_eq!(
                Email::parse(bad).unwrap_err().code(),
                "BAD_USER_INPUT",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn password_bounds_are_better_auths() {
        assert!(check_password(&"x".repeat(7)).is_err());
        assert!(check_password(&"x".repeat(8)).is_ok());
        assert!(check_password(&"é".repeat(128)).is_ok());
        assert!(check_password(&"x".repeat(129)).is_err());
    }
}
