//! A cron function that sends an event and invokes another function.
//!
//! `daily-digest` runs every day at 09:00 in Paris (Inngest's
//! `TZ=Europe/Paris 0 9 * * *`; a run missed while the host was down starts
//! once when it comes back) and on demand with `digest/requested`. It
//! collects the day's figures, announces them with `step.send_event` (sent
//! once, whatever the replays) and has `render-digest` turn them into text
//! with `step.invoke`, waiting for its result.

use serde_json::{Value, json};
use stepwise_sdk::{App, Ctx, Error, Function, Invoke, NewEvent, export_app};

fn app() -> App {
    App::new()
        .function(
            Function::new("daily-digest")
                .name("Daily digest")
                .on_cron("TZ=Europe/Paris 0 9 * * *")
                .on_event("digest/requested"),
            daily_digest,
        )
        .function(
            Function::new("render-digest").on_event("digest/render"),
            render_digest,
        )
}

export_app!(app);

fn daily_digest(ctx: Ctx) -> Result<Value, Error> {
    let orders = ctx.event.data["orders"].as_u64().unwrap_or(0);
    let stats: Value = ctx.step.run("collect-stats", || {
        Ok::<_, Error>(json!({"orders": orders, "source": ctx.event.name}))
    })?;
    let sent = ctx.step.send_event(
        "announce",
        [NewEvent::new("digest/ready", json!({"orders": orders}))],
    )?;
    let text: String = ctx.step.invoke(
        "render",
        Invoke::function("render-digest")
            .data(&stats)
            .timeout("1m"),
    )?;
    Ok(json!({"digest": text, "announced": sent.len()}))
}

fn render_digest(ctx: Ctx) -> Result<String, Error> {
    let orders = ctx.event.data["orders"].as_u64().unwrap_or(0);
    ctx.step
        .run("render", || Ok::<_, Error>(format!("{orders} orders today")))
}
