//! What ending a run changes besides its record: its `timeouts.finish`
//! timer is disarmed, its index entries go (cancel-on listeners, singleton
//! claim, a held-back batch), the run that invoked it gets its result
//! (unless that run has ended too), and a final failure starts the
//! function's `on-failure` run and emits Inngest's `inngest/function.failed`
//! event. Cancelling also removes the run's other timers and its waiters.

use super::{Tx, admit};
use crate::journal::Op;
use crate::metrics::{FunctionLabels, Observation};
use crate::model::ErrorName;
use crate::model::{
    ErrorRecord, EventRecord, RUN_LEVEL_SEQ, RunKey, RunKind, RunRecord, RunState, RunStatus,
    StepKind, StepStatus, Timer, TimerKind, Waiter,
};
use anyhow::{Context, Result};
use serde_json::json;

/// The event every final failure emits, as in Inngest.
pub const FUNCTION_FAILED: &str = "inngest/function.failed";

/// Cancels `run` (which has not ended): its timers and waiters go and it
/// never resumes; its tasks are stopped once the change is durable.
pub fn cancel(tx: &mut Tx<'_>, mut run: RunRecord, error: ErrorRecord) -> Result<RunRecord> {
    for step in tx.journal.steps(&run.key)? {
        let Some(at) = step.wake_at else { continue };
        let kind = match (step.status, step.kind) {
            (StepStatus::Sleeping, _) => TimerKind::Sleep,
            (StepStatus::Retrying, _) => TimerKind::StepRetry,
            (StepStatus::Waiting, StepKind::Invoke) => TimerKind::InvokeTimeout,
            (StepStatus::Waiting, _) => TimerKind::WaitTimeout,
            (StepStatus::Completed | StepStatus::Failed, _) => continue,
        };
        tx.delete_timer(Timer {
            at,
            key: run.key.clone(),
            seq: step.seq,
            kind,
        });
        if let Some(spec) = step.wait.filter(|_| kind == TimerKind::WaitTimeout) {
            tx.ops.push(Op::DeleteWaiter(Waiter {
                key: run.key.clone(),
                seq: step.seq,
                spec,
                timeout_at: at,
            }));
        }
    }
    if let Some(at) = run.wake_at() {
        let kind = if run.started_at.is_none() {
            TimerKind::DelayedStart
        } else {
            TimerKind::RunRetry
        };
        tx.delete_timer(Timer {
            at,
            key: run.key.clone(),
            seq: RUN_LEVEL_SEQ,
            kind,
        });
    }
    run.state = RunState::Cancelled {
        ended_at: tx.now,
        error,
    };
    tracing::info!(run = %run.key, "run cancelled");
    tx.effects.abort.push(run.key.clone());
    end(tx, &run)?;
    tx.put_run(run.clone());
    Ok(run)
}

/// What every end of `run` (completed, failed, cancelled) changes besides
/// its record, which the caller writes.
pub fn end(tx: &mut Tx<'_>, run: &RunRecord) -> Result<()> {
    tx.effects.ended.push(run.key.clone());
    tx.observe(Observation::RunEnded {
        run: run.key.clone(),
        labels: FunctionLabels::of(run),
        status: run.status().as_str(),
        lasted_ms: tx.now.saturating_sub(run.created_at),
    });
    // Its `timeouts.finish` would otherwise stay armed (in memory too)
    // until due, up to a year on.
    if let (Some(started), Some(limit)) = (run.started_at, run.finish_timeout_ms) {
        tx.delete_timer(Timer {
            at: started.saturating_add(limit),
            key: run.key.clone(),
            seq: RUN_LEVEL_SEQ,
            kind: TimerKind::FinishTimeout,
        });
    }
    for at in &run.cleanup {
        tx.delete_index(at.clone());
    }
    if let Some(parent) = &run.parent {
        resolve_invoke(
            tx,
            run,
            &RunKey::new(&run.key.tenant, &parent.run),
            parent.seq,
        )?;
    }
    if run.status() == RunStatus::Failed && run.kind == RunKind::Handler {
        failed(tx, run)?;
    }
    Ok(())
}

