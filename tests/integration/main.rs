//! All integration tests live in this one binary (each extra test binary re-links the whole
//! dependency tree). They talk to the real PostgreSQL and MariaDB on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests hand secrets to Airlock by `env:` reference, set with `std::env::set_var`.
#![allow(unsafe_code)]

mod common;
mod connections_flood;

mod audit_chain;
mod auth;
mod bad_input;
mod console;
mod deploy;
mod guardrails;
mod http_api;
mod jobs;
mod kube;
mod kube_double;
mod masking;
mod masking_corpus;
mod mcp;
mod multi_instance;
mod mysql;
mod onboarding;
mod openapi;
mod planning;
mod postgres;
mod quickstart;
mod resources;
mod reviews;
mod schema;
mod shells;
mod shutdown;
mod sql_integrity;
mod ssh;
