//! The one record of this process's calls in flight, from before admission until after
//! finalisation: shutdown waits until it is empty, lease renewal reads it, and a lease sweep
//! never takes a call it holds for stranded.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use uuid::Uuid;

pub struct InFlight {
    state: Mutex<State>,
    changed: Notify,
    /// Each call is checkpointed at least this often (`CALL_CHECKPOINT_MS`)...
    every: Duration,
    /// ...in one of this many slices of that interval (see [`InFlight::take_due`]).
    slices: u32,
}

#[derive(Default)]
struct State {
    /// Each call, with what it relayed since its last checkpoint.
    calls: HashMap<Uuid, Arc<Unsaved>>,
    /// Calls registered so far: the next one's slice.
    registered: u32,
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
pub struct Unsaved(Mutex<UnsavedText>);

struct UnsavedText {
    pending: String,
    /// Characters the call's checkpoint row holds.
    saved_chars: usize,
    /// When the call's next checkpoint is due.
    due: Instant,
    /// When the call's lease was last renewed (by its admission, a checkpoint or a renewal),
    /// by this process's clock: at or before the heartbeat that was written.
    renewed: Instant,
}

impl Unsaved {
    fn new(now: Instant, due: Instant) -> Unsaved {
        Unsaved(Mutex::new(UnsavedText {
            pending: String::new(),
            saved_chars: 0,
            due,
            // Before its admission, which writes the lease's first heartbeat.
            renewed: now,
        }))
    }

    fn text(&self) -> MutexGuard<'_, UnsavedText> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add relayed text.
    pub fn push(&self, delta: &str) {
        self.text().pending.push_str(delta);
    }

    /// If the call's checkpoint is due before `horizon`: what is unsaved, with how many characters
    /// are saved before it; the next one is then due at `next`.
    fn take_due(&self, horizon: Instant, next: Instant) -> Option<(usize, String)> {
        let mut t = self.text();
        if t.due >= horizon {
            return None;
        }
        t.due = next;
        Some((t.saved_chars, std::mem::take(&mut t.pending)))
    }

    /// The checkpoint of `text` (taken with [`InFlight::take_due`]) committed; it began at
    /// `at`, and renewed the call's lease too.
    pub fn saved(&self, text: &str, at: Instant) {
        let mut t = self.text();
        t.saved_chars += text.chars().count();
        t.renewed = t.renewed.max(at);
    }

