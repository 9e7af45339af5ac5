//! Wake-ups for requests waiting on a review decision, and for consoles showing reviews.
//!
//! The store is the truth: a waiter re-reads it at least every [`POLL`]. Wake-ups (in
//! process, or via PostgreSQL LISTEN/NOTIFY from other instances) only make it re-read
//! sooner; losing one costs at most one poll interval, never a decision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub const POLL: Duration = Duration::from_secs(1);

pub struct ReviewHub {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    /// Counts every change seen (any review, this instance or another): consoles watch it
    /// and re-read the list. Like the waiters, a hint; the store is the truth.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for ReviewHub {
    fn default() -> Self {
        ReviewHub {
            waiters: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl ReviewHub {
    /// The notifier for an execution; kept while someone holds it.
    pub fn subscribe(&self, execution_id: &str) -> Arc<Notify> {
        let mut map = match self.waiters.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Drop entries nobody waits on any more, so the map stays small.
        map.retain(|_, n| Arc::strong_count(n) > 1);
        map.entry(execution_id.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// A receiver that sees a new value whenever any review changes.
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn wake(&self, execution_id: &str) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        let map = match self.waiters.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(n) = map.get(execution_id) {
            n.notify_waiters();
        }
    }
}
