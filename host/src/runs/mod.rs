//! Event ingestion and run transitions: accept events, start the runs they
//! trigger under flow control, resume the runs waiting for them, cancel the
//! runs they cancel; and end runs, with what ending one changes.
//!
//! Every transition goes through one lock ([`Runs::change`]), so they
//! happen in one order: an event accepted after a waiter was registered
//! always finds it, and one accepted before never does (Inngest's semantics,
//! without its race between events sent in quick succession and a waiter
//! being set up). A change is a [`Tx`]: its writes are applied atomically,
//! and its [`Effects`] reach the scheduler once they are durable.

mod admit;
mod crons;
mod ending;
mod timers;
mod tx;

#[cfg(test)]
mod transitions_test;

pub use admit::delayed_start;
pub use ending::FUNCTION_FAILED;
pub use tx::{Effects, Tx};

use crate::catalog::Catalog;
use crate::cron::CronTable;
use crate::journal::{GroupCommit, Journal, Op};
use crate::model::ErrorName;
use crate::model::IncomingEvent;
use crate::model::{
    Clock, ErrorRecord, EventRecord, FunctionRecord, ParentStep, RunKey, RunRecord, StepRecord,
    StepStatus, Timer, TimerKind, Waiter,
};
use crate::scheduler::Scheduler;
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

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
    /// The host failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Routes events to functions and waiters, and orders run transitions.
pub struct Runs {
    journal: Arc<dyn Journal>,
    commit: GroupCommit,
    catalog: Arc<Catalog>,
    scheduler: Scheduler,
    crons: CronTable,
    /// Every transition's `now`.
    clock: Arc<dyn Clock>,
    order: Mutex<()>,
}

impl Runs {
    /// Routing over `catalog`, writing to `journal`, waking through
    /// `scheduler`, at the times `clock` reads.
    pub fn new(
        journal: Arc<dyn Journal>,
        commit: GroupCommit,
        catalog: Arc<Catalog>,
        scheduler: Scheduler,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Runs {
            journal,
            commit,
            catalog,
            scheduler,
            clock,
            crons: CronTable::default(),
            order: Mutex::new(()),
        }
    }

