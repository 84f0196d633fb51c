//! The journal: the only code that touches storage.
//!
//! Writers describe changes as a [`Batch`] of [`Op`]s applied atomically, so
//! the rules (what a step completion or a waiter registration changes) live
//! with their modules, and a backend only has to store records. Readers use
//! small traits split by who needs them: [`RunJournal`] for the executor and
//! scheduler, [`QueryJournal`] for the API. Durability is separate: a write
//! is on disk only after [`Journal::flush`]; [`GroupCommit`] shares one flush
//! among every writer that waits at the same time.
//!
//! sled is the one backend for now ([`SledJournal`]); a PostgreSQL backend
//! for many hosts can implement the same traits.

mod commit;
mod files;
mod keys;
mod sled_backend;
pub mod usage;

pub use commit::GroupCommit;
pub use files::{make_private, restrict_new_files};
pub use sled_backend::SledJournal;

use crate::model::{
    AppRecord, EventRecord, FunctionRecord, IndexKind, IndexRef, LogChunk, RunKey, RunRecord,
    RunStatus, StepRecord, TenantRecord, Timer, Waiter,
};
use anyhow::Result;

/// One change to the journal.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create or replace a run. Non-terminal runs are also kept in the set
    /// of active runs that a restart resumes.
    PutRun(RunRecord),
    /// Store the events that triggered a run (written once, at creation).
    PutRunEvents(RunKey, Vec<EventRecord>),
    /// Create or replace a journal entry of a run.
    PutStep(RunKey, StepRecord),
    /// Arm a timer.
    PutTimer(Timer),
    /// Disarm a timer.
    DeleteTimer(Timer),
    /// Register a waiter.
    PutWaiter(Waiter),
    /// Remove a waiter.
    DeleteWaiter(Waiter),
    /// Store an accepted event; `dedupe` is the sender's id, if it gave one.
    PutEvent {
        /// The owning tenant.
        tenant: String,
        /// The event.
        event: EventRecord,
        /// Whether the id came from the sender (then it de-duplicates).
        dedupe: bool,
    },
    /// Append output of a run.
    PutLog(RunKey, LogChunk),
    /// Store a component's bytes under their content hash.
    PutComponent {
        /// Hex SHA-256 of `bytes`.
        hash: String,
        /// The component.
        bytes: bytes::Bytes,
    },
    /// Create or replace an app.
    PutApp(AppRecord),
    /// Create or replace a function.
    PutFunction(FunctionRecord),
    /// Remove a function (its app no longer registers it).
    DeleteFunction {
        /// The owning tenant.
        tenant: String,
        /// The function's id.
        id: String,
    },
    /// Set an entry of a flow-control index.
    PutIndex {
        /// Which index and key.
        at: IndexRef,
        /// Its value.
        value: String,
    },
    /// Remove an entry of a flow-control index.
    DeleteIndex(IndexRef),
    /// Create or replace a tenant.
    PutTenant(TenantRecord),
    /// Remove a stored component (a version no run needs any more).
    DeleteComponent {
        /// Hex SHA-256 of its bytes.
        hash: String,
    },
    /// Set a host setting.
    PutSetting {
        /// Setting name.
        name: String,
        /// Its value.
        value: String,
    },
    /// Remove a host setting (e.g. a key an older host kept in clear).
    DeleteSetting {
        /// Setting name.
        name: String,
    },
}

/// Changes applied all together or not at all.
pub type Batch = Vec<Op>;

/// Writes and durability.
pub trait Journal: RunJournal + QueryJournal + Send + Sync + 'static {
    /// Applies `batch` atomically. Not durable until [`Journal::flush`].
    fn apply(&self, batch: Batch) -> Result<()>;

    /// Makes every write applied so far durable (fsync). Blocking.
    fn flush(&self) -> Result<()>;

    /// Logical bytes each tenant stores, counted as batches are applied.
    fn usage(&self) -> &usage::StorageUsage;
}

/// Reads of the executor, the scheduler and event routing.
pub trait RunJournal {
    /// A run, if it exists.
    fn run(&self, key: &RunKey) -> Result<Option<RunRecord>>;
    /// A run's status alone, if it exists: what a transition that only
    /// needs to know the run has not ended asks, on every step, without
    /// decoding the whole record.
    fn run_status(&self, key: &RunKey) -> Result<Option<RunStatus>>;
    /// The events that triggered a run.
    fn run_events(&self, key: &RunKey) -> Result<Vec<EventRecord>>;
    /// A run's journal entries, in call order.
    fn steps(&self, key: &RunKey) -> Result<Vec<StepRecord>>;
    /// One journal entry of a run.
    fn step(&self, key: &RunKey, seq: u32) -> Result<Option<StepRecord>>;
    /// Every run that has not ended, for resumption after a restart.
    fn active_runs(&self) -> Result<Vec<RunRecord>>;
    /// Every armed timer, soonest first.
    fn timers(&self) -> Result<Vec<Timer>>;
    /// The waiters for event `name` in `tenant`.
    fn waiters(&self, tenant: &str, name: &str) -> Result<Vec<Waiter>>;
    /// When an event with this sender id was accepted, if it was.
    fn event_seen(&self, tenant: &str, id: &str) -> Result<Option<u64>>;
    /// A component's bytes.
    fn component(&self, hash: &str) -> Result<Option<Vec<u8>>>;
    /// Whether a component is stored (without reading it).
    fn has_component(&self, hash: &str) -> Result<bool>;
    /// Every function of every tenant, to route events at start.
    fn all_functions(&self) -> Result<Vec<FunctionRecord>>;
    /// A host setting.
    fn setting(&self, name: &str) -> Result<Option<String>>;
    /// Every tenant.
    fn tenants(&self) -> Result<Vec<TenantRecord>>;
    /// An entry of a flow-control index.
    fn index(&self, kind: IndexKind, key: &str) -> Result<Option<String>>;
    /// The entries of an index whose keys start with `prefix`, in key order.
    fn index_scan(&self, kind: IndexKind, prefix: &str) -> Result<Vec<(String, String)>>;
}

/// What to list of a tenant's runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this function.
    pub function: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Reads of the HTTP API.
pub trait QueryJournal {
    /// Runs, newest first.
    fn list_runs(&self, tenant: &str, filter: &RunFilter) -> Result<Vec<RunRecord>>;
    /// Accepted events, newest first.
    fn list_events(&self, tenant: &str, limit: usize) -> Result<Vec<EventRecord>>;
    /// A run's output, in order.
    fn logs(&self, key: &RunKey) -> Result<Vec<LogChunk>>;
    /// A tenant's apps.
    fn apps(&self, tenant: &str) -> Result<Vec<AppRecord>>;
    /// One app.
    fn app(&self, tenant: &str, name: &str) -> Result<Option<AppRecord>>;
    /// A tenant's functions.
    fn functions(&self, tenant: &str) -> Result<Vec<FunctionRecord>>;
}
