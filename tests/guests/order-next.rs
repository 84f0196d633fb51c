// The next version of examples/process-order, shared by two test guests
// that differ only in `FIRST_STEP`: `order-compatible` makes the same step
// calls as the example (only its output changes), `order-breaking` renames
// the first step, so replaying a recorded run of the example diverges.

use serde_json::{Value, json};
use stepwise_sdk::{App, Ctx, Error, Function, WaitFor, export_app};

fn app() -> App {
    App::new().function(
        Function::new("process-order")
            .on_event("shop/order.created")
            .retries(3),
        process_order,
    )
}

export_app!(app);

fn process_order(ctx: Ctx) -> Result<Value, Error> {
    let order = ctx.event.data.clone();
    let user: Value = ctx.step.run(FIRST_STEP, || {
        Ok::<_, Error>(json!({"id": order["userId"], "email": format!("{}@example.com", order["userId"].as_str().unwrap_or("?"))}))
    })?;
    ctx.step.sleep(
        "wait-for-payment",
        order["paymentDelay"].as_str().unwrap_or("1h"),
    )?;
    let payment = ctx.step.wait_for_event(
        "wait-payment",
        WaitFor::event("shop/payment.success")
            .matching("data.orderId")
            .timeout(order["paymentTimeout"].as_str().unwrap_or("24h")),
    )?;
    let status = if payment.is_some() { "shipped" } else { "cancelled" };
    let name = if payment.is_some() { "ship-order" } else { "cancel-order" };
    ctx.step.run(name, || {
        Ok::<_, Error>(json!({"orderId": order["orderId"], "status": status, "user": user["id"], "version": "next"}))
    })
}
