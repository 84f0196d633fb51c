//! The `step` interface as the host implements it: every answer comes from,
//! or goes to, the journal before the guest sees it.

use super::bindings::stepwise::durable::step::{self, Memo};
use super::bindings::stepwise::durable::types::{Event, StepError, WaitOptions};
use super::outcome::{Ended, Suspended, fault, host_fault, replay_end};
use super::replay::Slot;
use super::state::{OpenStep, RunState, Session, error_record, wit_error};
use crate::events::{check_name, lookup};
use crate::journal::{Batch, Op};
use crate::model::{
    ErrorRecord, EventRecord, RunStatus, StepKind, StepRecord, StepStatus, Timer, TimerKind,
    WaitSpec, Waiter, now_ms,
};
use wasmtime::Result;

/// Largest step output, as in Inngest.
pub const MAX_STEP_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Longest sleep or wait, as in Inngest.
pub const MAX_SUSPEND_MS: u64 = 365 * 24 * 60 * 60 * 1000;

/// What a failed attempt leads to.
pub enum AttemptOutcome {
    /// Another attempt is timed; the run is suspended until then.
    Retry,
    /// The step failed for good; the error is journaled.
    Final,
}

impl RunState {
    fn session(&mut self) -> Result<&mut Session> {
        self.session.as_mut().ok_or_else(|| {
            fault(
                "RegistrationError",
                "step calls are not allowed while the host reads the app's functions(); make them inside handle()",
            )
        })
    }

    /// Journal work common to every durable call: log the output written
    /// since the previous call, then place this call in the sequence.
    fn enter_call(&mut self, id: &str, kind: StepKind) -> Result<Slot> {
        self.flush_output()?;
        let session = self.session()?;
        if let Some(open) = &session.open {
            return Err(fault(
                "StepError",
                format!(
                    "{} {id:?} was called inside the body of step {:?}; steps cannot be nested: call it after the step returns",
                    kind.as_str(),
                    open.raw_id
                ),
            ));
        }
        let max_steps = session.services.limits.max_steps_per_run;
        let slot = session
            .replay
            .next(id, kind)
            .map_err(|e| fault("DeterminismError", e.to_string()))?;
        if session.dry_run && matches!(slot, Slot::New { .. }) {
            return Err(replay_end());
        }
        if let Slot::New { seq, .. } = &slot
            && *seq >= max_steps
        {
            return Err(fault(
                "StepLimitError",
                format!(
                    "the run made more than {max_steps} step calls, the most a run may make; split the work across runs (e.g. fan out with events)"
                ),
            ));
        }
        let (calls, replaying) = (session.replay.calls_made(), session.replay.replaying());
        let attempt = match &slot {
            Slot::Journaled(step) => step.attempts,
            Slot::New { .. } => 0,
        };
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_segment(calls, attempt, replaying);
        Ok(slot)
    }

    /// Journals the output captured so far (no flush of its own: it rides
    /// with the next group commit).
    pub fn flush_output(&mut self) -> Result<()> {
        let chunks = self.output.lock().unwrap_or_else(|p| p.into_inner()).take();
        if chunks.is_empty() {
            return Ok(());
        }
        let Some(session) = self.session.as_ref().filter(|s| !s.dry_run) else {
            return Ok(());
        };
        let key = session.run.key.clone();
        let batch: Batch = chunks
            .into_iter()
            .map(|c| Op::PutLog(key.clone(), c))
            .collect();
        session.services.journal.apply(batch).map_err(host_fault)
    }

    /// Writes `ops` and the session's run record with `status`, unless the
    /// run ended meanwhile (then the execution stops with [`Ended`]).
    fn write_run(&mut self, status: RunStatus, wake_at: Option<u64>, mut ops: Batch) -> Result<()> {
        let session = self.session()?;
        session.run.status = status;
        session.run.wake_at = wake_at;
        ops.push(Op::PutRun(session.run.clone()));
        let services = session.services.clone();
        let key = session.run.key.clone();
        let applied = services.events.ordered(|| {
            if services
                .journal
                .run(&key)?
                .is_none_or(|r| r.status.is_terminal())
            {
                return Ok(false);
            }
            services.journal.apply(ops)?;
            Ok(true)
        });
        match applied {
            Ok(true) => Ok(()),
            Ok(false) => Err(wasmtime::Error::new(Ended)),
            Err(e) => Err(host_fault(e)),
        }
    }