    /// The call's lease was renewed by a statement that began at `at`.
    pub fn renewed(&self, at: Instant) {
        let mut t = self.text();
        t.renewed = t.renewed.max(at);
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

/// The shortest tick of the checkpoint loop: a very short `CALL_CHECKPOINT_MS` gets fewer
/// slices rather than a busier loop.
const MIN_TICK: Duration = Duration::from_millis(10);
/// The most slices a checkpoint interval is cut into.
const MAX_SLICES: u32 = 8;

impl InFlight {
    /// Calls checkpointed at least every `every`.
    pub fn new(every: Duration) -> InFlight {
        let slices = (every.as_nanos() / MIN_TICK.as_nanos()).clamp(1, u128::from(MAX_SLICES));
        InFlight {
            state: Mutex::default(),
            changed: Notify::new(),
            every,
            slices: slices as u32,
        }
    }

    /// How often the checkpoint loop looks for calls that are due: a slice of the interval.
    pub fn tick(&self) -> Duration {
        self.every / self.slices
    }

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
        // Calls registered together (a burst) are due in turn, one slice of the interval
        // after another, rather than all in one statement at the same instant: a call's first
        // checkpoint is due one slice to one whole interval after it starts, never later.
        let slice = state.registered % self.slices + 1;
        state.registered = state.registered.wrapping_add(1);
        let now = Instant::now();
        let due = now + self.every * slice / self.slices;
        let unsaved = Arc::new(Unsaved::new(now, due));
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

    /// The calls whose checkpoint is due before `horizon` (the loop's next tick), with text to
    /// checkpoint: (call, its text's holder, characters saved, text taken). Each is next due
    /// one interval after `now`. On failure give the text back with [`Unsaved::restore`]; on
    /// success record it with [`Unsaved::saved`].
    ///
    /// A call is due one interval after its last checkpoint, so steady traffic spreads over
    /// the interval's slices by itself, and a burst is spread at registration: 500 streams
    /// that start together make eight statements of ~63 rows an eighth of a second apart,
    /// not one of 500 rows (whose write showed as a spike in the streams' relay delay every
    /// second; docs/performance.md, fifteenth round).
    pub fn take_due(
        &self,
        now: Instant,
        horizon: Instant,
    ) -> Vec<(Uuid, Arc<Unsaved>, usize, String)> {
        self.calls()
            .into_iter()
            .filter_map(|(id, u)| {
                let (saved, text) = u.take_due(horizon, now + self.every)?;
                (!text.is_empty()).then_some((id, u, saved, text))
            })
            .collect()
    }

    /// The calls whose lease was last renewed `age` or longer before `now`. A running call's
    /// checkpoints renew its lease as they save its text, so a lease sweep renews only the
    /// calls that relayed nothing for that long (an upstream still thinking, say), not every
    /// call in one statement.
    pub fn leases_older_than(&self, now: Instant, age: Duration) -> Vec<(Uuid, Arc<Unsaved>)> {
        self.calls()
            .into_iter()
            .filter(|(_, u)| now.saturating_duration_since(u.text().renewed) >= age)
            .collect()
    }

    /// The calls in flight now, each with its text's holder: taken out of the state's lock,
    /// so that each call's own lock is taken without holding it.
    fn calls(&self) -> Vec<(Uuid, Arc<Unsaved>)> {
        self.state()
            .calls
            .iter()
            .map(|(id, u)| (*id, u.clone()))
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

    const SECOND: Duration = Duration::from_secs(1);

    /// Every call with unsaved text, whether due or not.
    fn take_all(tracker: &InFlight) -> Vec<(Uuid, Arc<Unsaved>, usize, String)> {
        let now = Instant::now();
        tracker.take_due(now, now + Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn calls_are_held_until_their_guard_goes_and_none_start_after_close() {
        let tracker = Arc::new(InFlight::new(SECOND));
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
        let tracker = Arc::new(InFlight::new(SECOND));
        let a = tracker.register(Uuid::now_v7()).unwrap();
        a.unsaved().push("Hél");
        let taken = take_all(&tracker);
        assert_eq!((taken[0].2, taken[0].3.as_str()), (0, "Hél"));
        a.unsaved().push("lo");
        // The first checkpoint failed: its text goes back before what came since.
        taken[0].1.restore(taken[0].3.clone());
        let again = take_all(&tracker);
        assert_eq!((again[0].2, again[0].3.as_str()), (0, "Héllo"));
        again[0].1.saved(&again[0].3, Instant::now());
        a.unsaved().push("!");
        let next = take_all(&tracker);
        assert_eq!(
            (next[0].2, next[0].3.as_str()),
            (5, "!"),
            "characters, not bytes"
        );
        assert!(take_all(&tracker).is_empty());
    }

    /// A burst of calls is checkpointed in turn, an eighth of them per slice of the interval,
    /// and then each again one interval after its last checkpoint: never later.
    #[test]
    fn a_burst_is_checkpointed_a_slice_at_a_time_and_each_call_once_per_interval() {
        let tracker = Arc::new(InFlight::new(SECOND));
        let tick = tracker.tick();
        assert_eq!(tick, SECOND / 8);
        let before = Instant::now();
        let guards: Vec<_> = (0..20)
            .map(|_| tracker.register(Uuid::now_v7()).unwrap())
            .collect();
        // Registration takes microseconds; the slices are 125 ms apart.
        let start = before + before.elapsed();
        assert!(start - before < Duration::from_millis(50));
        // Three intervals of the checkpoint loop, every call relaying text all along.
        let mut taken_at: HashMap<Uuid, Vec<u32>> = HashMap::new();
        for n in 1..=24u32 {
            for g in &guards {
                g.unsaved().push("x");
            }
            // The loop's ticks fall anywhere between the slices' due times.
            let now = start + tick * n - tick / 2;
            let taken = tracker.take_due(now, now + tick);
            // 20 calls in 8 slices: never more than three in one statement.
            assert!((2..=3).contains(&taken.len()), "tick {n}: {}", taken.len());
            for (id, _, _, _) in taken {
                taken_at.entry(id).or_default().push(n);
            }
        }
        assert_eq!(taken_at.len(), 20);
        for ticks in taken_at.values() {
            // The first within an interval of the burst, then one interval apart.
            assert!(ticks[0] <= 8, "{ticks:?}");
            assert!(ticks.windows(2).all(|w| w[1] - w[0] == 8), "{ticks:?}");
        }
    }

    /// A lease counts as renewed by the call's admission, its checkpoints and renewals: only
    /// calls renewed by none of them for `age` are returned.
    #[test]
    fn leases_are_stale_only_when_nothing_renewed_them() {
        let tracker = Arc::new(InFlight::new(SECOND));
        let start = Instant::now();
        let [quiet, checkpointed, renewed] =
            [(); 3].map(|_| tracker.register(Uuid::now_v7()).unwrap());
        let age = Duration::from_secs(20);
        assert!(
            tracker.leases_older_than(start, age).is_empty(),
            "just admitted"
        );
        checkpointed
            .unsaved()
            .saved("text", start + Duration::from_secs(15));
        renewed.unsaved().renewed(start + Duration::from_secs(5));
        let stale: HashSet<Uuid> = tracker
            .leases_older_than(start + Duration::from_secs(30), age)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(stale, HashSet::from([quiet.id, renewed.id]));
        // An earlier renewal does not undo a later one.
        checkpointed.unsaved().renewed(start);
        assert_eq!(
            tracker
                .leases_older_than(start + Duration::from_secs(34), age)
                .len(),
            2
        );
    }
}
