//! Admission: what an event does to one function, under its flow control.
//!
//! In order, as Inngest applies them: the trigger's `if`; `idempotency`
//! (a key seen in the last 24 hours starts nothing); `rateLimit` (over the
//! limit, the run is recorded as skipped); `debounce` and `batchEvents`
//! (the event joins a run that is held back); `singleton` (skip the new run,
//! or cancel the active one); then the run is created with its queue place
//! (concurrency keys, throttle, priority), its `cancelOn` listeners and its
//! start timeout.

use super::Tx;
use super::ending;
use crate::expr::{self, Scope};
use crate::journal::Op;
use crate::metrics::{FunctionLabels, Observation};
use crate::model::ErrorName;
use crate::model::{
    CancelListener, ConcurrencyKey, ConcurrencyScope, ErrorRecord, EventRecord, FunctionRecord,
    IndexKind, IndexRef, QueueSpec, RUN_LEVEL_SEQ, RunKey, RunRecord, RunState, RunStatus,
    SingletonMode, ThrottleKey, Timer, TimerKind,
};
use crate::scheduler::gcra;
use anyhow::{Context, Result};

/// How long an idempotency key holds, as in Inngest.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Inngest's `priority.run` bounds, in seconds.
const PRIORITY_BOUND_S: f64 = 600.0;

/// Whether one of `function`'s triggers for `event`'s name lets it through
/// (no `if`, or an `if` that holds).
pub fn triggered(function: &FunctionRecord, event: &EventRecord) -> bool {
    function
        .triggers
        .iter()
        .filter(|t| t.event.as_deref() == Some(event.name.as_str()))
        .any(|t| match &t.condition {
            None => true,
            Some(condition) => evaluate_condition(condition, Scope::event(event), &function.id),
        })
}

fn evaluate_condition(source: &str, scope: Scope<'_>, function: &str) -> bool {
    expr::condition(source, scope).unwrap_or_else(|error| {
        tracing::warn!(function, error = ?error.to_string(), "an expression failed; treating it as false");
        false
    })
}

/// A key expression's value for `event` (empty when absent or failing).
fn key_of(source: Option<&str>, event: &EventRecord, function: &str) -> String {
    let Some(source) = source else {
        return String::new();
    };
    expr::key(source, Scope::event(event)).unwrap_or_else(|error| {
        tracing::warn!(function, error = ?error.to_string(), "a key expression failed; using the empty key");
        String::new()
    })
}

fn function_key(function: &FunctionRecord, key: &str) -> String {
    format!("{}\0{}\0{key}", function.tenant, function.id)
}

/// Admits `event` for `function` (whose trigger matched).
pub fn admit(tx: &mut Tx<'_>, function: &FunctionRecord, event: &EventRecord) -> Result<()> {
    let flow = &function.flow;
    let id = function.id.as_str();
    if let Some(source) = &flow.idempotency {
        let key = function_key(function, &key_of(Some(source), event, id));
        let seen = tx
            .index(IndexKind::Idempotency, &key)?
            .and_then(|at| at.parse::<u64>().ok())
            .is_some_and(|at| tx.now.saturating_sub(at) < IDEMPOTENCY_WINDOW_MS);
        if seen {
            tracing::info!(function = id, event = ?event.id, "idempotency key seen in the last 24 h: no run");
            return Ok(());
        }
        tx.put_index(IndexKind::Idempotency, &key, tx.now.to_string());
    }
    if let Some(limit) = &flow.rate_limit {
        let key = function_key(function, &key_of(limit.key.as_deref(), event, id));
        let tat = tx
            .index(IndexKind::RateLimit, &key)?
            .and_then(|v| v.parse::<u64>().ok());
        match gcra(tat, tx.now, limit.limit, limit.period_ms, 0) {
            Ok(tat) => tx.put_index(IndexKind::RateLimit, &key, tat.to_string()),
            Err(_) => {
                let message = format!(
                    "rate limited: {} runs per {} ms are allowed{}",
                    limit.limit,
                    limit.period_ms,
                    if limit.key.is_some() {
                        " for this key"
                    } else {
                        ""
                    }
                );
                return skip(tx, function, event, ErrorName::RateLimited, message);
            }
        }
    }
    if let Some(debounce) = &flow.debounce {
        let key = function_key(function, &key_of(debounce.key.as_deref(), event, id));
        if let Some(mut run) = pending(tx, IndexKind::Debounce, &key)? {
            let deadline = debounce
                .timeout_ms
                .map(|t| run.created_at.saturating_add(t))
                .unwrap_or(u64::MAX);
            let wake_at = tx.now.saturating_add(debounce.period_ms).min(deadline);
            run.event_ids = vec![event.id.clone()];
            tx.ops
                .push(Op::PutRunEvents(run.key.clone(), vec![event.clone()]));
            reschedule(tx, run, wake_at);
            return Ok(());
        }
        return start(
            tx,
            function,
            vec![event.clone()],
            Some((IndexKind::Debounce, key, tx.now + debounce.period_ms)),
        );
    }
    if let Some(batch) = &flow.batch_events {
        let key = function_key(function, &key_of(batch.key.as_deref(), event, id));
        if let Some(mut run) = pending(tx, IndexKind::Batch, &key)? {
            let mut events = tx.journal.run_events(&run.key)?;
            events.push(event.clone());
            run.event_ids.push(event.id.clone());
            let full = events.len() >= batch.max_size as usize;
            tx.ops.push(Op::PutRunEvents(run.key.clone(), events));
            if full {
                close_pending(tx, &mut run, IndexKind::Batch, &key);
                let wake_at = tx.now;
                reschedule(tx, run, wake_at);
            } else {
                tx.put_run(run);
            }
            return Ok(());
        }
        if batch.max_size <= 1 {
            return start(tx, function, vec![event.clone()], None);
        }
        return start(
            tx,
            function,
            vec![event.clone()],
            Some((IndexKind::Batch, key, tx.now + batch.timeout_ms)),
        );
    }
    start(tx, function, vec![event.clone()], None)
}

