//! Sessions as Better Auth keeps them: a row in `session` whose `token` is the bearer secret,
//! valid for 7 days and slid forward when used more than a day after the last refresh.

use std::time::Duration;

use std::collections::HashMap;

use entity::{session, usage_monthly, user, user_limits, user_profiles};
use rand::Rng;
use rand::distr::Alphanumeric;
use sea_orm::query::{SelectA, SelectB, SelectC};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, IdenStatic,
    JoinType, QueryFilter, QuerySelect, QueryTrait, RelationDef, Set,
};

use crate::error::AppResult;
use crate::metering::rollup::{self, Metered};
use crate::time::now_millis_naive;

/// How long a session lives (Better Auth's `expiresIn`).
pub const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often its expiry slides forward (Better Auth's `updateAge`).
pub const SESSION_UPDATE_AGE: Duration = Duration::from_secs(24 * 3600);

/// 32 characters from [A-Za-z0-9] from the OS-seeded CSPRNG: Better Auth's token and id format.
pub fn random_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

fn ttl() -> chrono::Duration {
    chrono::Duration::from_std(SESSION_TTL).expect("session TTL fits")
}

/// Where a new session comes from.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

/// Start a session for `user_id`.
pub async fn create(
    db: &impl ConnectionTrait,
    user_id: &str,
    client: &ClientInfo,
) -> AppResult<session::Model> {
    let now = now_millis_naive();
    let row = session::ActiveModel {
        id: Set(random_id()),
        expires_at: Set(now + ttl()),
        token: Set(random_id()),
        created_at: Set(now),
        updated_at: Set(now),
        ip_address: Set(client.ip_address.clone()),
        user_agent: Set(client.user_agent.clone()),
        user_id: Set(user_id.to_owned()),
    }
    .insert(db)
    .await?;
    Ok(row)
}

/// A live session and its user.
#[derive(Clone, Debug)]
pub struct ActiveSession {
    pub session: session::Model,
    pub user: user::Model,
    /// True when this lookup slid the expiry forward (a cookie should be re-issued).
    pub refreshed: bool,
    /// The user's profile and tokens this month, read in the same statement (None when the
    /// user has no profile yet). As of the lookup: only for what runs right after it, never
    /// past a write (see `crate::graphql::ViewerProfile`).
    pub profile: Option<Metered>,
    /// The operator's overrides of the user's call limits (`user_limits`), when the lookup was
    /// for a call: read in the same statement, as of the lookup.
    pub limits: Option<LimitOverrides>,
}

/// A user's `user_limits` columns: `None` is the server's default, `Some(0)` unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub max_concurrent_calls: Option<i32>,
    pub calls_per_minute: Option<i32>,
}

