//! Conversations: a user's chats, their settings, and their turns (`prompt_logs` rows linked in
//! order by `conversation_turns`). The sidebar is keyset-paginated on (`updated_at`, `id`),
//! newest activity first; a conversation's turns on their number, oldest first.

use chrono::{DateTime, Utc};
use entity::{conversation_turns, conversations, prompt_logs};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, JoinType,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, RelationTrait, Select, Set,
};
use uuid::Uuid;

use super::keyset::{self, Page, Window};
use crate::error::{AppError, AppResult};
use crate::metering::prices::PriceTable;
use crate::time::now_micros;

/// Longest title accepted.
pub const TITLE_MAX_CHARS: usize = 200;
/// Characters of the first prompt a conversation without a title is named after.
pub const DERIVED_TITLE_CHARS: usize = 80;

/// A place in the sidebar: the (updated_at, id) of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    pub updated_at: DateTime<Utc>,
    pub id: Uuid,
}

impl From<&conversations::Model> for Activity {
    fn from(c: &conversations::Model) -> Self {
        Activity {
            updated_at: c.updated_at,
            id: c.id,
        }
    }
}

/// What a new conversation starts with.
#[derive(Clone, Debug, Default)]
pub struct NewConversation {
    pub title: Option<String>,
    pub model: String,
    pub system_prompt: Option<String>,
}

/// Changes to a conversation: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub title: Option<Option<String>>,
    pub model: Option<String>,
    pub system_prompt: Option<Option<String>>,
    pub archived: Option<bool>,
}

/// Limits on what a conversation may hold.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    pub prices: &'a PriceTable,
    /// The system prompt's limit: `MAX_PROMPT_CHARS`, like a prompt's.
    pub max_system_prompt_chars: usize,
    /// Conversations one user may keep (0 = unlimited).
    pub max_conversations: u32,
}

impl Rules<'_> {
    fn title(&self, title: Option<String>) -> AppResult<Option<String>> {
        let Some(title) = title.map(|t| t.trim().to_owned()) else {
            return Ok(None);
        };
        if title.chars().count() > TITLE_MAX_CHARS || title.contains('\0') {
            return Err(AppError::bad_input(format!(
                "title must be at most {TITLE_MAX_CHARS} characters, without U+0000"
            )));
        }
        // An empty title is no title (the first prompt names the conversation).
        Ok(Some(title).filter(|t| !t.is_empty()))
    }

    fn system_prompt(&self, prompt: Option<String>) -> AppResult<Option<String>> {
        let Some(prompt) = prompt.filter(|p| !p.trim().is_empty()) else {
            return Ok(None);
        };
        if prompt.chars().count() > self.max_system_prompt_chars || prompt.contains('\0') {
            return Err(AppError::bad_input(format!(
                "systemPrompt must be at most {} characters, without U+0000",
                self.max_system_prompt_chars
            )));
        }
        Ok(Some(prompt))
    }

    fn model(&self, model: &str) -> AppResult<String> {
        let model = model.trim();
        if self.prices.get(model).is_none() {
            return Err(AppError::bad_input(format!(
                "unknown model {:?}: see `models` for the ones this server routes to",
                model.chars().take(100).collect::<String>()
            )));
        }
        Ok(model.to_owned())
    }
}

/// The title a conversation gets from its first prompt: its first words, on one line.
pub fn title_from_prompt(prompt: &str) -> String {
    let words = prompt.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() <= DERIVED_TITLE_CHARS {
        return words;
    }
    let cut: String = words.chars().take(DERIVED_TITLE_CHARS - 1).collect();
    // End on a word boundary when there is one in the second half.
    let cut = match cut.rfind(' ') {
        Some(i) if i > cut.len() / 2 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{cut}…")
}

/// Create a conversation for `user_id`.
pub async fn create(
    db: &impl ConnectionTrait,
    user_id: &str,
    new: NewConversation,
    rules: Rules<'_>,
) -> AppResult<conversations::Model> {
    let title = rules.title(new.title)?;
    let model = rules.model(&new.model)?;
    let system_prompt = rules.system_prompt(new.system_prompt)?;
    if rules.max_conversations > 0 {
        // (A limit here would do nothing: SeaORM's `count` drops it. The cap bounds the count.)
        let kept = conversations::Entity::find()
            .filter(conversations::Column::UserId.eq(user_id))
            .count(db)
            .await?;
        if kept >= u64::from(rules.max_conversations) {
            return Err(AppError::QuotaExceeded(format!(
                "a user may keep at most {} conversations",
                rules.max_conversations
            )));
        }
    }
    let now = now_micros();
    Ok(conversations::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id.to_owned()),
        title: Set(title),
        model: Set(model),
        system_prompt: Set(system_prompt),
        archived: Set(false),
        turn_count: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await?)
}

