//! The producer loop shared by the command backends (SSH, Kubernetes): it moves a running
//! command's output into its [`ExecStream`](super::ExecStream), feeds the command's input,
//! and decides when the run is over. Each backend supplies only what is specific to its
//! protocol: an [`Output`] (how output and the ending are read), a feed future (how input
//! is written) and what stopping means (kill, abort).
//!
//! What must stay true, for exec and interactive shells alike:
//! - **Back-pressure.** The next output is read only once the previous event was taken by
//!   the consumer, so what a command buffers stays bounded whatever its output size.
//! - **Input never waits for output, nor output for input.** Input is fed concurrently with
//!   reading output, also while an event waits for the consumer: a command may fill its
//!   output before it reads its input, and the transports only take more input while we
//!   keep reading what they send (SSH window, kube's pipes). A `Close` from a shell client
//!   must not wait for the consumer to catch up either.
//! - **Every wait honours cancellation, the deadline and a vanished consumer**, so a stop
//!   is never held up by a stalled target or a stalled consumer.
//! - **An event is never lost half-way.** The send future is kept across input steps; an
//!   event leaves the loop only by being delivered or by the run being stopped.
//! - **Only the output side decides how a run ended.** Input that can no longer be written
//!   (the command exited, the channel is closing) is not an error: the output side will
//!   still deliver the exit status or report the loss.

use std::future::Future;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{BackendError, ExecEvent, ExecSender, ShellInput};

/// Input messages that may wait between a shell's client and the task writing them to the
/// target. Small: the writer waits for the transport, so a full queue is how a stalled
/// target pushes back on the client.
pub(crate) const SHELL_INPUT_BUFFER: usize = 16;

/// Why a running command is stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Timeout,
    Cancelled,
    ConsumerGone,
    /// Shell only: the client sent [`ShellInput::Close`] or dropped every input sender.
    InputClosed,
}

impl Stop {
    /// Tells the consumer why the stream ends, when that is news to it: a deadline or a
    /// cancellation. A consumer that left, or a client that closed its input, asked for the
    /// end itself.
    pub(crate) async fn report(self, tx: &ExecSender) {
        let last = match self {
            Stop::Timeout => BackendError::Timeout,
            Stop::Cancelled => BackendError::Cancelled,
            Stop::ConsumerGone | Stop::InputClosed => return,
        };
        let _ = tx.send(Err(last)).await;
    }
}

/// How a command ended by itself, as its output side saw it.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The command ended: this is the last event ([`ExecEvent::Exit`]).
    Exited(ExecEvent),
    /// The target reported that the command could not run to an exit.
    Failed(String),
    /// The connection or stream went away without an exit status.
    Lost,
}

impl Ending {
    /// Sends the last event. `lost` says what went away, for [`Ending::Lost`]. The consumer
    /// may be gone by now; there is nothing left to stop either way.
    pub(crate) async fn report(self, tx: &ExecSender, lost: &str) {
        let last = match self {
            Ending::Exited(event) => Ok(event),
            Ending::Failed(m) => Err(BackendError::Internal(m)),
            Ending::Lost => Err(BackendError::Internal(lost.to_string())),
        };
        let _ = tx.send(last).await;
    }
}

/// What [`pump`] ended with.
#[derive(Debug)]
pub(crate) enum Outcome {
    Ended(Ending),
    /// The caller must now stop the command (each backend knows how) and then
    /// [`Stop::report`].
    Stopped(Stop),
}

/// One step of a command's output side.
#[derive(Debug)]
pub(crate) enum Step {
    Output(ExecEvent),
    Ended(Ending),
}

/// A running command's output side.
pub(crate) trait Output {
    /// The next event, or how the command ended. Must be cancel safe: the pump drops an
    /// unfinished call when input, a stop or the deadline comes first, and calls again
    /// later; nothing read may be lost in between. Not called again after
    /// [`Step::Ended`].
    fn next(&mut self) -> impl Future<Output = Step> + Send;
}

