//! The `step` interface as the host implements it: every answer comes from
//! the journal, or becomes a [`Transition`] that the run state machine makes
//! durable, before the guest sees it. `parallel` is in [`super::parallel`],
//! `send-event` and `invoke` in [`super::messages`].

use super::outcome::{Interrupt, diverged, fault, host_fault, replay_end};
use super::replay::Slot;
use super::state::{OpenStep, Role, RunState, Session, error_record, wit_error};
use crate::model::ErrorName;
use crate::model::{
    ErrorRecord, EventRecord, StepKind, StepRecord, StepStatus, WaitSpec, Waiter, check_name,
};
use crate::runs::{Recorded, Suspended, Transition};
use crate::wit::step::{self, Memo};
use crate::wit::types::{Event, EventPayload, StepError, WaitOptions};
use wasmtime::Result;

/// Longest sleep or wait, as in Inngest.
pub const MAX_SUSPEND_MS: u64 = 365 * 24 * 60 * 60 * 1000;
/// Output segments of parallel branches are numbered from here, apart from
/// the run's own (which count calls).
pub const BRANCH_SEGMENTS: u32 = 1 << 31;

/// What a failed attempt leads to.
pub enum AttemptOutcome {
    /// Another attempt is timed; the run is suspended until then.
    Retry,
    /// The step failed for good; the error is journaled.
    Final,
}

impl RunState {
    /// Puts the step bodies running from now on in the trace span of
    /// attempt `attempts` of step `seq`, on a host that exports traces:
    /// their outgoing HTTP carries its `traceparent`.
    pub(super) fn trace_attempt(&self, seq: u32, attempts: u32) {
        let traceparent = self.session.as_ref().and_then(|session| {
            session
                .services
                .traced
                .then(|| crate::traces::attempt_traceparent(&session.run.key.run, seq, attempts))
        });
        self.flags.set_traceparent(traceparent);
    }

    pub(super) fn session(&mut self) -> Result<&mut Session> {
        self.session.as_mut().ok_or_else(|| {
            fault(
                ErrorName::RegistrationError,
                "step calls are not allowed while the host reads the app's functions(); make them inside handle()",
            )
        })
    }

    /// Fails with a clear error if a step body is running (steps cannot be
    /// nested).
    pub(super) fn check_not_nested(&mut self, what: &str, id: &str) -> Result<()> {
        let session = self.session()?;
        let open = session.open.as_ref().or(session.group.first());
        if let Some(open) = open {
            return Err(fault(
                ErrorName::StepError,
                format!(
                    "{what} {id:?} was called inside the body of step {:?}; steps cannot be nested: call it after the step returns",
                    open.raw_id
                ),
            ));
        }
        Ok(())
    }

    /// Fails the run if `seq` is past the most step calls a run may make.
    pub(super) fn check_step_limit(&mut self, seq: u32) -> Result<()> {
        let max_steps = self.session()?.limits.max_steps_per_run;
        if seq >= max_steps {
            return Err(fault(
                ErrorName::StepLimitError,
                format!(
                    "the run made more than {max_steps} step calls, the most a run may make; split the work across runs (e.g. fan out with events)"
                ),
            ));
        }
        Ok(())
    }

    /// A step body (or a group's) is about to run: counted while it does.
    /// While the host stops, it never runs: the call waits until the
    /// process exits, and the run resumes from its journal after the
    /// restart.
    pub(super) async fn begin_body(&mut self) -> Result<()> {
        let drain = self.session()?.services.drain.clone();
        let body = drain.begin().await;
        self.session()?.body = Some(body);
        Ok(())
    }

