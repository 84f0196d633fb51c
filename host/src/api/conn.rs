//! The connection layer in front of the API: the accept loop that
//! `axum::serve` would be, plus what it lacks against hostile clients.
//!
//! - A host-wide cap on open connections and a cap per source address
//!   (IPv4 address, or IPv6 /64), so that one client cannot take every socket.
//! - A header timeout: a request's head must arrive within it once its first
//!   byte has.
//! - An idle timeout: a keep-alive connection with no request in progress is
//!   closed after it. A request in progress (its handler working, or its
//!   response streaming, as a long poll or a server-sent event stream does)
//!   is never idle, however long it waits on purpose; only a client that
//!   stops reading the response for as long is cut.
//! - A minimum request body rate (see [`super::body_rate`]).
//!
//! Connections over a cap are answered `503` and closed at once, without
//! reading anything.

use super::body_rate::{MinRate, RateLimited};
use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower_service::Service;

/// How many connections a host keeps and how long it waits for clients.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections, host-wide; more are refused.
    pub max_connections: usize,
    /// Open connections from one source address; more are refused.
    pub max_per_source: usize,
    /// Longest wait for a request's head once its first byte arrived.
    pub header_timeout: Duration,
    /// Longest wait for the next request on a keep-alive connection, and
    /// for a client to read any of a response.
    pub idle_timeout: Duration,
    /// The slowest request body accepted.
    pub body_rate: MinRate,
    /// How long requests in progress may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

