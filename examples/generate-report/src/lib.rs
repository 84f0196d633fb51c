//! Inngest's priority pattern: enterprise customers' reports go first.
//!
//! `report/requested` with `{"account": "a-1", "plan": "enterprise"}` runs
//! `generate-report`. Reports are built one at a time (`concurrency: 1`), so
//! a queue forms under load; `priority.run` gives enterprise requests 100
//! seconds of head start in it, so they overtake waiting free ones.

use serde_json::{Value, json};
use stepwise_sdk::{App, Concurrency, Ctx, Error, Function, export_app};

fn app() -> App {
    App::new().function(
        Function::new("generate-report")
            .name("Generate report")
            .on_event("report/requested")
            .concurrency(Concurrency::new(1))
            .priority("event.data.plan == 'enterprise' ? 100 : 0"),
        generate_report,
    )
}

export_app!(app);

fn generate_report(ctx: Ctx) -> Result<Value, Error> {
    let data = ctx.event.data.clone();
    let report: Value = ctx.step.run("build-report", || {
        Ok::<_, Error>(json!({"account": data["account"], "plan": data["plan"]}))
    })?;
    Ok(json!({"report": report}))
}
