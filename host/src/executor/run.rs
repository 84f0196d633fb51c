//! Driving one execution of a run, and applying timers: the executor's side
//! of the scheduler's [`Dispatch`] trait.

use super::bindings::stepwise::durable::types::RunContext;
use super::host::{AttemptOutcome, wit_event};
use super::outcome::{Ended, HostFault, ReplayEnd, RunFault, Suspended};
use super::state::{RunState, Session, error_record};
use super::{Executor, Replay, RunServices};
use crate::journal::{Batch, Op};
use crate::model::{
    ErrorRecord, RunKey, RunRecord, RunStatus, StepStatus, Timer, TimerKind, now_ms,
};
use crate::scheduler::{BoxFuture, Dispatch};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Store;

/// What a dry replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Every call matched the journal.
    Matches,
    /// The code made a call the journal does not hold where it holds another.
    Diverged(String),
    /// The replay trapped or failed for another reason.
    Failed(String),
}

/// The result of [`RunDriver::replay`].
#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// Entries in the run's journal.
    pub journaled: usize,
    /// Calls the code made before the replay ended.
    pub replayed: usize,
    /// Time spent instantiating and replaying.
    pub elapsed: std::time::Duration,
    /// What it found.
    pub verdict: ReplayVerdict,
}

/// Executes runs for the scheduler.
pub struct RunDriver {
    executor: Arc<Executor>,
    services: Arc<RunServices>,
}

impl RunDriver {
    /// A driver executing with `executor`.
    pub fn new(executor: Arc<Executor>, services: Arc<RunServices>) -> Self {
        RunDriver { executor, services }
    }