/// The invoking run's step gets `child`'s output or error; the invoker is
/// queued again.
fn resolve_invoke(tx: &mut Tx<'_>, child: &RunRecord, parent: &RunKey, seq: u32) -> Result<()> {
    // A parent that ended meanwhile (cancelled) takes no more writes.
    if tx
        .journal
        .run_status(parent)?
        .is_none_or(|status| status.is_terminal())
    {
        return Ok(());
    }
    let Some(mut step) = tx.journal.step(parent, seq)? else {
        return Ok(());
    };
    if step.status != StepStatus::Waiting || step.kind != StepKind::Invoke {
        return Ok(());
    }
    if let Some(at) = step.wake_at {
        tx.delete_timer(Timer {
            at,
            key: parent.clone(),
            seq,
            kind: TimerKind::InvokeTimeout,
        });
    }
    match child.status() {
        RunStatus::Completed => {
            step.status = StepStatus::Completed;
            step.output = Some(
                child
                    .output()
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "null".into()),
            );
        }
        _ => {
            let cause = child.error().cloned().unwrap_or_else(|| {
                ErrorRecord::fatal(
                    ErrorName::Error,
                    format!("the run ended {}", child.status().as_str()),
                )
            });
            step.status = StepStatus::Failed;
            let message = format!(
                "invoked function {} (run {}) {}: {}",
                child.function,
                child.key.run,
                child.status().as_str(),
                cause.message
            );
            // The child's own error name (perhaps the guest's) carries over.
            step.error = Some(ErrorRecord {
                name: cause.name,
                message,
                retriable: false,
                retry_after_ms: None,
            });
        }
    }
    step.ended_at = Some(tx.now);
    step.wake_at = None;
    tx.ops.push(Op::PutStep(parent.clone(), step));
    queue_again(tx, parent)
}

/// Queues a suspended run whose step was resolved.
pub fn queue_again(tx: &mut Tx<'_>, key: &RunKey) -> Result<()> {
    let Some(mut run) = tx.journal.run(key)? else {
        return Ok(());
    };
    if run.status().is_terminal() {
        return Ok(());
    }
    run.state = RunState::Queued { start_at: None };
    tx.put_run(run);
    tx.effects.wake.push(key.clone());
    Ok(())
}

/// Ends an invoke whose child did not finish in time.
pub fn invoke_timed_out(tx: &mut Tx<'_>, timer: &Timer) -> Result<()> {
    tx.delete_timer(timer.clone());
    let Some(mut step) = tx.journal.step(&timer.key, timer.seq)? else {
        return Ok(());
    };
    if step.status != StepStatus::Waiting || step.wake_at != Some(timer.at) {
        return Ok(());
    }
    step.status = StepStatus::Failed;
    step.error = Some(ErrorRecord::fatal(
        ErrorName::InvokeTimeoutError,
        format!(
            "the invoked run {} did not end before the invoke's timeout",
            step.child.as_deref().unwrap_or("?")
        ),
    ));
    step.ended_at = Some(tx.now);
    tx.ops.push(Op::PutStep(timer.key.clone(), step));
    queue_again(tx, &timer.key)
}

