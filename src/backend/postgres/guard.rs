//! Part of the PostgreSQL backend: a ceiling on the size of any one message the server
//! sends, enforced before the message is buffered.
//!
//! Why: the driver reserves a message's whole length as soon as its 5-byte header arrives,
//! so one `SELECT repeat('y', 300000000)` would make Airlock allocate 300 MB whatever the
//! request's `max_bytes`. The guard sits between the socket (or the TLS session) and the
//! driver and reads every message header first.
//!
//! What must stay true:
//! - A header announcing more than `max_message` bytes never reaches the driver. In its
//!   place the driver reads an `ErrorResponse` (SQLSTATE 54000, `program_limit_exceeded`)
//!   that the pending query receives as its error, then end of stream: the connection is
//!   dropped, the server notices the closed socket and stops the query.
//! - Bytes pass through unchanged otherwise; the guard only counts them to find headers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use deadpool_postgres::Connect;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Config, NoTls, Socket};

/// The reason the stream was cut, as the driver will read it.
const SQLSTATE: &str = "54000";

/// Where the guard is in the server's byte stream.
enum State {
    /// `have` bytes of the next message's 5-byte header are known and held back: a header
    /// passes only whole, once its length has been checked.
    Header { header: [u8; 5], have: usize },
    /// This many bytes of the current message's body are still to pass.
    Body(usize),
    /// The stream was cut: these bytes (a synthesised `ErrorResponse`) are still to be read,
    /// then end of stream.
    Cut(Vec<u8>),
}

/// A stream whose incoming messages are checked against `max_message`.
pub(super) struct Guarded<S> {
    inner: S,
    max_message: usize,
    state: State,
    /// Reused read buffer.
    scratch: Vec<u8>,
    /// Checked bytes that did not fit the caller's buffer, handed up first next time.
    carry: Vec<u8>,
}

impl<S> Guarded<S> {
    fn new(inner: S, max_message: usize) -> Guarded<S> {
        Guarded {
            inner,
            max_message,
            state: State::Header {
                header: [0; 5],
                have: 0,
            },
            scratch: Vec::new(),
            carry: Vec::new(),
        }
    }

    /// Follows the message framing over `bytes` (just read) and appends what may pass to
    /// `out`: bodies as they come, headers whole once checked. At a header announcing an
    /// oversized message the stream is cut and the rest of `bytes` is dropped.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut at = 0;
        while at < bytes.len() {
            match &mut self.state {
                State::Body(remaining) => {
                    let take = (*remaining).min(bytes.len() - at);
                    out.extend_from_slice(&bytes[at..at + take]);
                    *remaining -= take;
                    at += take;
                    if *remaining == 0 {
                        self.state = State::Header {
                            header: [0; 5],
                            have: 0,
                        };
                    }
                }
                State::Header { header, have } => {
                    let take = (5 - *have).min(bytes.len() - at);
                    header[*have..*have + take].copy_from_slice(&bytes[at..at + take]);
                    *have += take;
                    at += take;
                    if *have < 5 {
                        continue;
                    }
                    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                    let body = (length as usize).saturating_sub(4);
                    if body > self.max_message {
                        self.state = State::Cut(error_response(body, self.max_message));
                        return;
                    }
                    out.extend_from_slice(header);
                    self.state = if body == 0 {
                        State::Header {
                            header: [0; 5],
                            have: 0,
                        }
                    } else {
                        State::Body(body)
                    };
                }
                State::Cut(_) => return,
            }
        }
    }
}

