//! Single-use, short-lived tickets for browser shells: browsers cannot set headers on a
//! WebSocket, and a JWT never goes in a URL.
//!
//! What must stay true: a ticket is 192 bits from the system random generator (none is
//! issued when it fails), redeemable once, for one connection, before it expires. Tickets
//! live in this instance's memory: with several instances, route a ticket's WebSocket to
//! the instance that issued it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::identity::Principal;

#[derive(Default)]
pub(crate) struct Tickets {
    inner: Mutex<HashMap<String, Ticket>>,
}

struct Ticket {
    principal: Principal,
    connection: String,
    expires: Instant,
}

impl Tickets {
    /// `None` when the system random generator fails: no guessable ticket is ever issued.
    pub(crate) fn issue(
        &self,
        principal: &Principal,
        connection: &str,
        ttl: Duration,
    ) -> Option<String> {
        let mut bytes = [0u8; 24];
        aws_lc_rs::rand::fill(&mut bytes).ok()?;
        let id = hex::encode(bytes);
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        map.retain(|_, t| t.expires > now);
        map.insert(
            id.clone(),
            Ticket {
                principal: principal.clone(),
                connection: connection.to_string(),
                expires: now + ttl,
            },
        );
        Some(id)
    }

    /// Takes a ticket (once) for `connection`.
    pub(crate) fn redeem(&self, ticket: &str, connection: &str) -> Option<Principal> {
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let t = map.remove(ticket)?;
        (t.expires > Instant::now() && t.connection == connection).then_some(t.principal)
    }
}