/// The run held back under `key` (debounce or batch), if it has not started.
fn pending(tx: &Tx<'_>, kind: IndexKind, key: &str) -> Result<Option<RunRecord>> {
    let Some(run_id) = tx.index(kind, key)? else {
        return Ok(None);
    };
    let tenant = key.split('\0').next().unwrap_or_default();
    let run = tx.journal.run(&RunKey::new(tenant, run_id))?;
    Ok(run.filter(|r| r.status() == RunStatus::Queued && r.started_at.is_none()))
}

/// The window of a held-back run closes: later events start a new one.
fn close_pending(tx: &mut Tx<'_>, run: &mut RunRecord, kind: IndexKind, key: &str) {
    let at = IndexRef {
        kind,
        key: key.to_string(),
    };
    run.cleanup.retain(|r| *r != at);
    tx.delete_index(at);
}

/// Moves a held-back run's start to `wake_at` (now: at once).
fn reschedule(tx: &mut Tx<'_>, mut run: RunRecord, wake_at: u64) {
    if let Some(old) = run.wake_at() {
        tx.delete_timer(delayed_start(&run.key, old));
    }
    if wake_at <= tx.now {
        run.state = RunState::Queued { start_at: None };
        tx.effects.wake.push(run.key.clone());
    } else {
        run.state = RunState::Queued {
            start_at: Some(wake_at),
        };
        tx.put_timer(delayed_start(&run.key, wake_at));
    }
    tx.put_run(run);
}

/// The timer that starts a held-back run.
pub fn delayed_start(run: &RunKey, at: u64) -> Timer {
    Timer {
        at,
        key: run.clone(),
        seq: RUN_LEVEL_SEQ,
        kind: TimerKind::DelayedStart,
    }
}

/// A run that flow control turned away, recorded as skipped.
fn skip(
    tx: &mut Tx<'_>,
    function: &FunctionRecord,
    event: &EventRecord,
    reason: ErrorName,
    message: String,
) -> Result<()> {
    let key = RunKey::new(&function.tenant, crate::model::new_id());
    let mut run = RunRecord::new(key.clone(), function, std::slice::from_ref(event), tx.now);
    run.state = RunState::Skipped {
        ended_at: tx.now,
        error: ErrorRecord::fatal(reason, message),
    };
    tracing::info!(function = %function.id, run = %key, %reason, "run skipped");
    tx.ops.push(Op::PutRunEvents(key, vec![event.clone()]));
    tx.put_run(run);
    Ok(())
}

/// Starts a run of `function` for `events` (after the singleton check);
/// with `held`, the run waits until that time under that debounce or batch
/// key.
fn start(
    tx: &mut Tx<'_>,
    function: &FunctionRecord,
    events: Vec<EventRecord>,
    held: Option<(IndexKind, String, u64)>,
) -> Result<()> {
    let trigger = events.first().context("a run needs an event")?;
    let mut claim = None;
    if let Some(singleton) = &function.flow.singleton {
        let key = function_key(
            function,
            &key_of(singleton.key.as_deref(), trigger, &function.id),
        );
        if let Some(active) = tx.index(IndexKind::Singleton, &key)? {
            let active = tx
                .journal
                .run(&RunKey::new(&function.tenant, active))?
                .filter(|r| !r.status().is_terminal());
            if let Some(active) = active {
                match singleton.mode {
                    SingletonMode::Skip => {
                        let message = format!(
                            "run {} of this function is active with the same singleton key",
                            active.key.run
                        );
                        return skip(tx, function, trigger, ErrorName::Singleton, message);
                    }
                    SingletonMode::Cancel => {
                        let error = ErrorRecord::fatal(
                            ErrorName::Cancelled,
                            "a newer run with the same singleton key replaced this one",
                        );
                        ending::cancel(tx, active, error)?;
                    }
                }
            }
        }
        claim = Some(key);
    }
    let key = RunKey::new(&function.tenant, crate::model::new_id());
    let mut run = new_run(function, key, &events, tx.now);
    if let Some(claim) = claim {
        tx.put_index(IndexKind::Singleton, &claim, run.key.run.clone());
        run.cleanup.push(IndexRef {
            kind: IndexKind::Singleton,
            key: claim,
        });
    }
    if let Some((kind, index_key, wake_at)) = held {
        tx.put_index(kind, &index_key, run.key.run.clone());
        run.cleanup.push(IndexRef {
            kind,
            key: index_key,
        });
        run.state = RunState::Queued {
            start_at: Some(wake_at),
        };
    }
    launch(tx, function, run, events)
}

