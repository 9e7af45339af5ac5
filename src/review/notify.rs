//! Review notifications: a webhook gets new reviews and decisions as JSON with a
//! Slack-compatible `text`, HMAC-signed, retried with backoff.
//!
//! Invariants:
//! - Delivery never blocks or fails a request: it runs in the background and is retried
//!   [`ATTEMPTS`] times with exponential backoff; a final failure is logged.
//! - `text` cannot mention anyone or inject markup: `&`, `<`, `>` are escaped as Slack
//!   requires (which disarms `<!channel>`, `<@U…>` and `<url|label>`), `@` is separated
//!   from what follows, and the statement sits in a code block it cannot close.
//! - The body is signed: `X-Airlock-Signature: sha256=HEX(HMAC(secret, timestamp + "." + body))`
//!   with the timestamp in `X-Airlock-Timestamp`, so receivers can reject forgeries and replays.

use std::time::Duration;

use serde_json::json;

use super::ReviewRecord;
use crate::config::SecretValue;

pub const ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct Notifier {
    url: reqwest::Url,
    secret: SecretValue,
    http: reqwest::Client,
}

/// Escapes text for Slack's message format.
pub fn slack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // A word joiner after '@' keeps `@channel` / `@here` from being a mention.
            '@' => out.push_str("@\u{2060}"),
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn code_block(s: &str) -> String {
    // A backtick cannot close the block: replace it with a look-alike.
    format!("```{}```", slack_escape(&s.replace('`', "\u{2035}")))
}

impl Notifier {
    pub fn new(url: &str, secret: SecretValue) -> Result<Notifier, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("webhook url: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(Notifier { url, secret, http })
    }

    /// Sends `event` (`review.filed`, `review.approved`, `review.rejected`, `review.expired`)
    /// in the background.
    pub fn send(&self, event: &str, record: &ReviewRecord) {
        let requester = format!("{}/{}", record.requester.issuer, record.requester.subject);
        let text = match event {
            "review.filed" => format!(
                "Review needed: {} wants to run on *{}* (rule {}):\n{}\nReview id: {}",
                slack_escape(&requester),
                slack_escape(&record.connection),
                slack_escape(&record.rule),
                code_block(&super::visible(&record.request.sql)),
                slack_escape(&record.id)
            ),
            other => format!(
                "Review {} for {} on *{}*: {}",
                slack_escape(&record.id),
                slack_escape(&requester),
                slack_escape(&record.connection),
                slack_escape(other.trim_start_matches("review."))
            ),
        };
        let body = json!({
            "event": event,
            "text": text,
            "review": {
                "id": record.id,
                "execution_id": record.execution_id,
                "status": record.status,
                "connection": record.connection,
                "rule": record.rule,
                "requester": record.requester,
                "statement": record.request.sql,
                "params_count": record.request.params.len(),
                "approvals": record.approvals,
                "rejection": record.rejection,
                "expires_at": record.expires_at,
            }
        });
        let me = self.clone();
        tokio::spawn(async move { me.deliver(body).await });
    }

    async fn deliver(&self, body: serde_json::Value) {
        let Ok(bytes) = serde_json::to_vec(&body) else {
            return;
        };
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let ts = chrono::Utc::now().timestamp().to_string();
            let key = aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                self.secret.expose().as_bytes(),
            );
            let mut signed = ts.as_bytes().to_vec();
            signed.push(b'.');
            signed.extend_from_slice(&bytes);
            let sig = hex::encode(aws_lc_rs::hmac::sign(&key, &signed).as_ref());
            let result = self
                .http
                .post(self.url.clone())
                .header("content-type", "application/json")
                .header("x-airlock-timestamp", &ts)
                .header("x-airlock-signature", format!("sha256={sig}"))
                .body(bytes.clone())
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => tracing::warn!(attempt, status = %r.status(), "review webhook refused"),
                Err(e) => tracing::warn!(attempt, error = %e, "review webhook failed"),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        tracing::error!("review webhook gave up after {ATTEMPTS} attempts");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_cannot_mention_or_link() {
        let s = slack_escape("<!channel> @here <https://evil|click> & more");
        assert!(!s.contains('<') && !s.contains('>'));
        assert!(!s.contains("@here"));
        assert!(code_block("x```y").matches("```").count() == 2);
    }
}
