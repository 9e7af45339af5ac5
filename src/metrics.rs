//! Process metrics in the Prometheus text format (`GET /metrics`).
//!
//! What must stay true:
//! - Counting never blocks or fails a request: counters are atomics or a short-held lock
//!   around a small map, and a poisoned lock still counts.
//! - Labels carry only what the configuration already names (operation, outcome,
//!   connection): never a principal, a statement, a parameter or an error message, so the
//!   endpoint can be scraped without authentication.
//! - Counts are per process: with several instances, the scraper sums them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use crate::audit::Outcome;

#[derive(Default)]
struct Metrics {
    /// Finished executions by (operation, outcome).
    executions: Mutex<BTreeMap<(String, &'static str), u64>>,
    audit_batches: AtomicU64,
    audit_events: AtomicU64,
    audit_batch_failures: AtomicU64,
    audit_commit_micros: AtomicU64,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// One execution ended (its audit `end` was built) with `outcome`.
pub(crate) fn execution_ended(operation: &str, outcome: Outcome) {
    let mut map = METRICS.executions.lock().unwrap_or_else(|p| p.into_inner());
    *map.entry((operation.to_string(), outcome.as_str()))
        .or_default() += 1;
}

/// One group commit of the audit writer: how many events, how long, whether it stored.
pub(crate) fn audit_batch(events: usize, took: Duration, stored: bool) {
    METRICS.audit_batches.fetch_add(1, Ordering::Relaxed);
    METRICS
        .audit_events
        .fetch_add(events as u64, Ordering::Relaxed);
    METRICS.audit_commit_micros.fetch_add(
        u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    if !stored {
        METRICS.audit_batch_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the gateway knows at scrape time.
pub(crate) struct Gauges {
    pub(crate) ready: bool,
    pub(crate) in_flight: u64,
    pub(crate) memory_budget_bytes: u64,
    pub(crate) memory_reserved_bytes: u64,
}

/// The exposition text.
pub(crate) fn render(g: &Gauges) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "airlock_executions_total",
        "counter",
        "Executions that ended, by operation and outcome.",
    );
    let executions = METRICS
        .executions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for ((operation, outcome), n) in &executions {
        let _ = writeln!(
            out,
            "airlock_executions_total{{operation=\"{}\",outcome=\"{outcome}\"}} {n}",
            escape(operation)
        );
    }
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let commit_seconds = load(&METRICS.audit_commit_micros) as f64 / 1e6;
    let samples: [(&str, &str, &str, String); 8] = [
        (
            "airlock_audit_batches_total",
            "counter",
            "Group commits of the audit writer.",
            load(&METRICS.audit_batches).to_string(),
        ),
        (
            "airlock_audit_events_total",
            "counter",
            "Audit events handed to the store.",
            load(&METRICS.audit_events).to_string(),
        ),
        (
            "airlock_audit_batch_failures_total",
            "counter",
            "Group commits the store refused (their begins failed closed, their ends were spooled).",
            load(&METRICS.audit_batch_failures).to_string(),
        ),
        (
            "airlock_audit_commit_seconds_total",
            "counter",
            "Time spent committing audit batches.",
            commit_seconds.to_string(),
        ),
        (
            "airlock_ready",
            "gauge",
            "1 while the instance takes requests, 0 while it drains.",
            u64::from(g.ready).to_string(),
        ),
        (
            "airlock_executions_in_flight",
            "gauge",
            "Executions whose audit end is not written yet.",
            g.in_flight.to_string(),
        ),
        (
            "airlock_memory_budget_bytes",
            "gauge",
            "server.memory_budget_bytes, as the budget counts it.",
            g.memory_budget_bytes.to_string(),
        ),
        (
            "airlock_memory_reserved_bytes",
            "gauge",
            "Bytes of the memory budget reserved by requests in flight.",
            g.memory_reserved_bytes.to_string(),
        ),
    ];
    for (name, kind, help, value) in samples {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_text() {
        execution_ended("query", Outcome::Ok);
        execution_ended("query", Outcome::Ok);
        audit_batch(3, Duration::from_millis(2), true);
        let text = render(&Gauges {
            ready: true,
            in_flight: 2,
            memory_budget_bytes: 1024,
            memory_reserved_bytes: 0,
        });
        assert!(text.contains("# TYPE airlock_executions_total counter"));
        let line = text
            .lines()
            .find(|l| l.starts_with("airlock_executions_total{operation=\"query\",outcome=\"ok\"}"))
            .unwrap_or_default();
        let n: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(n >= 2, "{text}");
        assert!(text.contains("airlock_executions_in_flight 2"));
        assert!(text.contains("airlock_ready 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
