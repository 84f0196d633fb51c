//! What a run's execution asks of its run, as data.
//!
//! The executor's host calls and its driver never write: each builds a
//! [`Transition`] and hands it to [`Runs::record`], which applies it to the
//! run as the journal has it, in the one order of changes, atomically, and
//! hands its [`Effects`](super::Effects) (timers to arm, runs to wake or
//! stop, branches to start) to the scheduler once the change is durable.
//! A transition of a run that has ended meanwhile (cancelled, timed out)
//! writes nothing and says so, and the execution stops.

use super::{Runs, Tx, admit, ending};
use crate::journal::Op;
use crate::metrics::{FunctionLabels, Observation, StepOutcome};
use crate::model::StepStatus;
use crate::model::{
    ErrorRecord, EventRecord, FunctionRecord, LogChunk, ParentStep, RUN_LEVEL_SEQ, RunKey,
    RunRecord, RunState, RunStatus, StepRecord, Timer, TimerKind, Waiter,
};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One change an execution makes to its run (sent between hosts as JSON
/// when the run executes on a worker host).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Transition {
    /// The run starts (or resumes) executing: `running`, its start time
    /// set, and on its first start its `timeouts.finish` timer armed.
    Start,
    /// Output the guest wrote (log lines). It rides with the next flush:
    /// nothing waits for it.
    Output(Vec<LogChunk>),
    /// A step's final outcome: completed, or failed for good.
    StepDone(StepRecord),
    /// A failed attempt with attempts left: the step (status `retrying`)
    /// waits for its next attempt at its `wake_at`.
    StepRetry(StepRecord),
    /// A new sleep: the step sleeps until its `wake_at`, and so does the
    /// run.
    Sleep(StepRecord),
    /// A sleep found due as the run reached it: it is journaled completed,
    /// and its timer goes if it was `armed`. Nothing waits for its flush: a
    /// replay finds the sleep due again.
    SleepDue {
        /// The step, completed.
        step: StepRecord,
        /// Whether it was journaled sleeping, with a timer.
        armed: bool,
    },
    /// The run resumed at a sleep, wait or invoke that is not over: it goes
    /// back to sleeping or waiting until its timer or event wakes it.
    Park(Suspended),
    /// A new wait for an event, registered in the order events are accepted
    /// in: only events accepted after this can match it.
    Wait {
        /// The step, `waiting`, with its timeout as `wake_at`.
        step: StepRecord,
        /// The waiter incoming events are matched against.
        waiter: Waiter,
    },
    /// A new invoke: the child run starts, and the step (`waiting`, with
    /// its timeout as `wake_at`, if any) waits for the child's end.
    Invoke {
        /// The invoking step.
        step: StepRecord,
        /// The function invoked (boxed: it is large, and the other
        /// transitions are small).
        function: Box<FunctionRecord>,
        /// The `data` of the child's `inngest/function.invoked` event.
        data: Value,
    },
    /// Branches of a parallel group to execute, each in an instance of its
    /// own. Nothing is written: a replay asks for them again.
    Branches(Vec<u32>),
    /// Execute the run again from its journal now (a failure the guest has
    /// not seen yet is in it).
    Replay,
    /// The run executes again at `wake_at`: its handler failed outside any
    /// step and is retried (`error` set, `attempt` counted), or a send
    /// waits for the tenant's budget (no error, the same attempt).
    RetryLater {
        /// When the run executes again, ms since the epoch (its `RunRetry`
        /// timer).
        wake_at: u64,
        /// The run's attempt from then on.
        attempt: u32,
        /// The handler's error, kept on the run while it is retried (`None`
        /// for a send that waits).
        error: Option<ErrorRecord>,
    },
    /// The run ends.
    End {
        /// `completed` or `failed`.
        status: RunStatus,
        /// Its output, if completed.
        output: Option<Value>,
        /// Its error, if failed.
        error: Option<ErrorRecord>,
    },
}

/// What a parked run goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Suspended {
    /// Sleeping, until the sleep's timer fires.
    Sleeping,
    /// Waiting for an event or for an invoked run's end (or the timeout).
    Waiting,
}

impl Transition {
    /// Whether [`Runs::record`] returns only once the change is durable:
    /// for every change the guest acts on (a step's outcome, a suspension).
    /// The others ride with the next flush, since a replay after a crash
    /// makes them again: a start, a park, output, a due sleep, and a run's
    /// end, which is announced before its flush (every step is on disk
    /// already, so the replay ends the run the same way). Readers see none
    /// of them before that flush either (see `api::durable`).
    fn waits_for_flush(&self) -> bool {
        !matches!(
            self,
            Transition::Start
                | Transition::Park(_)
                | Transition::Output(_)
                | Transition::SleepDue { .. }
                | Transition::End { .. }
        )
    }
}