    fn wake_later(&self, key: RunKey, delay: Duration) {
        let scheduler = self.services.scheduler.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            scheduler.wake(key);
        });
    }

    /// Writes `run` (and `ops`) unless the run has ended meanwhile.
    fn transition(&self, run: &RunRecord, mut ops: Batch) -> Result<bool> {
        let journal = &self.services.journal;
        self.services.events.ordered(|| {
            if journal
                .run(&run.key)?
                .is_none_or(|r| r.status.is_terminal())
            {
                return Ok(false);
            }
            ops.push(Op::PutRun(run.clone()));
            journal.apply(ops)?;
            Ok(true)
        })
    }

    async fn finish(
        &self,
        mut run: RunRecord,
        status: RunStatus,
        output: Option<serde_json::Value>,
        error: Option<ErrorRecord>,
    ) -> Result<()> {
        run.status = status;
        run.output = output;
        run.error = error;
        run.wake_at = None;
        run.ended_at = Some(now_ms());
        tracing::info!(run = %run.key, function = %run.function, status = status.as_str(), "run ended");
        if self.transition(&run, Vec::new())? {
            let _ = self.services.ended.send(run.key.clone());
            // Nothing waits for this flush: every step is on disk already, so
            // if the host dies before the end is, the run replays from its
            // journal and ends again, the same way.
            let commit = self.services.commit.clone();
            tokio::spawn(async move {
                if let Err(error) = commit.durable().await {
                    tracing::error!(run = %run.key, error = format!("{error:#}"), "could not flush a run's end");
                }
            });
        }
        Ok(())
    }

    /// An error raised by the handler outside any step: retried like a step
    /// (Inngest's function-level retries) while attempts are left.
    async fn handler_failed(&self, mut run: RunRecord, error: ErrorRecord) -> Result<()> {
        if error.retriable && run.attempt < run.retries {
            run.attempt += 1;
            let wake_at = now_ms()
                + self
                    .services
                    .backoff
                    .delay_ms(run.attempt, error.retry_after_ms);
            run.status = RunStatus::Running;
            run.wake_at = Some(wake_at);
            run.error = Some(error);
            let timer = Timer {
                at: wake_at,
                key: run.key.clone(),
                seq: crate::model::RUN_LEVEL_SEQ,
                kind: TimerKind::RunRetry,
            };
            tracing::info!(run = %run.key, attempt = run.attempt, wake_at, "handler failed; retrying later");
            if self.transition(&run, vec![Op::PutTimer(timer.clone())])? {
                self.services.commit.durable().await?;
                self.services.scheduler.add_timer(timer);
            }
            return Ok(());
        }
        self.finish(run, RunStatus::Failed, None, Some(error)).await
    }

    /// A sandbox loaded with `run`'s journal, ready to call its handler.
    fn prepare(
        &self,
        run: RunRecord,
        steps: Vec<crate::model::StepRecord>,
        events: Vec<crate::model::EventRecord>,
        dry_run: bool,
    ) -> Result<(Store<RunState>, RunContext)> {
        let trigger = events.first().context("the run has no triggering event")?;
        let attempt = steps
            .iter()
            .rev()
            .find(|s| s.status == StepStatus::Retrying)
            .map(|s| s.attempts)
            .unwrap_or(run.attempt);
        let ctx = RunContext {
            run_id: run.key.run.clone(),
            attempt,
            event: wit_event(trigger),
            events: events.iter().map(wit_event).collect(),
        };
        let (run_id, run_attempt) = (run.key.run.clone(), run.attempt);
        let logical_start = run.started_at.unwrap_or(run.created_at);
        let session = Session {
            services: self.services.clone(),
            run,
            events,
            replay: Replay::new(steps),
            open: None,
            dry_run,
        };
        let state = RunState::new(
            &run_id,
            logical_start,
            self.executor.limits.max_memory_bytes,
            Some(session),
        );
        state
            .output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_run_attempt(run_attempt);
        Ok((self.executor.store(state), ctx))
    }

    async fn execute(&self, key: &RunKey) -> Result<()> {
        let journal = self.services.journal.clone();
        let Some(mut run) = journal.run(key)? else {
            return Ok(());
        };
        if !matches!(run.status, RunStatus::Queued | RunStatus::Running)
            || run.wake_at.is_some_and(|at| at > now_ms())
        {
            return Ok(());
        }
        let version = match self.executor.version(&run.version).await {
            Ok(version) => version,
            Err(error) => {
                let message = format!(
                    "the app version {} cannot be loaded: {error:#}",
                    run.version
                );
                return self
                    .finish(
                        run,
                        RunStatus::Failed,
                        None,
                        Some(ErrorRecord::fatal("VersionError", message)),
                    )
                    .await;
            }
        };
        let _permit = self.executor.permits.clone().acquire_owned().await?;
        run.status = RunStatus::Running;
        run.wake_at = None;
        run.started_at.get_or_insert(now_ms());
        if !self.transition(&run, Vec::new())? {
            return Ok(());
        }
        let steps = journal.steps(key)?;
        let events = journal.run_events(key)?;
        if events.is_empty() {
            let error = ErrorRecord::fatal("RunError", "the run has no triggering event");
            return self.finish(run, RunStatus::Failed, None, Some(error)).await;
        }
        let function = run.function.clone();
        let (mut store, ctx) = self.prepare(run, steps, events, false)?;
        let result = async {
            let app = version.pre.instantiate_async(&mut store).await?;
            app.call_handle(&mut store, &function, &ctx).await
        }
        .await;
        if let Err(error) = store.data_mut().flush_output() {
            tracing::warn!(run = %key, %error, "could not log the run's output");
        }
        self.settle(key, &mut store, result).await
    }

    /// Replays run `key` against its journal without executing anything new
    /// or writing anything, on `version` (default: the run's own). Tells
    /// whether the code makes the calls the journal records.
    pub async fn replay(&self, key: &RunKey, version: Option<&str>) -> Result<ReplayReport> {
        let journal = &self.services.journal;
        let run = journal
            .run(key)?
            .with_context(|| format!("run {key} not found"))?;
        let version = self
            .executor
            .version(version.unwrap_or(&run.version))
            .await?;
        let steps = journal.steps(key)?;
        let journaled = steps.len();
        let events = journal.run_events(key)?;
        let function = run.function.clone();
        let (mut store, ctx) = self.prepare(run, steps, events, true)?;
        let _permit = self.executor.permits.clone().acquire_owned().await?;
        let started = std::time::Instant::now();
        let result = async {
            let app = version.pre.instantiate_async(&mut store).await?;
            app.call_handle(&mut store, &function, &ctx).await
        }
        .await;
        let elapsed = started.elapsed();
        let replayed = store
            .data()
            .session
            .as_ref()
            .map(|s| s.replay.calls_made() as usize)
            .unwrap_or(0);
        let verdict = match result {
            Ok(_) => ReplayVerdict::Matches,
            Err(trap) if trap.downcast_ref::<ReplayEnd>().is_some() => ReplayVerdict::Matches,
            Err(trap) => match trap.downcast_ref::<RunFault>() {
                Some(RunFault(error)) if error.name == "DeterminismError" => {
                    ReplayVerdict::Diverged(error.message.clone())
                }
                _ => ReplayVerdict::Failed(format!("{trap:#}")),
            },
        };
        Ok(ReplayReport {
            journaled,
            replayed,
            elapsed,
            verdict,
        })
    }

    async fn settle(
        &self,
        key: &RunKey,
        store: &mut Store<RunState>,
        result: wasmtime::Result<
            std::result::Result<String, super::bindings::stepwise::durable::types::StepError>,
        >,
    ) -> Result<()> {
        let run = store
            .data()
            .session
            .as_ref()
            .map(|s| s.run.clone())
            .context("a run's store lost its session")?;
        match result {
            Ok(Ok(json)) => {
                let output = serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json));
                self.finish(run, RunStatus::Completed, Some(output), None)
                    .await
            }
            Ok(Err(error)) => self.handler_failed(run, error_record(&error)).await,
            Err(trap) => {
                if trap.downcast_ref::<Suspended>().is_some()
                    || trap.downcast_ref::<Ended>().is_some()
                {
                    return Ok(());
                }
                if let Some(RunFault(error)) = trap.downcast_ref::<RunFault>() {
                    return self
                        .finish(run, RunStatus::Failed, None, Some(error.clone()))
                        .await;
                }
                if let Some(HostFault(message)) = trap.downcast_ref::<HostFault>() {
                    tracing::error!(run = %key, error = %message, "the host failed during a run; resuming it in 1 s");
                    self.wake_later(key.clone(), Duration::from_secs(1));
                    return Ok(());
                }
                let open = store
                    .data_mut()
                    .session
                    .as_mut()
                    .and_then(|s| s.open.take());
                let Some(open) = open else {
                    let error = ErrorRecord {
                        name: "GuestTrap".into(),
                        message: format!("the function trapped outside any step: {trap:#}"),
                        retriable: true,
                        retry_after_ms: None,
                    };
                    return self.handler_failed(run, error).await;
                };
                let error = ErrorRecord {
                    name: "GuestTrap".into(),
                    message: format!("step {:?} trapped: {trap:#}", open.id),
                    retriable: true,
                    retry_after_ms: None,
                };
                match store.data_mut().fail_attempt(open, error).await {
                    // The failure is final but the guest never saw it: replay
                    // so that it gets the error from the journal.
                    Ok(AttemptOutcome::Final) => self.services.scheduler.wake(key.clone()),
                    Ok(AttemptOutcome::Retry) => {}
                    Err(e) if e.downcast_ref::<Ended>().is_some() => {}
                    Err(e) => {
                        tracing::error!(run = %key, error = %e, "could not record a trapped step; resuming in 1 s");
                        self.wake_later(key.clone(), Duration::from_secs(1));
                    }
                }
                Ok(())
            }
        }
    }

    fn fire_sleep(&self, timer: &Timer) -> Result<bool> {
        let journal = &self.services.journal;
        self.services.events.ordered(|| {
            let mut batch = vec![Op::DeleteTimer(timer.clone())];
            if let Some(mut step) = journal.step(&timer.key, timer.seq)?
                && step.status == StepStatus::Sleeping
            {
                step.status = StepStatus::Completed;
                step.output = Some("null".into());
                step.ended_at = Some(now_ms());
                batch.push(Op::PutStep(timer.key.clone(), step));
            }
            let wake = queue(
                journal.run(&timer.key)?,
                RunStatus::Sleeping,
                None,
                &mut batch,
            );
            journal.apply(batch)?;
            Ok(wake)
        })
    }

    fn fire_retry(&self, timer: &Timer) -> Result<bool> {
        let journal = &self.services.journal;
        self.services.events.ordered(|| {
            let mut batch = vec![Op::DeleteTimer(timer.clone())];
            let wake = queue(
                journal.run(&timer.key)?,
                RunStatus::Running,
                Some(timer.at),
                &mut batch,
            );
            journal.apply(batch)?;
            Ok(wake)
        })
    }
}