    /// Runs `f` in the one order of transitions, as one change: its writes
    /// are applied atomically (not yet durable). Keep `f` short and free of
    /// awaits.
    pub fn change<R>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<R>) -> Result<(R, Effects)> {
        let _guard = self
            .order
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut tx = Tx::new(self.journal.as_ref(), &self.catalog, self.clock.now_ms());
        let result = f(&mut tx)?;
        Ok((result, tx.apply()?))
    }

    /// Waits until every change so far is durable, then hands `effects` to
    /// the scheduler.
    pub async fn apply_once_durable(&self, effects: Effects) -> Result<()> {
        self.commit.durable().await?;
        effects.apply(&self.scheduler);
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
        let record = EventRecord {
            id: id.clone(),
            name: event.name,
            data: event.data,
            user: event.user,
            ts: event.ts.unwrap_or(tx.now),
            v: event.v,
            received_at: tx.now,
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

    /// Registers a waiter, with its step, timeout timer and run status, in
    /// the ingestion order: only events accepted after this can match it.
    /// Returns false (and writes nothing) if the run has ended meanwhile.
    pub fn register_wait(&self, run: RunRecord, waiter: Waiter, step: StepRecord) -> Result<bool> {
        let (registered, _) = self.change(|tx| {
            if !self.active(&run.key)? {
                return Ok(false);
            }
            let timer = Timer {
                at: waiter.timeout_at,
                key: run.key.clone(),
                seq: waiter.seq,
                kind: TimerKind::WaitTimeout,
            };
            tx.ops.push(Op::PutStep(run.key.clone(), step));
            tx.ops.push(Op::PutWaiter(waiter));
            tx.ops.push(Op::PutTimer(timer));
            tx.put_run(run);
            Ok(true)
        })?;
        Ok(registered)
    }

    /// Whether `key` exists and has not ended.
    fn active(&self, key: &RunKey) -> Result<bool> {
        Ok(self
            .journal
            .run(key)?
            .is_some_and(|r| !r.status.is_terminal()))
    }

    /// Applies `ops` and writes `run` unless it has ended meanwhile; returns
    /// whether it had not.
    pub fn transition(&self, run: &RunRecord, ops: Vec<Op>) -> Result<bool> {
        let (applied, _) = self.change(|tx| {
            if !self.active(&run.key)? {
                return Ok(false);
            }
            tx.ops.extend(ops);
            tx.put_run(run.clone());
            Ok(true)
        })?;
        Ok(applied)
    }

    /// Applies `ops` (a run's journal entries) unless the run has ended.
    pub fn run_ops(&self, key: &RunKey, ops: Vec<Op>) -> Result<bool> {
        let (applied, _) = self.change(|tx| {
            if !self.active(key)? {
                return Ok(false);
            }
            tx.ops.extend(ops);
            Ok(true)
        })?;
        Ok(applied)
    }

    /// Ends `run` (completed or failed, already set on it) unless it ended
    /// meanwhile: its record, and what ending changes (index entries, the
    /// invoker's step, an on-failure run). The scheduler is told at once:
    /// whatever the woken runs write is flushed after this.
    pub fn end_run(&self, run: &RunRecord) -> Result<bool> {
        let (ended, effects) = self.change(|tx| {
            if !self.active(&run.key)? {
                return Ok(false);
            }
            ending::end(tx, run)?;
            tx.put_run(run.clone());
            Ok(true)
        })?;
        effects.apply(&self.scheduler);
        Ok(ended)
    }

    /// Cancels a run that has not ended: it stops where it is, its timers
    /// and waiters are removed, and it never resumes.
    pub async fn cancel(&self, key: &RunKey, error: ErrorRecord) -> Result<RunRecord, CancelError> {
        let (run, effects) = self.change(|tx| {
            let Some(run) = self.journal.run(key)? else {
                return Ok(Err(CancelError::NotFound(key.run.clone())));
            };
            if run.status.is_terminal() {
                return Ok(Err(CancelError::AlreadyEnded(
                    key.run.clone(),
                    run.status.as_str(),
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
                if run.status.is_terminal() {
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

    /// Starts a run of `function` for `data`, invoked by step `seq` of
    /// `parent`, and records that step as waiting for it (until
    /// `timeout_at`). Returns false if the parent ended meanwhile.
    pub fn invoke(
        &self,
        parent: &RunRecord,
        function: &FunctionRecord,
        data: Value,
        mut step: StepRecord,
    ) -> Result<Option<Effects>> {
        let (started, effects) = self.change(|tx| {
            if !self.active(&parent.key)? {
                return Ok(false);
            }
            let event = EventRecord {
                id: crate::model::new_id(),
                name: "inngest/function.invoked".into(),
                data,
                user: None,
                ts: tx.now,
                v: None,
                received_at: tx.now,
            };
            let key = RunKey::new(&parent.key.tenant, crate::model::new_id());
            let mut child = admit::new_run(function, key, std::slice::from_ref(&event), tx.now);
            child.parent = Some(ParentStep {
                run: parent.key.run.clone(),
                seq: step.seq,
            });
            step.child = Some(child.key.run.clone());
            if let Some(at) = step.wake_at {
                tx.put_timer(Timer {
                    at,
                    key: parent.key.clone(),
                    seq: step.seq,
                    kind: TimerKind::InvokeTimeout,
                });
            }
            tx.ops.push(Op::PutStep(parent.key.clone(), step));
            tx.put_run(parent.clone());
            admit::launch(tx, function, child, vec![event])?;
            Ok(true)
        })?;
        Ok(started.then_some(effects))
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