/// The address a request came from, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// What one client counts as, for caps and throttles: an IPv4 address, or
/// an IPv6 /64 (one subscriber's usual allocation, so that rotating through
/// it gains nothing).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting, lets requests in progress finish (up to the grace period)
/// and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let sources = Arc::new(Sources::default());
    let refusals = Refusals::default();
    let (stop, stopping) = watch::channel(false);
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refusals.note(peer, "the host's --max-connections");
            refuse(
                stream,
                &format!(
                    "the host has its most open connections ({}); try again shortly",
                    limits.max_connections
                ),
            );
            continue;
        };
        let Some(slot) = sources.claim(peer.ip(), limits.max_per_source) else {
            refusals.note(peer, "--max-connections-per-source");
            refuse(
                stream,
                &format!(
                    "too many open connections from your address (at most {}); reuse connections or close idle ones",
                    limits.max_per_source
                ),
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            peer,
            router: router.clone(),
            limits: limits.clone(),
        };
        let stopping = stopping.clone();
        let spare = spare_handle(&stream);
        tokio::spawn(async move {
            connection.run(stream, stopping).await;
            if let Some(spare) = spare {
                linger(spare).await;
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit: having them all back means every
    // connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "stopping with requests still in progress"
        );
    }
}

/// An accept error: a client that left before being accepted is nothing; a
/// lack of file descriptors or memory passes if we wait a little (as
/// `axum::serve` does).
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    static LAST_WARNING: AtomicU64 = AtomicU64::new(0);
    let now = crate::model::now_ms();
    if now.saturating_sub(LAST_WARNING.swap(now, Ordering::Relaxed)) > 10_000 {
        tracing::warn!(%error, "accepting a connection failed (out of file descriptors? raise `ulimit -n` or lower --max-connections)");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Answers `503` without reading the request, and closes. The write does
/// not wait: a client that cannot take 200 bytes now gets the close alone.
fn refuse(stream: TcpStream, why: &str) {
    let body = serde_json::json!({ "error": why, "status": 503 }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Logs refused connections at most once per 10 s, so that a flood cannot
/// flood the log too.
#[derive(Default)]
struct Refusals {
    last_ms: AtomicU64,
    since: AtomicU64,
}

impl Refusals {
    fn note(&self, peer: SocketAddr, cap: &str) {
        let count = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::model::now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.since.store(0, Ordering::Relaxed);
            tracing::warn!(
                source = %peer.ip(),
                refused = count,
                "refusing connections over {cap}"
            );
        }
    }
}

/// Open connections per source.
#[derive(Default)]
struct Sources {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`Sources`], given back when dropped.
struct SourceSlot {
    sources: Arc<Sources>,
    source: IpAddr,
}

impl Sources {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claim(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let source = source_of(ip);
        let mut open = self.lock();
        let count = open.entry(source).or_insert(0);
        if *count >= max {
            if *count == 0 {
                open.remove(&source);
            }
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: self.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.lock();
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// How long a finished connection keeps reading (and discarding) what the
/// client still sends. Closing a socket with unread input makes the kernel
/// answer with a reset, which can destroy a response the client has not
/// read yet — a 408 to a slow body, a 413, a 401 to an unread upload. So the
/// host shuts its side and drains for a moment first: a "lingering close",
/// as nginx does (its `lingering_timeout` is 5 s too). A busy client may
/// take seconds to read; the connection keeps its place under the caps
/// meanwhile, and what it sends is discarded, not buffered.
const LINGER: Duration = Duration::from_secs(5);

/// Most bytes a lingering close reads before it gives up.
const LINGER_BYTES: usize = 1 << 20;

/// A second handle on the connection's socket (a duplicated descriptor), so
/// that it stays open for [`linger`] after hyper has dropped its own.
fn spare_handle(stream: &TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    let fd = stream.as_fd().try_clone_to_owned().ok()?;
    Some(std::net::TcpStream::from(fd))
}

/// Ends a connection gently: shuts the sending side (what was answered is
/// followed by a clean end), then drains the client's input for up to
/// [`LINGER`] before the socket closes.
async fn linger(spare: std::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The duplicate shares the original's non-blocking mode.
    let Ok(mut stream) = TcpStream::from_std(spare) else {
        return;
    };
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(read)) if read > 0 => drained += read,
            _ => return,
        }
    }
}

/// One accepted connection.
struct Connection {
    peer: SocketAddr,
    router: Router,
    limits: Arc<ConnLimits>,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy)]
enum Cut {
    SlowHeaders,
    Idle,
    NotReading,
}

impl Connection {
    async fn run(self, stream: TcpStream, mut stopping: watch::Receiver<bool>) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let (peer, router, rate) = (self.peer, self.router, self.limits.body_rate);
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let in_flight = InFlight::begin(&requests);
            request.extensions_mut().insert(ClientAddr(peer));
            let request = request.map(|body| Body::new(RateLimited::new(body, rate)));
            let mut router = router.clone();
            async move {
                let response = match router.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        inner: body,
                        _in_flight: in_flight,
                    })
                }))
            }
        });
        let mut builder = http1::Builder::new();
        // The watchdog times headers and idleness: hyper's own header timer
        // also runs while a connection is idle, so it would make both one.
        builder.timer(TokioTimer::new()).header_read_timeout(None);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let watchdog = watchdog(&activity, &self.limits);
        tokio::pin!(watchdog);
        let mut stop_asked = *stopping.borrow();
        if stop_asked {
            connection.as_mut().graceful_shutdown();
        }
        loop {
            // The connection first: bytes that arrived while this task
            // waited for a core are read before the watchdog judges them
            // late (a busy host must not cut requests it simply has not
            // looked at yet).
            tokio::select! {
                biased;
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended");
                    }
                    return;
                }
                cut = &mut watchdog => {
                    tracing::debug!(%peer, ?cut, "closing connection");
                    return;
                }
                changed = stopping.changed(), if !stop_asked => {
                    stop_asked = true;
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// What a connection is doing, as its socket and its requests report it.
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    /// Requests whose response has not been sent in full.
    in_flight: usize,
    /// When the connection last became idle.
    idle_since: Instant,
    /// When the first byte of the next request's head arrived.
    head_started: Option<Instant>,
    /// Since when a write has been waiting for the client to read.
    write_blocked_since: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: Instant::now(),
                head_started: None,
                write_blocked_since: None,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_some(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    fn write_blocked(&self, blocked: bool) {
        let mut state = self.lock();
        let now_blocked = state.write_blocked_since.is_some();
        if blocked != now_blocked {
            state.write_blocked_since = blocked.then(Instant::now);
            drop(state);
            self.changed.notify_one();
        }
    }

    /// When the connection is to be cut, and why, as things stand.
    fn deadline(&self, limits: &ConnLimits) -> Option<(Instant, Cut)> {
        let state = self.lock();
        if let Some(since) = state.write_blocked_since {
            Some((since + limits.idle_timeout, Cut::NotReading))
        } else if state.in_flight > 0 {
            None
        } else if let Some(started) = state.head_started {
            Some((started + limits.header_timeout, Cut::SlowHeaders))
        } else {
            Some((state.idle_since + limits.idle_timeout, Cut::Idle))
        }
    }
}

/// Resolves when the connection overstays: headers too slow, idle too long,
/// or a client not reading its response.
async fn watchdog(activity: &Activity, limits: &ConnLimits) -> Cut {
    loop {
        let changed = activity.changed.notified();
        match activity.deadline(limits) {
            None => changed.await,
            Some((at, cut)) => {
                if Instant::now() >= at {
                    return cut;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = changed => {}
                }
            }
        }
    }
}

/// A request in progress, from its head to the end of its response.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        let mut state = activity.lock();
        state.in_flight += 1;
        state.head_started = None;
        drop(state);
        activity.changed.notify_one();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.head_started = None;
        }
        drop(state);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request in flight until hyper has sent
/// (or abandoned) it.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, reporting reads and blocked writes to the watchdog.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        result
    }
}

impl Watched {
    fn note_write<T>(&self, result: &Poll<io::Result<T>>) {
        self.activity.write_blocked(result.is_pending());
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
