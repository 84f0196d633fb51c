//! Driving one execution of a run (or of one parallel branch), and dry
//! replays: the executor's side of the scheduler's [`Dispatch`] trait. What
//! an execution changes goes to the run state machine as [`Transition`]s.

use super::outcome::Interrupt;
use super::sandbox::RunFlags;
use super::state::{Role, RunState, Session, error_record};
use super::step_calls::{AttemptOutcome, wit_event};
use super::{Executor, Replay, RunServices};
use crate::model::ErrorName;
use crate::model::{
    ErrorRecord, EventRecord, RunKey, RunKind, RunRecord, RunStatus, StepRecord, StepStatus,
};
use crate::runs::{TenantTerms, Transition};
use crate::scheduler::{BoxFuture, Dispatch, Job};
use crate::wit::types::{FailureContext, RunContext, StepError};
use crate::wit::{App, AppPre};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Store;

/// What a dry replay found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ReplayVerdict {
    /// Every call matched the journal.
    Matches,
    /// The code made a call the journal does not hold where it holds another.
    Diverged {
        /// The position of the first difference (0: the first step call).
        step_index: usize,
        /// What the journal holds there, e.g. `run "charge"`.
        expected: String,
        /// What the code called there.
        actual: String,
        /// Both sequences, for people.
        message: String,
    },
    /// The replay trapped or failed for another reason.
    Failed {
        /// Why, in words (a trap without its backtrace, or a fault).
        message: String,
    },
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
    /// Whether the code made the journal's calls, and where it differed.
    pub verdict: ReplayVerdict,
}

/// Which export an execution calls, with its argument.
enum Entry {
    Handle(RunContext),
    OnFailure(FailureContext),
}

type HandlerResult = wasmtime::Result<std::result::Result<String, StepError>>;

impl Entry {
    /// Calls the export, stopping it with [`Interrupt::StepTimeout`] if a step body
    /// runs longer than the session's step timeout (wall clock: epoch
    /// interruption bounds CPU, but not a body that waits in a host call).
    async fn call(
        &self,
        pre: &AppPre<RunState>,
        store: &mut Store<RunState>,
        function: &str,
    ) -> HandlerResult {
        let flags = store.data().flags.clone();
        let limit = store
            .data()
            .session
            .as_ref()
            .map(|s| s.limits.step_timeout_ms)
            .unwrap_or(u64::MAX);
        let call = async {
            let app: App = pre.instantiate_async(&mut *store).await?;
            match self {
                Entry::Handle(ctx) => app.call_handle(&mut *store, function, ctx).await,
                Entry::OnFailure(ctx) => app.call_on_failure(&mut *store, function, ctx).await,
            }
        };
        with_step_timeout(call, &flags, limit).await
    }
}

