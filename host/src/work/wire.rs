//! What a worker host and the leader say to each other, as JSON over the
//! leader's API (`/cluster/work/...`, only for requests carrying the
//! hosts' shared secret).

use crate::model::{FunctionRecord, IncomingEvent, LogChunk, RunKey, RunRecord};
use crate::runs::{Recorded, TenantTerms, Transition};
use crate::scheduler::Job;
use serde::{Deserialize, Serialize};

/// The paths the leader serves them at.
pub const JOIN: &str = "/cluster/work/join";
/// See [`JOIN`].
pub const CLAIM: &str = "/cluster/work/claim";
/// See [`JOIN`].
pub const CALL: &str = "/cluster/work/call";
/// See [`JOIN`].
pub const DONE: &str = "/cluster/work/done";
/// See [`JOIN`].
pub const LEAVE: &str = "/cluster/work/leave";

/// A worker asks for a session.
#[derive(Debug, Serialize, Deserialize)]
pub struct Join {
    /// The worker's host id (for logs and `/health`).
    pub host_id: String,
    /// How many jobs it executes at once.
    pub capacity: usize,
}

/// The leader opened a session.
#[derive(Debug, Serialize, Deserialize)]
pub struct Joined {
    /// Its id, on every later request.
    pub session: u64,
    /// How long the leader waits for a claim before fencing the session
    /// off, ms: a worker claims well within it.
    pub ttl_ms: u64,
}

/// A request within a session: claim, leave.
#[derive(Debug, Serialize, Deserialize)]
pub struct InSession {
    /// The session.
    pub session: u64,
}

/// Jobs the leader handed this worker.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Claimed {
    /// Execute each, then say [`Done`].
    pub jobs: Vec<Job>,
    /// The tenants' generation now: terms of an older one are stale.
    pub generation: u64,
}

/// What an execution asks of its run (see [`crate::runs::RunAccess`]).
#[derive(Debug, Serialize, Deserialize)]
pub enum Ask {
    /// The run as the leader has it.
    Run(RunKey),
    /// Start an execution of the run's handler.
    Start(RunKey),
    /// Register an execution of one of its branches.
    Enter(RunKey, u32),
    /// Apply a transition, after the output written before it.
    Record {
        /// The run.
        key: RunKey,
        /// Output the guest wrote since the last call.
        output: Vec<LogChunk>,
        /// The change (boxed: most asks are small).
        transition: Box<Transition>,
    },
    /// Accept events a step sends.
    Ingest {
        /// The sending run's tenant.
        tenant: String,
        /// The events.
        events: Vec<IncomingEvent>,
    },
    /// Bytes a tenant stores.
    StorageUsed(String),
    /// How long until a tenant may start this many runs by events.
    EventBudgetWait(String, usize),
    /// Whether a branch is queued or executing already.
    BranchPending(RunKey, u32),
    /// What a tenant's runs execute under.
    Terms(String),
    /// A tenant's function, by id.
    Function(String, String),
}

/// A call within a session.
#[derive(Debug, Serialize, Deserialize)]
pub struct Call {
    /// The session.
    pub session: u64,
    /// What it asks.
    pub ask: Ask,
}

/// The leader's answer to an [`Ask`], in kind.
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    /// For [`Ask::Run`] and [`Ask::Start`].
    Run(Option<Box<RunRecord>>),
    /// For [`Ask::Enter`]: whether the run goes on.
    Entered(bool),
    /// For [`Ask::Record`].
    Recorded(Recorded),
    /// For [`Ask::Ingest`]: the events' ids.
    Ingested(Vec<String>),
    /// For [`Ask::StorageUsed`].
    Bytes(u64),
    /// For [`Ask::EventBudgetWait`].
    Wait(Option<u64>),
    /// For [`Ask::BranchPending`].
    Pending(bool),
    /// For [`Ask::Terms`].
    Terms(TenantTerms),
    /// For [`Ask::Function`].
    Function(Option<Box<FunctionRecord>>),
}

/// A job's execution ended on the worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct Done {
    /// The session.
    pub session: u64,
    /// The job.
    pub job: Job,
    /// Output its run wrote since the last call.
    pub output: Vec<LogChunk>,
    /// Wake its run again after this long (the host failed during it), ms.
    pub again_after_ms: Option<u64>,
}
