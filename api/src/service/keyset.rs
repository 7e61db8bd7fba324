//! Keyset pagination, newest first, on a (timestamp, id) pair: exact when timestamps tie, and
//! every page costs one index range scan however deep it is (no OFFSET). The history feed
//! (`created_at`, `id`) and the conversation list (`updated_at`, `id`) page this way.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    Select,
};
use uuid::Uuid;

use crate::error::AppResult;

/// Which page of a feed ordered by positions `P`.
#[derive(Clone, Copy, Debug)]
pub enum Window<P> {
    /// The `first` items after `after` in the feed's order (from its start when None).
    Forward { first: u64, after: Option<P> },
    /// The `last` items before `before` in the feed's order (up to its end when None).
    Backward { last: u64, before: Option<P> },
}

impl<P> Window<P> {
    /// The same window with its position converted.
    pub fn map<Q>(self, f: impl Fn(P) -> Q) -> Window<Q> {
        match self {
            Window::Forward { first, after } => Window::Forward {
                first,
                after: after.map(f),
            },
            Window::Backward { last, before } => Window::Backward {
                last,
                before: before.map(f),
            },
        }
    }
}

/// A page, in the feed's order.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_previous_page: bool,
    pub has_next_page: bool,
}

/// A place in a newest-first feed: the (timestamp, id) of an item.
pub type Key = (DateTime<Utc>, Uuid);

/// The columns a feed is ordered by, newest first.
pub struct Order<E: EntityTrait> {
    pub at: E::Column,
    pub id: E::Column,
}

impl<E: EntityTrait> Order<E> {
    fn expr(&self) -> Expr {
        Expr::tuple([
            Expr::col((E::default(), self.at)),
            Expr::col((E::default(), self.id)),
        ])
    }

    /// `(at, id) < key`: a row comparison, which PostgreSQL and SQLite use as a range on an
    /// index of (…, at, id), so a deep page starts where it belongs instead of filtering out
    /// every newer row first (the OR-spelled form did that).
    fn older_than(&self, key: Key) -> Condition {
        Condition::all().add(self.expr().lt(value(key)))
    }

    fn newer_than(&self, key: Key) -> Condition {
        Condition::all().add(self.expr().gt(value(key)))
    }
}

fn value((at, id): Key) -> Expr {
    Expr::tuple([Expr::value(at), Expr::value(id)])
}

/// One page of `feed()` (a query of the feed's rows, filtered but not ordered), newest first.
pub async fn newest_first<E>(
    db: &impl ConnectionTrait,
    feed: impl Fn() -> Select<E>,
    order: &Order<E>,
    window: Window<Key>,
) -> AppResult<Page<E::Model>>
where
    E: EntityTrait,
    E::Model: Send + Sync,
{
    let any = |q: Select<E>| async move { AppResult::Ok(q.limit(1).count(db).await? > 0) };
    match window {
        Window::Forward { first, after } => {
            let mut q = feed();
            if let Some(after) = after {
                q = q.filter(order.older_than(after));
            }
            let mut items = q
                .order_by_desc(order.at)
                .order_by_desc(order.id)
                .limit(first + 1)
                .all(db)
                .await?;
            let has_next_page = items.len() as u64 > first;
            items.truncate(first as usize);
            let has_previous_page = match after {
                Some(after) => any(feed().filter(order.newer_than(after))).await?,
                None => false,
            };
            Ok(Page {
                items,
                has_previous_page,
                has_next_page,
            })
        }
        Window::Backward { last, before } => {
            let mut q = feed();
            if let Some(before) = before {
                q = q.filter(order.newer_than(before));
            }
            let mut items = q
                .order_by_asc(order.at)
                .order_by_asc(order.id)
                .limit(last + 1)
                .all(db)
                .await?;
            let has_previous_page = items.len() as u64 > last;
            items.truncate(last as usize);
            items.reverse();
            let has_next_page = match before {
                Some(before) => any(feed().filter(order.older_than(before))).await?,
                None => false,
            };
            Ok(Page {
                items,
                has_previous_page,
                has_next_page,
            })
        }
    }
}