/// Resolve tokens, in one query (and a write for each session that expired or is due to slide,
/// which is rare); in the tokens' order. Each is `None` when unknown or expired (an expired row
/// is deleted); a session last refreshed more than [`SESSION_UPDATE_AGE`] ago slides forward.
/// The same statement reads each user's profile with its tokens this month (two more index
/// lookups per session), which saves a request that shows the viewer's meter a statement.
/// `for_calls` adds the user's limit overrides (one more): a call started over a WebSocket,
/// which checks its session first, then needs no read of its own for its caller.
pub async fn resolve_many(
    db: &impl ConnectionTrait,
    tokens: &[String],
    for_calls: bool,
) -> AppResult<Vec<Option<ActiveSession>>> {
    let month = crate::time::month_key(crate::time::now_micros());
    let month_tokens =
        Expr::col((usage_monthly::Entity, usage_monthly::Column::PromptTokens)).add(Expr::col((
            usage_monthly::Entity,
            usage_monthly::Column::CompletionTokens,
        )));
    let mut query = session::Entity::find()
        .filter(session::Column::Token.is_in(crate::grouped::padded(tokens.iter().cloned())))
        .find_also_related(user::Entity)
        .find_also(user::Entity, user_profiles::Entity)
        .join(JoinType::LeftJoin, rollup::of_month(&month))
        .expr_as(month_tokens, MONTH_TOKENS);
    if for_calls {
        query = query
            .join(JoinType::LeftJoin, limits_of_user())
            .expr_as(
                Expr::col((user_limits::Entity, user_limits::Column::MaxConcurrentCalls)),
                LIMIT_CONCURRENT,
            )
            .expr_as(
                Expr::col((user_limits::Entity, user_limits::Column::CallsPerMinute)),
                LIMIT_PER_MINUTE,
            );
    }
    let query = query.build(db.get_database_backend());
    let mut found = HashMap::new();
    for row in db.query_all_raw(query).await? {
        // SeaORM's prefixes for the first, second and third entity of a select.
        let session = session::Model::from_query_result(&row, SelectA.as_str())?;
        let Some(user) = user::Model::from_query_result_optional(&row, SelectB.as_str())? else {
            continue;
        };
        let profile = user_profiles::Model::from_query_result_optional(&row, SelectC.as_str())?
            .map(|p| -> Result<_, sea_orm::DbErr> {
                let tokens: Option<i64> = row.try_get("", MONTH_TOKENS)?;
                Ok(Metered::read(p, tokens.unwrap_or(0)))
            })
            .transpose()?;
        let limits = if for_calls {
            Some(LimitOverrides {
                max_concurrent_calls: row.try_get("", LIMIT_CONCURRENT)?,
                calls_per_minute: row.try_get("", LIMIT_PER_MINUTE)?,
            })
        } else {
            None
        };
        found.insert(session.token.clone(), (session, user, profile, limits));
    }
    // A token listed twice is resolved (and slid) once.
    let mut settled: HashMap<&str, Option<ActiveSession>> = HashMap::new();
    let mut resolved = Vec::with_capacity(tokens.len());
    for token in tokens {
        if !settled.contains_key(token.as_str()) {
            let active = match found.remove(token) {
                Some(row) => settle(db, row).await?,
                None => None,
            };
            settled.insert(token, active);
        }
        resolved.push(settled[token.as_str()].clone());
    }
    Ok(resolved)
}

/// The aliases of the month's tokens and the limit overrides in [`resolve_many`]'s statement.
const MONTH_TOKENS: &str = "month_tokens";
const LIMIT_CONCURRENT: &str = "limit_max_concurrent_calls";
const LIMIT_PER_MINUTE: &str = "limit_calls_per_minute";

/// `user_limits` joined to the session's user (the generated entities relate them only from
/// `user_limits`' side).
fn limits_of_user() -> RelationDef {
    user::Entity::belongs_to(user_limits::Entity)
        .from(user::Column::Id)
        .to(user_limits::Column::UserId)
        .into()
}

/// A found session: `None` if it expired (deleting it), else live, its expiry slid forward if
/// it is due (Better Auth: once `expiresAt - expiresIn + updateAge` has passed).
async fn settle(
    db: &impl ConnectionTrait,
    (session, user, profile, limits): (
        session::Model,
        user::Model,
        Option<Metered>,
        Option<LimitOverrides>,
    ),
) -> AppResult<Option<ActiveSession>> {
    let now = now_millis_naive();
    if session.expires_at <= now {
        session::Entity::delete_by_id(session.id).exec(db).await?;
        return Ok(None);
    }
    let due =
        session.expires_at - ttl() + chrono::Duration::from_std(SESSION_UPDATE_AGE).expect("fits");
    let (session, refreshed) = if due > now {
        (session, false)
    } else {
        let mut slide: session::ActiveModel = session.into();
        slide.expires_at = Set(now + ttl());
        slide.updated_at = Set(now);
        (slide.update(db).await?, true)
    };
    Ok(Some(ActiveSession {
        session,
        user,
        refreshed,
        profile,
        limits,
    }))
}

/// Whether the session `session_id` of `user_id` still exists and has not expired. Read-only:
/// unlike [`resolve_many`], it never slides the expiry, so a connection that only holds a session
/// open does not keep it alive.
pub async fn is_live(
    db: &impl ConnectionTrait,
    session_id: &str,
    user_id: &str,
) -> AppResult<bool> {
    use sea_orm::PaginatorTrait;
    Ok(session::Entity::find()
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::ExpiresAt.gt(now_millis_naive()))
        .count(db)
        .await?
        > 0)
}

/// End a session; true when there was one.
pub async fn revoke(db: &impl ConnectionTrait, session_id: &str) -> AppResult<bool> {
    let result = session::Entity::delete_by_id(session_id.to_owned())
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_alphanumerics_and_distinct() {
        let a = random_id();
        let b = random_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
