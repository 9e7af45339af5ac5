//! Inspection: turn a raw request into facts the policy can match on.
//!
//! Invariant: anything the inspector cannot fully account for is reported as `unparsed`,
//! and the policy denies unparsed input unless a rule explicitly admits it.

pub mod functions;
pub mod lineage;
pub mod shell;
pub mod sql;

pub use sql::{Facts, StatementKind};
