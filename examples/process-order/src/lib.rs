//! Inngest's process-order pattern: a step, a durable sleep, a wait for a
//! matching event, and a branch on its outcome.
//!
//! Send `shop/order.created` with `{"orderId": "o-1", "userId": "u-1"}`, then
//! `shop/payment.success` with `{"orderId": "o-1"}` to see the order shipped;
//! send nothing to see it cancelled when the wait times out. For trying it out,
//! the order may carry `paymentDelay` and `paymentTimeout` to shorten the
//! one-hour sleep and the 24-hour wait.

use serde::{Deserialize, Serialize};
use stepwise_sdk::{App, Ctx, Error, Function, NonRetriableError, WaitFor, export_app};

fn app() -> App {
    App::new().function(
        Function::new("process-order")
            .name("Process order")
            .on_event("shop/order.created")
            .retries(3),
        process_order,
    )
}

export_app!(app);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderCreated {
    order_id: String,
    user_id: String,
    #[serde(default = "one_hour")]
    payment_delay: String,
    #[serde(default = "one_day")]
    payment_timeout: String,
}

fn one_hour() -> String {
    "1h".into()
}

fn one_day() -> String {
    "24h".into()
}

#[derive(Debug, Serialize, Deserialize)]
struct User {
    id: String,
    name: String,
    email: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    order_id: String,
    status: String,
    detail: String,
}

fn process_order(ctx: Ctx<OrderCreated>) -> Result<Outcome, Error> {
    let order = &ctx.event.data;
    let step = &ctx.step;

    // 1. Step: load the user (retried with backoff if it fails).
    let user: User = step.run("get-user", || db_get_user(&order.user_id))?;

    // 2. Durable pause: no instance stays in memory while the run sleeps.
    step.sleep("wait-for-payment", order.payment_delay.as_str())?;

    // 3. Wait for the payment of this order (same `data.orderId`).
    let payment = step.wait_for_event(
        "wait-payment",
        WaitFor::event("shop/payment.success")
            .matching("data.orderId")
            .timeout(order.payment_timeout.as_str()),
    )?;

    // 4. Branch on the outcome.
    let outcome = match payment {
        None => step.run("cancel-order", || cancel(&order.order_id, &user))?,
        Some(payment) => step.run("ship-order", || ship(&order.order_id, &user, &payment.data))?,
    };
    println!("order {} {}", outcome.order_id, outcome.status);
    Ok(outcome)
}

/// Stands in for a database read.
fn db_get_user(user_id: &str) -> Result<User, NonRetriableError> {
    if user_id.is_empty() {
        return Err(NonRetriableError::new("the order has no userId"));
    }
    Ok(User {
        id: user_id.to_string(),
        name: format!("User {user_id}"),
        email: format!("{user_id}@example.com"),
    })
}

fn cancel(order_id: &str, user: &User) -> Result<Outcome, Error> {
    Ok(Outcome {
        order_id: order_id.to_string(),
        status: "cancelled".into(),
        detail: format!("no payment arrived; {} notified", user.email),
    })
}

fn ship(order_id: &str, user: &User, payment: &serde_json::Value) -> Result<Outcome, Error> {
    let amount = payment
        .get("amount")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    Ok(Outcome {
        order_id: order_id.to_string(),
        status: "shipped".into(),
        detail: format!("paid {amount}; shipping to {}", user.name),
    })
}
