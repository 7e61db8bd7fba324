//! Conversations: the caller's multi-turn chats, their turns, and their settings.

use super::batch::Batcher;
use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};
use chrono::{DateTime, Utc};
use entity::conversations;
use uuid::Uuid;

use super::cursor::{self, Cursor, Cursors};
use super::history::{DEFAULT_PAGE, PromptLog, connection, window};
use super::loaders::LastTurnLoader;
use crate::auth::{SignedIn, Viewer};
use crate::error::AppError;
use crate::service::conversations::{self as service, Changes, NewConversation, Rules};
use crate::state::AppState;

pub struct Conversation(pub conversations::Model);

fn rules(state: &AppState) -> Rules<'_> {
    Rules {
        prices: state.calls.prices(),
        max_system_prompt_chars: state.config.calls.max_prompt_chars,
        max_conversations: state.config.calls.max_conversations,
    }
}

/// A conversation: a chat whose turns (calls, each a `PromptLog`) see the earlier ones.
#[Object]
impl Conversation {
    /// The conversation id (a UUID): pass it as `CompletionInput.conversationId`.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Its title: the one given, else the first words of its first prompt (null until then).
    async fn title(&self) -> Option<&str> {
        self.0.title.as_deref()
    }
    /// The model of its next turn (a change applies from the next turn).
    async fn model(&self) -> &str {
        &self.0.model
    }
    /// Sent first, as the `system` message, with every turn.
    async fn system_prompt(&self) -> Option<&str> {
        self.0.system_prompt.as_deref()
    }
    /// Archived conversations are listed only with `conversations(archived: true)`; their turns
    /// stay (nothing is ever deleted) and they can still be continued.
    async fn archived(&self) -> bool {
        self.0.archived
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Last activity: created, changed, or a turn started. `conversations` is ordered by it.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Turns so far (calls started in it, whatever their outcome).
    async fn turn_count(&self) -> i32 {
        self.0.turn_count
    }
    /// The newest turn (null before the first), batched across a page of conversations.
    #[graphql(complexity = "super::QUERY_COST / 10 + child_complexity")]
    async fn last_turn(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<PromptLog>> {
        if self.0.turn_count == 0 {
            return Ok(None);
        }
        Ok(ctx
            .data::<Batcher<LastTurnLoader, Uuid>>()?
            .load_one(self.0.id)
            .await?
            .map(PromptLog))
    }
    /// Its turns, oldest first, as a Relay connection (`first`/`after` forward, `last`/`before`
    /// backward; at most 100 per page, 20 by default). Turns that failed are included, with
    /// their status; the ones that failed before any output are not sent to the model.
    #[graphql(
        complexity = "first.or(last).map_or(DEFAULT_PAGE as usize, |n| n.max(0) as usize) * child_complexity + super::QUERY_COST"
    )]
    async fn turns(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<Cursor, PromptLog>> {
        let state = ctx.data::<AppState>()?;
        let secret = state.config.auth.secret.expose().as_bytes();
        let (user_id, id) = (self.0.user_id.as_str(), self.0.id);
        let window = window(first, after.as_deref(), last, before.as_deref(), |c| {
            cursor::decode_turn(secret, user_id, id, c)
        })?;
        let page = service::turns_page(&state.db, &self.0, window).await?;
        let cursors = Cursors::turns(secret, user_id, id);
        Ok(connection(
            page,
            |(seq, _)| cursors.turn(*seq),
            |(_, log)| PromptLog(log),
        ))
    }
}

/// A new conversation: everything optional.
#[derive(InputObject, Default)]
pub struct CreateConversationInput {
    /// Up to 200 characters; without one, the first prompt names the conversation.
    pub title: Option<String>,
    /// One of `models`; the profile's default model when omitted.
    pub model: Option<String>,
    /// Sent as the `system` message with every turn, up to `MAX_PROMPT_CHARS` characters.
    pub system_prompt: Option<String>,
}

/// Changes to a conversation: omitted fields stay as they are; `null` clears `title` and
/// `systemPrompt`.
#[derive(InputObject)]
pub struct UpdateConversationInput {
    pub id: ID,
    pub title: MaybeUndefined<String>,
    /// Applies from the next turn.
    pub model: Option<String>,
    pub system_prompt: MaybeUndefined<String>,
    /// Archive (hide from the default list) or restore; nothing is deleted either way.
    pub archived: Option<bool>,
}

fn changed<T>(v: MaybeUndefined<T>) -> Option<Option<T>> {
    match v {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

#[derive(Default)]
pub struct ConversationQuery;

#[Object]
impl ConversationQuery {
    /// The caller's conversations, most recent activity first, as a Relay connection (archived
    /// ones only with `archived: true`). Paged like `history`; cursors are opaque and valid
    /// only for the caller's own list.
    #[graphql(
        guard = "SignedIn",
        complexity = "first.or(last).map_or(DEFAULT_PAGE as usize, |n| n.max(0) as usize) * child_complexity + super::QUERY_COST"
    )]
    async fn conversations(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        #[graphql(
            default_with = "Some(false)",
            desc = "List archived conversations instead (null is false)."
        )]
        archived: Option<bool>,
    ) -> async_graphql::Result<Connection<Cursor, Conversation>> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let secret = state.config.auth.secret.expose().as_bytes();
        let user_id = viewer.user.id.as_str();
        let window = window(first, after.as_deref(), last, before.as_deref(), |c| {
            cursor::decode_conversation(secret, user_id, c)
        })?;
        let page = service::page(&state.db, user_id, archived.unwrap_or(false), window).await?;
        let cursors = Cursors::conversations(secret, user_id);
        Ok(connection(
            page,
            |c| cursors.conversation(c.into()),
            Conversation,
        ))
    }

    /// One of the caller's conversations; null when it does not exist or is someone else's.
    #[graphql(
        guard = "SignedIn",
        complexity = "super::QUERY_COST / 2 + child_complexity"
    )]
    async fn conversation(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Conversation>> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let Ok(id) = Uuid::parse_str(&id) else {
            return Ok(None);
        };
        Ok(service::get(&state.db, &viewer.user.id, id)
            .await?
            .map(Conversation))
    }
}

