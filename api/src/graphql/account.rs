//! Accounts: the signed-in user (`me`), sign-up, sign-in and sign-out, and the profile.
//! Sign-in and sign-up are throttled here, at the edge, before the account service runs.

use super::batch::Batcher;
use async_graphql::{ComplexObject, Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{user, user_profiles};
use tower_cookies::Cookies;

use super::ViewerProfile;
use super::loaders::{MonthTokensLoader, ProfileLoader};
use super::scalars::Int64;
use crate::auth::Viewer;
use crate::auth::session::ClientInfo;
use crate::error::AppError;
use crate::service::accounts::{self, Email};
use crate::service::profiles;
use crate::state::AppState;

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The signed-in user, or null when signed out.
    async fn me(&self, ctx: &Context<'_>) -> Option<User> {
        ctx.data_opt::<Viewer>().map(|v| User(v.user.clone()))
    }
}

/// A new account.
#[derive(InputObject)]
pub struct SignUpInput {
    /// Trimmed and lower-cased; must be a valid address not yet registered.
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    /// Display name, 1 to 256 characters.
    pub name: String,
}

/// Credentials of an existing account.
#[derive(InputObject)]
pub struct SignInInput {
    /// Matched case-insensitively.
    pub email: String,
    /// The account's password.
    pub password: String,
}

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Create an account (user, credential, profile) and sign in. `EMAIL_TAKEN` when the email
    /// is registered; `RATE_LIMITED` after too many attempts.
    async fn sign_up(
        &self,
        ctx: &Context<'_>,
        input: SignUpInput,
    ) -> async_graphql::Result<AuthPayload> {
        let state = ctx.data::<AppState>()?;
        let client = ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default();
        let email = Email::parse(&input.email)?;
        accounts::check_password(&input.password)?;
        let name = accounts::check_name(&input.name)?;
        throttle(state, &client, email.as_str())?;
        let (user, session) = accounts::sign_up(
            &state.db,
            &state.auth.hasher,
            &state.config.defaults,
            email,
            input.password,
            name,
            &client,
        )
        .await?;
        set_session_cookie(ctx, state, &session.token);
        Ok(AuthPayload {
            token: session.token,
            user_model: user,
        })
    }

    /// Sign in with email and password. Unknown email and wrong password both give
    /// `INVALID_CREDENTIALS`.
    async fn sign_in(
        &self,
        ctx: &Context<'_>,
        input: SignInInput,
    ) -> async_graphql::Result<AuthPayload> {
        let state = ctx.data::<AppState>()?;
        let client = ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default();
        // No account has a malformed email or an out-of-range password: refused without a
        // hash (which would only give a flood of them CPU to burn).
        let Ok(email) = Email::parse(&input.email) else {
            return Err(AppError::InvalidCredentials.into());
        };
        if accounts::check_password(&input.password).is_err() {
            return Err(AppError::InvalidCredentials.into());
        }
        throttle(state, &client, email.as_str())?;
        let (user, session) = accounts::sign_in(
            &state.db,
            &state.auth.hasher,
            &email,
            input.password,
            &client,
        )
        .await?;
        set_session_cookie(ctx, state, &session.token);
        Ok(AuthPayload {
            token: session.token,
            user_model: user,
        })
    }

    /// End the current session and clear the cookie; false when there was none.
    async fn sign_out(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let state = ctx.data::<AppState>()?;
        if let Some(cookies) = ctx.data_opt::<Cookies>() {
            cookies.add(state.auth.cookies.clear());
        }
        match ctx.data_opt::<Viewer>() {
            Some(viewer) => Ok(state.auth.revoke(&state.db, &viewer.session.id).await?),
            None => Ok(false),
        }
    }
}

/// Count one sign-in or sign-up attempt against the client's IP and the email.
fn throttle(state: &AppState, client: &ClientInfo, email: &str) -> Result<(), AppError> {
    state
        .auth
        .limiter
        .check(client.ip_address.as_deref().unwrap_or(""), email)
}

fn set_session_cookie(ctx: &Context<'_>, state: &AppState, token: &str) {
    if let Some(cookies) = ctx.data_opt::<Cookies>() {
        cookies.add(state.auth.cookies.issue(token));
    }
}

/// Changes to the caller's profile; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateProfileInput {
    /// Up to 100 characters; an empty string clears it.
    pub display_name: Option<String>,
    /// The model used when a call names none.
    pub default_model: Option<String>,
}

#[derive(Default)]
pub struct ProfileMutation;

#[Object]
impl ProfileMutation {
    /// Update the signed-in user's profile. `UNAUTHENTICATED` when signed out.
    #[graphql(
        guard = "crate::auth::SignedIn",
        complexity = "super::QUERY_COST + child_complexity"
    )]
    async fn update_profile(
        &self,
        ctx: &Context<'_>,
        input: UpdateProfileInput,
    ) -> async_graphql::Result<Profile> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let profile = profiles::update(
            &state.db,
            &viewer.user.id,
            &state.config.defaults,
            input.display_name.as_deref(),
            input.default_model.as_deref(),
        )
        .await?;
        Ok(Profile::new(profile))
    }
}

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
    #[graphql(complexity = "5 + child_complexity")]
    async fn profile(&self, ctx: &Context<'_>) -> async_graphql::Result<Profile> {
        // A query's viewer's: read with the session, just now.
        if let Some(ViewerProfile(metered)) = ctx.data_opt::<ViewerProfile>()
            && metered.profile.user_id == self.0.id
        {
            return Ok(Profile::metered(metered.clone()));
        }
        let loader = ctx.data::<Batcher<ProfileLoader, String>>()?;
        let metered = loader
            .load_one(self.0.id.clone())
            .await?
            .ok_or_else(|| AppError::internal("profile missing after get-or-create"))?;
        Ok(Profile::metered(metered))
    }
}

pub struct Profile {
    pub model: user_profiles::Model,
    /// The user's tokens this month when they were read with the profile.
    pub tokens_this_month: Option<i64>,
}

impl Profile {
    pub fn new(model: user_profiles::Model) -> Self {
        Profile {
            model,
            tokens_this_month: None,
        }
    }

    fn metered(metered: profiles::Metered) -> Self {
        Profile {
            model: metered.profile,
            tokens_this_month: metered.tokens_this_month,
        }
    }
}

/// Preferences and limits for the AI features (`user_profiles`, 1:1 with the user).
#[Object]
impl Profile {
    /// Name shown in the app, if set.
    async fn display_name(&self) -> Option<&str> {
        self.model.display_name.as_deref()
    }
    /// Model used when a call names none.
    async fn default_model(&self) -> &str {
        &self.model.default_model
    }
    /// Soft cap on prompt + completion tokens per UTC calendar month; "0" means unlimited.
    async fn monthly_token_budget(&self) -> Int64 {
        Int64(self.model.monthly_token_budget)
    }
    /// Prompt + completion tokens metered since the start of this UTC calendar month.
    #[graphql(complexity = 5)]
    async fn tokens_used_this_month(&self, ctx: &Context<'_>) -> async_graphql::Result<Int64> {
        if let Some(used) = self.tokens_this_month {
            return Ok(Int64(used));
        }
        let loader = ctx.data::<Batcher<MonthTokensLoader, String>>()?;
        Ok(Int64(
            loader
                .load_one(self.model.user_id.clone())
                .await?
                .unwrap_or(0),
        ))
    }
    /// When the profile was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.model.created_at
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
