//! The history feed: the signed-in user's calls (`prompt_logs`), newest first, and one call by id.

use super::batch::Batcher;
use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ID, InputObject, Json, Object};
use chrono::{DateTime, Utc};
use entity::prompt_logs;
use sea_orm::EntityTrait;

use super::account::User;
use super::cursor::{self, Cursor, Cursors};
use super::loaders::{CostLoader, LogConversationLoader, UserLoader};
use super::scalars::Int64;
use crate::auth::{SignedIn, Viewer};
use crate::error::AppError;
use crate::service::history::{self, Filter, Page, Texts, Window};
use crate::state::AppState;

/// Largest page `first`/`last` may ask for.
pub const MAX_PAGE: i32 = 100;
/// Page size when neither `first` nor `last` is given.
pub const DEFAULT_PAGE: u64 = 20;

/// How a call ended.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "entity::prompt_logs::CallStatus")]
pub enum CallStatus {
    /// The upstream finished normally.
    Ok,
    /// The call failed or was interrupted; `metadata.error` says why.
    Error,
    /// The upstream stopped with `finish_reason = content_filter`.
    Filtered,
}

pub struct PromptLog(pub prompt_logs::Model);

/// One call to the upstream: the auditable record of the exchange (`prompt_logs`).
#[Object]
impl PromptLog {
    /// The log id (a UUID), carried by every event of a streamed call.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The model the call was routed to.
    async fn model(&self) -> &str {
        &self.0.model
    }
    /// The user message as sent.
    async fn prompt(&self) -> &str {
        &self.0.prompt
    }
    /// The completion (what was received, for calls that ended early); null while in flight.
    async fn completion(&self) -> Option<&str> {
        self.0.completion.as_deref()
    }
    /// Prompt tokens metered (the upstream's count, else the model's tokenizer's).
    async fn prompt_tokens(&self) -> i32 {
        self.0.prompt_tokens
    }
    /// Completion tokens metered.
    async fn completion_tokens(&self) -> i32 {
        self.0.completion_tokens
    }
    /// From sending the request to the end of the answer, in milliseconds.
    async fn latency_ms(&self) -> Option<i32> {
        self.0.latency_ms
    }
    /// How the call ended (`OK` while in flight; see `inFlight`).
    async fn status(&self) -> CallStatus {
        self.0.status.into()
    }
    /// True until the call is finalised.
    async fn in_flight(&self) -> bool {
        self.0.in_flight()
    }
    /// `finish_reason`, `ttft_ms` (time to first token), `usage_source` (`upstream`, `local`:
    /// counted with the model's tokenizer, `none`: the upstream refused the request,
    /// `estimate`: recovered after a crash), `error`, `stream`, `max_tokens`.
    async fn metadata(&self) -> Option<Json<serde_json::Value>> {
        self.0.metadata.clone().map(Json)
    }
    /// What the call cost in micro-cents (1 USD = 10^8); null while in flight.
    async fn cost_microcents(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Int64>> {
        if self.0.in_flight() {
            return Ok(None);
        }
        Ok(ctx
            .data::<Batcher<CostLoader, uuid::Uuid>>()?
            .load_one(self.0.id)
            .await?
            .map(Int64))
    }
    /// When the call was admitted.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The conversation this call is a turn of; null for a call outside any conversation.
    async fn conversation(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<super::conversations::Conversation>> {
        Ok(ctx
            .data::<Batcher<LogConversationLoader, uuid::Uuid>>()?
            .load_one(self.0.id)
            .await?
            // The database keeps a turn's conversation and log with one owner; checked anyway.
            .filter(|c| c.user_id == self.0.user_id)
            .map(super::conversations::Conversation))
    }
    /// Who made the call.
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        // Logs are only ever shown to their owner: the signed-in user, already loaded by
        // authentication, needs no query (the loader stays for any other path).
        if let Ok(viewer) = ctx.data::<Viewer>()
            && viewer.user.id == self.0.user_id
        {
            return Ok(User(viewer.user.clone()));
        }
        let user = ctx
            .data::<Batcher<UserLoader, String>>()?
            .load_one(self.0.user_id.clone())
            .await?
            .ok_or_else(|| AppError::internal("a log without its user"))?;
        Ok(User(user))
    }
}

/// Narrows the history feed.
#[derive(InputObject, Default)]
pub struct HistoryFilter {
    /// Only calls to this model.
    pub model: Option<String>,
    /// Only calls that ended so.
    pub status: Option<CallStatus>,
}

fn page_size(name: &str, n: i32) -> Result<u64, AppError> {
    if (0..=MAX_PAGE).contains(&n) {
        Ok(n as u64)
    } else {
        Err(AppError::bad_input(format!(
            "{name} must be from 0 to {MAX_PAGE}"
        )))
    }
}

/// A page as a Relay connection: each item with its cursor.
pub fn connection<T, N: async_graphql::OutputType>(
    page: Page<T>,
    cursor: impl Fn(&T) -> Cursor,
    node: impl Fn(T) -> N,
) -> Connection<Cursor, N> {
    let mut connection = Connection::new(page.has_previous_page, page.has_next_page);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|item| Edge::new(cursor(&item), node(item))),
    );
    connection
}

