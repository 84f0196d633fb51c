//! Event ingestion: accept events, start the runs they trigger, and resume
//! the runs waiting for them.
//!
//! Ingestion, waiter registration, wait timeouts and run cancellation all go
//! through one lock ([`Events::ordered`]), so they happen in one order: an
//! event accepted after a waiter was registered always finds it, and one
//! accepted before never does (Inngest's semantics, without its race between
//! events sent in quick succession and a waiter being set up).

mod parse;

pub use parse::{EventError, IncomingEvent, MAX_EVENT_BYTES, check_name, parse_events};

use crate::catalog::Catalog;
use crate::journal::{Batch, GroupCommit, Journal, Op};
use crate::model::{
    EventRecord, RunKey, RunRecord, RunStatus, StepStatus, Timer, TimerKind, WaitSpec, Waiter,
    now_ms,
};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// How long a sender's event id prevents a second event with that id from
/// starting anything, as in Inngest.
pub const DEDUPE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// What ingestion did.
#[derive(Debug, Default)]
pub struct Accepted {
    /// The id of every event of the request, in order (duplicates included).
    pub ids: Vec<String>,
    /// Runs created or resumed: the scheduler should look at them.
    pub wake: Vec<RunKey>,
}

/// Routes events to functions and waiters.
pub struct Events {
    journal: Arc<dyn Journal>,
    commit: GroupCommit,
    catalog: Arc<Catalog>,
    order: Mutex<()>,
}

impl Events {
    /// Routing over `catalog`, writing to `journal`.
    pub fn new(journal: Arc<dyn Journal>, commit: GroupCommit, catalog: Arc<Catalog>) -> Self {
        Events {
            journal,
            commit,
            catalog,
            order: Mutex::new(()),
        }
    }

    /// Runs `f` in the one order shared by ingestion, waiter registration and
    /// run transitions. Keep `f` short and free of awaits.
    pub fn ordered<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let _guard = self
            .order
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f()
    }

    /// Accepts `incoming` for `tenant`: stores each event, creates a run for
    /// every function it triggers, resolves every waiter it matches, and
    /// returns once all of that is on disk.
    pub async fn ingest(&self, tenant: &str, incoming: Vec<IncomingEvent>) -> Result<Accepted> {
        let accepted = self.ordered(|| {
            let now = now_ms();
            let mut accepted = Accepted::default();
            let mut batch: Batch = Vec::new();
            let mut seen_here = HashSet::new();
            let mut resolved = HashSet::new();
            for event in incoming {
                let sender_id = event.id.clone();
                let id = sender_id
                    .clone()
                    .unwrap_or_else(|| ulid::Ulid::new().to_string());
                accepted.ids.push(id.clone());
                if let Some(dedupe) = &sender_id {
                    let seen_before = self
                        .journal
                        .event_seen(tenant, dedupe)?
                        .is_some_and(|at| now.saturating_sub(at) < DEDUPE_WINDOW_MS);
                    if seen_before || !seen_here.insert(dedupe.clone()) {
                        tracing::info!(tenant, id = %dedupe, "duplicate event id: nothing started");
                        continue;
                    }
                }
                let record = EventRecord {
                    id,
                    name: event.name,
                    data: event.data,
                    user: event.user,
                    ts: event.ts.unwrap_or(now),
                    v: event.v,
                    received_at: now,
                };
                for function in self.catalog.triggered_by(tenant, &record.name) {
                    let key = RunKey::new(tenant, ulid::Ulid::new().to_string());
                    batch.push(Op::PutRun(RunRecord {
                        key: key.clone(),
                        app: function.app.clone(),
                        version: function.version.clone(),
                        function: function.id.clone(),
                        status: RunStatus::Queued,
                        event_ids: vec![record.id.clone()],
                        retries: function.retries,
                        attempt: 0,
                        wake_at: None,
                        created_at: now,
                        started_at: None,
                        ended_at: None,
                        output: None,
                        error: None,
                    }));
                    batch.push(Op::PutRunEvents(key.clone(), vec![record.clone()]));
                    accepted.wake.push(key);
                }
                for waiter in self.journal.waiters(tenant, &record.name)? {
                    if !wait_matches(&waiter.spec, &record)
                        || !resolved.insert((waiter.key.clone(), waiter.seq))
                    {
                        continue;
                    }
                    let output = serde_json::to_string(&record).context("encoding an event")?;
                    if self.resolve_wait(&waiter, Some(output), now, &mut batch)? {
                        accepted.wake.push(waiter.key.clone());
                    }
                }
                batch.push(Op::PutEvent {
                    tenant: tenant.to_string(),
                    event: record,
                    dedupe: sender_id.is_some(),
                });
            }
            self.journal.apply(batch)?;
            Ok(accepted)
        })?;
        self.commit.durable().await?;
        Ok(accepted)
    }

    /// Registers a waiter, with its step, timeout timer and run status, in
    /// the ingestion order: only events accepted after this can match it.
    /// Returns false (and writes nothing) if the run has ended meanwhile.
    pub fn register_wait(
        &self,
        run: RunRecord,
        waiter: Waiter,
        step: crate::model::StepRecord,
    ) -> Result<bool> {
        self.ordered(|| {
            let current = self.journal.run(&run.key)?;
            if current.is_none_or(|r| r.status.is_terminal()) {
                return Ok(false);
            }
            let timer = Timer {
                at: waiter.timeout_at,
                key: run.key.clone(),
                seq: waiter.seq,
                kind: TimerKind::WaitTimeout,
            };
            let key = run.key.clone();
            self.journal.apply(vec![
                Op::PutStep(key, step),
                Op::PutWaiter(waiter),
                Op::PutTimer(timer),
                Op::PutRun(run),
            ])?;
            Ok(true)
        })
    }

    /// Ends a wait whose timeout fired: its step completes with `null`.
    /// Returns whether the run should be resumed.
    pub fn wait_timed_out(&self, timer: &Timer) -> Result<bool> {
        self.ordered(|| {
            let mut batch = vec![Op::DeleteTimer(timer.clone())];
            let mut wake = false;
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
                wake = self.resolve_wait(&waiter, None, now_ms(), &mut batch)?;
            }
            self.journal.apply(batch)?;
            Ok(wake)
        })
    }

    /// Adds to `batch` what ends a wait: the step completes with the event
    /// (or `null` on timeout), the waiter and its timer go, the run is queued.
    fn resolve_wait(
        &self,
        waiter: &Waiter,
        event_json: Option<String>,
        now: u64,
        batch: &mut Batch,
    ) -> Result<bool> {
        batch.push(Op::DeleteWaiter(waiter.clone()));
        batch.push(Op::DeleteTimer(Timer {
            at: waiter.timeout_at,
            key: waiter.key.clone(),
            seq: waiter.seq,
            kind: TimerKind::WaitTimeout,
        }));
        let Some(mut step) = self.journal.step(&waiter.key, waiter.seq)? else {
            return Ok(false);
        };
        if step.status != StepStatus::Waiting {
            return Ok(false);
        }
        step.status = StepStatus::Completed;
        step.output = Some(event_json.unwrap_or_else(|| "null".into()));
        step.ended_at = Some(now);
        batch.push(Op::PutStep(waiter.key.clone(), step));
        let Some(mut run) = self.journal.run(&waiter.key)? else {
            return Ok(false);
        };
        if run.status.is_terminal() {
            return Ok(false);
        }
        run.status = RunStatus::Queued;
        batch.push(Op::PutRun(run));
        Ok(true)
    }
}

