//! Session recording in asciicast v2, written to the store as it happens.
//!
//! Invariants (what must stay true):
//! - The header line is stored before the command starts; if it cannot be, the command does
//!   not run (fail closed).
//! - Every event is its own stored line, written before the next output is read: a crash
//!   leaves a playable prefix. A line the store refuses ends the command.
//! - Lines are hash-chained: `chain[n] = SHA-256(len-prefixed chain[n-1], line[n])`; the head
//!   after the last line goes into the session and the audit end record, so a changed,
//!   missing or reordered line is detectable (`verify`).
//! - Only masked output is recorded: callers pass what the streaming masker emitted.
//! - stdout and stderr are merged into `"o"` events, as a terminal would show them; the exit
//!   is a `"m"` (marker) event `exit N` (or `signal NAME`, `timeout`, `cancelled`); shells add
//!   `"r"` resize events and, only when configured, `"i"` input events.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde_json::json;

use crate::digest::digest;
use crate::store::{SessionLine, SessionRecord, Store, StoreError};

/// Terminal size recorded for non-interactive commands.
pub const DEFAULT_WIDTH: u32 = 120;
pub const DEFAULT_HEIGHT: u32 = 40;

pub fn chain(previous: &str, line: &str) -> String {
    digest(&[previous.as_bytes(), line.as_bytes()])
}

/// Recomputes the chain over stored lines; `true` when every link holds.
pub fn verify(lines: &[(String, String)]) -> bool {
    let mut previous = String::new();
    for (line, stored) in lines {
        let expected = chain(&previous, line);
        if &expected != stored {
            return false;
        }
        previous = expected;
    }
    true
}

pub struct Recorder {
    store: Arc<dyn Store>,
    record: SessionRecord,
    seq: i64,
    head: String,
    started: Instant,
}

impl Recorder {
    /// Stores the session and its header line.
    pub async fn start(
        store: Arc<dyn Store>,
        record: SessionRecord,
    ) -> Result<Recorder, StoreError> {
        Self::start_sized(store, record, DEFAULT_WIDTH, DEFAULT_HEIGHT).await
    }

    /// The same for a terminal of a given size.
    pub async fn start_sized(
        store: Arc<dyn Store>,
        record: SessionRecord,
        width: u32,
        height: u32,
    ) -> Result<Recorder, StoreError> {
        let header = json!({
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": record.started_at.timestamp(),
            "command": record.command,
            "title": format!("{} on {}", record.kind, record.connection),
            "env": { "TERM": "xterm-256color", "SHELL": "/bin/sh" },
            "airlock": {
                "session_id": record.id,
                "execution_id": record.execution_id,
                "connection": record.connection,
                "principal": format!("{}/{}", record.issuer, record.subject),
                "stderr": "merged into output events",
            }
        })
        .to_string();
        let head = chain("", &header);
        let first = SessionLine {
            session_id: &record.id,
            seq: 0,
            line: &header,
            chain: &head,
        };
        store.create_session(&record, &first).await?;
        Ok(Recorder {
            store,
            record,
            seq: 0,
            head,
            started: Instant::now(),
        })
    }

    pub fn session_id(&self) -> &str {
        &self.record.id
    }

    async fn line(&mut self, kind: &str, data: &str) -> Result<(), StoreError> {
        let t = self.started.elapsed().as_secs_f64();
        // Six decimals, as asciinema writes them.
        let line = json!([(t * 1e6).round() / 1e6, kind, data]).to_string();
        let head = chain(&self.head, &line);
        self.store
            .append_session_line(&SessionLine {
                session_id: &self.record.id,
                seq: self.seq + 1,
                line: &line,
                chain: &head,
            })
            .await?;
        self.seq += 1;
        self.head = head;
        Ok(())
    }

    /// Records terminal output (already masked).
    pub async fn output(&mut self, data: &str) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        self.line("o", data).await
    }

    /// Records keystrokes (only when the operator turned input recording on).
    pub async fn input(&mut self, data: &str) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        self.line("i", data).await
    }

    /// Records a terminal resize (`"r"`, `COLSxROWS`).
    pub async fn resize(&mut self, cols: u32, rows: u32) -> Result<(), StoreError> {
        self.line("r", &format!("{cols}x{rows}")).await
    }

    pub async fn marker(&mut self, label: &str) -> Result<(), StoreError> {
        self.line("m", label).await
    }

    /// Closes the session; returns the final chain head.
    pub async fn finish(
        mut self,
        status: &str,
        exit_code: Option<i64>,
    ) -> Result<String, StoreError> {
        self.record.status = status.to_string();
        self.record.exit_code = exit_code;
        self.record.ended_at = Some(Utc::now());
        self.record.digest = Some(self.head.clone());
        self.store.finish_session(&self.record).await?;
        Ok(self.head)
    }

    pub fn head(&self) -> &str {
        &self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_detects_changes() {
        let a = chain("", "h");
        let b = chain(&a, "[0.1,\"o\",\"x\"]");
        let lines = vec![
            ("h".to_string(), a.clone()),
            ("[0.1,\"o\",\"x\"]".to_string(), b),
        ];
        assert!(verify(&lines));
        let mut bad = lines.clone();
        bad[1].0 = "[0.1,\"o\",\"y\"]".into();
        assert!(!verify(&bad));
        assert!(!verify(&[lines[1].clone()]));
    }
}
