//! The slowest request body the host waits for.
//!
//! A client that trickles a body holds a connection and a buffer for as
//! long as it likes unless something times it out. [`RateLimited`] fails a
//! body that brings less than [`MinRate::min_bytes`] (and does not end) in
//! any [`MinRate::window`]; the handler then answers `408` and the
//! connection closes. Time only counts while the handler is waiting for
//! the client, from the first time it reads the body.

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// At least `min_bytes` of a body (or its end) in every `window`.
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    /// How long the body may take to bring `min_bytes` (`--body-timeout`);
    /// the next window starts once it has.
    pub window: Duration,
    /// Bytes each window must bring, unless the body ends
    /// (`--body-min-bytes`).
    pub min_bytes: u64,
}

/// The error of a body that came too slowly; handlers answer it with `408`.
#[derive(Debug)]
pub struct BodyTooSlow(pub MinRate);

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body arrived too slowly: less than {} bytes in {:?} (the host's --body-min-bytes and --body-timeout); send it faster",
            self.0.min_bytes, self.0.window
        )
    }
}

impl std::error::Error for BodyTooSlow {}

/// A request body that fails when it comes slower than its [`MinRate`].
pub struct RateLimited {
    inner: Incoming,
    rate: MinRate,
    window_start: Option<Instant>,
    bytes: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

impl RateLimited {
    /// `body`, held to `rate`.
    pub fn new(body: Incoming, rate: MinRate) -> Self {
        RateLimited {
            inner: body,
            rate,
            window_start: None,
            bytes: 0,
            timer: None,
        }
    }
}

impl Body for RateLimited {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let window_start = *this.window_start.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    if this.bytes >= this.rate.min_bytes {
                        this.window_start = Some(Instant::now());
                        this.bytes = 0;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = window_start + this.rate.window;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow(this.rate)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
