//! What a guest can see of the world, and when.
//!
//! Outside a step body the guest sees the run's journaled logical time and a
//! random generator seeded by the run id, so a replay computes the same
//! values; inside a step body it sees the real clock and real randomness, and
//! may make outgoing HTTP requests. WASI's clock and random hooks are
//! synchronous and cannot reach the store, so they read [`RunFlags`], which
//! the step host calls update. Output goes to [`RunOutput`], keyed so that a
//! replay does not log the same lines twice.

use super::egress::Egress;
use crate::model::LogChunk;
use rand::rngs::{StdRng, SysRng};
use rand::{SeedableRng, TryRng};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

/// State shared by a run's host calls and its synchronous WASI hooks.
#[derive(Debug)]
pub struct RunFlags {
    origin: Instant,
    in_step: AtomicBool,
    logical_ms: AtomicU64,
    step_started_ns: AtomicU64,
    monotonic_floor_ns: AtomicU64,
    /// Epoch ticks the guest has run since its last host call.
    cpu_ticks: AtomicU64,
    /// The `traceparent` of the step attempt running now, on a host that
    /// exports traces: its outgoing HTTP carries it.
    traceparent: Mutex<Option<http::HeaderValue>>,
}

impl RunFlags {
    /// Flags for a run whose logical clock reads `logical_ms`.
    pub fn new(logical_ms: u64) -> Arc<Self> {
        Arc::new(RunFlags {
            origin: Instant::now(),
            in_step: AtomicBool::new(false),
            logical_ms: AtomicU64::new(logical_ms),
            step_started_ns: AtomicU64::new(0),
            monotonic_floor_ns: AtomicU64::new(0),
            cpu_ticks: AtomicU64::new(0),
            traceparent: Mutex::new(None),
        })
    }

    /// The step attempt running from now on is in the trace span
    /// `traceparent` (`None`: the host does not export traces).
    pub fn set_traceparent(&self, traceparent: Option<String>) {
        let value = traceparent.and_then(|t| http::HeaderValue::from_str(&t).ok());
        *self.traceparent.lock().unwrap_or_else(|p| p.into_inner()) = value;
    }

    fn traceparent(&self) -> Option<http::HeaderValue> {
        self.traceparent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The guest called the host: its CPU budget starts again.
    pub fn reset_cpu(&self) {
        self.cpu_ticks.store(0, Ordering::Relaxed);
    }

    /// Counts one more tick of guest time; true once more than `limit`
    /// ticks went by without a host call.
    pub fn tick_cpu(&self, limit: u64) -> bool {
        self.cpu_ticks.fetch_add(1, Ordering::Relaxed) + 1 > limit
    }

    /// Whether a step body is executing.
    pub fn in_step(&self) -> bool {
        self.in_step.load(Ordering::Relaxed)
    }

    /// A step body starts or ends.
    pub fn set_in_step(&self, in_step: bool) {
        if in_step {
            let now = self.origin.elapsed().as_nanos() as u64;
            self.step_started_ns.store(now, Ordering::Relaxed);
        }
        self.in_step.store(in_step, Ordering::Relaxed);
    }

    /// How long the step body executing now has run, wall clock (`None`
    /// outside step bodies).
    pub fn step_elapsed(&self) -> Option<Duration> {
        if !self.in_step() {
            return None;
        }
        let started = self.step_started_ns.load(Ordering::Relaxed);
        let now = self.origin.elapsed().as_nanos() as u64;
        Some(Duration::from_nanos(now.saturating_sub(started)))
    }

    /// Moves the logical clock (to the time a journaled call finished).
    pub fn set_logical_ms(&self, ms: u64) {
        self.logical_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// What the guest's clocks read outside step bodies, ms since the
    /// epoch: the run's start, then the end of each journaled call it has
    /// passed (never going back).
    pub fn logical_ms(&self) -> u64 {
        self.logical_ms.load(Ordering::Relaxed)
    }

    /// Nanoseconds on the guest's monotonic clock: logical time outside
    /// steps, plus the real time elapsed inside one; never going backwards.
    fn monotonic_ns(&self) -> u64 {
        let mut value = self.logical_ms().saturating_mul(1_000_000);
        if self.in_step() {
            let started = self.step_started_ns.load(Ordering::Relaxed);
            value += (self.origin.elapsed().as_nanos() as u64).saturating_sub(started);
        }
        self.monotonic_floor_ns
            .fetch_max(value, Ordering::Relaxed)
            .max(value)
    }
}

/// The wall clock a guest reads.
pub struct RunWallClock(pub Arc<RunFlags>);

impl HostWallClock for RunWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        if self.0.in_step() {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
        } else {
            Duration::from_millis(self.0.logical_ms())
        }
    }
}