    async fn durable(&mut self) -> Result<()> {
        let services = self.session()?.services.clone();
        services.commit.durable().await.map_err(host_fault)
    }

    /// Records a failed attempt of the open step: times the next attempt
    /// (suspending the run), or journals the failure as final.
    pub async fn fail_attempt(
        &mut self,
        open: OpenStep,
        error: ErrorRecord,
    ) -> Result<AttemptOutcome> {
        self.flags.set_in_step(false);
        let now = now_ms();
        let session = self.session()?;
        let failed = open.attempts + 1;
        let mut step = StepRecord {
            seq: open.seq,
            id: open.id.clone(),
            kind: StepKind::Run,
            status: StepStatus::Failed,
            attempts: failed,
            output: None,
            error: Some(error.clone()),
            started_at: open.started_at,
            ended_at: Some(now),
            wake_at: None,
            wait: None,
        };
        let key = session.run.key.clone();
        if error.retriable && failed <= session.run.retries {
            let wake_at = now
                + session
                    .services
                    .backoff
                    .delay_ms(failed, error.retry_after_ms);
            step.status = StepStatus::Retrying;
            step.wake_at = Some(wake_at);
            let timer = Timer {
                at: wake_at,
                key: key.clone(),
                seq: open.seq,
                kind: TimerKind::StepRetry,
            };
            let services = session.services.clone();
            tracing::info!(run = %key, step = %open.id, attempt = failed, wake_at, "step failed; retrying later");
            self.write_run(
                RunStatus::Running,
                Some(wake_at),
                vec![Op::PutStep(key, step), Op::PutTimer(timer.clone())],
            )?;
            self.durable().await?;
            services.scheduler.add_timer(timer);
            return Ok(AttemptOutcome::Retry);
        }
        tracing::info!(run = %key, step = %open.id, attempts = failed, "step failed for good");
        session.replay.record(step.clone());
        let journal = session.services.journal.clone();
        journal
            .apply(vec![Op::PutStep(key, step)])
            .map_err(host_fault)?;
        self.durable().await?;
        Ok(AttemptOutcome::Final)
    }

    async fn suspend_until(&mut self, id: &str, kind: StepKind, wake_at: u64) -> Result<()> {
        let now = now_ms();
        let slot = self.enter_call(id, kind)?;
        let (seq, id) = match slot {
            Slot::Journaled(step) => {
                if step.status == StepStatus::Completed {
                    self.flags.set_logical_ms(step.ended_at.unwrap_or(now));
                    return Ok(());
                }
                if self.session()?.dry_run {
                    return Err(replay_end());
                }
                if step.wake_at.is_some_and(|at| at <= now) {
                    // Due already (e.g. the host was down when it fired).
                    let timer = Timer {
                        at: step.wake_at.unwrap_or(now),
                        key: self.session()?.run.key.clone(),
                        seq: step.seq,
                        kind: TimerKind::Sleep,
                    };
                    return self.complete_sleep(*step, Some(timer), now);
                }
                self.write_run(RunStatus::Sleeping, None, Vec::new())?;
                return Err(wasmtime::Error::new(Suspended));
            }
            Slot::New { seq, id } => (seq, id),
        };
        let step = StepRecord {
            seq,
            id,
            kind,
            status: StepStatus::Sleeping,
            attempts: 0,
            output: None,
            error: None,
            started_at: now,
            ended_at: None,
            wake_at: Some(wake_at),
            wait: None,
        };
        if wake_at <= now {
            return self.complete_sleep(step, None, now);
        }
        if wake_at - now > MAX_SUSPEND_MS {
            return Err(fault(
                "SleepError",
                format!(
                    "sleep {:?} is longer than a year, the longest sleep allowed",
                    step.id
                ),
            ));
        }
        let key = self.session()?.run.key.clone();
        let timer = Timer {
            at: wake_at,
            key: key.clone(),
            seq,
            kind: TimerKind::Sleep,
        };
        self.write_run(
            RunStatus::Sleeping,
            None,
            vec![Op::PutStep(key, step), Op::PutTimer(timer.clone())],
        )?;
        self.durable().await?;
        self.session()?.services.scheduler.add_timer(timer);
        Err(wasmtime::Error::new(Suspended))
    }