/// A run failed for good: Inngest's `inngest/function.failed` event is
/// stored and routed, and the function's `on-failure` run starts.
fn failed(tx: &mut Tx<'_>, run: &RunRecord) -> Result<()> {
    let original = tx
        .journal
        .run_events(&run.key)?
        .into_iter()
        .next()
        .context("the failed run has no event")?;
    let error = run
        .error()
        .cloned()
        .unwrap_or_else(|| ErrorRecord::fatal(ErrorName::Error, "the run failed"));
    let event = EventRecord {
        id: crate::model::new_id(),
        name: FUNCTION_FAILED.into(),
        data: json!({
            "function_id": run.function,
            "run_id": run.key.run,
            "error": { "name": error.name, "message": error.message },
            "event": original,
        }),
        user: None,
        ts: tx.now,
        v: None,
        received_at: tx.now,
        trace: None,
    };
    if let Some(function) = tx.catalog.get(&run.key.tenant, &run.function)
        && function.on_failure
    {
        let key = RunKey::new(&run.key.tenant, crate::model::new_id());
        let mut handler =
            crate::model::RunRecord::new(key, &function, std::slice::from_ref(&event), tx.now);
        handler.version = run.version.clone();
        handler.kind = RunKind::OnFailure;
        tracing::info!(run = %run.key, handler = %handler.key, "starting the on-failure run");
        tx.ops
            .push(Op::PutRunEvents(handler.key.clone(), vec![event.clone()]));
        tx.effects.wake.push(handler.key.clone());
        tx.put_run(handler);
    }
    for function in tx.catalog.triggered_by(&run.key.tenant, FUNCTION_FAILED) {
        if admit::triggered(&function, &event) {
            admit::admit(tx, &function, &event)?;
        }
    }
    tx.ops.push(Op::PutEvent {
        tenant: run.key.tenant.clone(),
        event,
        dedupe: false,
    });
    Ok(())
}

/// Whether `event` (whose name matches) satisfies the wait `step_wait` of
/// `run`: its `match`, then its `if` over the run's trigger and `event`.
pub fn wait_satisfied(
    tx: &Tx<'_>,
    step_wait: &crate::model::WaitSpec,
    run: &RunKey,
    event: &EventRecord,
) -> Result<bool> {
    if !step_wait.matches(event) {
        return Ok(false);
    }
    let Some(condition) = &step_wait.condition else {
        return Ok(true);
    };
    let Some(trigger) = tx.journal.run_events(run)?.into_iter().next() else {
        return Ok(false);
    };
    Ok(crate::expr::condition(
        condition,
        crate::expr::Scope {
            event: &trigger,
            incoming: Some(event),
        },
    )
    .unwrap_or_else(|error| {
        tracing::warn!(run = %run, error = ?error.to_string(), "a wait's `if` failed; treating it as false");
        false
    }))
}

/// Cancels the runs of `tenant` whose `cancelOn` listeners `event` matches
/// (not expired, the same `match` value, the `if` true).
pub fn cancellations(tx: &mut Tx<'_>, tenant: &str, event: &EventRecord) -> Result<()> {
    let prefix = format!("{tenant}\0{}\0", event.name);
    for (key, value) in tx
        .journal
        .index_scan(crate::model::IndexKind::CancelOn, &prefix)?
    {
        let listener: crate::model::CancelListener =
            serde_json::from_str(&value).context("decoding a cancel listener")?;
        if listener.expires_at.is_some_and(|at| tx.now > at) {
            continue;
        }
        let run_key = RunKey::new(tenant, &listener.run);
        let Some(run) = tx.journal.run(&run_key)? else {
            continue;
        };
        if run.status().is_terminal() {
            continue;
        }
        let matched = match (&listener.match_path, &listener.match_value) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(path), Some(expected)) => event.lookup(path).is_some_and(|v| v == expected),
        };
        if !matched {
            continue;
        }
        if let Some(condition) = &listener.condition {
            let Some(trigger) = tx.journal.run_events(&run_key)?.into_iter().next() else {
                continue;
            };
            let scope = crate::expr::Scope {
                event: &trigger,
                incoming: Some(event),
            };
            if !crate::expr::condition(condition, scope).unwrap_or(false) {
                continue;
            }
        }
        tracing::info!(run = %run_key, event = ?event.id, listener = ?key.replace('\0', "/"), "cancelOn matched");
        let error = ErrorRecord::fatal(
            ErrorName::Cancelled,
            format!("cancelled by event {} ({})", event.name, event.id),
        );
        cancel(tx, run, error)?;
    }
    Ok(())
}