/// The monotonic clock a guest reads.
pub struct RunMonotonicClock(pub Arc<RunFlags>);

impl HostMonotonicClock for RunMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000
    }

    fn now(&self) -> u64 {
        self.0.monotonic_ns()
    }
}

/// Random bytes: seeded by the run id outside steps, real inside.
pub struct RunRandom {
    flags: Arc<RunFlags>,
    replayable: StdRng,
    real: StdRng,
}

impl RunRandom {
    /// The generator of run `run_id`; `salt` separates WASI's secure and
    /// insecure streams.
    pub fn new(flags: Arc<RunFlags>, run_id: &str, salt: &str) -> Self {
        let seed: [u8; 32] = Sha256::digest(format!("{salt}:{run_id}")).into();
        let mut real_seed = [0u8; 32];
        SysRng.try_fill_bytes(&mut real_seed).unwrap_or_else(|_| {
            real_seed.copy_from_slice(&Sha256::digest(format!("{:?}", Instant::now())))
        });
        RunRandom {
            flags,
            replayable: StdRng::from_seed(seed),
            real: StdRng::from_seed(real_seed),
        }
    }

    fn source(&mut self) -> &mut StdRng {
        if self.flags.in_step() {
            &mut self.real
        } else {
            &mut self.replayable
        }
    }
}

impl TryRng for RunRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.source().try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.source().try_next_u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.source().try_fill_bytes(dst)
    }
}

