//! The caller's history, newest first, by keyset on (`created_at`, `id`): exact when timestamps
//! tie, and every page costs one index range scan however deep it is (no OFFSET).

use chrono::{DateTime, Utc};
use entity::prompt_logs::{self, CallStatus};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select,
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

/// Which page of a feed ordered by positions `P` (for the history: newest first).
#[derive(Clone, Copy, Debug)]
pub enum Window<P = Position> {
    /// The `first` items after `after` in the feed's order (from its start when None).
    Forward { first: u64, after: Option<P> },
    /// The `last` items before `before` in the feed's order (up to its end when None).
    Backward { last: u64, before: Option<P> },
}

/// Optional narrowing of the feed.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub model: Option<String>,
    pub status: Option<CallStatus>,
}

/// A page, newest first.
#[derive(Debug)]
pub struct Page {
    pub logs: Vec<prompt_logs::Model>,
    pub has_previous_page: bool,
    pub has_next_page: bool,
}

/// `(created_at, id) < (p.created_at, p.id)`: a row comparison, which PostgreSQL and SQLite
/// use as a range on `idx_log_user_time_id`, so a page deep in a long feed starts where it
/// belongs instead of filtering out every newer row first (the OR-spelled form did that).
fn older_than(p: Position) -> Condition {
    Condition::all().add(position_expr().lt(position_value(p)))
}

fn newer_than(p: Position) -> Condition {
    Condition::all().add(position_expr().gt(position_value(p)))
}

fn position_expr() -> Expr {
    use prompt_logs::Column as C;
    Expr::tuple([
        Expr::col((prompt_logs::Entity, C::CreatedAt)),
        Expr::col((prompt_logs::Entity, C::Id)),
    ])
}

fn position_value(p: Position) -> Expr {
    Expr::tuple([Expr::value(p.created_at), Expr::value(p.id)])
}

fn feed(user_id: &str, filter: &Filter) -> Select<prompt_logs::Entity> {
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

async fn any(db: &impl ConnectionTrait, q: Select<prompt_logs::Entity>) -> AppResult<bool> {
    Ok(q.limit(1).count(db).await? > 0)
}

/// One page of the user's logs.
pub async fn page(
    db: &impl ConnectionTrait,
    user_id: &str,
    filter: &Filter,
    window: Window,
) -> AppResult<Page> {
    use prompt_logs::Column as C;
    match window {
        Window::Forward { first, after } => {
            let mut q = feed(user_id, filter);
            if let Some(after) = after {
                q = q.filter(older_than(after));
            }
            let mut logs = q
                .order_by_desc(C::CreatedAt)
                .order_by_desc(C::Id)
                .limit(first + 1)
                .all(db)
                .await?;
            let has_next_page = logs.len() as u64 > first;
            logs.truncate(first as usize);
            let has_previous_page = match after {
                Some(after) => any(db, feed(user_id, filter).filter(newer_than(after))).await?,
                None => false,
            };
            Ok(Page {
                logs,
                has_previous_page,
                has_next_page,
            })
        }
        Window::Backward { last, before } => {
            let mut q = feed(user_id, filter);
            if let Some(before) = before {
                q = q.filter(newer_than(before));
            }
            let mut logs = q
                .order_by_asc(C::CreatedAt)
                .order_by_asc(C::Id)
                .limit(last + 1)
                .all(db)
                .await?;
            let has_previous_page = logs.len() as u64 > last;
            logs.truncate(last as usize);
            logs.reverse();
            let has_next_page = match before {
                Some(before) => any(db, feed(user_id, filter).filter(older_than(before))).await?,
                None => false,
            };
            Ok(Page {
                logs,
                has_previous_page,
                has_next_page,
            })
        }
    }
}
