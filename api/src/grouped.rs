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

use tokio::sync::{Semaphore, mpsc, oneshot};

/// A queue of `I` answered with `O`, run in groups by the function given to [`Grouped::start`].
/// Clones share the queue.
pub struct Grouped<I, O> {
    queue: mpsc::UnboundedSender<(I, oneshot::Sender<O>)>,
}

impl<I, O> Clone for Grouped<I, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Grouped<I, O> {
    /// Start the queue (from within the runtime): at most `slots` groups run at once, each of
    /// at most `max` items; `run` answers a group's items in their order.
    pub fn start<F, Fut>(slots: usize, max: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let (queue, mut arrivals) = mpsc::unbounded_channel::<(I, oneshot::Sender<O>)>();
        let run = Arc::new(run);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(slots));
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
        Self { queue }
    }

    /// `input`'s answer, computed with whatever else arrives meanwhile; `None` if the queue is
    /// gone (the runtime is shutting down) or its group's task ended without answering.
    pub async fn call(&self, input: I) -> Option<O> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((input, reply)).ok()?;
        answer.await.ok()
    }
}
