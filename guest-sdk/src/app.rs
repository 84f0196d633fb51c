//! Registration: the one list of an app's functions and their handlers.
//!
//! The host reads `functions()` once at upload and calls `handle` (or
//! `on_failure`) for each run; both come from the same [`App`] value, so a
//! handler cannot exist without being registered, nor be registered without
//! a handler.

use crate::bindings::stepwise::durable::types::{
    self as wit, FailureContext, FunctionConfig, RunContext, StepError, Trigger,
};
use crate::config::{
    Batch, CancelOn, Concurrency, Debounce, RateLimit, Singleton, Throttle, Timeouts,
};
use crate::{Error, Event, Step};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What a handler receives, as Inngest's `{ event, events, step, runId, attempt }`.
#[derive(Debug)]
pub struct Ctx<D = Value> {
    /// The triggering event (the first of a batch), its `data` read as `D`.
    pub event: Event<D>,
    /// Every event of the run (`[event]` unless events are batched).
    pub events: Vec<Event<D>>,
    /// Durable steps.
    pub step: Step,
    /// The run's id, the same on every replay.
    pub run_id: String,
    /// The attempt number of the current step, from 0.
    pub attempt: u32,
}

/// What a failure handler receives, as Inngest's `onFailure({ error, event, step })`.
#[derive(Debug)]
pub struct FailureCtx<D = Value> {
    /// Inngest's `inngest/function.failed` event: its data holds
    /// `function_id`, `run_id` (of the failed run), `error` and `event`.
    pub event: Event<Value>,
    /// The failed run's triggering event, its `data` read as `D`.
    pub original_event: Event<D>,
    /// The error the failed run ended with.
    pub error: Error,
    /// Durable steps (the failure handler is a run of its own).
    pub step: Step,
    /// The failure handler's own run id.
    pub run_id: String,
    /// The attempt number of the current step, from 0.
    pub attempt: u32,
}

/// A function's configuration, as the first argument of Inngest's
/// `createFunction`.
#[derive(Debug, Clone)]
pub struct Function {
    config: FunctionConfig,
}

impl Function {
    /// A function with this id (stable, unique within the tenant).
    pub fn new(id: impl Into<String>) -> Self {
        Function {
            config: FunctionConfig {
                id: id.into(),
                name: None,
                triggers: Vec::new(),
                retries: None,
                concurrency: Vec::new(),
                throttle: None,
                rate_limit: None,
                debounce: None,
                priority: None,
                batch_events: None,
                idempotency: None,
                cancel_on: Vec::new(),
                timeouts: None,
                singleton: None,
                on_failure: false,
            },
        }
    }

    /// A name for people; the id is shown without one.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Triggers a run for every event of this name (may be given many times).
    pub fn on_event(mut self, event: impl Into<String>) -> Self {
        self.config.triggers.push(Trigger::Event(wit::EventTrigger {
            event: event.into(),
            condition: None,
        }));
        self
    }

    /// Triggers a run for every event of this name for which `condition` (a
    /// CEL expression over `event`, Inngest's `if`) holds.
    pub fn on_event_if(mut self, event: impl Into<String>, condition: impl Into<String>) -> Self {
        self.config.triggers.push(Trigger::Event(wit::EventTrigger {
            event: event.into(),
            condition: Some(condition.into()),
        }));
        self
    }

    /// Triggers a run on a cron schedule, e.g. `"0 * * * *"` or
    /// `"TZ=Europe/Paris 0 9 * * 1-5"`. A run missed while the host was
    /// down starts once when it comes back.
    pub fn on_cron(mut self, schedule: impl Into<String>) -> Self {
        self.config.triggers.push(Trigger::Cron(schedule.into()));
        self
    }

    /// Retries per step after the first attempt, 0 to 20 (default 4).
    pub fn retries(mut self, retries: u32) -> Self {
        self.config.retries = Some(retries);
        self
    }

    /// Adds a concurrency limit (at most two).
    pub fn concurrency(mut self, limit: Concurrency) -> Self {
        self.config.concurrency.push(limit.0);
        self
    }

    /// Limits how many runs start per period.
    pub fn throttle(mut self, throttle: Throttle) -> Self {
        self.config.throttle = Some(throttle.0);
        self
    }

    /// Limits how many runs are accepted per period (the rest are skipped).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.config.rate_limit = Some(limit.0);
        self
    }

    /// Runs once per quiet window, with the last event.
    pub fn debounce(mut self, debounce: Debounce) -> Self {
        self.config.debounce = Some(debounce.0);
        self
    }

    /// Inngest's `priority.run`: a CEL expression over `event` giving seconds
    /// of head start in the queue (-600 to 600).
    pub fn priority(mut self, expression: impl Into<String>) -> Self {
        self.config.priority = Some(expression.into());
        self
    }

    /// Hands the handler many events at once.
    pub fn batch_events(mut self, batch: Batch) -> Self {
        self.config.batch_events = Some(batch.0);
        self
    }

    /// A CEL expression over `event`: a second event with the same value
    /// within 24 hours starts no run.
    pub fn idempotency(mut self, expression: impl Into<String>) -> Self {
        self.config.idempotency = Some(expression.into());
        self
    }

    /// Adds an event that cancels runs.
    pub fn cancel_on(mut self, cancel: CancelOn) -> Self {
        self.config.cancel_on.push(cancel.0);
        self
    }

    /// Bounds the time a run may wait to start and take to finish.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.config.timeouts = timeouts.0;
        self
    }

    /// At most one active run per key.
    pub fn singleton(mut self, singleton: Singleton) -> Self {
        self.config.singleton = Some(singleton.0);
        self
    }
}

