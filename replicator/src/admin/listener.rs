//! The admin API's listener: a TCP listener that serves at most a fixed
//! number of connections at a time and closes idle ones.
//!
//! Connections enter through [`CappedListener`] (axum's `Listener`); each
//! one that gets a slot leaves as a [`CappedStream`] that holds the slot
//! until it is dropped and fails with `TimedOut` after [`IDLE`] without a
//! byte read or written (so an idle or trickling client cannot hold a slot
//! for ever). A connection over the limit is answered `503` with a one-line
//! JSON reason and closed, without reaching the router.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Default most concurrent admin connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// A connection with no byte read or written for this long is closed.
pub const IDLE: Duration = Duration::from_secs(120);

/// A TCP listener with a connection cap.
pub struct CappedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    limit: usize,
}

impl CappedListener {
    /// At most `limit` (≥ 1) connections of `inner` at a time.
    pub fn new(inner: TcpListener, limit: usize) -> Self {
        let limit = limit.max(1);
        CappedListener {
            inner,
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

/// Answers a connection over the limit and closes it.
async fn busy(mut sock: TcpStream, limit: usize) {
    let body = format!(
        "{{\"error\":\"the replicator admin API already serves {limit} connections (its limit); try again\"}}"
    );
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), sock.write_all(reply.as_bytes())).await;
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CappedStream, SocketAddr) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let (sock, peer) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin API accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            backoff = Duration::from_millis(10);
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    return (
                        CappedStream {
                            inner: sock,
                            _slot: slot,
                            idle: Box::pin(tokio::time::sleep(IDLE)),
                        },
                        peer,
                    )
                }
                Err(_) => {
                    tracing::warn!(%peer, limit = self.limit, "admin API: too many connections; refusing");
                    tokio::spawn(busy(sock, self.limit));
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An admin connection holding one slot of its [`CappedListener`].
pub struct CappedStream {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Pin<Box<Sleep>>,
}

impl CappedStream {
    /// Restarts the idle clock after progress; fails once it has run out.
    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.idle.as_mut().reset(Instant::now() + IDLE);
                Poll::Ready(v)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "admin connection idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.progress(cx, r)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn connections_over_the_limit_get_503() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut capped = CappedListener::new(l, 1);
        let first = TcpStream::connect(addr).await.expect("connect");
        let (held, _) = capped.accept().await;
        let mut second = TcpStream::connect(addr).await.expect("connect");
        // the second is answered from inside accept(), which then waits on
        let pending = tokio::time::timeout(Duration::from_millis(300), capped.accept()).await;
        assert!(pending.is_err(), "no third connection to accept");
        let mut reply = String::new();
        second.read_to_string(&mut reply).await.expect("read");
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        assert!(reply.contains("1 connections"), "{reply}");
        // a freed slot is reused
        drop(held);
        drop(first);
        let _third = TcpStream::connect(addr).await.expect("connect");
        let got = tokio::time::timeout(Duration::from_secs(2), capped.accept()).await;
        assert!(got.is_ok(), "slot freed");
    }
}
