//! What the HTTP adapters share: the gateway core plus what only HTTP needs (identity of
//! bearer tokens, readiness, body limits, who is an administrator).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::gateway::Gateway;
use crate::identity::{Authenticator, Principal};
use crate::policy::PrincipalPattern;

pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub auth: Authenticator,
    /// Principals who may read the audit log and administer sessions.
    pub(crate) audit_readers: Vec<PrincipalPattern>,
    /// `false` once shutdown began: `/readyz` answers 503.
    pub ready: AtomicBool,
    pub(crate) max_body_bytes: usize,
    /// A request body must arrive within this.
    pub(crate) body_read_timeout: std::time::Duration,
    /// The approvers' console: whether it is served, its origin, session lifetimes.
    pub(crate) console: crate::config::ConsoleConfig,
}

impl AppState {
    pub(crate) fn is_admin(&self, p: &Principal) -> bool {
        self.audit_readers.iter().any(|r| r.matches(p))
    }
}
