//! Timers that end a suspension or a wait in the ingestion order: wait and
//! invoke timeouts, held-back starts (debounce, batches) and run timeouts.

use super::{Effects, Events, ending, resolve_wait};
use crate::model::{ErrorRecord, IndexKind, RunStatus, StepStatus, Timer, TimerKind, Waiter};
use anyhow::Result;

impl Events {
    /// Ends a wait whose timeout fired: its step completes with `null`.
    pub fn wait_timed_out(&self, timer: &Timer) -> Result<Effects> {
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
    pub fn invoke_timed_out(&self, timer: &Timer) -> Result<Effects> {
        Ok(self.change(|tx| ending::invoke_timed_out(tx, timer))?.1)
    }

    /// A held-back run (debounce, batch) may start now.
    pub fn delayed_start(&self, timer: &Timer) -> Result<Effects> {
        let ((), effects) = self.change(|tx| {
            tx.delete_timer(timer.clone());
            let Some(mut run) = tx.journal.run(&timer.key)? else {
                return Ok(());
            };
            if run.status != RunStatus::Queued || run.wake_at != Some(timer.at) {
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
            run.wake_at = None;
            tx.effects.wake.push(run.key.clone());
            tx.put_run(run);
            Ok(())
        })?;
        Ok(effects)
    }

    /// A run over `timeouts.start` (not started) or `timeouts.finish` (not
    /// ended) is cancelled.
    pub fn run_timed_out(&self, timer: &Timer) -> Result<Effects> {
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
            if run.status.is_terminal() {
                return Ok(());
            }
            ending::cancel(tx, run, ErrorRecord::fatal("FunctionTimeoutError", message))?;
            Ok(())
        })?;
        Ok(effects)
    }
}
