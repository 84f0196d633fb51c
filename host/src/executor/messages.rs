//! Steps that talk to other runs: `send-event` and `invoke`.
//!
//! A sent event without an id of its own gets one made from the run, the
//! step and its position, and is de-duplicated by it like any sender's id:
//! if the host dies after storing the events but before journaling the
//! step, the replay sends them again and they start nothing twice.

use super::outcome::{Interrupt, host_fault};
use super::replay::Slot;
use super::state::{RunState, wit_error};
use super::step_calls::MAX_SUSPEND_MS;
use crate::model::ErrorName;
use crate::model::parse_event;
use crate::model::{ErrorRecord, StepKind, StepRecord, StepStatus};
use crate::runs::{Suspended, Transition};
use crate::wit::types::{EventPayload, StepError};
use serde_json::{Map, Value, json};
use wasmtime::Result;

type GuestResult<T> = std::result::Result<T, StepError>;

impl RunState {
    /// `send-event(id, events)`: checks the events and accepts them within
    /// the step; over the tenant's budget, the run waits and sends later.
    pub(super) async fn send_events(
        &mut self,
        id: String,
        events: Vec<EventPayload>,
    ) -> Result<GuestResult<Vec<String>>> {
        let now = self.now();
        let (seq, effective) = match self.enter_call(&id, StepKind::Send)? {
            Slot::Journaled(step) => return journaled(&step).map(|r| r.map(ids_of)),
            Slot::New { seq, id } => (seq, id),
        };
        let session = self.session()?;
        let run_id = session.run.key.run.clone();
        let tenant = session.run.key.tenant.clone();
        let max_event_bytes = session.limits.max_event_bytes;
        let mut incoming = Vec::with_capacity(events.len());
        let mut problem = None;
        for (index, payload) in events.into_iter().enumerate() {
            let default_id = format!("{run_id}.{seq}.{index}");
            match payload_to_event(index, payload, &default_id, max_event_bytes) {
                Ok(event) => incoming.push(event),
                Err(message) => {
                    problem = Some(message);
                    break;
                }
            }
        }
        if incoming.is_empty() && problem.is_none() {
            problem = Some("send_event was given no events; give at least one".into());
        }
        let per_second = session.limits.events_per_second;
        if problem.is_none() && per_second > 0 && incoming.len() > per_second as usize {
            problem = Some(format!(
                "it sends {} events at once, more than this tenant may send in a second ({per_second}); send them in smaller steps",
                incoming.len()
            ));
        }
        let (used, quota) = (
            {
                let services = self.session()?.services.clone();
                services
                    .runs
                    .storage_used(&tenant)
                    .await
                    .map_err(host_fault)?
            },
            self.session()?.limits.storage_bytes,
        );
        if problem.is_none() && used >= quota {
            problem = Some(format!(
                "StorageQuotaExceeded: this tenant stores {used} bytes of events and run journals, and its quota is {quota}"
            ));
        }
        if problem.is_none()
            && let Some(delay) = self.over_event_budget(&tenant, incoming.len()).await?
        {
            return self.send_later(delay).await;
        }
        let mut step = StepRecord::new(seq, effective, StepKind::Send, StepStatus::Completed, now);
        step.ended_at = Some(now);
        if let Some(message) = problem {
            step.status = StepStatus::Failed;
            step.error = Some(ErrorRecord::fatal(
                ErrorName::SendEventError,
                format!("send_event {id:?}: {message}"),
            ));
        } else {
            let services = self.session()?.services.clone();
            let ids = services
                .runs
                .ingest(&tenant, incoming)
                .await
                .map_err(host_fault)?;
            step.output = Some(json!(ids).to_string());
        }
        self.record_step(step.clone()).await?;
        journaled(&step).map(|r| r.map(ids_of))
    }

    /// How long until `tenant` may send `count` more events (its events per
    /// second and queued runs bound sends from steps as they bound its
    /// event API), or `None` if it may now.
    async fn over_event_budget(&mut self, tenant: &str, count: usize) -> Result<Option<u64>> {
        let Some(session) = self.session.as_ref() else {
            return Ok(None);
        };
        let services = session.services.clone();
        services
            .runs
            .event_budget_wait(tenant, count)
            .await
            .map_err(host_fault)
    }

    /// Suspends the run until `delay_ms` from now, when it replays and sends
    /// again: over the tenant's budget, a send waits, as a throttled start
    /// does, and uses no attempt.
    async fn send_later(&mut self, delay_ms: u64) -> Result<GuestResult<Vec<String>>> {
        let wake_at = self.now().saturating_add(delay_ms);
        let run = &self.session()?.run;
        let (key, attempt) = (run.key.clone(), run.attempt);
        tracing::info!(run = %key, wake_at, "send_event over the tenant's budget; sending later");
        self.record(Transition::RetryLater {
            wake_at,
            attempt,
            error: None,
        })
        .await?;
        Err(Interrupt::Suspended.trap())
    }