/// Runs `call` to its end, unless a step body it runs is still running
/// `limit_ms` after it began: then the call is dropped (the instance is not
/// used again) and the result is a [`Interrupt::StepTimeout`] trap, which fails the
/// open step's attempt like any trap in a body.
async fn with_step_timeout(
    call: impl Future<Output = HandlerResult>,
    flags: &RunFlags,
    limit_ms: u64,
) -> HandlerResult {
    let limit = Duration::from_millis(limit_ms);
    let mut call = std::pin::pin!(call);
    loop {
        let wait = match flags.step_elapsed() {
            Some(elapsed) if elapsed >= limit => {
                return Err(Interrupt::StepTimeout(limit_ms).trap());
            }
            Some(elapsed) => limit - elapsed,
            None => limit,
        };
        tokio::select! {
            biased;
            result = &mut call => return result,
            _ = tokio::time::sleep(wait) => {}
        }
    }
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

    /// Ends `run` as `status` through the run state machine
    /// ([`Transition::End`]); nothing follows.
    async fn finish(
        &self,
        run: RunRecord,
        status: RunStatus,
        output: Option<serde_json::Value>,
        error: Option<ErrorRecord>,
    ) -> Result<Followup> {
        let end = Transition::End {
            status,
            output,
            error,
        };
        self.services.runs.record(&run.key, end).await?;
        Ok(None)
    }

    /// An error raised by the handler outside any step: retried like a step
    /// (Inngest's function-level retries) while attempts are left.
    async fn handler_failed(&self, run: RunRecord, error: ErrorRecord) -> Result<Followup> {
        if error.retriable && run.attempt < run.retries {
            let attempt = run.attempt + 1;
            let wake_at = self.services.runs.now_ms()
                + self
                    .services
                    .backoff
                    .delay_ms(attempt, error.retry_after_ms);
            tracing::info!(run = %run.key, attempt, wake_at, "handler failed; retrying later");
            let retry = Transition::RetryLater {
                wake_at,
                attempt,
                error: Some(error),
            };
            self.services.runs.record(&run.key, retry).await?;
            return Ok(None);
        }
        self.finish(run, RunStatus::Failed, None, Some(error)).await
    }

    /// A sandbox loaded with `run`'s journal, ready to call its handler (or
    /// failure handler) as `role`.
    fn prepare(
        &self,
        run: RunRecord,
        steps: Vec<StepRecord>,
        events: Vec<EventRecord>,
        dry_run: bool,
        role: Role,
        terms: TenantTerms,
    ) -> Result<(Store<RunState>, Entry)> {
        let trigger = events.first().context("the run has no triggering event")?;
        let attempt = match role {
            Role::Branch(seq) => steps
                .iter()
                .find(|s| s.seq == seq)
                .map(|s| s.attempts)
                .unwrap_or(0),
            Role::Main => steps
                .iter()
                .rev()
                .find(|s| s.status == StepStatus::Retrying)
                .map(|s| s.attempts)
                .unwrap_or(run.attempt),
        };
        let entry = match run.kind {
            RunKind::Handler => Entry::Handle(RunContext {
                run_id: run.key.run.clone(),
                attempt,
                event: wit_event(trigger),
                events: events.iter().map(wit_event).collect(),
            }),
            RunKind::OnFailure => Entry::OnFailure(failure_context(&run, trigger, attempt)?),
        };
        let (run_id, run_attempt) = (run.key.run.clone(), run.attempt);
        let logical_start = run.started_at.unwrap_or(run.created_at);
        let TenantTerms {
            limits,
            http_allow: mut allow,
            ..
        } = terms;
        let default_tenant = run.key.tenant == crate::model::DEFAULT_TENANT;
        if default_tenant && !self.services.default_http_allow.is_empty() {
            let mut extended = allow.as_ref().clone();
            extended.extend(self.services.default_http_allow.iter().cloned());
            allow = Arc::new(extended);
        }
        let egress = super::Egress {
            allow,
            loopback: self.services.dev_loopback && default_tenant,
            own: self.services.own_address.clone(),
        };
        let journal_bytes = steps
            .iter()
            .filter_map(|s| s.output.as_ref())
            .map(|o| o.len() as u64)
            .sum();
        let state_limits = limits.clone();
        let session = Session {
            services: self.services.clone(),
            run,
            events,
            replay: Replay::new(steps),
            open: None,
            body: None,
            group: Vec::new(),
            role,
            limits,
            journal_bytes,
            dry_run,
        };
        let state = RunState::new(&run_id, logical_start, &state_limits, egress, Some(session));
        state
            .output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_run_attempt(run_attempt);
        Ok((self.executor.store(state), entry))
    }

    async fn execute(&self, key: &RunKey) -> Result<Followup> {
        let journal = self.services.journal.clone();
        let Some(run) = self.services.runs.run(key).await? else {
            return Ok(None);
        };
        if !matches!(run.status(), RunStatus::Queued | RunStatus::Running)
            || run
                .wake_at()
                .is_some_and(|at| at > self.services.runs.now_ms())
        {
            return Ok(None);
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
                        Some(ErrorRecord::fatal(ErrorName::VersionError, message)),
                    )
                    .await;
            }
        };
        let _permit = self.executor.permits.clone().acquire_owned().await?;
        // Registered for as long as this function runs: the run state
        // machine then knows, without a read per step, whether it ends.
        let Some((run, _execution)) = self.services.runs.start(key).await? else {
            return Ok(None);
        };
        let steps = journal.steps(key)?;
        let events = journal.run_events(key)?;
        if events.is_empty() {
            let error = ErrorRecord::fatal(ErrorName::RunError, "the run has no triggering event");
            return self.finish(run, RunStatus::Failed, None, Some(error)).await;
        }
        let function = run.function.clone();
        let terms = self.services.runs.terms(&key.tenant).await?;
        let (mut store, entry) = self.prepare(run, steps, events, false, Role::Main, terms)?;
        let result = entry.call(&version.pre, &mut store, &function).await;
        if let Err(error) = store.data_mut().flush_output() {
            tracing::warn!(run = %key, %error, "could not log the run's output");
        }
        self.conclude(key, &mut store, result).await
    }

    /// Runs branch `seq` of `key`'s parallel group in an instance of its own.
    async fn execute_branch(&self, key: &RunKey, seq: u32) -> Result<Followup> {
        let journal = self.services.journal.clone();
        let Some(run) = self.services.runs.run(key).await? else {
            return Ok(None);
        };
        if run.status().is_terminal() {
            return Ok(None);
        }
        let version = self.executor.version(&run.version).await?;
        let _permit = self.executor.permits.clone().acquire_owned().await?;
        let Some(_execution) = self.services.runs.enter(key, seq).await? else {
            return Ok(None);
        };
        let steps = journal.steps(key)?;
        if steps
            .iter()
            .any(|s| s.seq == seq && matches!(s.status, StepStatus::Completed | StepStatus::Failed))
        {
            return Ok(None);
        }
        let events = journal.run_events(key)?;
        let function = run.function.clone();
        let terms = self.services.runs.terms(&key.tenant).await?;
        let (mut store, entry) =
            self.prepare(run, steps, events, false, Role::Branch(seq), terms)?;
        let result = entry.call(&version.pre, &mut store, &function).await;
        if let Err(error) = store.data_mut().flush_output() {
            tracing::warn!(run = %key, %error, "could not log a branch's output");
        }
        self.conclude(key, &mut store, result).await
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
        let terms = self.services.runs.terms(&key.tenant).await?;
        let (mut store, entry) = self.prepare(run, steps, events, true, Role::Main, terms)?;
        let _permit = self.executor.permits.clone().acquire_owned().await?;
        let started = std::time::Instant::now();
        let result = entry.call(&version.pre, &mut store, &function).await;
        let elapsed = started.elapsed();
        let replayed = store
            .data()
            .session
            .as_ref()
            .map(|s| s.replay.calls_made() as usize)
            .unwrap_or(0);
        let verdict = match result {
            Ok(_) => ReplayVerdict::Matches,
            Err(trap) => match Interrupt::of(&trap) {
                Some(Interrupt::ReplayEnd) => ReplayVerdict::Matches,
                Some(Interrupt::Diverged(error)) => ReplayVerdict::Diverged {
                    step_index: error.position,
                    expected: error.expected().to_string(),
                    actual: error.actual().to_string(),
                    message: error.to_string(),
                },
                Some(fault @ Interrupt::Fault(_)) => ReplayVerdict::Failed {
                    message: fault.to_string(),
                },
                _ => ReplayVerdict::Failed {
                    message: trap_reason(&trap),
                },
            },
        };
        Ok(ReplayReport {
            journaled,
            replayed,
            elapsed,
            verdict,
        })
    }

    /// What an execution's result means for its run: an end, a failed
    /// attempt, a retry of the handler, or nothing (it suspended itself).
    async fn conclude(
        &self,
        key: &RunKey,
        store: &mut Store<RunState>,
        result: HandlerResult,
    ) -> Result<Followup> {
        let session = store
            .data()
            .session
            .as_ref()
            .context("a run's store lost its session")?;
        let (run, role) = (session.run.clone(), session.role);
        let trap = match result {
            Ok(Ok(json)) if role == Role::Main => {
                let output = serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json));
                return self
                    .finish(run, RunStatus::Completed, Some(output), None)
                    .await;
            }
            Ok(Err(error)) if role == Role::Main => {
                return self.handler_failed(run, error_record(&error)).await;
            }
            Ok(_) => {
                let error = ErrorRecord::fatal(
                    ErrorName::DeterminismError,
                    "replaying the run for a parallel branch, the handler returned before reaching the branch's group",
                );
                return self.finish(run, RunStatus::Failed, None, Some(error)).await;
            }
            Err(trap) => trap,
        };
        let interrupt = Interrupt::of(&trap);
        match interrupt {
            Some(planned) if planned.is_planned() => return Ok(None),
            Some(Interrupt::Fault(error)) => {
                let error = error.clone();
                return self.finish(run, RunStatus::Failed, None, Some(error)).await;
            }
            Some(Interrupt::Diverged(error)) => {
                let error = ErrorRecord::fatal(ErrorName::DeterminismError, error.to_string());
                return self.finish(run, RunStatus::Failed, None, Some(error)).await;
            }
            Some(Interrupt::HostFault(message)) => {
                tracing::error!(run = %key, error = %message, "the host failed during a run; resuming it in 1 s");
                return Ok((role == Role::Main).then_some(RESUME_AFTER_FAULT));
            }
            _ => {}
        }
        let open = store.data_mut().session.as_mut().and_then(|s| {
            s.open
                .take()
                .or_else(|| (!s.group.is_empty()).then(|| s.group.remove(0)))
        });
        // An endless loop is stopped by the CPU limit: say so plainly. The
        // guest's backtrace goes to the host log, not into the error.
        tracing::warn!(run = %key, trap = format!("{trap:#}"), "the guest trapped");
        let (name, what) = match interrupt.and_then(|i| Some((i.limit_error_name()?, i))) {
            Some((name, limit)) => (name, limit.to_string()),
            None => (ErrorName::GuestTrap, trap_reason(&trap)),
        };
        let Some(open) = open else {
            let error = ErrorRecord {
                name: name.as_str().into(),
                message: format!("the function trapped outside any step: {what}"),
                retriable: role == Role::Main,
                retry_after_ms: None,
            };
            if role != Role::Main {
                // The run got past this point itself: only a code that is
                // not deterministic traps here in a branch.
                return self.finish(run, RunStatus::Failed, None, Some(error)).await;
            }
            return self.handler_failed(run, error).await;
        };
        let error = ErrorRecord {
            name: name.as_str().into(),
            message: match name {
                ErrorName::StepTimeoutError => format!("step {:?} timed out: {what}", open.id),
                _ => format!("step {:?} trapped: {what}", open.id),
            },
            retriable: true,
            retry_after_ms: None,
        };
        match store.data_mut().fail_attempt(open, error).await {
            // The failure is final but the guest never saw it: replay so
            // that it gets the error from the journal (a branch's run is
            // woken when its last branch ends).
            Ok(AttemptOutcome::Final) if role == Role::Main => {
                self.services.runs.record(key, Transition::Replay).await?;
            }
            Ok(_) => {}
            Err(e) if matches!(Interrupt::of(&e), Some(Interrupt::Ended)) => {}
            Err(e) => {
                tracing::error!(run = %key, error = %e, "could not record a trapped step; resuming in 1 s");
                return Ok(Some(RESUME_AFTER_FAULT));
            }
        }
        Ok(None)
    }
}

