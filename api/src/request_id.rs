//! Request ids: every HTTP request (and WebSocket connection) gets one, the client's
//! `x-request-id` when it sent a well-formed one, else a fresh UUID. It is on the response, on
//! every log line of the request (a `request` span), on the call tasks the request starts, and
//! on the call's upstream HTTP request, so a call can be followed into the provider's logs.
//! Carried in a task-local (set by the middleware, and by whoever spawns work for the request).
//! A leaf module.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::Either;
use tracing::Instrument;

/// The header, both ways.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// A client's id is kept when it is 1 to 64 characters of `A-Z a-z 0-9 - _ . :` (what
/// proxies and tracing systems generate); anything else is replaced, so no header can smuggle
/// text into logs.
pub fn well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The client's id if well-formed, else a new one.
pub fn accept_or_new(given: Option<&str>) -> Arc<str> {
    match given.filter(|id| well_formed(id)) {
        Some(id) => Arc::from(id),
        None => Arc::from(uuid::Uuid::now_v7().simple().to_string()),
    }
}

/// The id of the request this task works for, if any.
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Run `work` for request `id`: within its task-local and a `request` span carrying it.
pub fn scope<F: Future>(id: Arc<str>, work: F) -> impl Future<Output = F::Output> {
    let span = tracing::info_span!("request", request_id = %id);
    CURRENT.scope(id, work.instrument(span))
}

/// The current request's id and span, to run work for it in another task.
pub struct Carried {
    id: Option<Arc<str>>,
    span: tracing::Span,
}

/// Capture the current request's id and span (before spawning work for it).
pub fn capture() -> Carried {
    Carried {
        id: current(),
        span: tracing::Span::current(),
    }
}

impl Carried {
    /// Run `work` with the captured id and in the captured span.
    ///
    /// Not an `async fn`: one would keep `work` as its argument beside the future wrapping it,
    /// twice its size for the life of the task (for a WebSocket connection's task, which lives
    /// as long as the socket, that was half of what an idle socket cost).
    pub fn run<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        let work = match self.id {
            Some(id) => Either::Left(CURRENT.scope(id, work)),
            None => Either::Right(work),
        };
        work.instrument(self.span)
    }
}

/// Run `work` (spawned for the current request) with the current request's id, if any.
pub fn carry<F: Future>(work: F) -> impl Future<Output = F::Output> {
    capture().run(work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_are_kept() {
        assert_eq!(&*accept_or_new(Some("abc-123_x.y:z")), "abc-123_x.y:z");
        for bad in ["", "with space", "new\nline", "é", &"x".repeat(65)] {
            let id = accept_or_new(Some(bad));
            assert_ne!(&*id, bad);
            assert!(well_formed(&id));
        }
        assert_eq!(accept_or_new(None).len(), 32);
    }

    #[tokio::test]
    async fn carried_into_spawned_work() {
        let id: Arc<str> = Arc::from("req-1");
        let seen = scope(id, async {
            tokio::spawn(carry(async { current() })).await.unwrap()
        })
        .await;
        assert_eq!(seen.as_deref(), Some("req-1"));
        assert_eq!(current(), None);
    }
}