/// A PostgreSQL `ErrorResponse` naming the limit.
fn error_response(body: usize, max: usize) -> Vec<u8> {
    let message = format!(
        "the database sent a row of {body} bytes; this connection's max_value_bytes is {max}, so Airlock refused it before reading it"
    );
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', SQLSTATE),
        (b'M', message.as_str()),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    let length = u32::try_from(fields.len() + 4).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if !this.carry.is_empty() {
            let n = this.carry.len().min(buf.remaining());
            buf.put_slice(&this.carry[..n]);
            this.carry.drain(..n);
            return Poll::Ready(Ok(()));
        }
        loop {
            if let State::Cut(pending) = &mut this.state {
                let n = pending.len().min(buf.remaining());
                buf.put_slice(&pending[..n]);
                pending.drain(..n);
                // Once drained, nothing more: end of stream, and the driver closes.
                return Poll::Ready(Ok(()));
            }
            // Room for a held header (at most 5 bytes) on top of what is read now; what
            // still does not fit is carried to the next read.
            let room = buf.remaining().saturating_sub(5).max(1);
            let mut scratch = std::mem::take(&mut this.scratch);
            scratch.resize(room, 0);
            let mut read = ReadBuf::new(&mut scratch);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let filled = read.filled().len();
            let result = match polled {
                Poll::Ready(Ok(())) if filled == 0 => Some(Poll::Ready(Ok(()))),
                Poll::Ready(Ok(())) => {
                    let mut out = Vec::with_capacity(filled + 5);
                    this.feed(&scratch[..filled], &mut out);
                    let n = out.len().min(buf.remaining());
                    buf.put_slice(&out[..n]);
                    this.carry.extend_from_slice(&out[n..]);
                    // Nothing to hand up yet (a header still incomplete): read on.
                    (n > 0 || matches!(this.state, State::Cut(_))).then_some(Poll::Ready(Ok(())))
                }
                Poll::Ready(Err(e)) => Some(Poll::Ready(Err(e))),
                Poll::Pending => Some(Poll::Pending),
            };
            this.scratch = scratch;
            if let Some(result) = result {
                if matches!(this.state, State::Cut(_)) && buf.filled().len() == before {
                    continue;
                }
                return result;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: TlsStream + Unpin> TlsStream for Guarded<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose sessions are guarded (the guard reads the decrypted stream).
#[derive(Clone)]
pub(super) struct GuardedTls<T> {
    inner: T,
    max_message: usize,
}

impl<T> GuardedTls<T> {
    pub(super) fn new(inner: T, max_message: usize) -> GuardedTls<T> {
        GuardedTls { inner, max_message }
    }
}

impl<S, T> MakeTlsConnect<S> for GuardedTls<T>
where
    T: MakeTlsConnect<S>,
    <T::TlsConnect as TlsConnect<S>>::Future: Send + 'static,
    <T::TlsConnect as TlsConnect<S>>::Error: Send + 'static,
    T::Stream: Send + 'static,
    S: Send + 'static,
{
    type Stream = Guarded<T::Stream>;
    type TlsConnect = GuardedTlsConnect<T::TlsConnect>;
    type Error = T::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, T::Error> {
        Ok(GuardedTlsConnect {
            inner: self.inner.make_tls_connect(domain)?,
            max_message: self.max_message,
        })
    }
}

pub(super) struct GuardedTlsConnect<C> {
    inner: C,
    max_message: usize,
}

impl<S, C> TlsConnect<S> for GuardedTlsConnect<C>
where
    C: TlsConnect<S>,
    C::Future: Send + 'static,
    C::Stream: Send + 'static,
    C::Error: Send + 'static,
    S: Send + 'static,
{
    type Stream = Guarded<C::Stream>;
    type Error = C::Error;
    type Future = BoxFuture<'static, Result<Guarded<C::Stream>, C::Error>>;

    fn connect(self, stream: S) -> Self::Future {
        let max_message = self.max_message;
        let handshake = self.inner.connect(stream);
        Box::pin(async move { Ok(Guarded::new(handshake.await?, max_message)) })
    }
}

/// How the pool opens connections: with TLS, through [`GuardedTls`]; without, over a TCP
/// stream guarded directly (the driver hands a plaintext socket to no connector).
pub(super) enum GuardedConnect<T> {
    Plain { max_message: usize },
    Tls(GuardedTls<T>),
}

impl<T> Connect for GuardedConnect<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send + 'static,
    <T::TlsConnect as TlsConnect<Socket>>::Error: Send + 'static,
{
    fn connect(
        &self,
        pg_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        let pg_config = pg_config.clone();
        Box::pin(async move {
            let (client, task) = match self {
                GuardedConnect::Tls(tls) => {
                    let (client, connection) = pg_config.connect(tls.clone()).await?;
                    (client, tokio::spawn(drive(connection)))
                }
                GuardedConnect::Plain { max_message } => {
                    let stream = match tcp(&pg_config).await {
                        Ok(s) => Guarded::new(Refusable::Open(s), *max_message),
                        Err(e) => Guarded::new(Refusable::Refused(Some(e)), *max_message),
                    };
                    let (client, connection) = pg_config.connect_raw(stream, NoTls).await?;
                    (client, tokio::spawn(drive(connection)))
                }
            };
            Ok((client, task))
        })
    }
}

async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "postgres connection ended");
    }
}

