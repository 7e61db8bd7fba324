//! Loaders (batched per operation by `super::batch`): nested fields of a list (a log's user, a
//! user's profile, a log's cost) are fetched with one `IN (...)` query per field per request,
//! not one query per row.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use entity::{conversation_turns, conversations, prompt_log_usage, prompt_logs, token_usage, user};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, JoinType, QueryFilter, QuerySelect, RelationTrait};
use uuid::Uuid;

use crate::config::ProfileDefaults;
use crate::db::Db;
use crate::error::AppError;
use crate::service::profiles;

fn internal(e: impl Into<AppError>) -> async_graphql::Error {
    async_graphql::ErrorExtensions::extend(&e.into())
}

/// Users by id.
pub struct UserLoader(pub Db);

impl Loader<String> for UserLoader {
    type Value = user::Model;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let users = user::Entity::find()
            .filter(user::Column::Id.is_in(crate::grouped::padded(keys.iter().cloned())))
            .all(&self.0)
            .await
            .map_err(internal)?;
        Ok(users.into_iter().map(|u| (u.id.clone(), u)).collect())
    }
}

/// Profiles by user id, each with its user's tokens this month (missing profiles are created
/// with the defaults).
pub struct ProfileLoader(pub Db, pub ProfileDefaults);

impl Loader<String> for ProfileLoader {
    type Value = profiles::Metered;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let month = crate::time::month_key(crate::time::now_micros());
        profiles::get_or_create_many_metered(&self.0, keys, &self.1, &month)
            .await
            .map_err(internal)
    }
}

/// The recorded cost of calls, by log id (absent while in flight).
pub struct CostLoader(pub Db);

impl Loader<Uuid> for CostLoader {
    type Value = i64;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = prompt_log_usage::Entity::find()
            .filter(
                prompt_log_usage::Column::LogId.is_in(crate::grouped::padded(keys.iter().copied())),
            )
            .find_also_related(token_usage::Entity)
            .all(&self.0)
            .await
            .map_err(internal)?;
        Ok(rows
            .into_iter()
            .filter_map(|(link, usage)| usage.map(|u| (link.log_id, u.cost_microcents)))
            .collect())
    }
}

/// Tokens metered this UTC month, by user id (from the monthly rollup).
pub struct MonthTokensLoader(pub Db);

impl Loader<String> for MonthTokensLoader {
    type Value = i64;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        crate::metering::rollup::tokens_this_month(&self.0, keys)
            .await
            .map_err(internal)
    }
}

/// A conversation's newest turn, by conversation id (absent before its first turn).
pub struct LastTurnLoader(pub Db);

impl Loader<Uuid> for LastTurnLoader {
    type Value = prompt_logs::Model;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        use conversation_turns::Column as T;
        let rows = conversation_turns::Entity::find()
            .find_also_related(prompt_logs::Entity)
            .join(
                JoinType::InnerJoin,
                conversation_turns::Relation::Conversations.def(),
            )
            .filter(T::ConversationId.is_in(crate::grouped::padded(keys.iter().copied())))
            .filter(
                Expr::col((conversation_turns::Entity, T::Seq)).eq(Expr::col((
                    conversations::Entity,
                    conversations::Column::TurnCount,
                ))),
            )
            .all(&self.0)
            .await
            .map_err(internal)?;
        Ok(rows
            .into_iter()
            .filter_map(|(turn, log)| log.map(|log| (turn.conversation_id, log)))
            .collect())
    }
}

/// The conversation a log is a turn of, by log id (absent for calls outside conversations).
pub struct LogConversationLoader(pub Db);

impl Loader<Uuid> for LogConversationLoader {
    type Value = conversations::Model;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = conversation_turns::Entity::find()
            .filter(
                conversation_turns::Column::LogId
                    .is_in(crate::grouped::padded(keys.iter().copied())),
            )
            .find_also_related(conversations::Entity)
            .all(&self.0)
            .await
            .map_err(internal)?;
        Ok(rows
            .into_iter()
            .filter_map(|(turn, c)| c.map(|c| (turn.log_id, c)))
            .collect())
    }
}