    /// `invoke(id, function-id, data, timeout-ms)`: starts a run of the
    /// function and suspends until it ends or the timeout passes.
    pub(super) async fn invoke_function(
        &mut self,
        id: String,
        function_id: String,
        data: String,
        timeout_ms: Option<u64>,
    ) -> Result<GuestResult<String>> {
        let now = self.now();
        let (seq, effective) = match self.enter_call(&id, StepKind::Invoke)? {
            Slot::Journaled(step) if step.status == StepStatus::Waiting => {
                if self.session()?.dry_run {
                    return Err(super::outcome::replay_end());
                }
                self.record(Transition::Park(Suspended::Waiting)).await?;
                return Err(Interrupt::Suspended.trap());
            }
            Slot::Journaled(step) => return journaled(&step),
            Slot::New { seq, id } => (seq, id),
        };
        let services = self.session()?.services.clone();
        let tenant = self.session()?.run.key.tenant.clone();
        let function = services
            .runs
            .function(&tenant, &function_id)
            .await
            .map_err(host_fault)?;
        let data: Result<Value, String> = serde_json::from_str(&data)
            .map_err(|e| format!("its data is not JSON: {e}"))
            .and_then(|v: Value| match v {
                Value::Object(_) => Ok(v),
                Value::Null => Ok(Value::Object(Map::new())),
                _ => Err("its data must be a JSON object".into()),
            });
        let problem = match (&function, &data) {
            (None, _) => Some(format!(
                "there is no function {function_id:?} in this tenant; deploy it, or check the id"
            )),
            (_, Err(message)) => Some(message.clone()),
            _ if timeout_ms.is_some_and(|t| t > MAX_SUSPEND_MS) => {
                Some("its timeout is longer than a year, the longest allowed".into())
            }
            _ => None,
        };
        let mut step = StepRecord::new(seq, effective, StepKind::Invoke, StepStatus::Waiting, now);
        if let Some(message) = problem {
            step.status = StepStatus::Failed;
            step.ended_at = Some(now);
            step.error = Some(ErrorRecord::fatal(
                ErrorName::InvokeError,
                format!("invoke {id:?}: {message}"),
            ));
            self.record_step(step.clone()).await?;
            return journaled(&step);
        }
        let (Some(function), Ok(data)) = (function, data) else {
            unreachable!("checked above");
        };
        step.wake_at = timeout_ms.map(|t| now.saturating_add(t));
        self.record(Transition::Invoke {
            step,
            function: Box::new(function),
            data,
        })
        .await?;
        let key = &self.session()?.run.key;
        tracing::info!(run = %key, function = %function_id, "invoked; waiting for its end");
        Err(Interrupt::Suspended.trap())
    }

    /// Has the run state machine journal a finished step of this execution
    /// ([`Transition::StepDone`]), waits for the flush, and moves the
    /// logical clock to now.
    async fn record_step(&mut self, step: StepRecord) -> Result<()> {
        self.session()?.replay.record(step.clone());
        self.record(Transition::StepDone(step)).await?;
        let now = self.now();
        self.flags.set_logical_ms(now);
        Ok(())
    }
}

/// A journaled send or invoke, as the guest receives it.
fn journaled(step: &StepRecord) -> Result<GuestResult<String>> {
    match step.status {
        StepStatus::Completed => Ok(Ok(step.output.clone().unwrap_or_else(|| "null".into()))),
        _ => {
            let error = step
                .error
                .clone()
                .unwrap_or_else(|| ErrorRecord::fatal(ErrorName::Error, "the step failed"));
            Ok(Err(wit_error(&error)))
        }
    }
}

fn ids_of(json: String) -> Vec<String> {
    serde_json::from_str(&json).unwrap_or_default()
}

/// A payload as an incoming event, checked like one sent over HTTP.
fn payload_to_event(
    index: usize,
    payload: EventPayload,
    default_id: &str,
    max_bytes: usize,
) -> std::result::Result<crate::model::IncomingEvent, String> {
    let data: Value = serde_json::from_str(&payload.data)
        .map_err(|e| format!("event {index}: its data is not JSON: {e}"))?;
    let user = match &payload.user {
        Some(text) => Some(
            serde_json::from_str::<Value>(text)
                .map_err(|e| format!("event {index}: its user is not JSON: {e}"))?,
        ),
        None => None,
    };
    let mut object = Map::new();
    object.insert("name".into(), Value::String(payload.name));
    object.insert("data".into(), data);
    // An empty id is no id (as Inngest reads it): the made-up one keeps
    // the send from being repeated by a replay.
    let id = payload.id.filter(|id| !id.trim().is_empty());
    object.insert(
        "id".into(),
        Value::String(id.unwrap_or_else(|| default_id.to_string())),
    );
    if let Some(ts) = payload.ts {
        object.insert("ts".into(), json!(ts));
    }
    if let Some(user) = user {
        object.insert("user".into(), user);
    }
    parse_event(index, Value::Object(object), max_bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever text a guest passes as an event's name, data or user,
        /// the host makes an event of it or says what is wrong: never a
        /// panic, never an event without a name or with non-object data.
        #[test]
        fn any_payload_becomes_an_event_or_a_reason(
            name in ".{0,20}",
            data in prop_oneof![Just("{}".to_string()), Just("[1]".to_string()), ".{0,30}", "\\{\"[a-z]{1,5}\": [0-9]{1,5}\\}"],
            user in prop::option::of(prop_oneof![Just("{\"id\": 1}".to_string()), ".{0,10}"]),
            id in prop::option::of("[a-z0-9]{0,10}"),
        ) {
            let payload = EventPayload { name, data, id, ts: None, user };
            match payload_to_event(0, payload, "run.0.0", 512 * 1024) {
                Ok(event) => {
                    prop_assert!(!event.name.trim().is_empty());
                    prop_assert!(event.data.is_object());
                    prop_assert!(event.id.is_some(), "a sent event always has an id");
                }
                Err(message) => prop_assert!(message.starts_with("event 0")),
            }
        }

        /// A step output is accepted only if it is JSON within the size.
        #[test]
        fn step_outputs_are_json_within_the_size(text in ".{0,40}", max in 0usize..64) {
            let accepted = super::super::step_calls::check_output(&text, max).is_ok();
            let json = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            prop_assert_eq!(accepted, json && text.len() <= max);
        }
    }
}
