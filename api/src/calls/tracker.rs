//! The one record of this process's calls in flight, from before admission until after
//! finalisation: shutdown waits until it is empty, lease renewal reads it, and a lease sweep
//! never takes a call it holds for stranded.

use std::collections::{HashMap, HashSet};
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
    /// Each call, with what it relayed since its last checkpoint.
    calls: HashMap<Uuid, Arc<Unsaved>>,
    /// Set at shutdown: no call may start any more.
    closed: bool,
}

/// Holds a call in [`InFlight`] for as long as it lives (the call's task owns it).
pub struct InFlightGuard {
    tracker: Arc<InFlight>,
    id: Uuid,
    unsaved: Arc<Unsaved>,
}

/// Text a call relayed that no checkpoint holds yet.
#[derive(Default)]
pub struct Unsaved(Mutex<String>);

impl Unsaved {
    fn text(&self) -> MutexGuard<'_, String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add relayed text.
    pub fn push(&self, delta: &str) {
        self.text().push_str(delta);
    }

    /// Take what is unsaved (to checkpoint it).
    pub fn take(&self) -> String {
        std::mem::take(&mut *self.text())
    }

    /// Put back text whose checkpoint failed, before anything relayed since.
    pub fn restore(&self, earlier: String) {
        let mut text = self.text();
        let later = std::mem::replace(&mut *text, earlier);
        text.push_str(&later);
    }
}

impl InFlightGuard {
    /// Where the call's task records what it relays, for the checkpoints.
    pub fn unsaved(&self) -> Arc<Unsaved> {
        self.unsaved.clone()
    }
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
        let unsaved = Arc::new(Unsaved::default());
        state.calls.insert(id, unsaved.clone());
        Some(InFlightGuard {
            tracker: self.clone(),
            id,
            unsaved,
        })
    }

    /// The calls in flight now.
    pub fn snapshot(&self) -> HashSet<Uuid> {
        self.state().calls.keys().copied().collect()
    }

    /// Every call in flight with text to checkpoint, and that text (taken: on failure, give it
    /// back with [`Unsaved::restore`]).
    pub fn take_unsaved(&self) -> Vec<(Uuid, Arc<Unsaved>, String)> {
        let calls: Vec<(Uuid, Arc<Unsaved>)> = self
            .state()
            .calls
            .iter()
            .map(|(id, u)| (*id, u.clone()))
            .collect();
        calls
            .into_iter()
            .filter_map(|(id, u)| {
                let text = u.take();
                (!text.is_empty()).then_some((id, u, text))
            })
            .collect()
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

/// Outcomes of calls whose task could not record them in time (the database was away): the
/// lease sweep records them exactly, instead of estimating, once it can.
#[derive(Default)]
pub struct Abandoned(Mutex<HashMap<Uuid, super::store::Outcome>>);

impl Abandoned {
    fn map(&self) -> MutexGuard<'_, HashMap<Uuid, super::store::Outcome>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn hand_over(&self, id: Uuid, outcome: super::store::Outcome) {
        self.map().insert(id, outcome);
    }

    pub fn take(&self, id: &Uuid) -> Option<super::store::Outcome> {
        self.map().remove(id)
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

    #[test]
    fn unsaved_text_is_taken_once_and_restored_in_order() {
        let tracker = Arc::new(InFlight::default());
        let a = tracker.register(Uuid::now_v7()).unwrap();
        a.unsaved().push("Hel");
        let taken = tracker.take_unsaved();
        assert_eq!(taken.len(), 1);
        a.unsaved().push("lo");
        assert!(tracker.take_unsaved()[0].2 == "lo");
        // A failed checkpoint puts its text back before what came since.
        taken[0].1.restore(taken[0].2.clone());
        a.unsaved().push("!");
        assert_eq!(tracker.take_unsaved()[0].2, "Hel!");
        assert!(tracker.take_unsaved().is_empty());
    }
}
