//! The one record of this process's calls in flight, from before admission until after
//! finalisation: shutdown waits until it is empty, lease renewal reads it, and a lease sweep
//! never takes a call it holds for stranded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Default)]
pub struct InFlight {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    calls: HashSet<Uuid>,
    /// Set at shutdown: no call may start any more.
    closed: bool,
}

/// Holds a call in [`InFlight`] for as long as it lives (the call's task owns it).
pub struct InFlightGuard {
    tracker: Arc<InFlight>,
    id: Uuid,
}

impl InFlight {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding the lock: one insert or
        // remove is all that happens under it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a call; `None` once shutdown has begun (the call must not start).
    pub fn register(self: &Arc<Self>, id: Uuid) -> Option<InFlightGuard> {
        let mut state = self.state();
        if state.closed {
            return None;
        }
        state.calls.insert(id);
        Some(InFlightGuard {
            tracker: self.clone(),
            id,
        })
    }

    /// The calls in flight now.
    pub fn snapshot(&self) -> HashSet<Uuid> {
        self.state().calls.clone()
    }

    /// How many calls are in flight.
    pub fn len(&self) -> usize {
        self.state().calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuse new calls from now on.
    pub fn close(&self) {
        self.state().closed = true;
    }

    /// Wait until no call is in flight.
    pub async fn wait_empty(&self) {
        loop {
            // Created before the check: a call that ends in between still wakes this waiter.
            let changed = self.changed.notified();
            if self.is_empty() {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.tracker.state().calls.remove(&self.id);
        self.tracker.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_held_until_their_guard_goes_and_none_start_after_close() {
        let tracker = Arc::new(InFlight::default());
        let a = tracker.register(Uuid::now_v7()).unwrap();
        let b = tracker.register(Uuid::now_v7()).unwrap();
        assert_eq!(tracker.len(), 2);
        tracker.close();
        assert!(tracker.register(Uuid::now_v7()).is_none());
        let waiter = {
            let tracker = tracker.clone();
            tokio::spawn(async move { tracker.wait_empty().await })
        };
        drop(a);
        assert!(!waiter.is_finished());
        drop(b);
        waiter.await.unwrap();
        assert!(tracker.snapshot().is_empty());
    }
}