#[derive(Default)]
pub struct ConversationMutation;

#[Object]
impl ConversationMutation {
    /// Start a conversation (its first turn is a `complete`/`completionStream` with its id).
    /// `BAD_USER_INPUT` for an unknown model or an over-long title or system prompt;
    /// `QUOTA_EXCEEDED` past `USER_MAX_CONVERSATIONS`.
    #[graphql(
        guard = "SignedIn",
        complexity = "super::QUERY_COST + child_complexity"
    )]
    async fn create_conversation(
        &self,
        ctx: &Context<'_>,
        input: CreateConversationInput,
    ) -> async_graphql::Result<Conversation> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let model = match input.model {
            Some(model) => model,
            None => {
                crate::service::profiles::get_or_create(
                    &state.db,
                    &viewer.user.id,
                    &state.config.defaults,
                )
                .await?
                .default_model
            }
        };
        let created = service::create(
            &state.db,
            &viewer.user.id,
            NewConversation {
                title: input.title,
                model,
                system_prompt: input.system_prompt,
            },
            rules(state),
        )
        .await?;
        Ok(Conversation(created))
    }

    /// Rename, re-model, re-prompt, archive or restore one of the caller's conversations.
    /// `NOT_FOUND` when it is not theirs; `BAD_USER_INPUT` as for `createConversation`.
    #[graphql(
        guard = "SignedIn",
        complexity = "super::QUERY_COST + child_complexity"
    )]
    async fn update_conversation(
        &self,
        ctx: &Context<'_>,
        input: UpdateConversationInput,
    ) -> async_graphql::Result<Conversation> {
        let state = ctx.data::<AppState>()?;
        let viewer = ctx.data::<Viewer>()?;
        let id = Uuid::parse_str(&input.id).map_err(|_| AppError::NotFound)?;
        let updated = service::update(
            &state.db,
            &viewer.user.id,
            id,
            Changes {
                title: changed(input.title),
                model: input.model,
                system_prompt: changed(input.system_prompt),
                archived: input.archived,
            },
            rules(state),
        )
        .await?;
        Ok(Conversation(updated))
    }
}