impl Runs {
    /// Applies `transition` to run `key` in the one order of changes, and
    /// hands its effects to the scheduler (after the flush, see
    /// [`Transition`]).
    pub async fn record(&self, key: &RunKey, transition: Transition) -> Result<Recorded> {
        let waits = transition.waits_for_flush();
        let ending = matches!(transition, Transition::End { .. });
        let (recorded, effects) = self.change(|tx| apply(tx, key, transition))?;
        if let Recorded::Ended = recorded {
            return Ok(recorded);
        }
        if waits && effects.wrote {
            self.apply_once_durable(effects).await?;
        } else {
            self.hand_over(effects);
        }
        if ending {
            let commit = self.commit.clone();
            let key = key.clone();
            tokio::spawn(async move {
                if let Err(error) = commit.durable().await {
                    tracing::error!(run = %key, error = format!("{error:#}"), "could not flush a run's end");
                }
            });
        }
        Ok(recorded)
    }
}

impl Runs {
    /// Journals output the guest wrote to run `key` ([`Transition::Output`],
    /// without waiting: it is called between host calls, which are not
    /// async), unless the run has ended.
    pub fn record_output(&self, key: &RunKey, chunks: Vec<LogChunk>) -> Result<()> {
        self.change(|tx| apply(tx, key, Transition::Output(chunks)))?;
        Ok(())
    }
}

/// What [`Runs::record`] did.
#[derive(Debug, Serialize, Deserialize)]
pub enum Recorded {
    /// The transition changed the run's record: here it is, as written.
    Run(Box<RunRecord>),
    /// The transition wrote the run's entries (steps, output) or asked for
    /// effects only: its record is as it was.
    Entries,
    /// The run has ended (or never existed): nothing was written.
    Ended,
}

/// `transition` in `tx`, on the run as the journal has it.
pub(super) fn apply(tx: &mut Tx<'_>, key: &RunKey, transition: Transition) -> Result<Recorded> {
    match transition {
        Transition::Output(_)
        | Transition::StepDone(_)
        | Transition::StepRetry(_)
        | Transition::SleepDue { .. }
        | Transition::Branches(_)
        | Transition::Replay => {
            // Every step passes here: whether its run has ended is known
            // in memory while an execution of it is registered.
            let ended = match tx.executing.ended(key) {
                Some(ended) => ended,
                None => tx
                    .journal
                    .run_status(key)?
                    .is_none_or(|status| status.is_terminal()),
            };
            if ended {
                return Ok(Recorded::Ended);
            }
            observe_step(tx, key, &transition)?;
            apply_to_entries(tx, key, transition);
            Ok(Recorded::Entries)
        }
        _ => {
            let Some(run) = tx.journal.run(key)? else {
                return Ok(Recorded::Ended);
            };
            if run.status().is_terminal() {
                return Ok(Recorded::Ended);
            }
            let run = apply_to_record(tx, run, transition)?;
            Ok(Recorded::Run(Box::new(run)))
        }
    }
}

/// Counts a step's outcome (once the change is durable).
fn observe_step(tx: &mut Tx<'_>, key: &RunKey, transition: &Transition) -> Result<()> {
    let (outcome, lasted_ms) = match transition {
        Transition::StepDone(step) if step.status == StepStatus::Failed => (
            StepOutcome::failed,
            step.ended_at.map(|at| at.saturating_sub(step.started_at)),
        ),
        Transition::StepDone(step) => (
            StepOutcome::completed,
            step.ended_at.map(|at| at.saturating_sub(step.started_at)),
        ),
        Transition::StepRetry(_) => (StepOutcome::retried, None),
        _ => return Ok(()),
    };
    // Known in memory while an execution of the run is registered.
    let labels = match tx.executing.labels(key) {
        Some(labels) => labels,
        None => match tx.journal.run(key)? {
            Some(run) => FunctionLabels::of(&run),
            None => return Ok(()),
        },
    };
    tx.observe(Observation::Step {
        labels,
        outcome,
        lasted_ms,
    });
    if let Some(traces) = tx.traces {
        let (Transition::StepDone(step) | Transition::StepRetry(step)) = transition else {
            return Ok(());
        };
        // `attempts` counts failed attempts, this one included if it failed.
        let attempt = match outcome {
            StepOutcome::completed => step.attempts,
            StepOutcome::retried | StepOutcome::failed => step.attempts.saturating_sub(1),
        };
        // A later attempt began when the retry before it was due.
        let started_ms = match attempt {
            0 => step.started_at,
            _ => tx
                .journal
                .step(key, step.seq)?
                .and_then(|before| before.wake_at)
                .unwrap_or(step.started_at),
        };
        let error = step
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.name, e.message));
        let span = traces.attempt_span(
            key,
            step,
            attempt,
            (started_ms, tx.now),
            error
                .as_deref()
                .filter(|_| outcome != StepOutcome::completed),
        );
        tx.observe(Observation::Span(Box::new(span)));
    }
    Ok(())
}