type Handler = Box<dyn Fn(RunContext) -> Result<String, StepError>>;
type FailureHandler = Box<dyn Fn(FailureContext) -> Result<String, StepError>>;

struct Registered {
    function: Function,
    handler: Handler,
    on_failure: Option<FailureHandler>,
}

/// An app: every function it serves, each with its handler.
#[derive(Default)]
pub struct App {
    functions: Vec<Registered>,
}

impl App {
    /// An app with no functions yet.
    pub fn new() -> Self {
        App::default()
    }

    /// Registers `handler` as `function`. `D` is the type of the events'
    /// `data`; `O` is the run's output, any serde type.
    pub fn function<D, O, H>(mut self, function: Function, handler: H) -> Self
    where
        D: DeserializeOwned + 'static,
        O: Serialize,
        H: Fn(Ctx<D>) -> Result<O, Error> + 'static,
    {
        let run = move |ctx: RunContext| -> Result<String, StepError> {
            let ctx = into_ctx::<D>(ctx).map_err(|e| e.to_wit())?;
            output(handler(ctx))
        };
        self.functions.push(Registered {
            function,
            handler: Box::new(run),
            on_failure: None,
        });
        self
    }

    /// Registers `handler` as the failure handler (Inngest's `onFailure`) of
    /// the function registered just before: it runs, as a durable run of
    /// its own, when a run of that function fails for good.
    ///
    /// # Panics
    /// If no function was registered before it.
    pub fn on_failure<D, O, H>(mut self, handler: H) -> Self
    where
        D: DeserializeOwned + 'static,
        O: Serialize,
        H: Fn(FailureCtx<D>) -> Result<O, Error> + 'static,
    {
        let last = self
            .functions
            .last_mut()
            .expect("on_failure must follow the .function(...) it handles the failures of");
        last.function.config.on_failure = true;
        last.on_failure = Some(Box::new(move |ctx: FailureContext| {
            let ctx = into_failure_ctx::<D>(ctx).map_err(|e| e.to_wit())?;
            output(handler(ctx))
        }));
        self
    }

    /// The registration the host reads at upload.
    pub fn configs(&self) -> Vec<FunctionConfig> {
        self.functions
            .iter()
            .map(|r| r.function.config.clone())
            .collect()
    }

    fn find(&self, function_id: &str) -> Result<&Registered, StepError> {
        self.functions
            .iter()
            .find(|r| r.function.config.id == function_id)
            .ok_or_else(|| {
                Error::non_retriable(format!(
                    "this app has no function {function_id:?}; it was probably removed from the app's registration"
                ))
                .to_wit()
            })
    }

    /// Runs the handler of `function_id`.
    pub fn handle(&self, function_id: &str, ctx: RunContext) -> Result<String, StepError> {
        (self.find(function_id)?.handler)(ctx)
    }

    /// Runs the failure handler of `function_id`.
    pub fn handle_failure(
        &self,
        function_id: &str,
        ctx: FailureContext,
    ) -> Result<String, StepError> {
        match &self.find(function_id)?.on_failure {
            Some(handler) => handler(ctx),
            None => Err(Error::non_retriable(format!(
                "function {function_id:?} has no failure handler in this version of the app"
            ))
            .to_wit()),
        }
    }
}

fn output<O: Serialize>(result: Result<O, Error>) -> Result<String, StepError> {
    let output = result.map_err(|e| e.to_wit())?;
    serde_json::to_string(&output).map_err(|e| {
        Error::non_retriable(format!("the function's output is not JSON: {e}")).to_wit()
    })
}

fn into_ctx<D: DeserializeOwned>(ctx: RunContext) -> Result<Ctx<D>, Error> {
    let events = ctx
        .events
        .into_iter()
        .map(Event::from_wit)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Ctx {
        event: Event::from_wit(ctx.event)?,
        events,
        step: Step::new(),
        run_id: ctx.run_id,
        attempt: ctx.attempt,
    })
}

fn into_failure_ctx<D: DeserializeOwned>(ctx: FailureContext) -> Result<FailureCtx<D>, Error> {
    Ok(FailureCtx {
        event: Event::from_wit(ctx.event)?,
        original_event: Event::from_wit(ctx.original_event)?,
        error: Error::from_final_step_error(ctx.error),
        step: Step::new(),
        run_id: ctx.run_id,
        attempt: ctx.attempt,
    })
}
