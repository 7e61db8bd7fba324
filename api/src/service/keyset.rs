//! Keyset pagination, newest first, on a (timestamp, id) pair: exact when timestamps tie, and
//! every page costs one index range scan however deep it is (no OFFSET). The history feed
//! (`created_at`, `id`) and the conversation list (`updated_at`, `id`) page this way.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
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

/// Which side of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Newer,
    Older,
}

/// The id of the row of `feed` nearest to `key` on `side` (none when that side is empty): how a
/// page learns whether there is a page beyond it. Read in the index's order with `LIMIT 1`, so
/// the scan stops at the first row whatever lies beyond. (It was `query.limit(1).count()`, but
/// SeaORM's `count` drops the query's limit, so every row on that side was counted: 16 ms of
/// PostgreSQL's CPU for a page 5,000 rows deep, O(depth) per page.)
pub fn nearest_beyond<E: EntityTrait>(
    feed: Select<E>,
    order: &Order<E>,
    key: Key,
    side: Side,
) -> Select<E> {
    let q = match side {
        Side::Newer => feed
            .filter(order.newer_than(key))
            .order_by_asc(order.at)
            .order_by_asc(order.id),
        Side::Older => feed
            .filter(order.older_than(key))
            .order_by_desc(order.at)
            .order_by_desc(order.id),
    };
    q.select_only().column(order.id).limit(1)
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
    let any = |beyond: Select<E>| async move {
        let nearest: Option<Uuid> = beyond.into_tuple().one(db).await?;
        AppResult::Ok(nearest.is_some())
    };
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
                Some(after) => any(nearest_beyond(feed(), order, after, Side::Newer)).await?,
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
                Some(before) => any(nearest_beyond(feed(), order, before, Side::Older)).await?,
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
