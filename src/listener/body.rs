//! Body wrappers on the request path: count bytes, and emit the request's
//! audit event exactly once, when the response body ends, fails or is
//! dropped (client gone).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::audit::{AuditEvent, AuditSink};
use crate::upstream::BoxError;

pin_project! {
    /// Counts data bytes into a shared counter.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        count: Arc<AtomicU64>,
    }
}

impl<B> Counted<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(d) = frame
            .as_ref()
            .and_then(|f| f.as_ref().ok())
            .and_then(Frame::data_ref)
        {
            this.count.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Emits one audit event when dropped or finished.
pub struct AuditOnce {
    event: Option<AuditEvent>,
    sink: AuditSink,
    bytes_up: Arc<AtomicU64>,
    bytes_down: u64,
    start: Instant,
    on_done: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl AuditOnce {
    /// Arms an event; `bytes_up` is read at emit time.
    pub fn new(
        event: AuditEvent,
        sink: AuditSink,
        bytes_up: Arc<AtomicU64>,
        start: Instant,
    ) -> Self {
        Self {
            event: Some(event),
            sink,
            bytes_up,
            bytes_down: 0,
            start,
            on_done: None,
        }
    }

    /// Runs `f` with the request-body bytes when the exchange ends (byte budgets).
    pub fn on_done(mut self, f: Box<dyn FnOnce(u64) + Send>) -> Self {
        self.on_done = Some(f);
        self
    }

    fn emit(&mut self, failed: bool) {
        if let Some(mut ev) = self.event.take() {
            ev.bytes_up = self.bytes_up.load(Ordering::Relaxed);
            if let Some(f) = self.on_done.take() {
                f(ev.bytes_up);
            }
            ev.bytes_down = self.bytes_down;
            ev.duration_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            if failed {
                ev.reason = "response_incomplete";
            }
            self.sink.emit(ev);
        }
    }
}

impl Drop for AuditOnce {
    fn drop(&mut self) {
        // Dropped before the end: the client went away mid-response.
        self.emit(true);
    }
}

pin_project! {
    /// The response body: counts bytes down and audits at the end.
    pub struct Audited<B: Body> {
        #[pin]
        inner: B,
        audit: AuditOnce,
    }

    impl<B: Body> PinnedDrop for Audited<B> {
        fn drop(this: Pin<&mut Self>) {
            // Bodies hyper never polls (empty, HEAD) end here, complete.
            let this = this.project();
            let complete = this.inner.is_end_stream();
            this.audit.emit(!complete);
        }
    }
}

impl<B: Body> Audited<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, audit: AuditOnce) -> Self {
        Self { inner, audit }
    }
}

impl<B> Body for Audited<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    this.audit.bytes_down += d.len() as u64;
                }
            }
            Some(Err(_)) => this.audit.emit(true),
            None => this.audit.emit(false),
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