    /// What every durable call does first: hand over the output written
    /// since the previous call, then place this call in the sequence.
    pub(super) fn enter_call(&mut self, id: &str, kind: StepKind) -> Result<Slot> {
        self.flags.reset_cpu();
        self.flush_output()?;
        self.check_not_nested(kind.as_str(), id)?;
        let session = self.session()?;
        let slot = session.replay.next(id, kind).map_err(diverged)?;
        if let Slot::New { .. } = &slot {
            if session.dry_run {
                return Err(replay_end());
            }
            if let Role::Branch(seq) = session.role {
                return Err(fault(
                    ErrorName::DeterminismError,
                    format!(
                        "replaying the run for parallel branch #{seq}, the code made a call ({} {id:?}) the run had not made before reaching the branch's group",
                        kind.as_str()
                    ),
                ));
            }
        }
        if let Slot::New { seq, .. } = &slot {
            self.check_step_limit(*seq)?;
        }
        let session = self.session()?;
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

    /// Hands the output captured so far to the run state machine to
    /// journal ([`Transition::Output`]: no flush of its own, it rides with
    /// the next group commit).
    pub fn flush_output(&mut self) -> Result<()> {
        let chunks = self.output.lock().unwrap_or_else(|p| p.into_inner()).take();
        if chunks.is_empty() {
            return Ok(());
        }
        let Some(session) = self.session.as_ref().filter(|s| !s.dry_run) else {
            return Ok(());
        };
        let services = session.services.clone();
        services
            .runs
            .record_output(&session.run.key, chunks)
            .map_err(host_fault)
    }

    /// Has the run state machine apply `transition` to this run (durably,
    /// for everything the guest acts on), and takes the run as written;
    /// if the run has ended meanwhile, the execution stops with
    /// [`Interrupt::Ended`].
    pub(super) async fn record(&mut self, transition: Transition) -> Result<()> {
        let session = self.session()?;
        let (runs, key) = (session.services.runs.clone(), session.run.key.clone());
        match runs.record(&key, transition).await {
            Ok(Recorded::Run(run)) => {
                self.session()?.run = *run;
                Ok(())
            }
            Ok(Recorded::Entries) => Ok(()),
            Ok(Recorded::Ended) => Err(Interrupt::Ended.trap()),
            Err(e) => Err(host_fault(e)),
        }
    }

    /// The time, as the run state machine reads it.
    pub(super) fn now(&self) -> u64 {
        match &self.session {
            Some(session) => session.services.runs.now_ms(),
            None => crate::model::now_ms(),
        }
    }

    /// Records a failed attempt of the open step: times the next attempt
    /// (the run suspends until then), or records the failure as final.
    pub async fn fail_attempt(
        &mut self,
        open: OpenStep,
        error: ErrorRecord,
    ) -> Result<AttemptOutcome> {
        self.flags.set_in_step(false);
        let now = self.now();
        let session = self.session()?;
        let failed = open.attempts + 1;
        let mut step = StepRecord::new(
            open.seq,
            open.id.clone(),
            StepKind::Run,
            StepStatus::Failed,
            open.started_at,
        );
        step.attempts = failed;
        step.error = Some(error.clone());
        step.ended_at = Some(now);
        let key = session.run.key.clone();
        if error.retriable && failed <= session.run.retries {
            let wake_at = now
                + session
                    .services
                    .backoff
                    .delay_ms(failed, error.retry_after_ms);
            step.status = StepStatus::Retrying;
            step.wake_at = Some(wake_at);
            tracing::info!(run = %key, step = ?open.id, attempt = failed, wake_at, "step failed; retrying later");
            self.record(Transition::StepRetry(step)).await?;
            return Ok(AttemptOutcome::Retry);
        }
        tracing::info!(run = %key, step = ?open.id, attempts = failed, "step failed for good");
        session.replay.record(step.clone());
        self.record(Transition::StepDone(step)).await?;
        Ok(AttemptOutcome::Final)
    }

    async fn suspend_until(&mut self, id: &str, kind: StepKind, wake_at: u64) -> Result<()> {
        let now = self.now();
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
                    return self.complete_sleep(*step, true, now).await;
                }
                self.record(Transition::Park(Suspended::Sleeping)).await?;
                return Err(Interrupt::Suspended.trap());
            }
            Slot::New { seq, id } => (seq, id),
        };
        let mut step = StepRecord::new(seq, id, kind, StepStatus::Sleeping, now);
        step.wake_at = Some(wake_at);
        if wake_at <= now {
            return self.complete_sleep(step, false, now).await;
        }
        if wake_at - now > MAX_SUSPEND_MS {
            return Err(fault(
                ErrorName::SleepError,
                format!(
                    "sleep {:?} is longer than a year, the longest sleep allowed",
                    step.id
                ),
            ));
        }
        self.record(Transition::Sleep(step)).await?;
        Err(Interrupt::Suspended.trap())
    }

    /// Completes a sleep that is due as the run reaches it; `armed` if it
    /// was journaled with a timer.
    async fn complete_sleep(&mut self, mut step: StepRecord, armed: bool, now: u64) -> Result<()> {
        step.status = StepStatus::Completed;
        step.output = Some("null".into());
        step.ended_at = Some(now);
        self.session()?.replay.record(step.clone());
        self.record(Transition::SleepDue { step, armed }).await?;
        self.flags.set_logical_ms(now);
        Ok(())
    }

    /// Counts `bytes` more of step output against the run's journal limit,
    /// or fails the run if that would take it past its tenant's limit.
    pub(super) fn count_journal_bytes(&mut self, bytes: usize) -> Result<()> {
        let session = self.session()?;
        let total = session.journal_bytes + bytes as u64;
        let limit = session.limits.max_journal_bytes_per_run;
        if total > limit {
            return Err(fault(
                ErrorName::JournalLimitError,
                format!(
                    "the run's step outputs would take {total} bytes of journal; a run may keep at most {limit}: return references to large data instead of the data"
                ),
            ));
        }
        session.journal_bytes = total;
        Ok(())
    }

    /// The step `complete(id)` finishes: the open one, or the next of a
    /// parallel group.
    fn take_open(&mut self, id: &str) -> Result<OpenStep> {
        let session = self.session()?;
        if let Some(open) = session.open.take() {
            if open.raw_id != id {
                return Err(fault(
                    ErrorName::StepError,
                    format!(
                        "complete({id:?}) does not match the step being run, {:?}",
                        open.raw_id
                    ),
                ));
            }
            return Ok(open);
        }
        match session.group.iter().position(|o| o.raw_id == id) {
            Some(index) => Ok(session.group.remove(index)),
            None => Err(fault(
                ErrorName::StepError,
                format!(
                    "complete({id:?}) was called for a step that was never begun; call begin first"
                ),
            )),
        }
    }
}

