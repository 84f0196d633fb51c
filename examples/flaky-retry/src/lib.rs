//! Retries: a step that fails twice and then succeeds, and one that throws
//! `NonRetriableError` and stops at once.
//!
//! `flaky/charge.requested` runs `flaky-charge`: its `charge` step fails on
//! attempts 0 and 1 and succeeds on attempt 2. `flaky/validate.requested`
//! runs `strict-validate`: its `validate` step throws `NonRetriableError`, so
//! the run fails after one attempt.

use serde::Serialize;
use serde_json::Value;
use stepwise_sdk::{App, Ctx, Error, Function, NonRetriableError, export_app};

fn app() -> App {
    App::new()
        .function(
            Function::new("flaky-charge")
                .on_event("flaky/charge.requested")
                .retries(4),
            flaky_charge,
        )
        .function(
            Function::new("strict-validate")
                .on_event("flaky/validate.requested")
                .retries(4),
            strict_validate,
        )
}

export_app!(app);

#[derive(Debug, Serialize)]
struct Charged {
    charged_on_attempt: u32,
}

fn flaky_charge(ctx: Ctx) -> Result<Charged, Error> {
    // `ctx.attempt` is the attempt of the step being run: 0, then 1, then 2.
    let attempt = ctx.attempt;
    let charged_on: u32 = ctx.step.run("charge", || {
        if attempt < 2 {
            eprintln!("charge failed on attempt {attempt}");
            return Err(Error::new(format!(
                "payment gateway unavailable (attempt {attempt})"
            )));
        }
        Ok(attempt)
    })?;
    Ok(Charged {
        charged_on_attempt: charged_on,
    })
}

fn strict_validate(ctx: Ctx) -> Result<Value, Error> {
    ctx.step.run("validate", || {
        Err::<Value, _>(NonRetriableError::new(format!(
            "invalid payload: {}",
            ctx.event.data
        )))
    })
}
