//! An app with one function per feature of Inngest's function model, for
//! the end-to-end tests of flow control, triggers, parallel steps,
//! send/invoke and failure handling.
//!
//! Every step body that matters calls `{url}/step/{run}/{step}` on the
//! test's loopback server (when the event carries a `url`), so a test sees
//! which bodies ran, in which order and how many at once, independently of
//! the host's own records. Periods are short so the tests are quick.

use serde_json::{Value, json};
use stepwise_sdk::{
    App, Batch, CancelOn, Concurrency, Ctx, Debounce, Error, FailureCtx, Function, Invoke,
    NewEvent, Singleton, Throttle, Timeouts, WaitFor, export_app, http,
};

fn app() -> App {
    App::new()
        .function(
            Function::new("limited")
                .on_event("flow/limited")
                .concurrency(Concurrency::new(2)),
            two_steps,
        )
        .function(
            Function::new("keyed")
                .on_event("flow/keyed")
                .concurrency(Concurrency::new(1).key("event.data.user")),
            one_step,
        )
        .function(
            Function::new("throttled")
                .on_event("flow/throttled")
                .throttle(Throttle::new(2, "2s")),
            one_step,
        )
        .function(
            Function::new("debounced")
                .on_event("flow/debounced")
                .debounce(Debounce::new("1s").key("event.data.id").timeout("4s")),
            echo,
        )
        .function(
            Function::new("batched")
                .on_event("flow/batched")
                .batch_events(Batch::new(3, "1s")),
            count_events,
        )
        .function(
            Function::new("idempotent")
                .on_event("flow/idempotent")
                .idempotency("event.data.orderId"),
            echo,
        )
        .function(
            Function::new("single-skip")
                .on_event("flow/single-skip")
                .singleton(Singleton::skip().key("event.data.id")),
            nap,
        )
        .function(
            Function::new("single-cancel")
                .on_event("flow/single-cancel")
                .singleton(Singleton::cancel().key("event.data.id")),
            nap,
        )
        .function(
            Function::new("cancellable")
                .on_event("flow/cancellable")
                .cancel_on(CancelOn::event("flow/cancel").matching("data.id"))
                .cancel_on(
                    CancelOn::event("flow/cancel-if")
                        .condition("async.data.reason == 'fraud' && async.data.id == event.data.id"),
                ),
            nap,
        )
        .function(
            Function::new("slow-start")
                .on_event("flow/slow-start")
                .concurrency(Concurrency::new(1))
                .timeouts(Timeouts::new().start("1s")),
            one_step,
        )
        .function(
            Function::new("slow-finish")
                .on_event("flow/slow-finish")
                .timeouts(Timeouts::new().finish("1s")),
            nap,
        )
        .function(
            Function::new("ranked")
                .on_event("flow/ranked")
                .concurrency(Concurrency::new(1))
                .priority("event.data.vip ? 60 : 0"),
            one_step,
        )
        .function(
            Function::new("filtered")
                .on_event_if("flow/filtered", "event.data.n > 5")
                .on_event("flow/any"),
            echo,
        )
        .function(Function::new("parent").on_event("flow/parent"), parent)
        .function(
            Function::new("child").on_event("flow/child").retries(0),
            child,
        )
        .function(Function::new("sender").on_event("flow/send"), sender)
        .function(Function::new("received").on_event("flow/sent"), echo)
        .function(Function::new("wait-if").on_event("flow/wait-if"), wait_if)
        .function(
            Function::new("fails").on_event("flow/fails").retries(0),
            fails,
        )
        .on_failure(recover)
        .function(
            Function::new("watch-failures").on_event_if(
                "inngest/function.failed",
                "event.data.function_id == 'fails'",
            ),
            echo,
        )
        .function(
            Function::new("fan").on_event("flow/fan").retries(2),
            fan,
        )
        .function(Function::new("burn").on_event("bench/burn"), burn)
}

export_app!(app);

/// Calls the loopback server for this step, if the event names one.
fn call(ctx: &Ctx, step: &str) -> Result<Value, Error> {
    let Some(url) = ctx.event.data["url"].as_str() else {
        return Ok(json!(step));
    };
    let response = http::get(&format!("{url}/step/{}/{step}", ctx.run_id))?;
    match response.status {
        200..=299 => response.json(),
        status => Err(Error::new(format!("HTTP {status}"))),
    }
}

fn one_step(ctx: Ctx) -> Result<Value, Error> {
    ctx.step.run("work", || call(&ctx, "work"))
}

fn two_steps(ctx: Ctx) -> Result<Value, Error> {
    let a: Value = ctx.step.run("a", || call(&ctx, "a"))?;
    let b: Value = ctx.step.run("b", || call(&ctx, "b"))?;
    Ok(json!([a, b]))
}

fn echo(ctx: Ctx) -> Result<Value, Error> {
    let data = ctx.event.data.clone();
    ctx.step.run("echo", || Ok::<_, Error>(data))
}