/// Moves output to the consumer and runs `feed` (the command's input) alongside, until the
/// command ends or must be stopped; see the module docs for what this guarantees.
///
/// `feed` resolves to `Some(stop)` when the input side ends the run (a shell client left),
/// or to `None` when it is done (all stdin written, or the target no longer takes input);
/// the output side then decides. `deadline: None` means no deadline (shells: the caller
/// cancels on idle or maximum length).
pub(crate) async fn pump<O: Output>(
    output: &mut O,
    feed: impl Future<Output = Option<Stop>>,
    tx: &ExecSender,
    cancel: &CancellationToken,
    deadline: Option<Instant>,
) -> Outcome {
    tokio::pin!(feed);
    let mut feeding = true;
    loop {
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Outcome::Stopped(Stop::Cancelled),
            _ = expiry(deadline) => return Outcome::Stopped(Stop::Timeout),
            _ = tx.closed() => return Outcome::Stopped(Stop::ConsumerGone),
            end = &mut feed, if feeding => match end {
                Some(stop) => return Outcome::Stopped(stop),
                None => {
                    feeding = false;
                    continue;
                }
            },
            step = output.next() => match step {
                Step::Output(event) => event,
                Step::Ended(ending) => return Outcome::Ended(ending),
            },
        };
        // Waiting for the consumer is where back-pressure happens.
        let send = tx.send(Ok(event));
        tokio::pin!(send);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Outcome::Stopped(Stop::Cancelled),
                _ = expiry(deadline) => return Outcome::Stopped(Stop::Timeout),
                end = &mut feed, if feeding => match end {
                    Some(stop) => return Outcome::Stopped(stop),
                    None => feeding = false,
                },
                sent = &mut send => {
                    if !sent {
                        return Outcome::Stopped(Stop::ConsumerGone);
                    }
                    break;
                }
            }
        }
    }
}

