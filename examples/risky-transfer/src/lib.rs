//! Inngest's failure-handler pattern: roll back a transfer that failed for
//! good.
//!
//! `bank/transfer.init` with `{"transferId": "t-1", "amount": 50}` runs
//! `risky-transfer`: it debits the source, then credits the destination.
//! With `"failCredit": true` the credit fails on every attempt; after its
//! retry the run fails, and `on_failure` runs as a run of its own: it
//! reverses the debit and notifies an admin, each a durable step.

use serde_json::{Value, json};
use stepwise_sdk::{App, Ctx, Error, FailureCtx, Function, export_app};

fn app() -> App {
    App::new()
        .function(
            Function::new("risky-transfer")
                .name("Risky transfer")
                .on_event("bank/transfer.init")
                .retries(1),
            transfer,
        )
        .on_failure(rollback)
}

export_app!(app);

fn transfer(ctx: Ctx) -> Result<Value, Error> {
    let data = ctx.event.data.clone();
    let debited: Value = ctx.step.run("debit-source", || {
        Ok::<_, Error>(json!({"transferId": data["transferId"], "debited": data["amount"]}))
    })?;
    let credited: Value = ctx.step.run("credit-destination", || {
        if data["failCredit"] == json!(true) {
            return Err(Error::new("the destination bank is unavailable"));
        }
        Ok(json!({"transferId": data["transferId"], "credited": data["amount"]}))
    })?;
    Ok(json!({"debited": debited, "credited": credited}))
}

fn rollback(ctx: FailureCtx) -> Result<Value, Error> {
    let original = ctx.original_event.data.clone();
    let reversed: Value = ctx.step.run("rollback-funds", || {
        Ok::<_, Error>(json!({"reversed": original["transferId"], "amount": original["amount"]}))
    })?;
    let message = format!("Transfer failed: {}", ctx.error.message());
    let alert: Value = ctx
        .step
        .run("notify-admin", || Ok::<_, Error>(json!({"alert": message})))?;
    Ok(json!({"rolled_back": reversed, "notified": alert}))
}
