//! Parallel steps: `parallel(ids)` asks for several `step.run`s at once.
//!
//! Each id takes the next position in the run's journal. Branches already
//! journaled are answered from it. If only one branch is left to run, the
//! run runs it itself, in place (the common case after one branch failed and
//! is retried). Otherwise each branch left becomes a job of its own in the
//! scheduler's queue (under the run's concurrency keys): an instance replays
//! the run up to this call, runs that one branch's body, has its outcome
//! recorded and stops, on whichever core is free; the run itself suspends
//! and replays this call when its last branch has finished. A branch that
//! fails follows the retry rules of its own step: its retry timer wakes the
//! run, and the retry is another branch job.

use super::outcome::{Interrupt, diverged, fault, host_fault, replay_end};
use super::replay::Slot;
use super::state::{OpenStep, Role, RunState, wit_error};
use super::step_calls::BRANCH_SEGMENTS;
use crate::model::ErrorName;
use crate::model::{ErrorRecord, StepKind, StepStatus};
use crate::runs::Transition;
use crate::wit::step::Memo;
use wasmtime::Result;

/// A branch that must run: its position, effective id, raw id and failed
/// attempts so far.
struct Todo {
    index: usize,
    seq: u32,
    id: String,
    raw_id: String,
    attempts: u32,
}

impl RunState {
    /// `parallel(ids)`: see the module documentation.
    pub(super) async fn start_group(&mut self, ids: Vec<String>) -> Result<Vec<Memo>> {
        self.flags.reset_cpu();
        self.flush_output()?;
        let first = ids.first().cloned().unwrap_or_default();
        self.check_not_nested("parallel", &first)?;
        let now = self.now();
        let mut memos = Vec::with_capacity(ids.len());
        let mut todo = Vec::new();
        let mut not_due = false;
        for (index, raw_id) in ids.into_iter().enumerate() {
            let slot = self
                .session()?
                .replay
                .next(&raw_id, StepKind::Run)
                .map_err(diverged)?;
            match slot {
                Slot::Journaled(step) => match step.status {
                    StepStatus::Completed => {
                        self.flags.set_logical_ms(step.ended_at.unwrap_or(now));
                        memos.push(Memo::Done(step.output.unwrap_or_else(|| "null".into())));
                    }
                    StepStatus::Failed => {
                        let error = step.error.unwrap_or_else(|| {
                            ErrorRecord::fatal(ErrorName::Error, "the step failed")
                        });
                        memos.push(Memo::Failed(wit_error(&error)));
                    }
                    StepStatus::Retrying if step.wake_at.is_some_and(|at| at > now) => {
                        not_due = true;
                        memos.push(Memo::Elsewhere);
                    }
                    StepStatus::Retrying => {
                        todo.push(Todo {
                            index,
                            seq: step.seq,
                            id: step.id,
                            raw_id,
                            attempts: step.attempts,
                        });
                        memos.push(Memo::Elsewhere);
                    }
                    StepStatus::Sleeping | StepStatus::Waiting => {
                        return Err(fault(
                            ErrorName::DeterminismError,
                            format!("parallel step {raw_id:?} is journaled as a sleep or wait"),
                        ));
                    }
                },
                Slot::New { seq, id } => {
                    self.check_step_limit(seq)?;
                    todo.push(Todo {
                        index,
                        seq,
                        id,
                        raw_id,
                        attempts: 0,
                    });
                    memos.push(Memo::Elsewhere);
                }
            }
        }
        let session = self.session()?;
        if let Role::Branch(target) = session.role {
            let Some(mine) = todo.into_iter().find(|t| t.seq == target) else {
                if memos.iter().any(|m| matches!(m, Memo::Elsewhere)) {
                    // This group is not finished and is not this branch's:
                    // or this branch is journaled already (a duplicate job).
                    return Err(Interrupt::Suspended.trap());
                }
                return Ok(memos);
            };
            memos[mine.index] = Memo::Execute;
            self.begin_body().await?;
            self.open_group(vec![mine], BRANCH_SEGMENTS + target, now);
            return Ok(memos);
        }
        if session.dry_run {
            if todo.is_empty() && !not_due {
                return Ok(memos);
            }
            return Err(replay_end());
        }
        if todo.is_empty() && !not_due {
            return Ok(memos);
        }
        let key = session.run.key.clone();
        let runs = session.services.runs.clone();
        if !not_due
            && let [only] = todo.as_slice()
            && !runs
                .branch_pending(&key, only.seq)
                .await
                .map_err(host_fault)?
        {
            memos[only.index] = Memo::Execute;
            let segment = self.session()?.replay.calls_made();
            self.begin_body().await?;
            self.open_group(todo, segment, now);
            return Ok(memos);
        }
        if !todo.is_empty() {
            tracing::debug!(run = %key, branches = todo.len(), "running parallel branches in instances of their own");
            let seqs = todo.iter().map(|branch| branch.seq).collect();
            self.record(Transition::Branches(seqs)).await?;
        }
        Err(Interrupt::Suspended.trap())
    }

    /// Marks `todo` as the steps the guest runs now, in order.
    fn open_group(&mut self, todo: Vec<Todo>, segment: u32, now: u64) {
        let attempt = todo.first().map(|t| t.attempts).unwrap_or(0);
        // The bodies of a group run in one instance: their outgoing HTTP
        // carries the first one's span.
        match todo.first() {
            Some(first) => self.trace_attempt(first.seq, first.attempts),
            None => self.flags.set_traceparent(None),
        }
        if let Some(session) = self.session.as_mut() {
            session.group = todo
                .into_iter()
                .map(|t| OpenStep {
                    seq: t.seq,
                    id: t.id,
                    raw_id: t.raw_id,
                    started_at: now,
                    attempts: t.attempts,
                })
                .collect();
        }
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_segment(segment, attempt, false);
        self.flags.set_in_step(true);
    }
}