/// A transition that leaves the run's record as it is.
fn apply_to_entries(tx: &mut Tx<'_>, key: &RunKey, transition: Transition) {
    match transition {
        Transition::Output(chunks) => {
            tx.ops
                .extend(chunks.into_iter().map(|c| Op::PutLog(key.clone(), c)));
        }
        Transition::StepDone(step) => tx.ops.push(Op::PutStep(key.clone(), step)),
        Transition::StepRetry(step) => {
            if let Some(at) = step.wake_at {
                tx.put_timer(Timer {
                    at,
                    key: key.clone(),
                    seq: step.seq,
                    kind: TimerKind::StepRetry,
                });
            }
            tx.ops.push(Op::PutStep(key.clone(), step));
        }
        Transition::SleepDue { step, armed } => {
            if armed && let Some(at) = step.wake_at {
                tx.delete_timer(Timer {
                    at,
                    key: key.clone(),
                    seq: step.seq,
                    kind: TimerKind::Sleep,
                });
            }
            tx.ops.push(Op::PutStep(key.clone(), step));
        }
        Transition::Branches(seqs) => {
            tx.effects
                .branches
                .extend(seqs.into_iter().map(|seq| (key.clone(), seq)));
        }
        Transition::Replay => tx.effects.wake.push(key.clone()),
        _ => unreachable!("apply sends only entry transitions here"),
    }
}

/// A transition that changes `run`'s record; returns it as written.
fn apply_to_record(
    tx: &mut Tx<'_>,
    mut run: RunRecord,
    transition: Transition,
) -> Result<RunRecord> {
    let key = &run.key.clone();
    match transition {
        Transition::Start => {
            let first_start = run.started_at.is_none();
            if first_start {
                tx.observe(Observation::FirstStart {
                    tenant: run.key.tenant.clone(),
                    waited_ms: tx.now.saturating_sub(run.created_at),
                });
            }
            run.state = RunState::Running { retry_at: None };
            run.started_at.get_or_insert(tx.now);
            if first_start && let Some(limit) = run.finish_timeout_ms {
                tx.put_timer(Timer {
                    at: tx.now.saturating_add(limit),
                    key: key.clone(),
                    seq: RUN_LEVEL_SEQ,
                    kind: TimerKind::FinishTimeout,
                });
            }
            tx.put_run(run.clone());
        }
        Transition::Sleep(step) => {
            if let Some(at) = step.wake_at {
                tx.put_timer(Timer {
                    at,
                    key: key.clone(),
                    seq: step.seq,
                    kind: TimerKind::Sleep,
                });
            }
            tx.ops.push(Op::PutStep(key.clone(), step));
            run.state = RunState::Sleeping;
            tx.put_run(run.clone());
        }
        Transition::Park(suspended) => {
            run.state = match suspended {
                Suspended::Sleeping => RunState::Sleeping,
                Suspended::Waiting => RunState::Waiting,
            };
            tx.put_run(run.clone());
        }
        Transition::Wait { step, waiter } => {
            tx.put_timer(Timer {
                at: waiter.timeout_at,
                key: key.clone(),
                seq: waiter.seq,
                kind: TimerKind::WaitTimeout,
            });
            tx.ops.push(Op::PutStep(key.clone(), step));
            tx.ops.push(Op::PutWaiter(waiter));
            run.state = RunState::Waiting;
            tx.put_run(run.clone());
        }
        Transition::Invoke {
            step,
            function,
            data,
        } => {
            run.state = RunState::Waiting;
            invoke(tx, &run, &function, data, step)?;
            tx.put_run(run.clone());
        }
        Transition::RetryLater {
            wake_at,
            attempt,
            error,
        } => {
            run.state = RunState::Running {
                retry_at: Some(wake_at),
            };
            run.attempt = attempt;
            if error.is_some() {
                run.handler_error = error;
            }
            tx.put_timer(Timer {
                at: wake_at,
                key: key.clone(),
                seq: RUN_LEVEL_SEQ,
                kind: TimerKind::RunRetry,
            });
            tx.put_run(run.clone());
        }
        Transition::End {
            status,
            output,
            error,
        } => {
            run.state = RunState::ended(status, tx.now, output, error);
            tracing::info!(run = %run.key, function = %run.function, status = status.as_str(), "run ended");
            ending::end(tx, &run)?;
            tx.put_run(run.clone());
        }
        Transition::Output(_)
        | Transition::StepDone(_)
        | Transition::StepRetry(_)
        | Transition::SleepDue { .. }
        | Transition::Branches(_)
        | Transition::Replay => unreachable!("apply sends these to apply_to_entries"),
    }
    Ok(run)
}

/// Starts a run of `function` for `data`, invoked by `step` of `parent`,
/// and records that step as waiting for it (until its `wake_at`, if any).
fn invoke(
    tx: &mut Tx<'_>,
    parent: &RunRecord,
    function: &FunctionRecord,
    data: Value,
    mut step: StepRecord,
) -> Result<()> {
    let event = EventRecord {
        id: crate::model::new_id(),
        name: "inngest/function.invoked".into(),
        data,
        user: None,
        ts: tx.now,
        v: None,
        received_at: tx.now,
        trace: None,
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
    admit::launch(tx, function, child, vec![event])
}