/// Whether `event` satisfies a wait (the name is already known to match):
/// with a `match` path, the value must exist in both events and be equal.
pub fn wait_matches(spec: &WaitSpec, event: &EventRecord) -> bool {
    match (&spec.match_path, &spec.match_value) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(path), Some(expected)) => lookup(event, path).is_some_and(|v| v == expected),
    }
}

/// The value at a dotted path (`data.orderId`, `event.data.items.0.id`) of
/// an event, as Inngest's `match` reads it.
pub fn lookup<'a>(event: &'a EventRecord, path: &str) -> Option<&'a Value> {
    let path = path.strip_prefix("event.").unwrap_or(path);
    let mut parts = path.split('.');
    let mut current: &Value = match parts.next()? {
        "data" => &event.data,
        "user" => event.user.as_ref()?,
        _ => return None,
    };
    for part in parts {
        current = match current {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    if current.is_null() {
        None
    } else {
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(data: Value) -> EventRecord {
        EventRecord {
            id: "e".into(),
            name: "shop/payment.success".into(),
            data,
            user: None,
            ts: 1,
            v: None,
            received_at: 1,
        }
    }

    #[test]
    fn match_compares_the_same_path_in_both_events() {
        let spec = |value: Option<Value>| WaitSpec {
            event: "shop/payment.success".into(),
            match_path: Some("data.orderId".into()),
            match_value: value,
        };
        let paid = event(json!({"orderId": "o-1", "amount": 5}));
        assert!(wait_matches(&spec(Some(json!("o-1"))), &paid));
        assert!(!wait_matches(&spec(Some(json!("o-2"))), &paid));
        assert!(
            !wait_matches(&spec(None), &paid),
            "absent in the trigger: nothing matches"
        );
        assert!(!wait_matches(&spec(Some(json!("o-1"))), &event(json!({}))));
        let any = WaitSpec {
            match_path: None,
            ..spec(None)
        };
        assert!(wait_matches(&any, &event(json!({}))));
    }

    #[test]
    fn lookup_walks_objects_and_arrays() {
        let e = event(json!({"items": [{"id": "a"}], "n": null}));
        assert_eq!(lookup(&e, "data.items.0.id"), Some(&json!("a")));
        assert_eq!(lookup(&e, "event.data.items.0.id"), Some(&json!("a")));
        assert_eq!(lookup(&e, "data.n"), None);
        assert_eq!(lookup(&e, "data.missing"), None);
        assert_eq!(lookup(&e, "name"), None);
    }
}
