//! Work that arrives together is done together: a queue whose items, gathered while the
//! previous groups are running, run as one group (one statement for many, one commit).
//!
//! An item starts at once when a slot is free, so a lone item waits for nothing: there is no
//! window to wait out. Under a burst, every item that arrived while the slots were busy goes in
//! the next group (up to its largest size), so the work per item shrinks as the load grows.
//! Used for calls' admission reads and admissions (`crate::calls`): a burst of 500 streams
//! had each of them queue on the pool for statements of its own.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::{AppError, AppResult};

type Run<I, O> = Arc<dyn Fn(Vec<I>) -> BoxFuture<'static, Vec<O>> + Send + Sync>;

/// A queue of `I` answered with `O`, run in groups by the function given to [`Grouped::start`].
/// Clones share the queue.
pub struct Grouped<I, O> {
    queue: mpsc::UnboundedSender<(I, oneshot::Sender<O>)>,
    run: Run<I, O>,
    slots: Arc<Semaphore>,
    /// Items sent and not yet taken into a group.
    queued: Arc<AtomicUsize>,
    /// See [`Grouped::lone_items_inline`].
    inline: bool,
}

impl<I, O> Clone for Grouped<I, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            run: self.run.clone(),
            slots: self.slots.clone(),
            queued: self.queued.clone(),
            inline: self.inline,
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Grouped<I, O> {
    /// Start the queue (from within the runtime): at most `slots` groups run at once, each of
    /// at most `max` items; `run` answers a group's items in their order. Each group runs in a
    /// task of its own, so it finishes even if every caller waiting on it is gone.
    pub fn start<F, Fut>(slots: usize, max: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let (queue, mut arrivals) = mpsc::unbounded_channel::<(I, oneshot::Sender<O>)>();
        let run: Run<I, O> = Arc::new(move |items| run(items).boxed());
        let slots = Arc::new(Semaphore::new(slots));
        let queued = Arc::new(AtomicUsize::new(0));
        let grouped = Self {
            queue,
            run: run.clone(),
            slots: slots.clone(),
            queued: queued.clone(),
            inline: false,
        };
        tokio::spawn(async move {
            while let Some(first) = arrivals.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                // Everyone who arrived while the slots were busy goes in this group.
                let mut group = vec![first];
                while group.len() < max {
                    match arrivals.try_recv() {
                        Ok(item) => group.push(item),
                        Err(_) => break,
                    }
                }
                queued.fetch_sub(group.len(), Ordering::AcqRel);
                let run = run.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let (items, replies): (Vec<I>, Vec<_>) = group.into_iter().unzip();
                    for (answer, reply) in run(items).await.into_iter().zip(replies) {
                        let _ = reply.send(answer);
                    }
                });
            }
        });
        grouped
    }

    /// For work that may be abandoned halfway (reads; a single write that either happens or
    /// not): an item that finds nothing queued and a slot free runs at once in the caller's
    /// task, as a group of one, instead of hopping through the queue's task and a group's. At
    /// low load that is every item. Not for work that must finish once begun, such as an
    /// admission's commit: a caller that goes away would drop it halfway.
    pub fn lone_items_inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// `input`'s answer, computed with whatever else arrives meanwhile; `None` if the queue is
    /// gone (the runtime is shutting down) or its group's task ended without answering.
    pub async fn call(&self, input: I) -> Option<O> {
        if self.inline
            && self.queued.load(Ordering::Acquire) == 0
            && let Ok(_slot) = self.slots.try_acquire()
        {
            return (self.run)(vec![input]).await.into_iter().next();
        }
        let (reply, answer) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.queue.send((input, reply)).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        answer.await.ok()
    }
}

impl<I: Send + 'static, T: Send + 'static> Grouped<I, AppResult<T>> {
    /// [`Grouped::call`] for fallible work: a queue that is gone (the runtime is shutting
    /// down) answers [`AppError::Unavailable`].
    pub async fn answer(&self, input: I) -> AppResult<T> {
        self.call(input)
            .await
            .unwrap_or_else(|| Err(AppError::Unavailable("the server is shutting down".into())))
    }
}