/// The `types` interface has no functions; its types are the bindings'.
impl crate::wit::types::Host for RunState {}

impl step::Host for RunState {
    async fn begin(&mut self, id: String) -> Result<Memo> {
        let slot = self.enter_call(&id, StepKind::Run)?;
        let now = self.now();
        let (seq, effective, attempts) = match slot {
            Slot::Journaled(step) => match step.status {
                StepStatus::Completed => {
                    self.flags.set_logical_ms(step.ended_at.unwrap_or(now));
                    return Ok(Memo::Done(step.output.unwrap_or_else(|| "null".into())));
                }
                StepStatus::Failed => {
                    let error = step
                        .error
                        .unwrap_or_else(|| ErrorRecord::fatal(ErrorName::Error, "the step failed"));
                    return Ok(Memo::Failed(wit_error(&error)));
                }
                StepStatus::Retrying if self.session()?.dry_run => return Err(replay_end()),
                // Not due yet: its timer wakes the run.
                StepStatus::Retrying if step.wake_at.is_some_and(|at| at > now) => {
                    return Err(Interrupt::Suspended.trap());
                }
                StepStatus::Retrying => (step.seq, step.id, step.attempts),
                StepStatus::Sleeping | StepStatus::Waiting => {
                    return Err(fault(
                        ErrorName::DeterminismError,
                        format!("step {id:?} is journaled as a sleep or wait"),
                    ));
                }
            },
            Slot::New { seq, id } => (seq, id, 0),
        };
        self.begin_body().await?;
        self.session()?.open = Some(OpenStep {
            seq,
            id: effective,
            raw_id: id,
            started_at: now,
            attempts,
        });
        self.trace_attempt(seq, attempts);
        self.flags.set_in_step(true);
        Ok(Memo::Execute)
    }

    async fn complete(
        &mut self,
        id: String,
        outcome: std::result::Result<String, StepError>,
    ) -> Result<()> {
        self.flags.reset_cpu();
        self.flush_output()?;
        let open = self.take_open(&id)?;
        let session = self.session()?;
        let more = !session.group.is_empty();
        // Ends once this outcome is recorded (this function returns): a
        // stopping host waits for it.
        let _body = if more { None } else { session.body.take() };
        let branch = matches!(session.role, Role::Branch(_));
        let max_output = session.limits.max_step_output_bytes;
        self.flags.set_in_step(false);
        let guest_failed = outcome.is_err();
        let output = match outcome {
            Ok(json) => check_output(&json, max_output).map(|()| json),
            Err(error) => Err(error_record(&error)),
        };
        let json = match output {
            Ok(json) => json,
            Err(error) => {
                return match self.fail_attempt(open, error).await? {
                    // The guest raised it and raises it on.
                    AttemptOutcome::Final if !branch && guest_failed => {
                        self.flags.set_in_step(more);
                        Ok(())
                    }
                    // The host refused an output the guest thinks is fine:
                    // replay, so that it gets the journaled error from
                    // `begin`, exactly as every later replay will.
                    AttemptOutcome::Final if !branch => {
                        self.record(Transition::Replay).await?;
                        Err(Interrupt::Suspended.trap())
                    }
                    _ => Err(Interrupt::Suspended.trap()),
                };
            }
        };
        self.count_journal_bytes(json.len())?;
        let now = self.now();
        let mut step = StepRecord::new(
            open.seq,
            open.id,
            StepKind::Run,
            StepStatus::Completed,
            open.started_at,
        );
        step.attempts = open.attempts;
        step.output = Some(json);
        step.ended_at = Some(now);
        self.session()?.replay.record(step.clone());
        self.record(Transition::StepDone(step)).await?;
        self.flags.set_logical_ms(now);
        if branch {
            // A branch's work is this one step: the run goes on elsewhere.
            return Err(Interrupt::Suspended.trap());
        }
        self.flags.set_in_step(more);
        Ok(())
    }