fn count_events(ctx: Ctx) -> Result<Value, Error> {
    let ids: Vec<Value> = ctx.events.iter().map(|e| e.data["n"].clone()).collect();
    ctx.step.run("count", || Ok::<_, Error>(json!(ids)))
}

/// A step, then a long sleep: a run that stays active.
fn nap(ctx: Ctx) -> Result<Value, Error> {
    let first: Value = ctx.step.run("before", || call(&ctx, "before"))?;
    ctx.step.sleep("nap", "10m")?;
    Ok(first)
}

fn parent(ctx: Ctx) -> Result<Value, Error> {
    let mut invoke = Invoke::function("child").data(&ctx.event.data);
    if let Some(timeout) = ctx.event.data["timeout"].as_str() {
        invoke = invoke.timeout(timeout);
    }
    match ctx.step.invoke::<Value>("call-child", invoke) {
        Ok(output) => Ok(json!({"child": output})),
        Err(error) => Ok(json!({"child_error": error.message()})),
    }
}

fn child(ctx: Ctx) -> Result<Value, Error> {
    if let Some(nap) = ctx.event.data["sleep"].as_str() {
        ctx.step.sleep("slow", nap)?;
    }
    let n = ctx.event.data["n"].as_i64().unwrap_or(0);
    let fail = ctx.event.data["fail"].as_bool().unwrap_or(false);
    ctx.step.run("double", || {
        if fail {
            return Err(Error::non_retriable("the child was told to fail"));
        }
        Ok(n * 2)
    })
    .map(|n| json!(n))
}

fn sender(ctx: Ctx) -> Result<Value, Error> {
    let n = ctx.event.data["n"].clone();
    let ids = ctx.step.send_event(
        "announce",
        [
            NewEvent::new("flow/sent", json!({"n": n, "copy": 1})),
            NewEvent::new("flow/sent", json!({"n": n, "copy": 2})),
        ],
    )?;
    // A step after the send: a crash or a retry here replays the send from
    // the journal instead of sending again.
    let after: Value = ctx.step.run("after", || call(&ctx, "after"))?;
    Ok(json!({"ids": ids, "after": after}))
}

fn wait_if(ctx: Ctx) -> Result<Value, Error> {
    let paid = ctx.step.wait_for_event(
        "big-payment",
        WaitFor::event("flow/paid")
            .matching("data.order")
            .condition("async.data.amount >= event.data.total")
            .timeout("1m"),
    )?;
    Ok(json!(paid.map(|e| e.data)))
}

fn fails(ctx: Ctx) -> Result<Value, Error> {
    ctx.step.run("doomed", || {
        Err::<Value, _>(Error::new(format!("failing for {}", ctx.event.data["id"])))
    })
}

fn recover(ctx: FailureCtx) -> Result<Value, Error> {
    let original = ctx.original_event.data.clone();
    let failed_run = ctx.event.data["run_id"].clone();
    let message = ctx.error.message().to_string();
    ctx.step.run("cleanup", || {
        Ok::<_, Error>(json!({"id": original["id"], "failed_run": failed_run, "error": message}))
    })
}

/// Parallel branches that call the loopback server (the test delays or
/// fails them to watch them overlap and retry).
fn fan(ctx: Ctx) -> Result<Value, Error> {
    let count = ctx.event.data["branches"].as_u64().unwrap_or(3);
    let outcomes = ctx.step.parallel((0..count).map(|i| {
        let id = format!("branch-{i}");
        let ctx = &ctx;
        (id.clone(), move || call(ctx, &id))
    }));
    let outcomes: Vec<Value> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|e| json!({"failed": e.message()})))
        .collect();
    let (left, right) = ctx.step.join((
        ("left", || Ok::<_, Error>(1u32)),
        ("right", || Ok::<_, Error>("two".to_string())),
    ));
    Ok(json!({"branches": outcomes, "join": [left?, right?]}))
}

/// CPU-bound branches for the benchmark: `branches` of them, each spinning
/// `rounds` rounds of a hash.
fn burn(ctx: Ctx) -> Result<Value, Error> {
    let branches = ctx.event.data["branches"].as_u64().unwrap_or(2);
    let rounds = ctx.event.data["rounds"].as_u64().unwrap_or(1_000_000);
    let parallel = ctx.event.data["parallel"].as_bool().unwrap_or(true);
    let spin = |seed: u64| {
        let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        for _ in 0..rounds {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        Ok::<_, Error>(x)
    };
    let results: Vec<u64> = if parallel {
        ctx.step
            .parallel((0..branches).map(|i| (format!("burn-{i}"), move || spin(i))))
            .into_iter()
            .collect::<Result<_, _>>()?
    } else {
        (0..branches)
            .map(|i| ctx.step.run(&format!("burn-{i}"), || spin(i)))
            .collect::<Result<_, _>>()?
    };
    Ok(json!(results.iter().fold(0u64, |a, b| a ^ b)))
}