    fn complete_sleep(
        &mut self,
        mut step: StepRecord,
        timer: Option<Timer>,
        now: u64,
    ) -> Result<()> {
        step.status = StepStatus::Completed;
        step.output = Some("null".into());
        step.ended_at = Some(now);
        let session = self.session()?;
        let key = session.run.key.clone();
        let mut batch = vec![Op::PutStep(key, step.clone())];
        batch.extend(timer.map(Op::DeleteTimer));
        session.services.journal.apply(batch).map_err(host_fault)?;
        session.replay.record(step);
        self.flags.set_logical_ms(now);
        Ok(())
    }
}

/// The `types` interface has no functions; its types are the bindings'.
impl super::bindings::stepwise::durable::types::Host for RunState {}

impl step::Host for RunState {
    async fn begin(&mut self, id: String) -> Result<Memo> {
        let slot = self.enter_call(&id, StepKind::Run)?;
        let now = now_ms();
        let (seq, effective, attempts) = match slot {
            Slot::Journaled(step) => match step.status {
                StepStatus::Completed => {
                    self.flags.set_logical_ms(step.ended_at.unwrap_or(now));
                    return Ok(Memo::Done(step.output.unwrap_or_else(|| "null".into())));
                }
                StepStatus::Failed => {
                    let error = step
                        .error
                        .unwrap_or_else(|| ErrorRecord::fatal("Error", "the step failed"));
                    return Ok(Memo::Failed(wit_error(&error)));
                }
                StepStatus::Retrying if self.session()?.dry_run => return Err(replay_end()),
                StepStatus::Retrying => (step.seq, step.id, step.attempts),
                StepStatus::Sleeping | StepStatus::Waiting => {
                    return Err(fault(
                        "DeterminismError",
                        format!("step {id:?} is journaled as a sleep or wait"),
                    ));
                }
            },
            Slot::New { seq, id } => (seq, id, 0),
        };
        self.session()?.open = Some(OpenStep {
            seq,
            id: effective,
            raw_id: id,
            started_at: now,
            attempts,
        });
        self.flags.set_in_step(true);
        Ok(Memo::Execute)
    }

    async fn complete(
        &mut self,
        id: String,
        outcome: std::result::Result<String, StepError>,
    ) -> Result<()> {
        self.flush_output()?;
        let session = self.session()?;
        let Some(open) = session.open.take() else {
            return Err(fault(
                "StepError",
                format!(
                    "complete({id:?}) was called for a step that was never begun; call begin first"
                ),
            ));
        };
        if open.raw_id != id {
            return Err(fault(
                "StepError",
                format!(
                    "complete({id:?}) does not match the step being run, {:?}",
                    open.raw_id
                ),
            ));
        }
        self.flags.set_in_step(false);
        let output = match outcome {
            Ok(json) => check_output(&json).map(|()| json),
            Err(error) => Err(error_record(&error)),
        };
        let json = match output {
            Ok(json) => json,
            Err(error) => {
                return match self.fail_attempt(open, error).await? {
                    AttemptOutcome::Final => Ok(()),
                    AttemptOutcome::Retry => Err(wasmtime::Error::new(Suspended)),
                };
            }
        };
        let now = now_ms();
        let step = StepRecord {
            seq: open.seq,
            id: open.id,
            kind: StepKind::Run,
            status: StepStatus::Completed,
            attempts: open.attempts,
            output: Some(json),
            error: None,
            started_at: open.started_at,
            ended_at: Some(now),
            wake_at: None,
            wait: None,
        };
        let session = self.session()?;
        let key = session.run.key.clone();
        session.replay.record(step.clone());
        let services = session.services.clone();
        services
            .journal
            .apply(vec![Op::PutStep(key, step)])
            .map_err(host_fault)?;
        self.flags.set_logical_ms(now);
        self.durable().await
    }

