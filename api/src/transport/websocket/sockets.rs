//! How many sockets each client network and each user holds open, across the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// What a socket counts against.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Holder {
    /// A client network: an IPv4 address or an IPv6 /64 (`auth::rate_limit::network_key`).
    Network(String),
    /// A signed-in user.
    User(String),
    /// The whole process.
    Process,
    /// Sockets of the process that initialised without signing in.
    Anonymous,
}

/// Open sockets per holder. Shared by every connection of the process.
#[derive(Debug, Default)]
pub struct Sockets {
    open: Mutex<HashMap<Holder, usize>>,
    /// Operations running on the process's sockets.
    operations: AtomicUsize,
    /// Cancelled when the server begins to shut down.
    closing: CancellationToken,
}

/// One socket counted against a holder, until dropped.
#[derive(Debug)]
pub struct Slot {
    sockets: Arc<Sockets>,
    holder: Holder,
}

impl Sockets {
    /// Count one more socket against `holder`, unless it already holds `max` (0: no limit).
    pub fn take(self: &Arc<Self>, holder: Holder, max: usize) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(holder.clone()).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            sockets: self.clone(),
            holder,
        })
    }

    /// The server is shutting down: connections close once their running operations end.
    pub fn shut_down(&self) {
        self.closing.cancel();
    }

    /// Resolves once [`Sockets::shut_down`] was called.
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closing.cancelled()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Count one more running operation, until the slot is dropped.
    pub fn operation(self: &Arc<Self>) -> OperationSlot {
        self.operations.fetch_add(1, Ordering::Relaxed);
        OperationSlot(self.clone())
    }

    /// Operations running on the process's sockets now.
    pub fn operations(&self) -> usize {
        self.operations.load(Ordering::Relaxed)
    }

    /// Sockets open for `holder` now.
    pub fn held_by(&self, holder: &Holder) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(holder).copied().unwrap_or(0)
    }
}

/// One running operation, counted until dropped.
#[derive(Debug)]
pub struct OperationSlot(Arc<Sockets>);

impl Drop for OperationSlot {
    fn drop(&mut self) {
        self.0.operations.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.sockets.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.holder) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_up_to_the_limit_and_go_back_when_dropped() {
        let sockets = Arc::new(Sockets::default());
        let ip = Holder::Network("10.0.0.1".into());
        let a = sockets.take(ip.clone(), 2).unwrap();
        let b = sockets.take(ip.clone(), 2).unwrap();
        assert!(sockets.take(ip.clone(), 2).is_none());
        assert!(sockets.take(Holder::User("u".into()), 2).is_some());
        drop(a);
        assert_eq!(sockets.held_by(&ip), 1);
        let _c = sockets.take(ip.clone(), 2).unwrap();
        drop(b);
        assert!(sockets.take(ip, 0).is_some(), "0 is no limit");
    }
}
