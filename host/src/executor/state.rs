//! The data of one run's wasmtime `Store`: its sandbox and its session.

use super::RunServices;
use super::budget::GuestLimiter;
use super::replay::Replay;
use super::sandbox::{
    OutputBuffer, RunFlags, RunMonotonicClock, RunOutput, RunRandom, RunWallClock, StepHttpHooks,
    insecure_seed,
};
use crate::model::ErrorName;
use crate::model::{ErrorRecord, EventRecord, RunRecord};
use crate::wit::types::StepError;
use std::sync::{Arc, Mutex};
use wasmtime::StoreLimitsBuilder;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// A step body in progress (between `begin` answering `execute` and
/// `complete`).
#[derive(Debug, Clone)]
pub struct OpenStep {
    /// Its position in the run's call sequence.
    pub seq: u32,
    /// Its effective id (with the `:N` suffix of a repeated id).
    pub id: String,
    /// The id the guest gave (what `complete` must repeat).
    pub raw_id: String,
    /// When this attempt began, in ms.
    pub started_at: u64,
    /// Attempts that failed before this one.
    pub attempts: u32,
}

/// Which part of a run an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The run itself, from its handler's start to its end or suspension.
    Main,
    /// One branch of a parallel group: it replays up to the group, runs the
    /// body of the step at this position, has its outcome recorded, and
    /// stops.
    Branch(u32),
}

/// What a run's execution knows beyond the sandbox.
pub struct Session {
    /// What host calls need of the host: the journal to read, the run
    /// state machine to write through, tenants' limits.
    pub services: Arc<RunServices>,
    /// The run as last written.
    pub run: RunRecord,
    /// Its triggering events: the first is `event`; a batch has more.
    pub events: Vec<EventRecord>,
    /// The cursor over its journal.
    pub replay: Replay,
    /// The step body running now, if any.
    pub open: Option<OpenStep>,
    /// Counts the body (or group of bodies) running now as in progress,
    /// for a host that stops (see [`super::drain`]).
    pub body: Option<super::drain::Body>,
    /// Steps of a parallel group answered `execute` and not yet completed,
    /// in the order the guest runs them.
    pub group: Vec<OpenStep>,
    /// The run itself, or one of its branches.
    pub role: Role,
    /// Its tenant's bounds.
    pub limits: crate::config::Limits,
    /// Bytes of step output journaled so far (bounded by
    /// `limits.max_journal_bytes_per_run`).
    pub journal_bytes: u64,
    /// Replay only: answer from the journal, write nothing, and stop at the
    /// first call the journal does not hold.
    pub dry_run: bool,
}

/// The `T` of a run's `Store<T>`.
pub struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    http_hooks: StepHttpHooks,
    /// Memory and table bounds, charging growth to the host's memory
    /// budget.
    pub store_limits: GuestLimiter,
    /// Epoch ticks the guest may run without a host call.
    pub cpu_ticks: u64,
    /// Clock, randomness and HTTP switches.
    pub flags: Arc<RunFlags>,
    /// Captured stdout and stderr, until handed to the run state machine
    /// to journal.
    pub output: Arc<Mutex<OutputBuffer>>,
    /// The run being executed; `None` while an upload is inspected.
    pub session: Option<Session>,
}

impl RunState {
    /// A sandbox for run `run_id` whose logical clock starts at
    /// `logical_ms`: no files, no environment, no sockets; stdout and stderr
    /// captured; clocks and randomness replayable outside steps.
    pub fn new(
        run_id: &str,
        logical_ms: u64,
        limits: &crate::config::Limits,
        egress: super::Egress,
        session: Option<Session>,
    ) -> Self {
        let flags = RunFlags::new(logical_ms);
        let output = Arc::new(Mutex::new(OutputBuffer::default()));
        let wasi = WasiCtxBuilder::new()
            .stdout(RunOutput::new("stdout", output.clone()))
            .stderr(RunOutput::new("stderr", output.clone()))
            .wall_clock(RunWallClock(flags.clone()))
            .monotonic_clock(RunMonotonicClock(flags.clone()))
            .secure_random(RunRandom::new(flags.clone(), run_id, "secure"))
            .insecure_random(RunRandom::new(flags.clone(), run_id, "insecure"))
            .insecure_random_seed(insecure_seed(run_id))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.max_memory_bytes)
            .table_elements(limits.max_table_elements as usize)
            .instances(64)
            .tables(64)
            .memories(16)
            .trap_on_grow_failure(true)
            .build();
        let store_limits = GuestLimiter::new(store_limits);
        RunState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_hooks: StepHttpHooks::new(flags.clone(), egress),
            store_limits,
            cpu_ticks: limits
                .cpu_ms
                .div_ceil(super::EPOCH_TICK.as_millis() as u64)
                .max(1),
            flags,
            output,
            session,
        }
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RunState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// A WIT step error as recorded in the journal.
pub fn error_record(error: &StepError) -> ErrorRecord {
    ErrorRecord {
        name: error.name.clone(),
        message: error.message.clone(),
        retriable: error.retriable,
        retry_after_ms: error.retry_after_ms,
    }
}

/// A journaled error as the guest receives it: final, so not retriable.
pub fn wit_error(error: &ErrorRecord) -> StepError {
    StepError {
        name: error.name.clone(),
        message: error.message.clone(),
        retriable: false,
        retry_after_ms: None,
    }
}

/// The message of a run that waits on a WASI timer outside a step body.
pub const TIMER_OUTSIDE_STEP: &str = "a WASI timer (std::thread::sleep, a timeout, an event-loop delay) was started outside a step body; it would hold the run's instance while it waits, and code outside steps runs again on every replay. Use step.sleep(...) for a durable pause.";

/// Replaces WASI's monotonic-clock subscriptions (guest-side sleeps): inside
/// a step body they work as usual; outside one, a non-zero wait fails the run
/// with [`TIMER_OUTSIDE_STEP`].
pub fn link_guest_timers(linker: &mut wasmtime::component::Linker<RunState>) -> anyhow::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::clocks::WasiClocksView;
    use wasmtime_wasi::p2::DynPollable;
    use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as _;

    fn allowed(state: &RunState, wait_ns: u64) -> wasmtime::Result<()> {
        if wait_ns == 0 || state.flags.in_step() || state.session.is_none() {
            return Ok(());
        }
        Err(super::outcome::fault(
            ErrorName::SandboxError,
            TIMER_OUTSIDE_STEP,
        ))
    }

    linker.allow_shadowing(true);
    let mut clocks = linker
        .instance("wasi:clocks/monotonic-clock@0.2.12")
        .map_err(anyhow::Error::from)?;
    clocks
        .func_wrap(
            "subscribe-duration",
            |mut store: wasmtime::StoreContextMut<'_, RunState>, (duration,): (u64,)| {
                allowed(store.data(), duration)?;
                let pollable: Resource<DynPollable> =
                    store.data_mut().clocks().subscribe_duration(duration)?;
                Ok((pollable,))
            },
        )
        .map_err(anyhow::Error::from)?;
    clocks
        .func_wrap(
            "subscribe-instant",
            |mut store: wasmtime::StoreContextMut<'_, RunState>, (when,): (u64,)| {
                let now = store.data_mut().clocks().now()?;
                allowed(store.data(), when.saturating_sub(now))?;
                let pollable: Resource<DynPollable> =
                    store.data_mut().clocks().subscribe_instant(when)?;
                Ok((pollable,))
            },
        )
        .map_err(anyhow::Error::from)?;
    linker.allow_shadowing(false);
    Ok(())
}
