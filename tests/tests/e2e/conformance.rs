//! One scenario, every language: the Rust, Python and JavaScript builds of an example
//! must leave identical journals (step ids, kinds, statuses, attempts,
//! outputs, order), the same run output and the same log.

use crate::{PATIENCE, deployed, guest_app, log_text};
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

/// process-order on one host: order o-1 is paid, order o-2 is not.
async fn process_order(component: &str) -> (Outcome, Outcome) {
    let (_dir, host) = deployed("process-order", component).await;
    let order = |id: &str, timeout: &str| json!({"orderId": id, "userId": "u-1", "paymentDelay": "300ms", "paymentTimeout": timeout});
    let paid = host
        .send("shop/order.created", order("o-1", "60s"))
        .await
        .unwrap();
    let unpaid = host
        .send("shop/order.created", order("o-2", "1s"))
        .await
        .unwrap();
    let paid = host.run_for_event(&paid).await.unwrap();
    let unpaid = host.run_for_event(&unpaid).await.unwrap();
    host.wait_status(&paid, "waiting", PATIENCE).await.unwrap();
    host.send(
        "shop/payment.success",
        json!({"orderId": "o-1", "amount": 42}),
    )
    .await
    .unwrap();
    (
        outcome(
            &host
                .wait_status(&paid, "completed", PATIENCE)
                .await
                .unwrap(),
        ),
        outcome(
            &host
                .wait_status(&unpaid, "completed", PATIENCE)
                .await
                .unwrap(),
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn process_order_leaves_the_same_journal_in_every_language() {
    let python = guest_app(guests::PYTHON_PROCESS_ORDER);
    let js = guest_app(guests::JS_PROCESS_ORDER);
    let (rust, python, js) = tokio::join!(
        process_order(guests::PROCESS_ORDER),
        process_order(&python),
        process_order(&js),
    );
    assert_eq!(rust.0.output["status"], "shipped", "{rust:#?}");
    assert_eq!(rust.1.output["status"], "cancelled", "{rust:#?}");
    assert_eq!(python, rust, "Python");
    assert_eq!(js, rust, "JavaScript");
}

/// Sends each `(name, data)` to one host running `component` and returns
/// the outcome of each run, once all have ended.
async fn runs(component: &str, events: &[(&str, Value)]) -> Vec<Outcome> {
    let (_dir, host) = deployed("app", component).await;
    let mut outcomes = Vec::new();
    for (name, data) in events {
        let event = host.send(name, data.clone()).await.unwrap();
        let run = host.run_for_event(&event).await.unwrap();
        let ended = host
            .wait_for(&run, PATIENCE, |r| {
                ["completed", "failed"].iter().any(|s| r["status"] == *s)
            })
            .await
            .unwrap();
        outcomes.push(outcome(&ended));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread")]
async fn loops_and_retries_leave_the_same_journals_in_every_language() {
    let items = [(
        "batch/items.received",
        json!({"items": [{"id": "a", "qty": 2}, {"id": "b"}, {"id": "c", "qty": 4}]}),
    )];
    let flaky = [
        ("flaky/charge.requested", json!({})),
        ("flaky/validate.requested", json!({"sku": 7})),
    ];
    let (loop_py, loop_js) = (
        guest_app(guests::PYTHON_FAN_OUT_LOOP),
        guest_app(guests::JS_FAN_OUT_LOOP),
    );
    let (flaky_py, flaky_js) = (
        guest_app(guests::PYTHON_FLAKY_RETRY),
        guest_app(guests::JS_FLAKY_RETRY),
    );
    let (rust_loop, python_loop, js_loop, rust_flaky, python_flaky, js_flaky) = tokio::join!(
        runs(guests::FAN_OUT_LOOP, &items),
        runs(&loop_py, &items),
        runs(&loop_js, &items),
        runs(guests::FLAKY_RETRY, &flaky),
        runs(&flaky_py, &flaky),
        runs(&flaky_js, &flaky),
    );
    assert_eq!(
        rust_loop[0].output,
        json!({"items": 3, "units": 7}),
        "{rust_loop:#?}"
    );
    assert_eq!(python_loop, rust_loop, "Python");
    assert_eq!(js_loop, rust_loop, "JavaScript");
    assert_eq!(rust_flaky[0].steps[0]["attempts"], 3, "{rust_flaky:#?}");
    assert_eq!(rust_flaky[1].status, "failed", "{rust_flaky:#?}");
    assert_eq!(python_flaky, rust_flaky, "Python");
    assert_eq!(js_flaky, rust_flaky, "JavaScript");
}
