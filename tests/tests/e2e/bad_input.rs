//! Bad input gets a clear 4xx answer and loses nothing.

use crate::{PATIENCE, start_host};
use reqwest::Method;
use serde_json::{Value, json};
use stepwise_tests::guests;

async fn answer(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_clearly_and_corrupt_nothing() {
    let (_dir, mut host) = start_host();
    host.deploy("process-order", guests::PROCESS_ORDER)
        .await
        .unwrap();
    let good = host.send("shop/order.created", json!({"orderId": "o-1", "userId": "u-1", "paymentDelay": "1ms", "paymentTimeout": "100ms"})).await.unwrap();
    let key = host.event_key.clone();

    let (status, error) = answer(
        host.request(Method::POST, &format!("/e/{key}"))
            .body("{\"name\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error.contains("not valid JSON"), "{error}");

    let (status, error) = answer(
        host.request(Method::POST, &format!("/e/{key}"))
            .body("[{\"data\": {}}]")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error.contains("event 0: \"name\" is missing"), "{error}");

    let (status, error) = answer(
        host.request(Method::POST, "/e/not-the-key")
            .json(&json!({"name": "a"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(error.contains("event key not found"), "{error}");

    let huge = json!({"name": "big", "data": {"blob": "x".repeat(600 * 1024)}});
    let (status, error) = answer(
        host.request(Method::POST, &format!("/e/{key}"))
            .json(&huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    assert!(error.contains("at most 524288 bytes"), "{error}");

    let (status, error) = answer(
        host.request(Method::PUT, "/v1/apps/junk")
            .body("this is not wasm")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(error.contains("not WebAssembly"), "{error}");

    let mut truncated = std::fs::read(guests::PROBE).unwrap();
    truncated.truncate(truncated.len() / 2);
    let (status, error) = answer(
        host.request(Method::PUT, "/v1/apps/truncated")
            .body(truncated)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        error.contains("not a valid WebAssembly component"),
        "{error}"
    );

    let command = std::fs::read(guests::NOT_AN_APP).unwrap();
    let (status, error) = answer(
        host.request(Method::PUT, "/v1/apps/command")
            .body(command)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(error.contains("not a Stepwise app"), "{error}");

    let (status, error) = answer(
        host.request(Method::PUT, "/v1/apps/bad%20name")
            .body(std::fs::read(guests::PROBE).unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(error.contains("invalid app name"), "{error}");

    let (status, _) = answer(
        host.request(Method::GET, "/v1/runs/01NOSUCHRUN")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, error) = answer(
        host.request(Method::GET, "/v1/runs?status=bogus")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error.contains("unknown status"), "{error}");

    // None of it was stored or broke anything: the only app and event are
    // the good ones, the good run completes, and all of it survives a restart.
    let run = host.run_for_event(&good).await.unwrap();
    host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    host.restart().unwrap();
    let apps = host
        .request(Method::GET, "/v1/apps")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(apps.as_array().unwrap().len(), 1, "{apps:#}");
    let events = host
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(events.as_array().unwrap().len(), 1, "{events:#}");
    host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    let next = host.send("shop/order.created", json!({"orderId": "o-2", "userId": "u-2", "paymentDelay": "1ms", "paymentTimeout": "100ms"})).await.unwrap();
    let next = host.run_for_event(&next).await.unwrap();
    host.wait_status(&next, "completed", PATIENCE)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn inngest_batches_and_duplicate_ids_are_handled_as_inngest_does() {
    let (_dir, host) = start_host();
    host.deploy("fan-out-loop", guests::FAN_OUT_LOOP)
        .await
        .unwrap();
    let batch = json!([
        {"name": "batch/items.received", "data": {"items": []}, "id": "dup-1"},
        {"name": "batch/items.received", "data": {"items": []}, "id": "dup-1"},
        {"name": "batch/items.received", "data": {"items": [{"id": "x"}]}}
    ]);
    let response = host
        .request(Method::POST, &format!("/e/{}", host.event_key))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 200);
    let ids = body["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], "dup-1");
    assert_eq!(ids[1], "dup-1");
    // The same id again later: still nothing new starts.
    let again = json!({"name": "batch/items.received", "data": {"items": []}, "id": "dup-1"});
    let response = host
        .request(Method::POST, &format!("/e/{}", host.event_key))
        .json(&again)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = host.run_for_event("dup-1").await.unwrap();
    host.wait_status(&first, "completed", PATIENCE)
        .await
        .unwrap();
    let third = host.run_for_event(ids[2].as_str().unwrap()).await.unwrap();
    host.wait_status(&third, "completed", PATIENCE)
        .await
        .unwrap();
    let runs = host.runs().await.unwrap();
    assert_eq!(
        runs.len(),
        2,
        "a duplicate event id starts nothing: {runs:#?}"
    );
}
