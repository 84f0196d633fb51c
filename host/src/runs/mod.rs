//! The run state machine, and the only writer of run state: it accepts
//! events (starting the runs they trigger under flow control, resuming the
//! runs waiting for them, cancelling the runs they cancel), applies what
//! executions ask of their runs ([`Transition`]), fires timers, and ends
//! runs, with what ending one changes.
//!
//! Every change goes through one lock ([`Runs::change`]), so they happen in
//! one order: an event accepted after a waiter was registered always finds
//! it, and one accepted before never does (Inngest's semantics, without its
//! race between events sent in quick succession and a waiter being set up).
//! A change is a [`Tx`]: its writes are applied atomically, and its
//! [`Effects`] reach the scheduler once they are durable. The executor and
//! the API write nothing themselves.

mod access;
mod admit;
mod crons;
mod ending;
mod live;
mod retention;
mod timers;
mod transition;
mod tx;

#[cfg(test)]
mod transitions_test;

pub use access::{ExecutionGuard, RunAccess, TenantTerms};
pub use admit::{IDEMPOTENCY_WINDOW_MS, delayed_start};
pub use ending::FUNCTION_FAILED;
pub use live::Execution;
pub use retention::Sweeper;
pub use transition::{Recorded, Suspended, Transition};
pub use tx::{Effects, Tx};

use crate::catalog::Catalog;
use crate::cron::CronTable;
use crate::journal::{GroupCommit, Journal, Op};
use crate::metrics::{LimitHit, Metrics, Observation};
use crate::model::ErrorName;
use crate::model::IncomingEvent;
use crate::model::{
    Clock, ConcurrencyKey, ErrorRecord, EventRecord, RunKey, RunRecord, StepStatus, Timer,
    TimerKind, Waiter,
};
use crate::scheduler::{Admission, Job, Scheduler};
use crate::tenants::Tenants;
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// How long a sender's event id prevents a second event with that id from
/// starting anything, as in Inngest.
pub const DEDUPE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// What ingestion did.
#[derive(Debug, Default)]
pub struct Accepted {
    /// The id of every event of the request, in order (duplicates included).
    pub ids: Vec<String>,
    /// Runs the events started or resumed (already handed to the scheduler).
    pub wake: Vec<RunKey>,
}