/// Opens a TCP connection to the first host that answers, within the connect timeout.
pub(super) async fn tcp(pg_config: &Config) -> io::Result<TcpStream> {
    let ports = pg_config.get_ports();
    let timeout = pg_config
        .get_connect_timeout()
        .copied()
        .unwrap_or(std::time::Duration::from_secs(10));
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no host to connect to");
    for (i, host) in pg_config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let Host::Tcp(name) = host else {
            last = io::Error::new(
                io::ErrorKind::Unsupported,
                "unix-socket hosts are not supported; use a TCP address",
            );
            continue;
        };
        match tokio::time::timeout(timeout, TcpStream::connect((name.as_str(), port))).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(last)
}

/// A TCP stream, or the reason there is none. The driver's error type cannot be built
/// outside it, so a failed connect is reported by handing the driver a stream that fails
/// with the connect error: it reports it as its own I/O error.
enum Refusable {
    Open(TcpStream),
    Refused(Option<io::Error>),
}

impl Refusable {
    fn refused(error: &mut Option<io::Error>) -> io::Error {
        error
            .take()
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))
    }
}

impl AsyncRead for Refusable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Refusable::Open(s) => Pin::new(s).poll_read(cx, buf),
            Refusable::Refused(e) => Poll::Ready(Err(Refusable::refused(e))),
        }
    }
}

impl AsyncWrite for Refusable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Refusable::Open(s) => Pin::new(s).poll_write(cx, data),
            Refusable::Refused(e) => Poll::Ready(Err(Refusable::refused(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Refusable::Open(s) => Pin::new(s).poll_flush(cx),
            Refusable::Refused(e) => Poll::Ready(Err(Refusable::refused(e))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Refusable::Open(s) => Pin::new(s).poll_shutdown(cx),
            Refusable::Refused(_) => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn messages_within_the_ceiling_pass_whole_in_any_split() {
        let stream: Vec<u8> = [
            message(b'T', b"row description"),
            message(b'D', &[7; 100]),
            message(b'C', b"SELECT 1\0"),
            message(b'Z', b"I"),
        ]
        .concat();
        for split in 1..stream.len() {
            let mut g = Guarded::new((), 100);
            let mut out = Vec::new();
            for chunk in stream.chunks(split) {
                g.feed(chunk, &mut out);
            }
            assert_eq!(out, stream, "split {split}");
            assert!(matches!(g.state, State::Header { have: 0, .. }));
        }
    }

    #[test]
    fn an_oversized_message_is_cut_at_its_header() {
        let mut stream = message(b'D', &[1; 10]);
        let small = stream.clone();
        stream.extend_from_slice(b"D");
        stream.extend_from_slice(&300_000_000u32.to_be_bytes());
        stream.extend_from_slice(&[9; 64]);
        for split in 1..stream.len() {
            let mut g = Guarded::new((), 1000);
            let mut out = Vec::new();
            for chunk in stream.chunks(split) {
                g.feed(chunk, &mut out);
            }
            // Only the whole small message passed; not a byte of the big one's header.
            assert_eq!(out, small, "split {split}");
            let State::Cut(error) = &g.state else {
                panic!("split {split}: not cut");
            };
            assert_eq!(error[0], b'E');
            assert!(String::from_utf8_lossy(error).contains("54000"));
        }
    }
}
