//! Timers, applied in the one order of changes: a sleep ends, a retry is
//! due, a wait or an invoke times out, a held-back run (debounce, batch)
//! may start, a run is past its timeouts.

use super::{Effects, Runs, Tx, ending, resolve_wait};
use crate::journal::Op;
use crate::model::ErrorName;
use crate::model::{
    ErrorRecord, IndexKind, RunState, RunStatus, StepStatus, Timer, TimerKind, Waiter,
};
use anyhow::Result;

impl Runs {
    /// Applies a due timer; the effects say which runs to wake.
    pub fn fire_timer(&self, timer: &Timer) -> Result<Effects> {
        match timer.kind {
            TimerKind::Sleep => self.sleep_ended(timer),
            TimerKind::StepRetry | TimerKind::RunRetry => self.retry_due(timer),
            TimerKind::WaitTimeout => self.wait_timed_out(timer),
            TimerKind::InvokeTimeout => self.invoke_timed_out(timer),
            TimerKind::DelayedStart => self.delayed_start(timer),
            TimerKind::StartTimeout | TimerKind::FinishTimeout => self.run_timed_out(timer),
        }
    }

    /// A sleep is over: its step completes and the run is queued.
    fn sleep_ended(&self, timer: &Timer) -> Result<Effects> {
        let ((), effects) = self.change(|tx| {
            tx.delete_timer(timer.clone());
            if let Some(mut step) = tx.journal.step(&timer.key, timer.seq)?
                && step.status == StepStatus::Sleeping
            {
                step.status = StepStatus::Completed;
                step.output = Some("null".into());
                step.ended_at = Some(tx.now);
                tx.ops.push(Op::PutStep(timer.key.clone(), step));
            }
            requeue(tx, timer, RunStatus::Sleeping, None)
        })?;
        Ok(effects)
    }

    /// The next attempt of a step (or of a handler) is due: the run is
    /// queued, if it still waits for this very attempt.
    fn retry_due(&self, timer: &Timer) -> Result<Effects> {
        let ((), effects) = self.change(|tx| {
            tx.delete_timer(timer.clone());
            let due = match timer.kind {
                TimerKind::StepRetry => tx.journal.step(&timer.key, timer.seq)?.is_some_and(|s| {
                    s.status == StepStatus::Retrying && s.wake_at == Some(timer.at)
                }),
                _ => true,
            };
            if !due {
                return Ok(());
            }
            let expected = (timer.kind == TimerKind::RunRetry).then_some(timer.at);
            requeue(tx, timer, RunStatus::Running, expected)
        })?;
        Ok(effects)
    }

    /// Ends a wait whose timeout fired: its step completes with `null`.
    fn wait_timed_out(&self, timer: &Timer) -> Result<Effects> {
        let ((), effects) = self.change(|tx| {
            tx.delete_timer(timer.clone());
            if let Some(step) = self.journal.step(&timer.key, timer.seq)?
                && step.status == StepStatus::Waiting
                && let Some(spec) = step.wait.clone()
            {
                let waiter = Waiter {
                    key: timer.key.clone(),
                    seq: timer.seq,
                    spec,
                    timeout_at: timer.at,
                };
                resolve_wait(tx, &waiter, None)?;
            }
            Ok(())
        })?;
        Ok(effects)
    }

    /// Ends an invoke whose child did not end in time: its step fails.
    fn invoke_timed_out(&self, timer: &Timer) -> Result<Effects> {
        Ok(self.change(|tx| ending::invoke_timed_out(tx, timer))?.1)
    }

    /// A held-back run (debounce, batch) may start now.
    fn delayed_start(&self, timer: &Timer) -> Result<Effects> {
        let ((), effects) = self.change(|tx| {
            tx.delete_timer(timer.clone());
            let Some(mut run) = tx.journal.run(&timer.key)? else {
                return Ok(());
            };
            if run.status() != RunStatus::Queued || run.wake_at() != Some(timer.at) {
                return Ok(());
            }
            // The window closes: later events start another run.
            let windows: Vec<_> = run
                .cleanup
                .iter()
                .filter(|r| matches!(r.kind, IndexKind::Debounce | IndexKind::Batch))
                .cloned()
                .collect();
            for at in windows {
                run.cleanup.retain(|r| *r != at);
                tx.delete_index(at);
            }
            run.state = RunState::Queued { start_at: None };
            tx.effects.wake.push(run.key.clone());
            tx.put_run(run);
            Ok(())
        })?;
        Ok(effects)
    }

    /// A run over `timeouts.start` (not started) or `timeouts.finish` (not
    /// ended) is cancelled.
    fn run_timed_out(&self, timer: &Timer) -> Result<Effects> {
        let ((), effects) = self.change(|tx| {
            tx.delete_timer(timer.clone());
            let Some(run) = tx.journal.run(&timer.key)? else {
                return Ok(());
            };
            let message = match timer.kind {
                TimerKind::StartTimeout if run.started_at.is_none() => {
                    "the run did not start within its timeouts.start"
                }
                TimerKind::FinishTimeout => "the run did not finish within its timeouts.finish",
                _ => return Ok(()),
            };
            if run.status().is_terminal() {
                return Ok(());
            }
            ending::cancel(
                tx,
                run,
                ErrorRecord::fatal(ErrorName::FunctionTimeoutError, message),
            )?;
            Ok(())
        })?;
        Ok(effects)
    }
}

/// Queues the timer's run if it is still in `from` (and, for run-level
/// retries, still waits for this very timer).
fn requeue(tx: &mut Tx<'_>, timer: &Timer, from: RunStatus, timer_at: Option<u64>) -> Result<()> {
    let Some(mut run) = tx.journal.run(&timer.key)? else {
        return Ok(());
    };
    if run.status() != from || (timer_at.is_some() && run.wake_at() != timer_at) {
        return Ok(());
    }
    run.state = RunState::Queued { start_at: None };
    tx.effects.wake.push(run.key.clone());
    tx.put_run(run);
    Ok(())
}
