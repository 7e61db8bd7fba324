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

/// Text a call relayed that no checkpoint holds yet, and how much its checkpoint holds.
#[derive(Default)]
pub struct Unsaved(Mutex<UnsavedText>);

#[derive(Default)]
struct UnsavedText {
    pending: String,
    /// Characters the call's checkpoint row holds.
    saved_chars: usize,
}

impl Unsaved {
    fn text(&self) -> MutexGuard<'_, UnsavedText> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add relayed text.
    pub fn push(&self, delta: &str) {
        self.text().pending.push_str(delta);
    }

    /// Take what is unsaved, with how many characters are saved before it.
    pub fn take(&self) -> (usize, String) {
        let mut t = self.text();
        (t.saved_chars, std::mem::take(&mut t.pending))
    }

    /// The checkpoint of `text` (taken with [`Unsaved::take`]) committed.
    pub fn saved(&self, text: &str) {
        self.text().saved_chars += text.chars().count();
    }

    /// Put back text whose checkpoint failed, before anything relayed since.
    pub fn restore(&self, earlier: String) {
        let mut t = self.text();
        let later = std::mem::replace(&mut t.pending, earlier);
        t.pending.push_str(&later);
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

    /// Every call in flight with text to checkpoint: (call, its text's holder, characters
    /// saved, text taken). On failure give the text back with [`Unsaved::restore`]; on
    /// success record it with [`Unsaved::saved`].
    pub fn take_unsaved(&self) -> Vec<(Uuid, Arc<Unsaved>, usize, String)> {
        let calls: Vec<(Uuid, Arc<Unsaved>)> = self
            .state()
            .calls
            .iter()
            .map(|(id, u)| (*id, u.clone()))
            .collect();
        calls
            .into_iter()
            .filter_map(|(id, u)| {
                let (saved, text) = u.take();
                (!text.is_empty()).then_some((id, u, saved, text))
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

    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Forget outcomes of calls that are no longer waiting for this process (finalised by
    /// another replica's sweep, or gone with their user).
    pub fn retain(&self, waiting: &HashSet<Uuid>) {
        self.map().retain(|id, _| waiting.contains(id));
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
        a.unsaved().push("Hél");
        let taken = tracker.take_unsaved();
        assert_eq!((taken[0].2, taken[0].3.as_str()), (0, "Hél"));
        a.unsaved().push("lo");
        // The first checkpoint failed: its text goes back before what came since.
        taken[0].1.restore(taken[0].3.clone());
        let again = tracker.take_unsaved();
        assert_eq!((again[0].2, again[0].3.as_str()), (0, "Héllo"));
        again[0].1.saved(&again[0].3);
        a.unsaved().push("!");
        let next = tracker.take_unsaved();
        assert_eq!(
            (next[0].2, next[0].3.as_str()),
            (5, "!"),
            "characters, not bytes"
        );
        assert!(tracker.take_unsaved().is_empty());
    }
}
