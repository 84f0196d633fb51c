//! Registration: the one list of an app's functions and their handlers.
//!
//! The host reads `functions()` once at upload and calls `handle` for each
//! run; both come from the same [`App`] value, so a handler cannot exist
//! without being registered, nor be registered without a handler.

use crate::bindings::stepwise::durable::types::{FunctionConfig, RunContext, StepError, Trigger};
use crate::{Error, Event, Step};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What a handler receives, as Inngest's `{ event, events, step, runId, attempt }`.
#[derive(Debug)]
pub struct Ctx<D = Value> {
    /// The triggering event, its `data` read as `D`.
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

/// A function's configuration, as the first argument of Inngest's
/// `createFunction`.
#[derive(Debug, Clone)]
pub struct Function {
    id: String,
    name: Option<String>,
    triggers: Vec<Trigger>,
    retries: Option<u32>,
}

impl Function {
    /// A function with this id (stable, unique within the tenant).
    pub fn new(id: impl Into<String>) -> Self {
        Function {
            id: id.into(),
            name: None,
            triggers: Vec::new(),
            retries: None,
        }
    }

    /// A name for people; the id is shown without one.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Triggers a run for every event of this name (may be given many times).
    pub fn on_event(mut self, event: impl Into<String>) -> Self {
        self.triggers.push(Trigger::Event(event.into()));
        self
    }

    /// Retries per step after the first attempt, 0 to 20 (default 4).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    fn to_wit(&self) -> FunctionConfig {
        FunctionConfig {
            id: self.id.clone(),
            name: self.name.clone(),
            triggers: self.triggers.clone(),
            retries: self.retries,
        }
    }
}

type Handler = Box<dyn Fn(RunContext) -> Result<String, StepError>>;

/// An app: every function it serves, each with its handler.
#[derive(Default)]
pub struct App {
    functions: Vec<(Function, Handler)>,
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
            let output = handler(ctx).map_err(|e| e.to_wit())?;
            serde_json::to_string(&output).map_err(|e| {
                Error::non_retriable(format!("the function's output is not JSON: {e}")).to_wit()
            })
        };
        self.functions.push((function, Box::new(run)));
        self
    }

    /// The registration the host reads at upload.
    pub fn configs(&self) -> Vec<FunctionConfig> {
        self.functions.iter().map(|(f, _)| f.to_wit()).collect()
    }

    /// Runs the handler of `function_id`.
    pub fn handle(&self, function_id: &str, ctx: RunContext) -> Result<String, StepError> {
        match self.functions.iter().find(|(f, _)| f.id == function_id) {
            Some((_, handler)) => handler(ctx),
            None => Err(Error::non_retriable(format!(
                "this app has no function {function_id:?}; it was probably removed from the app's registration"
            ))
            .to_wit()),
        }
    }
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
