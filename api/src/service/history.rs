//! The caller's history, newest first, by keyset on (`created_at`, `id`) (see `keyset`).

use chrono::{DateTime, Utc};
use entity::prompt_logs::{self, CallStatus};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, Iterable, QueryFilter, QuerySelect, Select,
};
use uuid::Uuid;

use crate::error::AppResult;

/// A place in the feed: the (created_at, id) of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl From<&prompt_logs::Model> for Position {
    fn from(log: &prompt_logs::Model) -> Self {
        Position {
            created_at: log.created_at,
            id: log.id,
        }
    }
}

use super::keyset;
pub use super::keyset::{Page, Window};

/// Optional narrowing of the feed.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub model: Option<String>,
    pub status: Option<CallStatus>,
}

/// The user's logs that pass `filter`, unordered.
pub fn feed(user_id: &str, filter: &Filter) -> Select<prompt_logs::Entity> {
    let mut q = prompt_logs::Entity::find().filter(prompt_logs::Column::UserId.eq(user_id));
    if let Some(model) = &filter.model {
        q = q.filter(prompt_logs::Column::Model.eq(model.as_str()));
    }
    if let Some(status) = filter.status {
        // A status says how a call ended: calls still in flight have none yet.
        q = q
            .filter(prompt_logs::Column::Status.eq(status))
            .filter(prompt_logs::Column::Completion.is_not_null());
    }
    q
}

/// The feed's order: (`created_at`, `id`), on the index `idx_log_user_time_id`.
pub const ORDER: keyset::Order<prompt_logs::Entity> = keyset::Order {
    at: prompt_logs::Column::CreatedAt,
    id: prompt_logs::Column::Id,
};

/// Which of a log's unbounded columns a page reads: a prompt and a completion can be tens of
/// kilobytes each, and a feed that lists calls by model, status and time shows neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Texts {
    pub prompt: bool,
    pub completion: bool,
    pub metadata: bool,
}

impl Texts {
    /// Every column, as stored.
    pub const ALL: Texts = Texts {
        prompt: true,
        completion: true,
        metadata: true,
    };
}

/// `q` reading only the texts asked for. A text left out is read as a stand-in, never shown:
/// the prompt as `''`, the metadata as NULL, and the completion as `''` or NULL as the stored one
/// is, since a NULL completion is what makes a log in flight (`Model::in_flight`).
fn project(q: Select<prompt_logs::Entity>, texts: Texts) -> Select<prompt_logs::Entity> {
    use prompt_logs::Column;
    if texts == Texts::ALL {
        return q;
    }
    let mut q = q.select_only();
    for column in Column::iter() {
        q = match column {
            Column::Prompt if !texts.prompt => q.column_as(Expr::val(""), "prompt"),
            Column::Completion if !texts.completion => q.column_as(
                Expr::Case(Box::new(
                    Expr::case(Expr::col(Column::Completion).is_null(), Expr::null())
                        .finally(Expr::val("")),
                )),
                "completion",
            ),
            Column::Metadata if !texts.metadata => q.column_as(Expr::null(), "metadata"),
            column => q.column(column),
        };
    }
    q
}

/// One page of the user's logs, newest first, with the texts that `texts` asks for.
pub async fn page(
    db: &impl ConnectionTrait,
    user_id: &str,
    filter: &Filter,
    window: Window<Position>,
    texts: Texts,
) -> AppResult<Page<prompt_logs::Model>> {
    let window = window.map(|p| (p.created_at, p.id));
    keyset::newest_first(db, || project(feed(user_id, filter), texts), &ORDER, window).await
}