/// What an execution asks of the scheduler once it is over: to wake its
/// run again after a delay (the host failed during it), or nothing.
type Followup = Option<Duration>;

/// How long after the host failed during a run it is resumed.
const RESUME_AFTER_FAULT: Duration = Duration::from_secs(1);

/// Why a guest trapped, in words, without its backtrace.
fn trap_reason(trap: &wasmtime::Error) -> String {
    use wasmtime::Trap;
    match trap.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => {
            "wasm trap: the call stack overflowed (recursion too deep)".into()
        }
        Some(Trap::MemoryOutOfBounds) => "wasm trap: out of bounds memory access (a stack overflow looks like this in Rust and C guests, whose stack is in linear memory)".into(),
        Some(Trap::UnreachableCodeReached) => {
            "wasm trap: unreachable code reached (a Rust panic or an abort)".into()
        }
        Some(other) => format!("wasm trap: {other}"),
        None => trap.root_cause().to_string(),
    }
}

/// The failure context of an on-failure run, from its
/// `inngest/function.failed` event.
fn failure_context(run: &RunRecord, event: &EventRecord, attempt: u32) -> Result<FailureContext> {
    let error = &event.data["error"];
    let original: EventRecord = serde_json::from_value(event.data["event"].clone())
        .context("the function.failed event does not hold the original event")?;
    Ok(FailureContext {
        run_id: run.key.run.clone(),
        attempt,
        event: wit_event(event),
        error: StepError {
            name: error["name"]
                .as_str()
                .unwrap_or(ErrorName::Error.as_str())
                .to_string(),
            message: error["message"].as_str().unwrap_or_default().to_string(),
            retriable: false,
            retry_after_ms: None,
        },
        original_event: wit_event(&original),
    })
}

impl Dispatch for RunDriver {
    fn drive(self: Arc<Self>, job: Job) -> BoxFuture {
        Box::pin(async move {
            let outcome = match job.branch {
                None => self.execute(&job.run).await,
                Some(seq) => self.execute_branch(&job.run, seq).await,
            };
            outcome.unwrap_or_else(|error| {
                tracing::error!(run = %job.run, error = format!("{error:#}"), "executing a run failed; resuming it in 1 s");
                Some(RESUME_AFTER_FAULT)
            })
        })
    }

    fn has_room(&self, tenant: &str) -> bool {
        self.executor.memory_budget().has_room_for(tenant)
    }

    fn reserve(&self, job: &Job) -> Box<dyn Send> {
        let version = match self.services.journal.run(&job.run) {
            Ok(Some(run)) => run.version,
            _ => return Box::new(()),
        };
        let unknown = self
            .services
            .tenants
            .limits(&job.run.tenant)
            .max_memory_bytes as u64;
        Box::new(self.executor.memory_budget().reserve(
            (job.run.clone(), job.branch),
            &version,
            unknown,
        ))
    }
}