/// The user's conversation `id`, if it is theirs.
pub async fn get(
    db: &impl ConnectionTrait,
    user_id: &str,
    id: Uuid,
) -> AppResult<Option<conversations::Model>> {
    Ok(conversations::Entity::find_by_id(id)
        .filter(conversations::Column::UserId.eq(user_id))
        .one(db)
        .await?)
}

/// Apply `changes` to the user's conversation `id` (`NOT_FOUND` if it is not theirs). A model
/// change applies from the next turn.
pub async fn update(
    db: &impl ConnectionTrait,
    user_id: &str,
    id: Uuid,
    changes: Changes,
    rules: Rules<'_>,
) -> AppResult<conversations::Model> {
    use conversations::Column as C;
    let mut q = conversations::Entity::update_many()
        .col_expr(C::UpdatedAt, Expr::value(now_micros()))
        .filter(C::Id.eq(id))
        .filter(C::UserId.eq(user_id));
    if let Some(title) = changes.title {
        q = q.col_expr(C::Title, Expr::value(rules.title(title)?));
    }
    if let Some(model) = changes.model {
        q = q.col_expr(C::Model, Expr::value(rules.model(&model)?));
    }
    if let Some(prompt) = changes.system_prompt {
        q = q.col_expr(C::SystemPrompt, Expr::value(rules.system_prompt(prompt)?));
    }
    if let Some(archived) = changes.archived {
        q = q.col_expr(C::Archived, Expr::value(archived));
    }
    if q.exec(db).await?.rows_affected == 0 {
        return Err(AppError::NotFound);
    }
    get(db, user_id, id).await?.ok_or(AppError::NotFound)
}

fn sidebar(user_id: &str, archived: bool) -> Select<conversations::Entity> {
    conversations::Entity::find()
        .filter(conversations::Column::UserId.eq(user_id))
        .filter(conversations::Column::Archived.eq(archived))
}

/// One page of the user's conversations (archived or not), by last activity, newest first.
pub async fn page(
    db: &impl ConnectionTrait,
    user_id: &str,
    archived: bool,
    window: Window<Activity>,
) -> AppResult<Page<conversations::Model>> {
    let order = keyset::Order {
        at: conversations::Column::UpdatedAt,
        id: conversations::Column::Id,
    };
    let window = window.map(|a| (a.updated_at, a.id));
    keyset::newest_first(db, || sidebar(user_id, archived), &order, window).await
}

/// A turn: its number in the conversation and its log.
pub type Turn = (i32, prompt_logs::Model);

fn turns_of(conversation_id: Uuid) -> Select<conversation_turns::Entity> {
    conversation_turns::Entity::find()
        .filter(conversation_turns::Column::ConversationId.eq(conversation_id))
}

async fn with_logs(
    db: &impl ConnectionTrait,
    q: Select<conversation_turns::Entity>,
) -> AppResult<Vec<Turn>> {
    q.find_also_related(prompt_logs::Entity)
        .all(db)
        .await?
        .into_iter()
        .map(|(turn, log)| {
            log.map(|log| (turn.seq, log))
                .ok_or_else(|| AppError::internal("a conversation turn without its log"))
        })
        .collect()
}

