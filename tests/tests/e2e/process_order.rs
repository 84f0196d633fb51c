//! The process-order example end to end, both branches, and the loop example.

use crate::{PATIENCE, deployed, log_text, output, step_ids, step_output};
use serde_json::json;
use stepwise_tests::guests;

#[tokio::test(flavor = "multi_thread")]
async fn payment_arrives_and_the_order_ships() {
    let (_dir, host) = deployed("process-order", guests::PROCESS_ORDER).await;
    let order =
        json!({"orderId": "o-1", "userId": "u-1", "paymentDelay": "1s", "paymentTimeout": "60s"});
    let event = host.send("shop/order.created", order).await.unwrap();
    let run = host.run_for_event(&event).await.unwrap();

    host.wait_status(&run, "sleeping", PATIENCE).await.unwrap();
    host.wait_status(&run, "waiting", PATIENCE).await.unwrap();
    // A payment for another order does not match `data.orderId`.
    host.send(
        "shop/payment.success",
        json!({"orderId": "o-2", "amount": 1}),
    )
    .await
    .unwrap();
    host.send(
        "shop/payment.success",
        json!({"orderId": "o-1", "amount": 42}),
    )
    .await
    .unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();

    assert_eq!(output(&done.run)["status"], "shipped", "{done:#?}");
    assert_eq!(output(&done.run)["detail"], "paid 42; shipping to User u-1");
    assert_eq!(
        step_ids(&done),
        ["get-user", "wait-for-payment", "wait-payment", "ship-order"]
    );
    let wait = &done.steps[2];
    assert_eq!(step_output(wait)["data"]["orderId"], "o-1");
    assert_eq!(step_output(wait)["data"]["amount"], 42);
    assert!(done.steps.iter().all(|s| s.status == "completed"));
    // The run replayed twice (after the sleep and after the wait) but its
    // final line is logged once.
    assert_eq!(log_text(&done), "order o-1 shipped\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_payment_the_order_is_cancelled_at_the_timeout() {
    let (_dir, host) = deployed("process-order", guests::PROCESS_ORDER).await;
    let order =
        json!({"orderId": "o-9", "userId": "u-9", "paymentDelay": "100ms", "paymentTimeout": "1s"});
    let event = host.send("shop/order.created", order).await.unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();

    assert_eq!(output(&done.run)["status"], "cancelled", "{done:#?}");
    assert_eq!(
        step_ids(&done),
        [
            "get-user",
            "wait-for-payment",
            "wait-payment",
            "cancel-order"
        ]
    );
    // The wait timed out: no event (JSON `null`, read as `None`).
    assert_eq!(done.steps[2].output, None);
    let waited = done.steps[2].duration_ms.unwrap();
    assert!(
        waited >= 1_000,
        "the wait ended after {waited} ms, before its timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_sent_before_the_wait_begins_does_not_resume_it() {
    let (_dir, host) = deployed("process-order", guests::PROCESS_ORDER).await;
    let order = json!({"orderId": "o-3", "userId": "u-3", "paymentDelay": "1500ms", "paymentTimeout": "1s"});
    let event = host.send("shop/order.created", order).await.unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    host.wait_status(&run, "sleeping", PATIENCE).await.unwrap();
    // Sent while the run sleeps: the waiter does not exist yet (Inngest's rule).
    host.send("shop/payment.success", json!({"orderId": "o-3"}))
        .await
        .unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(output(&done.run)["status"], "cancelled", "{done:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_makes_one_step_per_item() {
    let (_dir, host) = deployed("fan-out-loop", guests::FAN_OUT_LOOP).await;
    let items = json!({"items": [{"id": "a", "qty": 2}, {"id": "b"}, {"id": "c", "qty": 4}]});
    let event = host.send("batch/items.received", items).await.unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(done.run.output, Some(json!({"items": 3, "units": 7})));
    assert_eq!(
        step_ids(&done),
        [
            "process-item-a",
            "process-item-b",
            "process-item-c",
            "report"
        ]
    );
    assert_eq!(log_text(&done), "processed 3 items, 7 units\n");
}