/// Resolves at the deadline; never without one.
async fn expiry(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(crate) use super::deadline_after;

/// Where an interactive shell's input goes.
pub(crate) trait Terminal {
    /// Writes keystrokes (or pasted bytes); waits while the target takes no more.
    /// `false`: the terminal can no longer be written (the shell is ending).
    fn write(&mut self, bytes: Bytes) -> impl Future<Output = bool> + Send;
    /// Passes a window change on; `false` as for [`Terminal::write`].
    fn resize(&mut self, cols: u32, rows: u32) -> impl Future<Output = bool> + Send;
}

/// A shell's feed for [`pump`]: the client's input, in order, into `terminal`.
/// `Some(InputClosed)` when the client ends the session (a `Close`, or every sender
/// dropped); `None` when the terminal stops taking input, so that the output side delivers
/// how the shell ended.
pub(crate) async fn feed_terminal(
    input: &mut mpsc::Receiver<ShellInput>,
    terminal: &mut impl Terminal,
) -> Option<Stop> {
    while let Some(msg) = input.recv().await {
        let written = match msg {
            ShellInput::Data(bytes) => terminal.write(bytes).await,
            ShellInput::Resize { cols, rows } => terminal.resize(cols, rows).await,
            ShellInput::Close => return Some(Stop::InputClosed),
        };
        if !written {
            return None;
        }
    }
    Some(Stop::InputClosed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ExecStream;
    use std::collections::VecDeque;
    use std::time::Duration;

    /// Output that replays a script; `pending_forever` after it runs out.
    struct Script(VecDeque<Step>);

    impl Output for Script {
        async fn next(&mut self) -> Step {
            match self.0.pop_front() {
                Some(step) => step,
                None => std::future::pending().await,
            }
        }
    }

    fn stdout(s: &'static str) -> Step {
        Step::Output(ExecEvent::Stdout(Bytes::from_static(s.as_bytes())))
    }

    fn exit(code: u32) -> Step {
        Step::Ended(Ending::Exited(ExecEvent::Exit {
            code: Some(code),
            signal: None,
        }))
    }

    #[tokio::test]
    async fn output_then_the_ending_and_input_that_fails_is_not_an_error() {
        let (tx, mut rx) = ExecStream::channel();
        let mut out = Script(VecDeque::from([stdout("a"), stdout("b"), exit(3)]));
        let cancel = CancellationToken::new();
        let outcome = pump(&mut out, async { None }, &tx, &cancel, None).await;
        assert!(matches!(
            outcome,
            Outcome::Ended(Ending::Exited(ExecEvent::Exit { code: Some(3), .. }))
        ));
        drop(tx);
        let mut seen = Vec::new();
        while let Some(Ok(ExecEvent::Stdout(b))) = rx.next().await {
            seen.push(b);
        }
        assert_eq!(seen, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_full_consumer_still_lets_input_end_the_run() {
        let (tx, _rx) = ExecStream::channel();
        // More output than the stream holds, and a consumer that never reads.
        let steps = (0..crate::backend::STREAM_BUFFER + 4).map(|_| stdout("x"));
        let mut out = Script(steps.collect());
        let cancel = CancellationToken::new();
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let feed = async move {
            let _ = closed.await;
            Some(Stop::InputClosed)
        };
        let run = pump(&mut out, feed, &tx, &cancel, None);
        tokio::pin!(run);
        // The pump is blocked on the full stream until input ends the run.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut run)
                .await
                .is_err()
        );
        let _ = close.send(());
        assert!(matches!(run.await, Outcome::Stopped(Stop::InputClosed)));
    }

    #[tokio::test]
    async fn stops_cancel_deadline_and_a_gone_consumer() {
        let cancel = CancellationToken::new();
        let (tx, rx) = ExecStream::channel();
        cancel.cancel();
        let mut out = Script(VecDeque::new());
        let outcome = pump(&mut out, std::future::pending(), &tx, &cancel, None).await;
        assert!(matches!(outcome, Outcome::Stopped(Stop::Cancelled)));

        let cancel = CancellationToken::new();
        let soon = Some(Instant::now() + Duration::from_millis(10));
        let outcome = pump(&mut out, std::future::pending(), &tx, &cancel, soon).await;
        assert!(matches!(outcome, Outcome::Stopped(Stop::Timeout)));

        drop(rx);
        let outcome = pump(&mut out, std::future::pending(), &tx, &cancel, None).await;
        assert!(matches!(outcome, Outcome::Stopped(Stop::ConsumerGone)));
    }

    struct Recorder {
        written: Vec<Bytes>,
        sizes: Vec<(u32, u32)>,
        /// Writes accepted before the terminal reports it is closing.
        accept: usize,
    }

    impl Terminal for Recorder {
        async fn write(&mut self, bytes: Bytes) -> bool {
            if self.written.len() == self.accept {
                return false;
            }
            self.written.push(bytes);
            true
        }

        async fn resize(&mut self, cols: u32, rows: u32) -> bool {
            self.sizes.push((cols, rows));
            true
        }
    }

    #[tokio::test]
    async fn terminal_feed() {
        let (input, mut rx) = mpsc::channel(SHELL_INPUT_BUFFER);
        let mut term = Recorder {
            written: Vec::new(),
            sizes: Vec::new(),
            accept: 1,
        };
        input
            .send(ShellInput::Data(Bytes::from_static(b"ls\n")))
            .await
            .unwrap();
        input
            .send(ShellInput::Resize { cols: 80, rows: 24 })
            .await
            .unwrap();
        input
            .send(ShellInput::Data(Bytes::from_static(b"exit\n")))
            .await
            .unwrap();
        // The terminal stops taking input: not a stop, the output side decides.
        assert_eq!(feed_terminal(&mut rx, &mut term).await, None);
        assert_eq!(term.written, ["ls\n"]);
        assert_eq!(term.sizes, [(80, 24)]);

        term.accept = usize::MAX;
        input.send(ShellInput::Close).await.unwrap();
        assert_eq!(
            feed_terminal(&mut rx, &mut term).await,
            Some(Stop::InputClosed)
        );
        drop(input);
        assert_eq!(
            feed_terminal(&mut rx, &mut term).await,
            Some(Stop::InputClosed)
        );
    }
}