/// A queued run of `function` for `events`, with its queue place evaluated.
pub fn new_run(
    function: &FunctionRecord,
    key: RunKey,
    events: &[EventRecord],
    now: u64,
) -> RunRecord {
    let mut run = RunRecord::new(key, function, events, now);
    if let Some(trigger) = events.first() {
        run.queue = queue_spec(function, trigger);
    }
    run
}

/// Writes a new run: its record and events, its `cancelOn` listeners, its
/// start timeout, and its wake-up (now, or when held back until).
pub fn launch(
    tx: &mut Tx<'_>,
    function: &FunctionRecord,
    mut run: RunRecord,
    events: Vec<EventRecord>,
) -> Result<()> {
    let trigger = events.first().context("a run needs an event")?;
    tx.observe(Observation::RunStarted(FunctionLabels::of(&run)));
    for (n, cancel) in function.flow.cancel_on.iter().enumerate() {
        let listener = CancelListener {
            run: run.key.run.clone(),
            match_path: cancel.match_path.clone(),
            match_value: cancel
                .match_path
                .as_deref()
                .and_then(|path| trigger.lookup(path).cloned()),
            condition: cancel.condition.clone(),
            expires_at: cancel.timeout_ms.map(|t| tx.now.saturating_add(t)),
        };
        let key = format!(
            "{}\0{}\0{}\0{n}",
            function.tenant, cancel.event, run.key.run
        );
        tx.put_index(
            IndexKind::CancelOn,
            &key,
            serde_json::to_string(&listener).context("encoding a cancel listener")?,
        );
        run.cleanup.push(IndexRef {
            kind: IndexKind::CancelOn,
            key,
        });
    }
    if let Some(start_ms) = function.flow.timeouts.as_ref().and_then(|t| t.start_ms) {
        let from = run.wake_at().unwrap_or(tx.now).max(tx.now);
        tx.put_timer(Timer {
            at: from.saturating_add(start_ms),
            key: run.key.clone(),
            seq: RUN_LEVEL_SEQ,
            kind: TimerKind::StartTimeout,
        });
    }
    match run.wake_at() {
        Some(at) => tx.put_timer(delayed_start(&run.key, at)),
        None => tx.effects.wake.push(run.key.clone()),
    }
    tx.ops.push(Op::PutRunEvents(run.key.clone(), events));
    tx.put_run(run);
    Ok(())
}

/// Where a run of `function` for `trigger` waits in the queue.
pub fn queue_spec(function: &FunctionRecord, trigger: &EventRecord) -> QueueSpec {
    let flow = &function.flow;
    let id = function.id.as_str();
    let concurrency = flow
        .concurrency
        .iter()
        .map(|limit| {
            let value = key_of(limit.key.as_deref(), trigger, id);
            let key = match limit.scope {
                ConcurrencyScope::Function => format!("fn\0{}\0{id}\0{value}", function.tenant),
                ConcurrencyScope::Tenant => format!(
                    "tenant\0{}\0{}\0{value}",
                    function.tenant,
                    limit.key.as_deref().unwrap_or("")
                ),
            };
            ConcurrencyKey {
                key,
                limit: limit.limit,
            }
        })
        .collect();
    let throttle = flow.throttle.as_ref().map(|t| ThrottleKey {
        key: function_key(function, &key_of(t.key.as_deref(), trigger, id)),
        limit: t.limit,
        period_ms: t.period_ms,
        burst: t.burst,
    });
    let priority_ms = flow
        .priority
        .as_deref()
        .map(|source| {
            let seconds = expr::number(source, Scope::event(trigger)).unwrap_or_else(|error| {
                tracing::warn!(function = id, error = ?error.to_string(), "the priority expression failed; using 0");
                0.0
            });
            (seconds.clamp(-PRIORITY_BOUND_S, PRIORITY_BOUND_S) * 1000.0) as i64
        })
        .unwrap_or(0);
    QueueSpec {
        concurrency,
        throttle,
        priority_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_limit_in_a_burst_then_one_per_interval() {
        let mut tat = None;
        let mut allowed = 0;
        for _ in 0..30 {
            if let Ok(next) = gcra(tat, 1_000, 10, 60_000, 0) {
                tat = Some(next);
                allowed += 1;
            }
        }
        assert_eq!(allowed, 10);
        assert_eq!(gcra(tat, 1_000 + 5_999, 10, 60_000, 0), Err(7_000));
        assert!(gcra(tat, 1_000 + 6_000, 10, 60_000, 0).is_ok());
    }
}
