//! Flow control for what a client types or pastes into an interactive shell on OpenSSH.
//!
//! Why it exists: when the remote terminal has echo off and canonical mode on (a password
//! prompt, `stty -echo`), OpenSSH's sshd answers every write of client input to the terminal
//! with an `SSH_MSG_IGNORE` as large as that write, to hide the keystrokes' timing (the
//! "simulate echo" branch of `channel_handle_wfd` in OpenSSH's channels.c). sshd buffers the
//! input we send, up to its channel window (2 MiB for a session), and when the terminal
//! drains it writes everything it holds in one go. russh refuses any incoming packet over
//! 256 KiB as a protocol error and drops the connection, and the shell's exit status with
//! it: a large paste into such a terminal ended the session with "the host closed the
//! connection" instead of the shell's exit.
//!
//! What must stay true:
//! - **sshd never holds more than [`MAX_UNCONSUMED`] bytes of our input.** sshd reports what
//!   it wrote to the terminal through window adjustments; we hand a piece of input over only
//!   when what was sent and not yet reported written, piece included, stays within that
//!   bound. An upper bound is all we can know (russh shows the remote window only after each
//!   adjustment, and never how much of the input handed to it is on the wire yet), so every
//!   estimate errs on the side of "more is buffered".
//! - **Input never stalls while sshd could take more.** OpenSSH reports consumption once more
//!   than 3 × its maximum packet is unreported (`channel_check_window`). A piece is held back
//!   only when the estimate is over `MAX_UNCONSUMED - PIECE`, and the estimate exceeds the
//!   truth by at most [`MAX_UNSETTLED`]; what is left (112 KiB) is more than that threshold
//!   (96 KiB for OpenSSH's 32 KiB packets, checked in [`InputWindow::gate`]), so sshd will
//!   report as soon as the terminal takes anything.
//! - Only OpenSSH with its usual packet size is flow-controlled this way: other servers
//!   neither send these packets nor promise that reporting threshold, and holding input back
//!   for a report that never comes would freeze the terminal.
//!
//! How the estimate works. The russh handler sees each window adjustment with the remote
//! window `R` after it. With `W` the largest window sshd has granted, `W - R` is what was on
//! the wire and not yet reported written *at that moment*: OpenSSH opens a session's window
//! (initially 0) with one adjustment when the shell starts, before any input can be sent,
//! and from then on only reports consumption. Data handed to russh reaches the wire later, so
//! the handler cannot tell how much of it `R` accounts for, except for what was settled: a
//! keepalive request that sshd answered was queued behind every byte handed over before it,
//! so those bytes were on the wire before any later adjustment. At most [`MAX_UNSETTLED`]
//! bytes are ever handed over beyond what is settled.

use std::sync::Arc;

use tokio::sync::watch;

/// Most input bytes sshd may hold that it has not reported written: well under russh's
/// 256 KiB packet limit, so an `SSH_MSG_IGNORE` echoing a write of all of it (plus its few
/// dozen bytes of framing) always fits.
const MAX_UNCONSUMED: u64 = 192 * 1024;
/// Input is handed to russh in pieces of at most this size.
pub(super) const PIECE: usize = 16 * 1024;
/// Most input bytes handed over beyond what a keepalive answer settled.
const MAX_UNSETTLED: u64 = 64 * 1024;
/// OpenSSH reports consumption once more than this many maximum packets are unreported.
const OPENSSH_REPORT_PACKETS: u64 = 3;
/// How the SSH identification string of an OpenSSH server starts.
const OPENSSH_ID: &[u8] = b"SSH-2.0-OpenSSH_";

/// What the russh handler saw of the connection's first channel (the one running the shell:
/// a later channel is only opened to kill it), shared with the shell's input writer.
pub(super) struct InputWindow {
    state: watch::Sender<State>,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// The channel's number (russh's `ChannelId`, which only russh can construct).
    channel: Option<u32>,
    /// The largest window the server has granted for the channel (`W`): its initial
    /// window, or the window after an adjustment when that was larger.
    ceiling: u32,
    /// The server's maximum packet size for the channel.
    max_packet: u32,
    openssh: bool,
    /// Input bytes known to be on the wire (settled by an answered keepalive).
    settled: u64,
    /// From the latest window adjustment: `W - R` minus what was settled then. Adding the
    /// bytes handed over so far gives the bound on what sshd holds unreported.
    base: i64,
}

