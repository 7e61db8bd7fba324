use async_graphql::{Context, InputObject, Object};
use tower_cookies::Cookies;

use super::types::{AuthPayload, Profile};
use crate::app::AppState;
use crate::auth::Viewer;
use crate::auth::session::{self, ClientInfo};
use crate::service::{accounts, profiles};

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
        let (user, session) = accounts::sign_up(
            &state.db,
            &state.auth,
            &state.config.defaults,
            &input.email,
            input.password,
            &input.name,
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
        let (user, session) = accounts::sign_in(
            &state.db,
            &state.auth,
            &input.email,
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
            Some(viewer) => Ok(session::revoke(&state.db, &viewer.session.id).await?),
            None => Ok(false),
        }
    }
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
    #[graphql(guard = "crate::auth::SignedIn")]
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
        Ok(Profile(profile))
    }
}