/// One page of a conversation's turns, oldest first. Turns are numbered 1..=`turn_count`
/// without gaps (they are only ever appended), so whether there is more on either side follows
/// from the numbers.
pub async fn turns_page(
    db: &impl ConnectionTrait,
    conversation: &conversations::Model,
    window: Window<i32>,
) -> AppResult<Page<Turn>> {
    use conversation_turns::Column as C;
    let count = conversation.turn_count;
    match window {
        Window::Forward { first, after } => {
            let after = after.unwrap_or(0);
            let items = with_logs(
                db,
                turns_of(conversation.id)
                    .filter(C::Seq.gt(after))
                    .filter(C::Seq.lte(count))
                    .order_by_asc(C::Seq)
                    .limit(first),
            )
            .await?;
            let end = items.last().map_or(after, |(seq, _)| *seq);
            Ok(Page {
                has_previous_page: after >= 1 && count >= 1,
                has_next_page: end < count,
                items,
            })
        }
        Window::Backward { last, before } => {
            let before = before.unwrap_or(count.saturating_add(1));
            let mut items = with_logs(
                db,
                turns_of(conversation.id)
                    .filter(C::Seq.lt(before))
                    .order_by_desc(C::Seq)
                    .limit(last),
            )
            .await?;
            items.reverse();
            let start = items.first().map_or(before, |(seq, _)| *seq);
            Ok(Page {
                has_previous_page: start > 1,
                has_next_page: before <= count,
                items,
            })
        }
    }
}

/// The user's conversation `id` for a new turn (`NOT_FOUND` if it is not theirs), with its
/// newest `limit` turns up to its `turn_count`: read after the conversation, so that the newest
/// counted turn is among them (a call can see whether it is still running), and a turn started
/// after the conversation was read is not (admission will find the count moved and refuse the
/// call). (Read at once, the two could disagree: see the test of concurrent turns.)
pub async fn for_turn(
    db: &impl ConnectionTrait,
    user_id: &str,
    id: Uuid,
    limit: u64,
) -> AppResult<(conversations::Model, Vec<ContextTurn>)> {
    let conversation = get(db, user_id, id).await?.ok_or(AppError::NotFound)?;
    let count = conversation.turn_count;
    let turns = if count > 0 {
        turns_before(db, user_id, id, count.saturating_add(1), limit).await?
    } else {
        Vec::new()
    };
    Ok((conversation, turns))
}

/// What a call's context needs of an earlier turn.
#[derive(Clone, Debug, FromQueryResult)]
pub struct ContextTurn {
    pub seq: i32,
    /// The turn's log.
    pub id: Uuid,
    pub prompt: String,
    /// NULL while the turn runs.
    pub completion: Option<String>,
}

/// Up to `limit` turns numbered below `before`, newest first (a call's context is read so,
/// until it is full): only the columns the context uses.
pub async fn turns_before(
    db: &impl ConnectionTrait,
    user_id: &str,
    conversation_id: Uuid,
    before: i32,
    limit: u64,
) -> AppResult<Vec<ContextTurn>> {
    use conversation_turns::Column as C;
    use prompt_logs::Column as L;
    Ok(turns_of(conversation_id)
        .filter(C::UserId.eq(user_id))
        .select_only()
        .column(C::Seq)
        .column_as(Expr::col((prompt_logs::Entity, L::Id)), "id")
        .column_as(Expr::col((prompt_logs::Entity, L::Prompt)), "prompt")
        .column_as(
            Expr::col((prompt_logs::Entity, L::Completion)),
            "completion",
        )
        .join(
            JoinType::InnerJoin,
            conversation_turns::Relation::PromptLogs.def(),
        )
        .filter(C::Seq.lt(before))
        .order_by_desc(C::Seq)
        .limit(limit)
        .into_model::<ContextTurn>()
        .all(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_the_first_words_on_one_line() {
        assert_eq!(
            title_from_prompt("  Plan a\n trip   to Kyoto "),
            "Plan a trip to Kyoto"
        );
        let long = "word ".repeat(40);
        let t = title_from_prompt(&long);
        assert!(t.chars().count() <= DERIVED_TITLE_CHARS, "{t}");
        assert!(t.ends_with("word…"), "{t}");
        let unbroken = "x".repeat(200);
        assert_eq!(
            title_from_prompt(&unbroken).chars().count(),
            DERIVED_TITLE_CHARS
        );
    }
}
