//! A principal's share of concurrent work: every entry takes one slot for as long as its
//! request runs (a shell for its whole session, a query until its stream ends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::problem::{Code, Problem};
use crate::identity::Principal;

/// A principal's concurrency slot; released on drop.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

pub(crate) struct Slots {
    per_principal: usize,
    by_principal: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Slots {
    pub(crate) fn new(per_principal: usize) -> Slots {
        Slots {
            per_principal,
            by_principal: Mutex::new(HashMap::new()),
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
            .map(|permit| Slot { _permit: permit })
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
}