/// Why a run could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such run in this tenant.
    #[error("run {0} not found")]
    NotFound(String),
    /// The run is over already.
    #[error("run {0} has already ended ({1})")]
    AlreadyEnded(String, &'static str),
    /// The host failed (storage, I/O), not the request: the API answers 500
    /// and logs it in full.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The run state machine: routes events to functions and waiters, applies
/// transitions, fires timers and crons, all in one order.
pub struct Runs {
    journal: Arc<dyn Journal>,
    commit: GroupCommit,
    catalog: Arc<Catalog>,
    scheduler: Scheduler,
    crons: CronTable,
    /// Tenants' limits (a tenant's share of the executing slots).
    tenants: Arc<Tenants>,
    /// Every transition's `now`.
    clock: Arc<dyn Clock>,
    /// Told of every run that ends.
    ended: broadcast::Sender<RunKey>,
    /// The one order of changes, and what it guards: the runs being
    /// executed.
    order: Mutex<live::Executing>,
    /// What every change counts, once durable.
    metrics: Arc<Metrics>,
    /// Where spans go, on a host exporting traces.
    traces: std::sync::OnceLock<Arc<crate::traces::Traces>>,
}

impl Runs {
    /// Routing over `catalog`, writing to `journal`, waking through
    /// `scheduler`, at the times `clock` reads.
    pub fn new(
        journal: Arc<dyn Journal>,
        commit: GroupCommit,
        catalog: Arc<Catalog>,
        scheduler: Scheduler,
        tenants: Arc<Tenants>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Runs {
            journal,
            commit,
            catalog,
            scheduler,
            tenants,
            clock,
            ended: broadcast::channel(4096).0,
            crons: CronTable::default(),
            order: Mutex::new(live::Executing::default()),
            metrics,
            traces: std::sync::OnceLock::new(),
        }
    }

    /// Exports a trace of every run from now on (`--otlp-endpoint`).
    pub fn trace_to(&self, traces: Arc<crate::traces::Traces>) {
        let _ = self.traces.set(traces);
    }

    /// The host's metrics, which changes count into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs that end from now on, as they end (before their end is
    /// flushed; see [`Transition::End`]).
    pub fn subscribe_ended(&self) -> broadcast::Receiver<RunKey> {
        self.ended.subscribe()
    }

    /// The time, as every change reads it.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Hands `effects` to the scheduler, and tells those waiting on runs
    /// of the ones that ended.
    fn hand_over(&self, mut effects: Effects) {
        for run in effects.ended.drain(..) {
            let _ = self.ended.send(run);
        }
        let mut observed = std::mem::take(&mut effects.observed);
        if let Some(traces) = self.traces.get() {
            observed = traces.take_from(observed);
        }
        self.metrics.observe(observed);
        effects.apply(&self.scheduler);
    }

    /// Bytes `tenant` stores (events and run journals), for its quota.
    pub fn storage_used(&self, tenant: &str) -> u64 {
        self.journal.usage().used(tenant)
    }

    /// What `tenant`'s runs execute under now.
    pub fn tenant_terms(&self, tenant: &str) -> TenantTerms {
        let (generation, limits, http_allow) = self.tenants.terms(tenant);
        TenantTerms {
            generation,
            limits,
            http_allow,
        }
    }

    /// Changes when any tenant's terms may have: worker hosts keep terms
    /// they were told until it does.
    pub fn terms_generation(&self) -> u64 {
        self.tenants.generation()
    }

    /// Whether branch `seq` of `run` is queued or executing already.
    pub fn branch_pending(&self, run: &RunKey, seq: u32) -> bool {
        self.scheduler.branch_pending(run, seq)
    }

    /// How long until `tenant` may start `count` more runs by events (its
    /// events per second and queued runs bound them), or `None` if it may
    /// now.
    pub fn event_budget_wait(&self, tenant: &str, count: usize) -> Option<u64> {
        let queued = self.scheduler.queued_of(tenant);
        if !self
            .tenants
            .limits(tenant)
            .queue_has_room(queued, self.scheduler.queued_total())
        {
            self.metrics.limit_hit(tenant, LimitHit::queued_runs);
            return Some(1_000);
        }
        let wait = self.tenants.take_events(tenant, count).err();
        if wait.is_some() {
            self.metrics.limit_hit(tenant, LimitHit::events_per_second);
        }
        wait
    }

    /// Runs `f` in the one order of transitions, as one change: its writes
    /// are applied atomically (not yet durable). Keep `f` short and free of
    /// awaits.
    pub fn change<R>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<R>) -> Result<(R, Effects)> {
        self.change_and(f, |_, _| {})
    }

    /// [`Runs::change`], then `after` with its result and the runs being
    /// executed, still in the same place in the order.
    fn change_and<R>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R>,
        after: impl FnOnce(&R, &mut live::Executing),
    ) -> Result<(R, Effects)> {
        let mut executing = self.executing();
        let mut tx = Tx::new(
            self.journal.as_ref(),
            &self.catalog,
            &executing,
            self.clock.now_ms(),
        );
        tx.traces = self.traces.get().map(Arc::as_ref);
        let result = f(&mut tx)?;
        let effects = tx.apply()?;
        for key in &effects.ended {
            executing.mark_ended(key);
        }
        after(&result, &mut executing);
        Ok((result, effects))
    }

    /// Takes the one order of changes.
    fn executing(&self) -> std::sync::MutexGuard<'_, live::Executing> {
        self.order
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Returns once every change applied so far is durable (at once if
    /// there is none).
    pub async fn settled(&self) -> Result<()> {
        self.commit.settled().await
    }

    /// Waits until every change so far is durable, then hands `effects` to
    /// the scheduler.
    pub async fn apply_once_durable(&self, effects: Effects) -> Result<()> {
        self.commit.durable().await?;
        self.hand_over(effects);
        Ok(())
    }

    /// Accepts `incoming` for `tenant`: stores each event, starts (or holds
    /// back, or skips) a run of every function it triggers, resolves the
    /// waiters it matches, cancels the runs it cancels, and returns once all
    /// of that is on disk.
    pub async fn ingest(&self, tenant: &str, incoming: Vec<IncomingEvent>) -> Result<Accepted> {
        let mut accepted = Accepted::default();
        let mut effects = Effects::default();
        let mut seen_here = HashSet::new();
        for event in incoming {
            let (id, more) = self.change(|tx| self.accept(tx, tenant, event, &mut seen_here))?;
            accepted.ids.push(id);
            effects.extend(more);
        }
        accepted.wake = effects.wake.clone();
        self.apply_once_durable(effects).await?;
        Ok(accepted)
    }

    /// One event, in one change. Returns its id.
    fn accept(
        &self,
        tx: &mut Tx<'_>,
        tenant: &str,
        event: IncomingEvent,
        seen_here: &mut HashSet<String>,
    ) -> Result<String> {
        let sender_id = event.id.clone();
        let id = sender_id.clone().unwrap_or_else(crate::model::new_id);
        if let Some(dedupe) = &sender_id {
            let seen_before = self
                .journal
                .event_seen(tenant, dedupe)?
                .is_some_and(|at| tx.now.saturating_sub(at) < DEDUPE_WINDOW_MS);
            if seen_before || !seen_here.insert(dedupe.clone()) {
                tracing::info!(tenant, id = ?dedupe, "duplicate event id: nothing started");
                return Ok(id);
            }
        }
        let trace = tx.traces.map(|traces| {
            let (span, traceparent) =
                traces.event_span(&event.name, &id, tenant, event.trace.as_deref(), tx.now);
            tx.observe(Observation::Span(Box::new(span)));
            traceparent
        });
        let record = EventRecord {
            id: id.clone(),
            name: event.name,
            data: event.data,
            user: event.user,
            ts: event.ts.unwrap_or(tx.now),
            v: event.v,
            received_at: tx.now,
            trace,
        };
        for function in self.catalog.triggered_by(tenant, &record.name) {
            if admit::triggered(&function, &record) {
                admit::admit(tx, &function, &record)?;
            }
        }
        let mut resolved = HashSet::new();
        for waiter in self.journal.waiters(tenant, &record.name)? {
            if !ending::wait_satisfied(tx, &waiter.spec, &waiter.key, &record)?
                || !resolved.insert((waiter.key.clone(), waiter.seq))
            {
                continue;
            }
            let output = serde_json::to_string(&record).context("encoding an event")?;
            resolve_wait(tx, &waiter, Some(output))?;
        }
        ending::cancellations(tx, tenant, &record)?;
        tx.ops.push(Op::PutEvent {
            tenant: tenant.to_string(),
            event: record,
            dedupe: sender_id.is_some(),
        });
        Ok(id)
    }

    /// Cancels a run that has not ended: it stops where it is, its timers
    /// and waiters are removed, and it never resumes.
    pub async fn cancel(&self, key: &RunKey, error: ErrorRecord) -> Result<RunRecord, CancelError> {
        let (run, effects) = self.change(|tx| {
            let Some(run) = self.journal.run(key)? else {
                return Ok(Err(CancelError::NotFound(key.run.clone())));
            };
            if run.status().is_terminal() {
                return Ok(Err(CancelError::AlreadyEnded(
                    key.run.clone(),
                    run.status().as_str(),
                )));
            }
            Ok(Ok(ending::cancel(tx, run, error)?))
        })?;
        let run = run?;
        self.apply_once_durable(effects).await?;
        Ok(run)
    }

    /// Cancels every run of `function` (any, if `None`) created between
    /// `from` and `until` (ms) that has not ended; returns their ids.
    pub async fn cancel_many(
        &self,
        tenant: &str,
        function: Option<&str>,
        from: u64,
        until: u64,
    ) -> Result<Vec<String>> {
        let mut cancelled = Vec::new();
        let mut effects = Effects::default();
        for run in self.journal.active_runs()? {
            let in_scope = run.key.tenant == tenant
                && function.is_none_or(|f| f == run.function)
                && (from..=until).contains(&run.created_at);
            if !in_scope {
                continue;
            }
            let (done, more) = self.change(|tx| {
                let Some(run) = tx.journal.run(&run.key)? else {
                    return Ok(None);
                };
                if run.status().is_terminal() {
                    return Ok(None);
                }
                let error =
                    ErrorRecord::fatal(ErrorName::Cancelled, "cancelled in bulk through the API");
                Ok(Some(ending::cancel(tx, run, error)?.key.run))
            })?;
            cancelled.extend(done);
            effects.extend(more);
        }
        self.apply_once_durable(effects).await?;
        Ok(cancelled)
    }
}

