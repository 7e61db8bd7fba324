//! Output types.

use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{user, user_profiles};

use super::loaders::{MonthTokensLoader, ProfileLoader};
use super::scalars::Int64;
use crate::error::AppError;

pub struct User(pub user::Model);

/// A person with an account (Better Auth's `user`).
#[Object]
impl User {
    /// Better Auth's user id.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Lower-cased email address.
    async fn email(&self) -> &str {
        &self.0.email
    }
    /// Name given at sign-up.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Whether the email address was verified (by a Better Auth app sharing the database).
    async fn email_verified(&self) -> bool {
        self.0.email_verified
    }
    /// Avatar URL, if any.
    async fn image(&self) -> Option<&str> {
        self.0.image.as_deref()
    }
    /// When the account was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }
    /// The user's AI-app profile (created with the defaults on first use).
    async fn profile(&self, ctx: &Context<'_>) -> async_graphql::Result<Profile> {
        let loader = ctx.data::<DataLoader<ProfileLoader>>()?;
        let profile = loader
            .load_one(self.0.id.clone())
            .await?
            .ok_or_else(|| AppError::internal("profile missing after get-or-create"))?;
        Ok(Profile(profile))
    }
}

pub struct Profile(pub user_profiles::Model);

/// Preferences and limits for the AI features (`user_profiles`, 1:1 with the user).
#[Object]
impl Profile {
    /// Name shown in the app, if set.
    async fn display_name(&self) -> Option<&str> {
        self.0.display_name.as_deref()
    }
    /// Model used when a call names none.
    async fn default_model(&self) -> &str {
        &self.0.default_model
    }
    /// Soft cap on prompt + completion tokens per UTC calendar month; "0" means unlimited.
    async fn monthly_token_budget(&self) -> Int64 {
        Int64(self.0.monthly_token_budget)
    }
    /// Prompt + completion tokens metered since the start of this UTC calendar month.
    async fn tokens_used_this_month(&self, ctx: &Context<'_>) -> async_graphql::Result<Int64> {
        let loader = ctx.data::<DataLoader<MonthTokensLoader>>()?;
        Ok(Int64(
            loader.load_one(self.0.user_id.clone()).await?.unwrap_or(0),
        ))
    }
    /// When the profile was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A new session: the signed-in user and the session token (also set as a cookie).
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <token>` from non-browser clients.
    pub token: String,
    #[graphql(skip)]
    pub user_model: user::Model,
}

#[ComplexObject]
impl AuthPayload {
    /// The signed-in user.
    async fn user(&self) -> User {
        User(self.user_model.clone())
    }
}
