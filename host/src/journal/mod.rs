//! The journal: the only code that touches storage.
//!
//! Writers describe changes as a [`Batch`] of [`Op`]s applied atomically, so
//! the rules (what a step completion or a waiter registration changes) live
//! with their writers, and a backend only has to store records. Run state
//! has one writer, the run state machine ([`crate::runs`]); deploys, tenants
//! and housekeeping write records of their own. Readers use small traits
//! split by who needs them: [`RunJournal`] for the run state machine and the
//! executor (which only reads), [`QueryJournal`] for the API. Durability is
//! separate: a write is on disk only after [`Journal::flush`];
//! [`GroupCommit`] shares one flush among every writer that waits at the
//! same time.
//!
//! Two backends store the same key-value layout (`records`): sled in the
//! data directory ([`SledJournal`], the embedded default) and PostgreSQL
//! ([`PgJournal`], `--store postgres://...`).

pub mod backup;
mod commit;
pub mod disk_sync;
mod files;
mod keys;
pub mod postgres;
mod records;
pub mod retention;
mod sled_backend;
pub mod usage;

pub use commit::GroupCommit;
pub use files::{make_private, restrict_new_files};
pub use postgres::PgJournal;
pub use records::{Row, TreeId};
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
    /// Store a timer; every stored timer is armed again at start.
    PutTimer(Timer),
    /// Remove a timer (it fired, or its run moved on).
    DeleteTimer(Timer),
    /// Store a waiter: events accepted from now on are matched against it.
    PutWaiter(Waiter),
    /// Remove a waiter (an event matched it, it timed out, or its run was
    /// cancelled).
    DeleteWaiter(Waiter),
    /// Store an accepted event, and its id for de-duplication if the sender
    /// gave it.
    PutEvent {
        /// The owning tenant.
        tenant: String,
        /// The event as accepted, with the id it is stored under.
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
        /// The `.wasm` component as uploaded.
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
        /// The entry's value: a run id, a time in ms or a listener's JSON,
        /// as its [`IndexKind`] says.
        value: String,
    },
    /// Remove an entry of a flow-control index.
    DeleteIndex(IndexRef),
    /// Create or replace a tenant.
    PutTenant(TenantRecord),
    /// Remove rows retention found expired (see [`retention`]): an ended
    /// run with its steps, output and events, old events, old
    /// de-duplication entries. `freed` bytes come off `tenant`'s storage.
    DeleteRows {
        /// The tenant whose data they are.
        tenant: String,
        /// Which rows, in the order they are removed.
        rows: Vec<(TreeId, Vec<u8>)>,
        /// Bytes they count for in the tenant's storage.
        freed: u64,
    },
    /// Remove a stored component (a version no run needs any more).
    DeleteComponent {
        /// Hex SHA-256 of its bytes.
        hash: String,
    },
    /// Set a host setting.
    PutSetting {
        /// The setting's name, e.g. [`usage::USAGE_SETTING`].
        name: String,
        /// Its value, as text.
        value: String,
    },
    /// Remove a host setting (e.g. a key an older host kept in clear).
    DeleteSetting {
        /// The setting's name.
        name: String,
    },
}

/// Changes applied all together or not at all.
pub type Batch = Vec<Op>;

/// The whole journal: its reads, plus writes and durability.
pub trait Journal: RunJournal + QueryJournal + Send + Sync + 'static {
    /// Applies `batch` atomically. Not durable until [`Journal::flush`].
    fn apply(&self, batch: Batch) -> Result<()>;

    /// Makes every write applied so far durable (fsync). Blocking.
    fn flush(&self) -> Result<()>;

    /// Whether a write applied so far may not be durable yet (false for a
    /// backend whose writes are durable once applied). May say true when
    /// all is durable, never false when something is not.
    fn unflushed(&self) -> bool;

    /// Logical bytes each tenant stores, counted as batches are applied.
    fn usage(&self) -> &usage::StorageUsage;

    /// Up to `limit` rows of `tree` whose keys come after `after`, in key
    /// order: retention's walk through a table, a page at a time. (Writes
    /// not flushed yet may be missing: the next walk finds them.)
    fn rows_after(&self, tree: TreeId, after: &[u8], limit: usize) -> Result<Vec<Row>>;

    /// Every row of `tree` whose key starts with `prefix`, in key order.
    fn rows_with_prefix(&self, tree: TreeId, prefix: &[u8]) -> Result<Vec<Row>>;

    /// Syncs to the disk itself (fdatasync) so far, for a backend that
    /// makes them after its flushes (see [`disk_sync`]).
    fn disk_syncs(&self) -> Option<u64> {
        None
    }

    /// Writes a consistent copy of the journal, taken while the host runs,
    /// as a new data directory `dest` (see [`backup`]). Only a journal on
    /// local disk makes its own: a database has its own tools.
    fn backup_to(&self, dest: &std::path::Path) -> Result<backup::BackupReport> {
        let _ = dest;
        Err(BackupUnsupported.into())
    }
}

/// The journal cannot copy itself: it lives in PostgreSQL, whose own tools
/// back it up.
#[derive(Debug, thiserror::Error)]
#[error(
    "this host's journal is in PostgreSQL: back it up with PostgreSQL's own tools (pg_dump, or a base backup with WAL archiving; see the README's Operating section)"
)]
pub struct BackupUnsupported;

/// Reads of the run state machine, the executor and the host's start; the
/// API reads single runs here too.
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
    /// Entry `seq` of a run's journal, if the run has made that call.
    fn step(&self, key: &RunKey, seq: u32) -> Result<Option<StepRecord>>;
    /// Every run that has not ended, for resumption after a restart.
    fn active_runs(&self) -> Result<Vec<RunRecord>>;
    /// Every armed timer, soonest first.
    fn timers(&self) -> Result<Vec<Timer>>;
    /// The waiters for event `name` in `tenant`.
    fn waiters(&self, tenant: &str, name: &str) -> Result<Vec<Waiter>>;
    /// When an event with this sender id was accepted, if it was.
    fn event_seen(&self, tenant: &str, id: &str) -> Result<Option<u64>>;
    /// The bytes of the component with content hash `hash`, if stored.
    fn component(&self, hash: &str) -> Result<Option<Vec<u8>>>;
    /// Whether a component is stored (without reading it).
    fn has_component(&self, hash: &str) -> Result<bool>;
    /// Every function of every tenant, to route events at start.
    fn all_functions(&self) -> Result<Vec<FunctionRecord>>;
    /// Host setting `name`, if it is set.
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
    /// `tenant`'s runs that pass `filter`, newest first.
    fn list_runs(&self, tenant: &str, filter: &RunFilter) -> Result<Vec<RunRecord>>;
    /// `tenant`'s last `limit` accepted events, newest first.
    fn list_events(&self, tenant: &str, limit: usize) -> Result<Vec<EventRecord>>;
    /// A run's output, in order.
    fn logs(&self, key: &RunKey) -> Result<Vec<LogChunk>>;
    /// A tenant's apps.
    fn apps(&self, tenant: &str) -> Result<Vec<AppRecord>>;
    /// App `name` of `tenant`, if it was deployed.
    fn app(&self, tenant: &str, name: &str) -> Result<Option<AppRecord>>;
    /// A tenant's functions.
    fn functions(&self, tenant: &str) -> Result<Vec<FunctionRecord>>;
}