impl InputWindow {
    pub(super) fn new() -> Arc<InputWindow> {
        Arc::new(InputWindow {
            state: watch::Sender::new(State::default()),
        })
    }

    /// The server confirmed a channel (handler callback).
    pub(super) fn opened(&self, channel: u32, max_packet: u32, initial: u32, id: &[u8]) {
        self.state.send_if_modified(|s| {
            if s.channel.is_some() {
                return false;
            }
            *s = State {
                channel: Some(channel),
                ceiling: initial,
                max_packet,
                openssh: id.starts_with(OPENSSH_ID),
                ..State::default()
            };
            true
        });
    }

    /// The server adjusted a channel's window; `remote_window` is the window after it
    /// (handler callback).
    pub(super) fn adjusted(&self, channel: u32, remote_window: u32) {
        self.state.send_if_modified(|s| {
            if s.channel != Some(channel) {
                return false;
            }
            s.ceiling = s.ceiling.max(remote_window);
            let unreported = i64::from(s.ceiling) - i64::from(remote_window);
            s.base = unreported - s.settled as i64;
            true
        });
    }

    /// A gate for input on `channel`, or `None` when the server needs none (see the module
    /// docs for which servers do).
    pub(super) fn gate(self: &Arc<Self>, channel: u32) -> Option<InputGate> {
        let s = self.state.borrow();
        let reports_in_time = u64::from(s.max_packet) * OPENSSH_REPORT_PACKETS
            < MAX_UNCONSUMED - PIECE as u64 - MAX_UNSETTLED;
        let needed = s.channel == Some(channel) && s.openssh && reports_in_time;
        drop(s);
        needed.then(|| InputGate {
            window: self.clone(),
            changes: self.state.subscribe(),
            handed: 0,
        })
    }
}

/// What the input writer must do before handing over the next piece.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Hand it over.
    Go,
    /// Send a keepalive, wait for its answer, then call [`InputGate::settle`].
    Settle,
    /// Wait for sshd to report consumption ([`InputGate::changed`]).
    Wait,
}

/// The shell input writer's side of [`InputWindow`].
pub(super) struct InputGate {
    window: Arc<InputWindow>,
    changes: watch::Receiver<State>,
    /// Input bytes handed to russh so far.
    handed: u64,
}

impl InputGate {
    /// Whether a piece of `len` bytes (at most [`PIECE`]) may be handed over now.
    pub(super) fn admission(&mut self, len: usize) -> Admission {
        let len = len as u64;
        let s = self.changes.borrow_and_update();
        // A piece may reach the wire before `handed` counts it, so it counts as unsettled
        // from the start.
        if self.handed - s.settled + len > MAX_UNSETTLED {
            return Admission::Settle;
        }
        let unreported = (s.base + self.handed as i64).max(0) as u64;
        if unreported + len > MAX_UNCONSUMED {
            return Admission::Wait;
        }
        Admission::Go
    }

    /// Everything handed over so far is on the wire: a keepalive sent after it was answered.
    pub(super) fn settle(&mut self) {
        let handed = self.handed;
        // Nobody waits for this: the handler uses it at the next adjustment.
        self.window.state.send_if_modified(|s| {
            s.settled = s.settled.max(handed);
            false
        });
    }

    /// A piece of `len` bytes was handed to russh.
    pub(super) fn handed(&mut self, len: usize) {
        self.handed += len as u64;
    }

    /// Resolves at the next window adjustment (or never, if the connection is gone: the
    /// shell's output side then ends the session).
    pub(super) async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W0: u32 = 2 * 1024 * 1024;
    const OPENSSH: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3";

    fn opened(id: &[u8], max_packet: u32) -> (Arc<InputWindow>, u32) {
        let window = InputWindow::new();
        window.opened(0, max_packet, W0, id);
        // A second channel (the kill helper) does not replace the first.
        window.opened(1, 1, 1, b"");
        (window, 0)
    }