/// The values of an `IN (…)` list, padded with copies of the last to the next power of two.
/// A grouped statement's list is as long as its group, and each length is a statement text of
/// its own: prepared once per connection, planned for its values on its first five runs there,
/// and one of the hundred that sqlx keeps per connection. Padded, the lists of groups of up to
/// 64 have seven texts instead of 64. A repeated value changes nothing an `IN` selects, updates
/// or deletes. Past 1,024 values (a lease renewal of that many running calls) a list grows to a
/// multiple of 1,024 instead, so padding never adds more than 1,023 bound values.
///
/// Not `= ANY($1)` with the values as one array, which would be one text for all sizes:
/// PostgreSQL plans that afresh on every run, as its generic plan assumes ten elements and
/// never beats the custom plan of a short list (test
/// `auth::a_lone_session_lookup_is_planned_once_for_all_its_runs`).
pub fn padded<T: Clone>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    const STEP: usize = 1024;
    let mut values: Vec<T> = values.into_iter().collect();
    if let Some(last) = values.last().cloned() {
        let n = values.len();
        let to = if n <= STEP {
            n.next_power_of_two()
        } else {
            n.next_multiple_of(STEP)
        };
        values.resize(to, last);
    }
    values
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;

    /// Each group's items and the task it ran in.
    type Groups = Arc<Mutex<Vec<(Vec<u32>, Option<tokio::task::Id>)>>>;

    /// A queue of one slot whose groups record themselves, and whose first group waits for
    /// `gate` (so the others queue behind it).
    fn recorder(gate: Arc<Notify>) -> (Grouped<u32, u32>, Groups) {
        let groups: Groups = Arc::default();
        let seen = groups.clone();
        let grouped = Grouped::start(1, 64, move |items: Vec<u32>| {
            let (gate, seen) = (gate.clone(), seen.clone());
            async move {
                let first = {
                    let mut seen = seen.lock().unwrap();
                    seen.push((items.clone(), tokio::task::try_id()));
                    seen.len() == 1
                };
                if first {
                    gate.notified().await;
                }
                items.iter().map(|i| i * 10).collect()
            }
        });
        (grouped, groups)
    }

    #[tokio::test]
    async fn items_that_arrive_while_the_slot_is_busy_run_as_one_group() {
        let gate = Arc::new(Notify::new());
        let (grouped, groups) = recorder(gate.clone());
        let first = tokio::spawn({
            let g = grouped.clone();
            async move { g.call(1).await }
        });
        // The first group is running (and holds the only slot) once it has recorded itself.
        while groups.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (2..=4)
            .map(|i| {
                let g = grouped.clone();
                tokio::spawn(async move { g.call(i).await })
            })
            .collect();
        while grouped.queued.load(Ordering::Acquire) < 3 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert_eq!(first.await.unwrap(), Some(10));
        let mut answers = Vec::new();
        for r in rest {
            answers.push(r.await.unwrap());
        }
        assert_eq!(answers, [Some(20), Some(30), Some(40)]);
        let groups: Vec<Vec<u32>> = groups.lock().unwrap().iter().map(|g| g.0.clone()).collect();
        assert_eq!(groups, [vec![1], vec![2, 3, 4]]);
    }

    #[tokio::test]
    async fn a_lone_item_runs_in_its_callers_task_only_when_asked_and_idle() {
        let gate = Arc::new(Notify::new());
        gate.notify_one(); // the first group does not wait
        let (grouped, groups) = recorder(gate.clone());
        let inline = grouped.clone().lone_items_inline();
        let caller = tokio::spawn(async move {
            (
                tokio::task::id(),
                grouped.call(1).await,
                inline.call(2).await,
            )
        });
        let (caller_id, queued, ran_inline) = caller.await.unwrap();
        assert_eq!((queued, ran_inline), (Some(10), Some(20)));
        let groups = groups.lock().unwrap().clone();
        assert_eq!(groups.len(), 2);
        assert_ne!(
            groups[0].1,
            Some(caller_id),
            "a queued item runs in a group's task"
        );
        assert_eq!(groups[1].1, Some(caller_id), "a lone item ran inline");
    }

    #[tokio::test]
    async fn an_item_does_not_overtake_the_queue_inline() {
        let gate = Arc::new(Notify::new());
        let (grouped, groups) = recorder(gate.clone());
        let inline = grouped.clone().lone_items_inline();
        let first = tokio::spawn({
            let g = grouped.clone();
            async move { g.call(1).await }
        });
        while groups.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // The slot is busy: an inline-capable item queues like any other.
        let second = tokio::spawn(async move { inline.call(2).await });
        while grouped.queued.load(Ordering::Acquire) < 1 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert_eq!(first.await.unwrap(), Some(10));
        assert_eq!(second.await.unwrap(), Some(20));
        assert_eq!(groups.lock().unwrap().len(), 2);
    }

    #[test]
    fn lists_are_padded_to_a_power_of_two_with_their_last_value() {
        assert_eq!(super::padded(Vec::<u8>::new()), Vec::<u8>::new());
        assert_eq!(super::padded([7]), [7]);
        assert_eq!(super::padded([1, 2, 3]), [1, 2, 3, 3]);
        assert_eq!(super::padded(1..=5), [1, 2, 3, 4, 5, 5, 5, 5]);
        assert_eq!(super::padded(1..=64).len(), 64);
        assert_eq!(super::padded(1..=65).len(), 128);
        assert_eq!(super::padded(1..=1024).len(), 1024);
        assert_eq!(super::padded(1..=1025).len(), 2048);
        assert_eq!(super::padded(1..=2049).len(), 3072);
    }
}
