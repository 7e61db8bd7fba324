//! Per-request batch loading with no time window.
//!
//! async-graphql's `DataLoader` gathers keys for a fixed delay (1 ms by default) on a timer
//! before it queries, and every level of nesting pays it: `me { profile { tokensUsedThisMonth } }`
//! waited about 2 ms of its 3 ms at one client. A zero delay does not help: tokio's timer has a
//! 1 ms resolution and rounds a deadline up to its next tick. And a shorter window makes
//! batches depend on timing: a page whose resolvers take longer than the window to register
//! their keys is split across queries.
//!
//! Here the batch runs when the operation cannot go on without it, not after a delay. Each
//! operation is polled through [`Batches::drive`] (or [`Batches::drive_stream`]), which polls
//! the operation first: every resolver of the level being resolved registers its key in that
//! poll. Only when the operation is blocked (it returned `Pending` without asking to be polled
//! again) are the batches its resolvers asked for started, one query per loader, in the same
//! task. So batching does not depend on timing at all, and a lone request pays no window.
//! The loaders themselves are async-graphql's [`Loader`] trait.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use async_graphql::dataloader::Loader;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use futures_util::task::{ArcWake, AtomicWaker, waker_ref};
use tokio::sync::oneshot;

/// The batches one operation's resolvers asked for and not yet started.
#[derive(Clone, Default)]
pub struct Batches(Arc<Mutex<Vec<BoxFuture<'static, ()>>>>);

impl Batches {
    fn push(&self, batch: BoxFuture<'static, ()>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(batch);
    }

    fn take(&self) -> Vec<BoxFuture<'static, ()>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Run `operation` (a future, or a subscription's stream of responses), starting the
    /// batches its resolvers ask for whenever it is blocked.
    pub fn drive<T>(self, operation: T) -> Driven<T> {
        Driven {
            inner: Box::pin(operation),
            batches: self,
            running: FuturesUnordered::new(),
            wake: Arc::default(),
        }
    }
}

/// An operation and the batches it waits for (see the module's doc).
pub struct Driven<T> {
    inner: Pin<Box<T>>,
    batches: Batches,
    running: FuturesUnordered<BoxFuture<'static, ()>>,
    wake: Arc<WakeFlag>,
}

/// The waker the operation is polled with: it records that the operation asked to be polled
/// again (a resolver yielded, or a batch it waits for answered) and passes the wake on.
#[derive(Default)]
struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl ArcWake for WakeFlag {
    fn wake_by_ref(this: &Arc<Self>) {
        this.woken.store(true, Ordering::Release);
        this.task.wake();
    }
}

impl<T> Driven<T> {
    /// Poll the operation with `poll`; when it is blocked, start and poll its batches.
    fn step<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        self.wake.task.register(cx.waker());
        self.wake.woken.store(false, Ordering::Release);
        let waker = waker_ref(&self.wake);
        let mut inner_cx = Context::from_waker(&waker);
        if let Poll::Ready(r) = poll(self.inner.as_mut(), &mut inner_cx) {
            return Poll::Ready(r);
        }
        // Asked to be polled again (the task is woken already): resolvers of this level may
        // not all have registered their keys yet.
        if self.wake.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.running.extend(self.batches.take());
        // A batch that answers wakes the operation (through the flag): it is polled next.
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
        Poll::Pending
    }
}

impl<F: Future> Future for Driven<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Unpin: the operation is boxed.
        self.get_mut().step(cx, |f, cx| f.poll(cx))
    }
}

impl<S: Stream> Stream for Driven<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.get_mut().step(cx, |s, cx| s.poll_next(cx))
    }
}

type Answer<V> = Result<Option<V>, async_graphql::Error>;

type Waiters<K, V> = Vec<(K, oneshot::Sender<Answer<V>>)>;

/// One loader for one operation: `load_one` calls made while the operation resolves a level
/// are answered by one `Loader::load` of their distinct keys. Only for operations run through
/// [`Batches::drive`]: nothing else starts its batches.
pub struct Batcher<T, K>
where
    T: Loader<K>,
    K: Send + Sync + Hash + Eq + Clone + 'static,
{
    loader: Arc<T>,
    /// The keys asked for since the last batch started, and who waits for each.
    waiting: Arc<Mutex<Waiters<K, T::Value>>>,
    batches: Batches,
}

impl<T, K> Batcher<T, K>
where
    T: Loader<K, Error = async_graphql::Error>,
    K: Send + Sync + Hash + Eq + Clone + 'static,
{
    /// `loader`, batched for the operation that `batches` drives.
    pub fn new(loader: T, batches: &Batches) -> Self {
        Self {
            loader: Arc::new(loader),
            waiting: Arc::default(),
            batches: batches.clone(),
        }
    }

    /// The value for `key` (`None` when the loader has none), loaded with the other keys the
    /// operation asks for at the same level.
    pub async fn load_one(&self, key: K) -> Answer<T::Value> {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.push((key, tx));
            waiting.len() == 1
        };
        if first {
            let loader = self.loader.clone();
            let waiting = self.waiting.clone();
            self.batches.push(Box::pin(async move {
                let waiters =
                    std::mem::take(&mut *waiting.lock().unwrap_or_else(PoisonError::into_inner));
                let mut seen = HashSet::with_capacity(waiters.len());
                let keys: Vec<K> = waiters
                    .iter()
                    .filter(|(k, _)| seen.insert(k))
                    .map(|(k, _)| k.clone())
                    .collect();
                let loaded: Result<HashMap<K, T::Value>, _> = loader.load(&keys).await;
                for (key, tx) in waiters {
                    let _ = tx.send(match &loaded {
                        Ok(values) => Ok(values.get(&key).cloned()),
                        Err(e) => Err(e.clone()),
                    });
                }
            }));
        }
        rx.await.unwrap_or_else(|_| {
            // The operation was dropped mid-batch: nobody reads this.
            Err(async_graphql::Error::new("the batch was cancelled"))
        })
    }
}