    async fn sleep(&mut self, id: String, duration_ms: u64) -> Result<()> {
        let wake_at = self.now().saturating_add(duration_ms);
        self.suspend_until(&id, StepKind::Sleep, wake_at).await
    }

    async fn sleep_until(&mut self, id: String, at_ms: u64) -> Result<()> {
        self.suspend_until(&id, StepKind::Sleep, at_ms).await
    }

    async fn wait_for_event(&mut self, id: String, opts: WaitOptions) -> Result<Option<Event>> {
        let now = self.now();
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
                self.record(Transition::Park(Suspended::Waiting)).await?;
                return Err(Interrupt::Suspended.trap());
            }
            Slot::New { seq, id } => (seq, id),
        };
        check_name(&opts.event)
            .map_err(|e| fault(ErrorName::WaitError, format!("wait_for_event {id:?}: {e}")))?;
        if opts.timeout_ms > MAX_SUSPEND_MS {
            return Err(fault(
                ErrorName::WaitError,
                format!(
                    "wait_for_event {id:?} has a timeout longer than a year, the longest allowed"
                ),
            ));
        }
        if let Some(condition) = &opts.condition {
            crate::expr::compile(condition)
                .map_err(|e| fault(ErrorName::WaitError, format!("wait_for_event {id:?}: {e}")))?;
        }
        let session = self.session()?;
        let match_value = match (&opts.match_, session.events.first()) {
            (Some(path), Some(trigger)) => trigger.lookup(path).cloned(),
            _ => None,
        };
        let spec = WaitSpec {
            event: opts.event.clone(),
            match_path: opts.match_.clone(),
            match_value,
            condition: opts.condition.clone(),
        };
        let timeout_at = now.saturating_add(opts.timeout_ms);
        let mut step = StepRecord::new(seq, effective, StepKind::Wait, StepStatus::Waiting, now);
        step.wake_at = Some(timeout_at);
        step.wait = Some(spec.clone());
        let waiter = Waiter {
            key: session.run.key.clone(),
            seq,
            spec,
            timeout_at,
        };
        self.record(Transition::Wait { step, waiter }).await?;
        Err(Interrupt::Suspended.trap())
    }

    async fn parallel(&mut self, ids: Vec<String>) -> Result<Vec<Memo>> {
        self.start_group(ids).await
    }

    async fn send_event(
        &mut self,
        id: String,
        events: Vec<EventPayload>,
    ) -> Result<std::result::Result<Vec<String>, StepError>> {
        self.send_events(id, events).await
    }

    async fn invoke(
        &mut self,
        id: String,
        function_id: String,
        data: String,
        timeout_ms: Option<u64>,
    ) -> Result<std::result::Result<String, StepError>> {
        self.invoke_function(id, function_id, data, timeout_ms)
            .await
    }
}

/// Checks a step output: JSON, and no larger than `max` bytes (Inngest's
/// 4 MiB by default).
pub(super) fn check_output(json: &str, max: usize) -> std::result::Result<(), ErrorRecord> {
    if json.len() > max {
        return Err(ErrorRecord::fatal(
            ErrorName::OutputTooLargeError,
            format!(
                "the step returned {} bytes; a step output may be at most {max} bytes: store large data elsewhere and return a reference",
                json.len()
            ),
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(json)
        .map(|_| ())
        .map_err(|e| {
            ErrorRecord::fatal(
                ErrorName::OutputError,
                format!("the step output is not JSON: {e}"),
            )
        })
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
