//! A scripted app for the end-to-end tests and the benchmark.
//!
//! `probe/script` runs the list of operations in its data, in order; step
//! bodies call a loopback HTTP server the test owns (`url`), which counts
//! every body execution and decides its outcome. `bench/ten-steps` makes ten
//! small steps with no I/O.

use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};
use stepwise_sdk::{App, Ctx, Error, Function, NonRetriableError, WaitFor, export_app, http};

fn app() -> App {
    App::new()
        .function(
            Function::new("script").on_event("probe/script").retries(3),
            script,
        )
        .function(
            Function::new("ten-steps").on_event("bench/ten-steps"),
            ten_steps,
        )
}

export_app!(app);

#[derive(Debug, Deserialize)]
struct Script {
    #[serde(default)]
    url: String,
    ops: Vec<Op>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    /// A step whose body calls `{url}/step/{run}/{id}`; 5xx fails it
    /// (retriable), 4xx fails it for good, 2xx returns the JSON body.
    Run(String),
    /// Like `run`, but a final failure is caught by the handler and
    /// returned as `{"caught": message}` instead of failing the run.
    RunCatch(String),
    /// A step with no I/O returning its id.
    Local(String),
    /// Like `run`, holding `mb` MiB of memory (every page touched) while the
    /// body calls the server.
    Hog { mb: usize, step: String },
    /// `step.sleep(id, duration)`.
    Sleep { id: String, duration: String },
    /// `step.wait_for_event(id, ...)`.
    Wait {
        id: String,
        event: String,
        #[serde(default)]
        matching: Option<String>,
        timeout: String,
    },
    /// Print a line outside any step.
    Print(String),
    /// Try an HTTP request outside any step; record what happened.
    HttpOutside,
    /// A step whose id carries the wall clock read outside steps: stable
    /// across replays only if that clock is the run's logical time.
    ClockStep(String),
    /// Likewise with a number from `wasi:random` drawn outside steps.
    RandomStep(String),
    /// A step whose id carries the attempt number: not deterministic.
    AttemptStep(String),
    /// Fail the handler (outside steps) with a retriable error.
    Fail(String),
    /// Return a handler error that stops at once.
    FailFatal(String),
    /// Panic (trap) inside a step body.
    PanicInStep(String),
    /// `std::thread::sleep` for `ms`, inside step `step` or outside steps.
    ThreadSleep {
        ms: u64,
        #[serde(default)]
        step: Option<String>,
    },
}

fn script(ctx: Ctx<Script>) -> Result<Value, Error> {
    let step = &ctx.step;
    let url = ctx.event.data.url.trim_end_matches('/');
    let mut results = Vec::new();
    for op in &ctx.event.data.ops {
        let result = match op {
            Op::Run(id) => {
                let target = format!("{url}/step/{}/{id}", ctx.run_id);
                step.run(id, || call(&target))?
            }
            Op::RunCatch(id) => {
                let target = format!("{url}/step/{}/{id}", ctx.run_id);
                match step.run(id, || call(&target)) {
                    Ok(value) => value,
                    Err(error) => json!({ "caught": error.message() }),
                }
            }
            Op::Local(id) => step.run(id, || Ok::<_, Error>(json!(id)))?,
            Op::Hog { mb, step: id } => {
                let target = format!("{url}/step/{}/{id}", ctx.run_id);
                step.run(id, || {
                    let held = std::hint::black_box(vec![1u8; mb << 20]);
                    let answer = call(&target);
                    std::hint::black_box(&held);
                    answer
                })?
            }
            Op::Sleep { id, duration } => {
                step.sleep(id, duration.as_str())?;
                json!(null)
            }
            Op::Wait {
                id,
                event,
                matching,
                timeout,
            } => {
                let mut wait = WaitFor::event(event).timeout(timeout.as_str());
                if let Some(path) = matching {
                    wait = wait.matching(path);
                }
                match step.wait_for_event(id, wait)? {
                    Some(event) => json!({ "name": event.name, "data": event.data }),
                    None => json!(null),
                }
            }
            Op::Print(text) => {
                println!("{text}");
                json!(null)
            }
            Op::HttpOutside => match http::get(&format!("{url}/outside")) {
                Ok(response) => json!({ "status": response.status }),
                Err(error) => json!({ "error": error.message() }),
            },
            Op::ClockStep(prefix) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis();
                step.run(&format!("{prefix}-{now}"), || {
                    Ok::<_, Error>(json!(now as u64))
                })?
            }
            Op::RandomStep(prefix) => {
                let n = wasip2::random::random::get_random_u64();
                step.run(&format!("{prefix}-{n}"), || {
                    Ok::<_, Error>(json!(n.to_string()))
                })?
            }
            Op::AttemptStep(prefix) => {
                let id = format!("{prefix}-{}", ctx.attempt);
                let target = format!("{url}/step/{}/{prefix}", ctx.run_id);
                step.run(&id, || call(&target))?
            }
            Op::Fail(message) => return Err(Error::new(message)),
            Op::FailFatal(message) => return Err(NonRetriableError::new(message).into()),
            Op::ThreadSleep { ms, step: None } => {
                std::thread::sleep(std::time::Duration::from_millis(*ms));
                json!(null)
            }
            Op::ThreadSleep { ms, step: Some(id) } => step.run(id, || {
                std::thread::sleep(std::time::Duration::from_millis(*ms));
                Ok::<_, Error>(json!(ms))
            })?,
            Op::PanicInStep(id) => step.run(id, || -> Result<Value, Error> {
                panic!("deliberate panic in {id}")
            })?,
        };
        results.push(result);
    }
    Ok(Value::Array(results))
}

fn call(url: &str) -> Result<Value, Error> {
    let response = http::get(url)?;
    match response.status {
        200..=299 => response.json(),
        400..=499 => {
            Err(
                NonRetriableError::new(format!("HTTP {}: {}", response.status, response.text()?))
                    .into(),
            )
        }
        status => Err(Error::new(format!("HTTP {status}: {}", response.text()?))),
    }
}

fn ten_steps(ctx: Ctx) -> Result<u64, Error> {
    let mut total = 0;
    for i in 0..10u64 {
        total += ctx.step.run(&format!("step-{i}"), || Ok::<_, Error>(i))?;
    }
    Ok(total)
}
