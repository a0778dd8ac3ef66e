//! Stream wrappers for client connections: an idle timeout, and a stream
//! that replays bytes already read (the peeked first byte of a tunnel, or
//! bytes a client sent before the `200` to CONNECT).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project! {
    /// Fails reads and writes once no byte has moved either way for `idle`.
    ///
    /// The timer is re-armed at most once per period (not per read), so the
    /// cost on a busy connection is a flag store.
    pub struct IdleTimeout<S> {
        #[pin]
        inner: S,
        sleep: Pin<Box<Sleep>>,
        idle: Duration,
        active: bool,
    }
}

impl<S> IdleTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep(idle)),
            idle,
            active: false,
        }
    }

    fn poll_idle(self: Pin<&mut Self>, cx: &mut Context<'_>) -> io::Result<()> {
        let this = self.project();
        while this.sleep.as_mut().poll(cx).is_ready() {
            if !*this.active {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle timeout",
                ));
            }
            *this.active = false;
            let deadline = Instant::now() + *this.idle;
            this.sleep.as_mut().reset(deadline);
        }
        Ok(())
    }
}

impl<S: AsyncRead> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = self.as_mut().project();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    *this.active = true;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.poll_idle(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.as_mut().project();
        match this.inner.poll_write(cx, buf) {
            Poll::Ready(r) => {
                *this.active = true;
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.poll_idle(cx)?;
                Poll::Pending
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.as_mut().project();
        match this.inner.poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                *this.active = true;
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.poll_idle(cx)?;
                Poll::Pending
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project! {
    /// Yields `prefix` before reading from `inner`.
    pub struct Prefixed<S> {
        prefix: Bytes,
        #[pin]
        inner: S,
    }
}

impl<S: AsyncRead + Unpin> Prefixed<S> {
    /// Wraps `inner`, replaying `prefix` first.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }

    /// The first byte the client sent, reading it if none is buffered yet.
    /// `None` when the client closed without sending anything.
    pub async fn first_byte(&mut self) -> io::Result<Option<u8>> {
        if self.prefix.is_empty() {
            let mut buf = BytesMut::with_capacity(4096);
            let n = self.inner.read_buf(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            self.prefix = buf.freeze();
        }
        Ok(self.prefix.first().copied())
    }
}

impl<S: AsyncRead> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Release the peek buffer: a tunnel lives long, its 4 KiB add up.
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        ready!(this.inner.poll_read(cx, buf))?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
