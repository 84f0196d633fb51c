//! One scenario, every language: the Rust and Python builds of an example
//! must leave identical journals (step ids, kinds, statuses, attempts,
//! outputs, order), the same run output and the same log.

use crate::{PATIENCE, log_text, python_app, start_host};
use serde_json::{Value, json};
use stepwise_tests::guests;

/// A run's observable result, without times, ids and error class names
/// that differ per run or per language.
#[derive(Debug, PartialEq)]
struct Outcome {
    status: String,
    output: Value,
    error: Value,
    steps: Vec<Value>,
    log: String,
}

fn outcome(run: &Value) -> Outcome {
    let steps = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            // A wait's output is the event, whose id and time differ per run.
            let output = match s["kind"].as_str() {
                Some("wait") if s["output"].is_object() => json!({"name": s["output"]["name"], "data": s["output"]["data"]}),
                _ => s["output"].clone(),
            };
            let error = s["error"].get("message").cloned().unwrap_or(Value::Null);
            json!({"id": s["id"], "kind": s["kind"], "status": s["status"], "attempts": s["attempts"], "output": output, "error": error})
        })
        .collect();
    Outcome {
        status: run["status"].as_str().unwrap_or_default().to_string(),
        output: run["output"].clone(),
        error: run["error"].clone(),
        steps,
        log: log_text(run),
    }
}

/// process-order with the payment arriving (`pay`) or not.
async fn process_order(component: &str, pay: bool) -> Outcome {
    let (_dir, host) = start_host();
    host.deploy("process-order", component).await.unwrap();
    let timeout = if pay { "60s" } else { "1s" };
    let order = json!({"orderId": "o-1", "userId": "u-1", "paymentDelay": "300ms", "paymentTimeout": timeout});
    let event = host.send("shop/order.created", order).await.unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    if pay {
        host.wait_status(&run, "waiting", PATIENCE).await.unwrap();
        host.send(
            "shop/payment.success",
            json!({"orderId": "o-1", "amount": 42}),
        )
        .await
        .unwrap();
    }
    outcome(&host.wait_status(&run, "completed", PATIENCE).await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn process_order_leaves_the_same_journal_in_rust_and_python() {
    let python = python_app(guests::PYTHON_PROCESS_ORDER);
    let (rust_paid, rust_unpaid, python_paid, python_unpaid) = tokio::join!(
        process_order(guests::PROCESS_ORDER, true),
        process_order(guests::PROCESS_ORDER, false),
        process_order(&python, true),
        process_order(&python, false),
    );
    assert_eq!(rust_paid.output["status"], "shipped", "{rust_paid:#?}");
    assert_eq!(
        rust_unpaid.output["status"], "cancelled",
        "{rust_unpaid:#?}"
    );
    assert_eq!(python_paid, rust_paid);
    assert_eq!(python_unpaid, rust_unpaid);
}

/// Sends `name` with `data` to a fresh host running `component` and returns
/// the outcome of the run it starts, once it has ended.
async fn one_run(component: &str, name: &str, data: Value) -> Outcome {
    let (_dir, host) = start_host();
    host.deploy("app", component).await.unwrap();
    let event = host.send(name, data).await.unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    let ended = host
        .wait_for(&run, PATIENCE, |r| {
            ["completed", "failed"].iter().any(|s| r["status"] == *s)
        })
        .await
        .unwrap();
    outcome(&ended)
}

#[tokio::test(flavor = "multi_thread")]
async fn loops_and_retries_leave_the_same_journals_in_rust_and_python() {
    let loop_py = python_app(guests::PYTHON_FAN_OUT_LOOP);
    let flaky_py = python_app(guests::PYTHON_FLAKY_RETRY);
    let items = json!({"items": [{"id": "a", "qty": 2}, {"id": "b"}, {"id": "c", "qty": 4}]});
    let invalid = json!({"sku": 7});
    let (rust_loop, python_loop, rust_flaky, python_flaky, rust_fatal, python_fatal) = tokio::join!(
        one_run(guests::FAN_OUT_LOOP, "batch/items.received", items.clone()),
        one_run(&loop_py, "batch/items.received", items),
        one_run(guests::FLAKY_RETRY, "flaky/charge.requested", json!({})),
        one_run(&flaky_py, "flaky/charge.requested", json!({})),
        one_run(
            guests::FLAKY_RETRY,
            "flaky/validate.requested",
            invalid.clone()
        ),
        one_run(&flaky_py, "flaky/validate.requested", invalid),
    );
    assert_eq!(
        rust_loop.output,
        json!({"items": 3, "units": 7}),
        "{rust_loop:#?}"
    );
    assert_eq!(python_loop, rust_loop);
    assert_eq!(rust_flaky.steps[0]["attempts"], 3, "{rust_flaky:#?}");
    assert_eq!(python_flaky, rust_flaky);
    assert_eq!(rust_fatal.status, "failed", "{rust_fatal:#?}");
    assert_eq!(python_fatal, rust_fatal);
}
