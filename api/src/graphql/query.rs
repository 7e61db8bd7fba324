use async_graphql::{Context, Object};

use super::types::User;
use crate::auth::Viewer;

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The signed-in user, or null when signed out.
    async fn me(&self, ctx: &Context<'_>) -> Option<User> {
        ctx.data_opt::<Viewer>().map(|v| User(v.user.clone()))
    }
}
