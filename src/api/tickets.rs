//! Single-use, short-lived tickets for browser shells: browsers cannot set headers on a
//! WebSocket, and a JWT never goes in a URL.
//!
//! What must stay true: a ticket is 192 bits from the system random generator (none is
//! issued when it fails), redeemable once, for one connection, before it expires — across
//! every instance on the store, since a load balancer may send the WebSocket to another
//! instance than the one that issued the ticket. The store keeps only the ticket's SHA-256,
//! and redeeming deletes the row in the statement that reads it.

use std::time::Duration;

use chrono::Utc;

use crate::identity::Principal;
use crate::store::{Store, StoreError, TicketRecord};

/// Why no ticket was issued.
pub(crate) enum IssueError {
    /// The system random generator failed: no guessable ticket is ever issued.
    Random,
    Store(StoreError),
}

/// A new ticket for `principal` on `connection`, valid for `ttl`.
pub(crate) async fn issue(
    store: &dyn Store,
    principal: &Principal,
    connection: &str,
    ttl: Duration,
) -> Result<String, IssueError> {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| IssueError::Random)?;
    let ticket = hex::encode(bytes);
    let record = TicketRecord {
        digest: digest(&ticket),
        connection: connection.to_string(),
        principal: principal.clone(),
        expires_at: Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default(),
    };
    store.put_ticket(&record).await.map_err(IssueError::Store)?;
    Ok(ticket)
}

/// Takes `ticket` (once) for `connection`; `Ok(None)` when it is unknown, used, expired or
/// for another connection.
pub(crate) async fn redeem(
    store: &dyn Store,
    ticket: &str,
    connection: &str,
) -> Result<Option<Principal>, StoreError> {
    store
        .take_ticket(&digest(ticket), connection, Utc::now())
        .await
}

fn digest(ticket: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, ticket.as_bytes()).as_ref())
}