/// The insecure-seed WASI hands out outside steps, from the run id.
pub fn insecure_seed(run_id: &str) -> u128 {
    let digest = Sha256::digest(format!("insecure-seed:{run_id}"));
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// Most output one execution of a run may log.
pub const MAX_OUTPUT_BYTES: u64 = 1024 * 1024;

/// A run's captured output, waiting to be journaled.
#[derive(Debug, Default)]
pub struct OutputBuffer {
    segment: u32,
    run_attempt: u32,
    attempt: u32,
    offset: u64,
    replaying: bool,
    pending: Vec<LogChunk>,
    logged: u64,
    truncated: bool,
}

impl OutputBuffer {
    /// Output of this execution belongs to the handler's attempt
    /// `run_attempt` (its failed attempts so far).
    pub fn set_run_attempt(&mut self, run_attempt: u32) {
        self.run_attempt = run_attempt;
    }

    /// Output from now on belongs after `calls` journal entries, in attempt
    /// `attempt` of the last one; output of a segment that an earlier
    /// execution got past (and logged) is dropped.
    pub fn set_segment(&mut self, calls: u32, attempt: u32, replaying: bool) {
        if calls != self.segment || attempt != self.attempt {
            self.segment = calls;
            self.attempt = attempt;
            self.offset = 0;
        }
        self.replaying = replaying;
    }

    /// Takes the chunks written since the last call.
    pub fn take(&mut self) -> Vec<LogChunk> {
        std::mem::take(&mut self.pending)
    }

    fn write(&mut self, stream: &'static str, bytes: &[u8]) {
        let offset = self.offset;
        self.offset += bytes.len() as u64;
        if self.replaying || self.truncated {
            return;
        }
        if self.logged + bytes.len() as u64 > MAX_OUTPUT_BYTES {
            self.truncated = true;
            self.pending.push(LogChunk {
                segment: self.segment,
                run_attempt: self.run_attempt,
                attempt: self.attempt,
                offset,
                stream: stream.into(),
                text: format!("\n[stepwise: output truncated after {MAX_OUTPUT_BYTES} bytes]\n"),
            });
            return;
        }
        self.logged += bytes.len() as u64;
        let text = String::from_utf8_lossy(bytes);
        match self.pending.last_mut() {
            Some(last)
                if last.stream == stream
                    && last.segment == self.segment
                    && last.attempt == self.attempt =>
            {
                last.text.push_str(&text)
            }
            _ => self.pending.push(LogChunk {
                segment: self.segment,
                run_attempt: self.run_attempt,
                attempt: self.attempt,
                offset,
                stream: stream.into(),
                text: text.into_owned(),
            }),
        }
    }
}

/// A guest's stdout or stderr.
#[derive(Clone)]
pub struct RunOutput {
    stream: &'static str,
    buffer: Arc<Mutex<OutputBuffer>>,
}

impl RunOutput {
    /// The `stream` ("stdout" or "stderr") writing into `buffer`.
    pub fn new(stream: &'static str, buffer: Arc<Mutex<OutputBuffer>>) -> Self {
        RunOutput { stream, buffer }
    }

    fn write(&self, bytes: &[u8]) {
        self.buffer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(self.stream, bytes);
    }
}

impl IsTerminal for RunOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for RunOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for RunOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for RunOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        RunOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for RunOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        RunOutput::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The message a guest gets for a request made outside a step body.
pub const HTTP_OUTSIDE_STEP: &str = "stepwise: outgoing HTTP is only allowed inside a step body (step.run): code outside steps runs again on every replay, so a request there would be sent many times. Move the request into a step so it runs once and its result is journaled.";

/// Outgoing HTTP, allowed only while a step body runs, and only to the
/// tenant's allowed hosts and addresses ([`Egress`]).
pub struct StepHttpHooks {
    flags: Arc<RunFlags>,
    egress: Egress,
}

impl StepHttpHooks {
    /// Hooks for the run behind `flags`, whose tenant may reach `egress`.
    pub fn new(flags: Arc<RunFlags>, egress: Egress) -> Self {
        StepHttpHooks { flags, egress }
    }
}

/// Whether `host` (and `port`) is on an allowlist of `host`, `host:port`,
/// `*.domain` and `*` patterns.
pub fn host_allowed(allow: &[String], host: &str, port: Option<u16>) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    allow.iter().any(|pattern| {
        if pattern == "*" {
            return true;
        }
        if let Some(domain) = pattern.strip_prefix("*.") {
            return host.len() > domain.len()
                && host.ends_with(domain)
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.';
        }
        match pattern.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .eq_ignore_ascii_case(host)
                    && p.parse::<u16>().ok() == port
            }
            _ => pattern
                .trim_start_matches('[')
                .trim_end_matches(']')
                .eq_ignore_ascii_case(host),
        }
    })
}

type ResponseFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for StepHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _response_errors: ResponseFuture,
    ) -> Box<
        dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, ResponseFuture)>>
            + Send,
    > {
        if !self.flags.in_step() {
            tracing::warn!(uri = %request.uri(), "refused outgoing HTTP outside a step body");
            return Box::new(async {
                Err(wasmtime_wasi_http::Error::InternalError(Some(
                    HTTP_OUTSIDE_STEP.into(),
                )))
            });
        }
        let uri = request.uri();
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        let host = uri.host().unwrap_or_default().to_string();
        if !host_allowed(&self.egress.allow, &host, port) {
            tracing::warn!(%host, "refused outgoing HTTP to a host not on the tenant's allowlist");
            let message = format!(
                "stepwise: {host} is not on this tenant's HTTP allowlist; ask the operator to add it (stepwise tenant allow TENANT {host})"
            );
            return Box::new(async move {
                Err(wasmtime_wasi_http::Error::InternalError(Some(message)))
            });
        }
        // The user's services join the run's trace, under the attempt's span
        // (unless the body set a traceparent of its own).
        let mut request = request;
        if let Some(traceparent) = self.flags.traceparent() {
            request
                .headers_mut()
                .entry("traceparent")
                .or_insert(traceparent);
        }
        let egress = self.egress.clone();
        Box::new(async move {
            let result = egress.send(request, options).await;
            if let Err(wasmtime_wasi_http::Error::InternalError(Some(reason))) = &result {
                tracing::warn!(%host, %reason, "refused outgoing HTTP to an internal address");
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_of_replayed_segments_is_dropped_and_new_output_is_keyed() {
        let buffer = Arc::new(Mutex::new(OutputBuffer::default()));
        let out = RunOutput::new("stdout", buffer.clone());
        buffer.lock().unwrap().set_segment(0, 0, true);
        out.write(b"old line\n");
        assert!(buffer.lock().unwrap().take().is_empty());
        buffer.lock().unwrap().set_segment(1, 0, false);
        out.write(b"new ");
        out.write(b"line\n");
        let chunks = buffer.lock().unwrap().take();
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].segment, chunks[0].offset), (1, 0));
        assert_eq!(chunks[0].text, "new line\n");
        out.write(b"more\n");
        let chunks = buffer.lock().unwrap().take();
        assert_eq!((chunks[0].segment, chunks[0].offset), (1, 9));
        // A retry of the step writes beside the first attempt, not over it.
        buffer.lock().unwrap().set_segment(1, 1, false);
        out.write(b"again\n");
        let chunks = buffer.lock().unwrap().take();
        assert_eq!(
            (chunks[0].segment, chunks[0].attempt, chunks[0].offset),
            (1, 1, 0)
        );
    }

    #[test]
    fn randomness_outside_steps_repeats_per_run() {
        let draw = |run: &str| {
            let mut rng = RunRandom::new(RunFlags::new(0), run, "secure");
            (rng.try_next_u64().unwrap(), rng.try_next_u64().unwrap())
        };
        assert_eq!(draw("r1"), draw("r1"));
        assert_ne!(draw("r1"), draw("r2"));
        let flags = RunFlags::new(0);
        flags.set_in_step(true);
        let mut a = RunRandom::new(flags.clone(), "r1", "secure");
        let mut b = RunRandom::new(flags, "r1", "secure");
        assert_ne!(a.try_next_u64().unwrap(), b.try_next_u64().unwrap());
    }

    #[test]
    fn the_http_allowlist_matches_hosts_ports_and_subdomains() {
        let allow: Vec<String> = ["api.example.com", "127.0.0.1:8080", "*.corp.net"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(host_allowed(&allow, "api.example.com", Some(443)));
        assert!(host_allowed(&allow, "API.example.com", None));
        assert!(!host_allowed(&allow, "evil-api.example.com", Some(443)));
        assert!(host_allowed(&allow, "127.0.0.1", Some(8080)));
        assert!(!host_allowed(&allow, "127.0.0.1", Some(8081)));
        assert!(host_allowed(&allow, "db.corp.net", Some(5432)));
        assert!(!host_allowed(&allow, "corp.net", Some(80)));
        assert!(!host_allowed(&allow, "xcorp.net", Some(80)));
        assert!(host_allowed(&["*".to_string()], "anything", None));
        assert!(!host_allowed(&[], "anything", None));
    }

    #[test]
    fn the_wall_clock_is_logical_outside_steps() {
        let flags = RunFlags::new(1_000);
        let clock = RunWallClock(flags.clone());
        assert_eq!(clock.now(), Duration::from_secs(1));
        flags.set_in_step(true);
        assert!(clock.now() > Duration::from_secs(1_700_000_000));
    }
}