/// Adds to `tx` what ends a wait: the step completes with the event (or
/// `null` on timeout), the waiter and its timer go, the run is queued.
fn resolve_wait(tx: &mut Tx<'_>, waiter: &Waiter, event_json: Option<String>) -> Result<()> {
    tx.ops.push(Op::DeleteWaiter(waiter.clone()));
    tx.delete_timer(Timer {
        at: waiter.timeout_at,
        key: waiter.key.clone(),
        seq: waiter.seq,
        kind: TimerKind::WaitTimeout,
    });
    let Some(mut step) = tx.journal.step(&waiter.key, waiter.seq)? else {
        return Ok(());
    };
    if step.status != StepStatus::Waiting {
        return Ok(());
    }
    step.status = StepStatus::Completed;
    step.output = Some(event_json.unwrap_or_else(|| "null".into()));
    step.ended_at = Some(tx.now);
    tx.ops.push(Op::PutStep(waiter.key.clone(), step));
    ending::queue_again(tx, &waiter.key)
}

impl crate::scheduler::RunStates for Runs {
    fn fire(&self, timer: &Timer) -> Result<bool> {
        let mut effects = self.fire_timer(timer)?;
        // The timer's own run is woken by the scheduler as it fires it.
        let own = effects.wake.contains(&timer.key);
        effects.wake.retain(|k| *k != timer.key);
        self.hand_over(effects);
        Ok(own)
    }

    fn admission(&self, job: &Job) -> Result<Option<Admission>> {
        let Some(run) = self.journal.run(&job.run)? else {
            return Ok(None);
        };
        if run.status().is_terminal() {
            return Ok(None);
        }
        // The host-wide slots are shared between tenants by the queue
        // itself (its SlotPolicy); a tenant's own cap is a key.
        let mut spec = run.queue;
        spec.concurrency.push(ConcurrencyKey {
            key: format!("{TENANT_KEY}{}", job.run.tenant),
            limit: self.tenants.limits(&job.run.tenant).max_tenant_executing,
        });
        Ok(Some(Admission {
            first_start: run.started_at.is_none() && job.branch.is_none(),
            spec,
        }))
    }
}

/// The prefix of the concurrency key of a tenant's executing jobs.
const TENANT_KEY: &str = "tenant-executing\0";