    /// Hands pieces over as long as the gate lets them, settling when asked; the bytes
    /// handed.
    fn hand_until_wait(gate: &mut InputGate) -> u64 {
        let mut total = 0;
        loop {
            match gate.admission(PIECE) {
                Admission::Go => {
                    gate.handed(PIECE);
                    total += PIECE as u64;
                }
                Admission::Settle => gate.settle(),
                Admission::Wait => return total,
            }
        }
    }

    #[test]
    fn only_openssh_with_its_packet_size_is_gated() {
        let (window, channel) = opened(OPENSSH, 32 * 1024);
        assert!(window.gate(channel).is_some());
        assert!(window.gate(1).is_none());
        let (window, channel) = opened(b"SSH-2.0-dropbear_2022.83", 32 * 1024);
        assert!(window.gate(channel).is_none());
        // A packet size that would let OpenSSH hold back its reports past our bound.
        let (window, channel) = opened(OPENSSH, 64 * 1024);
        assert!(window.gate(channel).is_none());
    }

    #[test]
    fn input_beyond_the_bound_waits_for_sshd_to_report_consumption() {
        let (window, channel) = opened(OPENSSH, 32 * 1024);
        let mut gate = window.gate(channel).unwrap();
        assert_eq!(hand_until_wait(&mut gate), MAX_UNCONSUMED);
        // Everything is settled (the last Settle came before the last pieces; settle again
        // as the writer would after a keepalive round trip).
        gate.settle();
        // sshd wrote 100 KiB to the terminal and reported it.
        window.adjusted(channel, W0 - MAX_UNCONSUMED as u32 + 100 * 1024);
        assert_eq!(hand_until_wait(&mut gate), 96 * 1024);
        // An adjustment for another channel changes nothing.
        window.adjusted(1, W0);
        assert_eq!(gate.admission(PIECE), Admission::Wait);
    }

    #[test]
    fn a_window_opened_by_an_adjustment_is_the_ceiling() {
        // What OpenSSH does: window 0 at the channel's confirmation, 2 MiB when the shell
        // starts.
        let window = InputWindow::new();
        window.opened(0, 32 * 1024, 0, OPENSSH);
        window.adjusted(0, W0);
        let mut gate = window.gate(0).unwrap();
        assert_eq!(hand_until_wait(&mut gate), MAX_UNCONSUMED);
        gate.settle();
        window.adjusted(0, W0 - MAX_UNCONSUMED as u32 + 100 * 1024);
        assert_eq!(hand_until_wait(&mut gate), 96 * 1024);
    }

    #[test]
    fn unsettled_input_counts_against_the_bound() {
        let (window, channel) = opened(OPENSSH, 32 * 1024);
        let mut gate = window.gate(channel).unwrap();
        // Pieces handed but not settled: the writer must settle before more.
        for _ in 0..MAX_UNSETTLED / PIECE as u64 {
            assert_eq!(gate.admission(PIECE), Admission::Go);
            gate.handed(PIECE);
        }
        assert_eq!(gate.admission(1), Admission::Settle);
        // An adjustment sampled before the settle may not yet count the unsettled pieces:
        // whatever it says, they stay in the estimate.
        window.adjusted(channel, W0);
        gate.settle();
        for _ in 0..(MAX_UNCONSUMED - MAX_UNSETTLED) / PIECE as u64 {
            assert_eq!(gate.admission(PIECE), Admission::Go);
            gate.handed(PIECE);
            if gate.admission(PIECE) == Admission::Settle {
                gate.settle();
            }
        }
        assert_eq!(gate.admission(1), Admission::Wait);
    }

    #[test]
    fn typing_never_waits() {
        let (window, channel) = opened(OPENSSH, 32 * 1024);
        let mut gate = window.gate(channel).unwrap();
        let mut wire = 0u64;
        let mut reported = 0u64;
        for _ in 0..1_000_000 {
            match gate.admission(1) {
                Admission::Go => {
                    gate.handed(1);
                    wire += 1;
                }
                Admission::Settle => gate.settle(),
                Admission::Wait => panic!("typing waited at {wire} bytes"),
            }
            // sshd writes each keystroke to the terminal at once, and reports like OpenSSH
            // does: everything written, once more than 3 packets are unreported.
            if wire - reported > 3 * 32 * 1024 {
                reported = wire;
                window.adjusted(channel, W0);
            }
        }
    }
}