    async fn sleep(&mut self, id: String, duration_ms: u64) -> Result<()> {
        let wake_at = now_ms().saturating_add(duration_ms);
        self.suspend_until(&id, StepKind::Sleep, wake_at).await
    }

    async fn sleep_until(&mut self, id: String, at_ms: u64) -> Result<()> {
        self.suspend_until(&id, StepKind::Sleep, at_ms).await
    }

    async fn wait_for_event(&mut self, id: String, opts: WaitOptions) -> Result<Option<Event>> {
        let now = now_ms();
        let slot = self.enter_call(&id, StepKind::Wait)?;
        let (seq, effective) = match slot {
            Slot::Journaled(step) => {
                if step.status == StepStatus::Completed {
                    self.flags.set_logical_ms(step.ended_at.unwrap_or(now));
                    return wait_result(step.output.as_deref().unwrap_or("null"));
                }
                if self.session()?.dry_run {
                    return Err(replay_end());
                }
                self.write_run(RunStatus::Waiting, None, Vec::new())?;
                return Err(wasmtime::Error::new(Suspended));
            }
            Slot::New { seq, id } => (seq, id),
        };
        check_name(&opts.event)
            .map_err(|e| fault("WaitError", format!("wait_for_event {id:?}: {e}")))?;
        if opts.timeout_ms > MAX_SUSPEND_MS {
            return Err(fault(
                "WaitError",
                format!(
                    "wait_for_event {id:?} has a timeout longer than a year, the longest allowed"
                ),
            ));
        }
        let session = self.session()?;
        let match_value = match (&opts.match_, session.events.first()) {
            (Some(path), Some(trigger)) => lookup(trigger, path).cloned(),
            _ => None,
        };
        let spec = WaitSpec {
            event: opts.event.clone(),
            match_path: opts.match_.clone(),
            match_value,
        };
        let timeout_at = now.saturating_add(opts.timeout_ms);
        let step = StepRecord {
            seq,
            id: effective,
            kind: StepKind::Wait,
            status: StepStatus::Waiting,
            attempts: 0,
            output: None,
            error: None,
            started_at: now,
            ended_at: None,
            wake_at: Some(timeout_at),
            wait: Some(spec.clone()),
        };
        let key = session.run.key.clone();
        let waiter = Waiter {
            key: key.clone(),
            seq,
            spec,
            timeout_at,
        };
        session.run.status = RunStatus::Waiting;
        session.run.wake_at = None;
        let services = session.services.clone();
        match services
            .events
            .register_wait(session.run.clone(), waiter, step)
        {
            Ok(true) => {}
            Ok(false) => return Err(wasmtime::Error::new(Ended)),
            Err(e) => return Err(host_fault(e)),
        }
        self.durable().await?;
        services.scheduler.add_timer(Timer {
            at: timeout_at,
            key,
            seq,
            kind: TimerKind::WaitTimeout,
        });
        Err(wasmtime::Error::new(Suspended))
    }
}

/// Checks a step output: JSON, and no larger than Inngest allows.
fn check_output(json: &str) -> std::result::Result<(), ErrorRecord> {
    if json.len() > MAX_STEP_OUTPUT_BYTES {
        return Err(ErrorRecord::fatal(
            "OutputTooLargeError",
            format!(
                "the step returned {} bytes; a step output may be at most {MAX_STEP_OUTPUT_BYTES} bytes (4 MiB): store large data elsewhere and return a reference",
                json.len()
            ),
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(json)
        .map(|_| ())
        .map_err(|e| ErrorRecord::fatal("OutputError", format!("the step output is not JSON: {e}")))
}

/// A journaled wait outcome as the guest receives it.
fn wait_result(json: &str) -> Result<Option<Event>> {
    if json == "null" {
        return Ok(None);
    }
    let event: EventRecord = serde_json::from_str(json)
        .map_err(|e| host_fault(anyhow::anyhow!("a journaled event does not decode: {e}")))?;
    Ok(Some(wit_event(&event)))
}

/// An event as the guest receives it.
pub fn wit_event(event: &EventRecord) -> Event {
    Event {
        id: event.id.clone(),
        name: event.name.clone(),
        data: event.data.to_string(),
        ts: event.ts,
        user: event.user.as_ref().map(|u| u.to_string()),
    }
}
