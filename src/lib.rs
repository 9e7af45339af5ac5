//! Airlock: an access gateway for autonomous AI agents.
//!
//! See `docs/architecture.md` for the pipeline every request follows.

pub mod api;
pub mod audit;
pub mod backend;
pub mod config;
pub mod console;
pub mod demo;
pub mod digest;
pub mod gateway;
pub mod glob;
pub mod identity;
pub mod inspect;
pub mod keyfile;
pub mod mask;
pub mod mcp;
pub(crate) mod metrics;
pub mod net;
pub mod policy;
pub mod recording;
pub mod review;
pub mod server;
pub mod store;
pub(crate) mod wire;