/// The page a Relay connection's arguments ask for: `first`/`after` forward or `last`/`before`
/// backward (not both), at most [`MAX_PAGE`] items, [`DEFAULT_PAGE`] when neither is given.
pub fn window<P>(
    first: Option<i32>,
    after: Option<&str>,
    last: Option<i32>,
    before: Option<&str>,
    decode: impl Fn(&str) -> Result<P, AppError>,
) -> Result<Window<P>, AppError> {
    match (first, last) {
        (Some(_), Some(_)) => Err(AppError::bad_input("give first or last, not both")),
        (_, Some(last)) => {
            if after.is_some() {
                return Err(AppError::bad_input(
                    "last pages backward: use before, not after",
                ));
            }
            Ok(Window::Backward {
                last: page_size("last", last)?,
                before: before.map(decode).transpose()?,
            })
        }
        (first, None) => {
            if before.is_some() {
                return Err(AppError::bad_input(
                    "first pages forward: use after, not before",
                ));
            }
            Ok(Window::Forward {
                first: first.map_or(Ok(DEFAULT_PAGE), |n| page_size("first", n))?,
                after: after.map(decode).transpose()?,
            })
        }
    }
}

/// The texts a page of logs shows, from the query under the connection (its `nodes` and its
/// `edges { node }`, through fragments, whatever their aliases). A field under `@skip` or
/// `@include` counts as shown: the look-ahead may only ever read more than is shown.
fn texts_shown(ctx: &Context<'_>) -> Texts {
    let connection = ctx.look_ahead();
    let nodes = [
        connection.field("nodes"),
        connection.field("edges").field("node"),
    ];
    let shown = |name: &str| nodes.iter().any(|n| n.field(name).exists());
    Texts {
        prompt: shown("prompt"),
        completion: shown("completion"),
        metadata: shown("metadata"),
    }
}

#[derive(Default)]
pub struct HistoryQuery;

#[Object]
impl HistoryQuery {
    /// The signed-in user's calls, newest first, as a Relay connection. Page forward with
    /// `first`/`after` or backward with `last`/`before` (at most 100 per page; 20 by default).
    /// Cursors are opaque and valid only for the caller's own feed.
    #[graphql(
        guard = "SignedIn",
        complexity = "first.or(last).map_or(DEFAULT_PAGE as usize, |n| n.max(0) as usize) * child_complexity + super::QUERY_COST"
    )]
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        filter: Option<HistoryFilter>,
    ) -> async_graphql::Result<Connection<Cursor, PromptLog>> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let secret = state.config.auth.secret.expose().as_bytes();
        let user_id = viewer.user.id.as_str();
        let window = window(first, after.as_deref(), last, before.as_deref(), |c| {
            cursor::decode(secret, user_id, c)
        })?;
        let filter = filter.unwrap_or_default();
        let filter = Filter {
            model: filter.model,
            status: filter.status.map(Into::into),
        };
        let page = history::page(&state.db, user_id, &filter, window, texts_shown(ctx)).await?;
        let cursors = Cursors::history(secret, user_id);
        Ok(connection(page, |log| cursors.log(log.into()), PromptLog))
    }

    /// One of the caller's logs; null when it does not exist or is someone else's.
    #[graphql(
        guard = "SignedIn",
        complexity = "super::QUERY_COST / 2 + child_complexity"
    )]
    async fn prompt_log(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<PromptLog>> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let Ok(id) = uuid::Uuid::parse_str(&id) else {
            return Ok(None);
        };
        let log = prompt_logs::Entity::find_by_id(id)
            .one(&state.db)
            .await
            .map_err(AppError::from)?
            .filter(|log| log.user_id == viewer.user.id);
        Ok(log.map(PromptLog))
    }
}