/// Queues `run` if it is still in `from` (and, for retries, still waiting
/// for this very timer).
fn queue(
    run: Option<RunRecord>,
    from: RunStatus,
    timer_at: Option<u64>,
    batch: &mut Batch,
) -> bool {
    let Some(mut run) = run else {
        return false;
    };
    if run.status != from || (timer_at.is_some() && run.wake_at != timer_at) {
        return !run.status.is_terminal() && run.status == RunStatus::Queued;
    }
    run.status = RunStatus::Queued;
    run.wake_at = None;
    batch.push(Op::PutRun(run));
    true
}

impl Dispatch for RunDriver {
    fn drive(self: Arc<Self>, run: RunKey) -> BoxFuture {
        Box::pin(async move {
            if let Err(error) = self.execute(&run).await {
                tracing::error!(%run, error = format!("{error:#}"), "executing a run failed; resuming it in 1 s");
                self.wake_later(run, Duration::from_secs(1));
            }
        })
    }

    fn fire(&self, timer: &Timer) -> Result<bool> {
        match timer.kind {
            TimerKind::Sleep => self.fire_sleep(timer),
            TimerKind::WaitTimeout => self.services.events.wait_timed_out(timer),
            TimerKind::StepRetry | TimerKind::RunRetry => self.fire_retry(timer),
        }
    }
}
