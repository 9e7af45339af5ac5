//! A principal's share of concurrent work: every entry takes one slot for as long as its
//! request runs (a shell for its whole session, a query until its stream ends) — one of the
//! principal's `server.max_concurrent_per_principal`, and one of its share of the
//! connection's pool (`limits.principal_share`), so one agent's slow work can neither take
//! every request slot nor every pooled connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::problem::{Code, Problem};
use crate::identity::Principal;

/// A principal's concurrency slot (and, once the connection is known, its share of that
/// connection); released on drop.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    /// The connection whose share this slot holds.
    share: Option<(String, OwnedSemaphorePermit)>,
}

pub(crate) struct Slots {
    per_principal: usize,
    by_principal: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Per (principal, connection): the principal's share of the connection's pool.
    by_connection: Mutex<HashMap<(String, String), Arc<Semaphore>>>,
}

impl Slots {
    pub(crate) fn new(per_principal: usize) -> Slots {
        Slots {
            per_principal,
            by_principal: Mutex::new(HashMap::new()),
            by_connection: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one of the principal's slots, or refuses with 429.
    pub(crate) fn acquire(&self, principal: &Principal) -> Result<Slot, Problem> {
        let semaphore = {
            let mut map = match self.by_principal.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            map.entry(principal.id())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_principal)))
                .clone()
        };
        semaphore
            .try_acquire_owned()
            .map(|permit| Slot {
                _permit: permit,
                share: None,
            })
            .map_err(|_| {
                Problem::new(
                    Code::TooManyRequests,
                    format!(
                        "at most {} requests (shells included) may run at once per principal; wait for one to finish",
                        self.per_principal
                    ),
                )
                .retry_after(1)
            })
    }

    /// Adds to `slot` one of the principal's `share` requests on `connection`, or refuses
    /// with 429. A slot that already holds its share of this connection (a request that
    /// waited for its review and now runs) keeps it.
    pub(crate) fn take_share(
        &self,
        slot: &mut Slot,
        principal: &Principal,
        connection: &str,
        share: usize,
    ) -> Result<(), Problem> {
        if slot.share.as_ref().is_some_and(|(c, _)| c == connection) {
            return Ok(());
        }
        let semaphore = {
            let mut map = match self.by_connection.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            map.entry((principal.id(), connection.to_string()))
                .or_insert_with(|| Arc::new(Semaphore::new(share)))
                .clone()
        };
        let permit = semaphore.try_acquire_owned().map_err(|_| {
            Problem::new(
                Code::TooManyRequests,
                format!(
                    "at most {share} of your requests may run at once on `{connection}` (your share of its pool); wait for one to finish"
                ),
            )
            .retry_after(1)
        })?;
        slot.share = Some((connection.to_string(), permit));
        Ok(())
    }
}
