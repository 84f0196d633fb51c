//! A cron function that fires every two seconds, for the test of durable
//! cron scheduling (a run missed while the host is down starts once when it
//! comes back, never twice). Its own app, so that no other test's host
//! ticks.

use serde_json::{Value, json};
use stepwise_sdk::{App, Ctx, Error, Function, export_app};

fn app() -> App {
    App::new().function(Function::new("tick").on_cron("*/2 * * * * *"), tick)
}

export_app!(app);

fn tick(ctx: Ctx) -> Result<Value, Error> {
    let scheduled = ctx.event.ts;
    ctx.step
        .run("tick", || Ok::<_, Error>(json!({"scheduled": scheduled})))
}
