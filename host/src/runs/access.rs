//! What an execution may ask of the run state machine, as one seam.
//!
//! On the host that holds run state this is [`Runs`] itself. On a worker
//! host (several hosts on one database, see [`crate::work`]) it is a
//! client of the leader's [`Runs`]: the run executes there, and every
//! change it asks for is still applied by the one writer of run state, in
//! its one order. So the executor never knows where the state lives.

use super::{Recorded, Runs, Transition};
use crate::config::Limits;
use crate::model::{FunctionRecord, IncomingEvent, LogChunk, RunKey, RunRecord};
use anyhow::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a tenant's runs execute under: its limits and the hosts its step
/// bodies may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantTerms {
    /// The tenants' generation these are of ([`Runs::terms_generation`]).
    pub generation: u64,
    /// Its limits (the host's defaults with its own over them).
    pub limits: Limits,
    /// Its allowlist for outgoing HTTP.
    pub http_allow: Arc<Vec<String>>,
}

/// Kept by an execution while it runs: dropped, the run state machine no
/// longer counts it (see [`super::Execution`]).
pub type ExecutionGuard = Box<dyn Send>;

/// What the executor's driver and host calls ask of their run's state.
#[async_trait]
pub trait RunAccess: Send + Sync {
    /// Run `key` as the writer of run state has it (including changes not
    /// yet flushed).
    async fn run(&self, key: &RunKey) -> Result<Option<RunRecord>>;

    /// Starts an execution of the run (see [`Runs::start`]); `None` if it
    /// has ended.
    async fn start(&self, key: &RunKey) -> Result<Option<(RunRecord, ExecutionGuard)>>;

    /// Registers an execution of branch `seq` of the run (see
    /// [`Runs::enter`]); `None` if the run has ended.
    async fn enter(&self, key: &RunKey, seq: u32) -> Result<Option<ExecutionGuard>>;

    /// Applies `transition` (see [`Runs::record`]).
    async fn record(&self, key: &RunKey, transition: Transition) -> Result<Recorded>;

    /// Journals output the guest wrote, without waiting (it is called
    /// between host calls, which are not async).
    fn record_output(&self, key: &RunKey, chunks: Vec<LogChunk>) -> Result<()>;

    /// Accepts events a step sends; their ids.
    async fn ingest(&self, tenant: &str, events: Vec<IncomingEvent>) -> Result<Vec<String>>;

    /// The time, as the run state machine reads it.
    fn now_ms(&self) -> u64;

    /// Bytes `tenant` stores, for its quota.
    async fn storage_used(&self, tenant: &str) -> Result<u64>;

    /// How long until `tenant` may start `count` more runs by events, or
    /// `None` if it may now (see [`Runs::event_budget_wait`]).
    async fn event_budget_wait(&self, tenant: &str, count: usize) -> Result<Option<u64>>;

    /// Whether branch `seq` of `run` is queued or executing already.
    async fn branch_pending(&self, run: &RunKey, seq: u32) -> Result<bool>;

    /// What `tenant`'s runs execute under now.
    async fn terms(&self, tenant: &str) -> Result<TenantTerms>;

    /// Function `id` of `tenant`, if it is deployed (for `invoke`).
    async fn function(&self, tenant: &str, id: &str) -> Result<Option<FunctionRecord>>;
}

#[async_trait]
impl RunAccess for Arc<Runs> {
    async fn run(&self, key: &RunKey) -> Result<Option<RunRecord>> {
        self.journal.run(key)
    }

    async fn start(&self, key: &RunKey) -> Result<Option<(RunRecord, ExecutionGuard)>> {
        Ok(Runs::start(self, key)?.map(|(run, execution)| (run, Box::new(execution) as _)))
    }

    async fn enter(&self, key: &RunKey, _seq: u32) -> Result<Option<ExecutionGuard>> {
        Ok(Runs::enter(self, key)?.map(|execution| Box::new(execution) as _))
    }

    async fn record(&self, key: &RunKey, transition: Transition) -> Result<Recorded> {
        Runs::record(self, key, transition).await
    }

    fn record_output(&self, key: &RunKey, chunks: Vec<LogChunk>) -> Result<()> {
        Runs::record_output(self, key, chunks)
    }

    async fn ingest(&self, tenant: &str, events: Vec<IncomingEvent>) -> Result<Vec<String>> {
        Ok(Runs::ingest(self, tenant, events).await?.ids)
    }

    fn now_ms(&self) -> u64 {
        Runs::now_ms(self)
    }

    async fn storage_used(&self, tenant: &str) -> Result<u64> {
        Ok(Runs::storage_used(self, tenant))
    }

    async fn event_budget_wait(&self, tenant: &str, count: usize) -> Result<Option<u64>> {
        Ok(Runs::event_budget_wait(self, tenant, count))
    }

    async fn branch_pending(&self, run: &RunKey, seq: u32) -> Result<bool> {
        Ok(Runs::branch_pending(self, run, seq))
    }

    async fn terms(&self, tenant: &str) -> Result<TenantTerms> {
        Ok(Runs::tenant_terms(self, tenant))
    }

    async fn function(&self, tenant: &str, id: &str) -> Result<Option<FunctionRecord>> {
        Ok(self.catalog.get(tenant, id))
    }
}
