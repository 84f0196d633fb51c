//! Bad input gets a clear 4xx answer and loses nothing.

use crate::{PATIENCE, deployed};
use reqwest::Method;
use serde_json::{Value, json};
use stepwise_tests::{HostProcess, guests};

/// Sends `body` and checks the host refuses it with `status` and an error
/// message containing `says`.
async fn refused(
    host: &HostProcess,
    method: Method,
    path: &str,
    body: impl Into<reqwest::Body>,
    status: u16,
    says: &str,
) {
    let response = host.request(method, path).body(body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), status, "{path}");
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(answer["status"], status, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(says),
        "{path}: expected {says:?} in {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_clearly_and_corrupt_nothing() {
    let (_dir, mut host) = deployed("process-order", guests::PROCESS_ORDER).await;
    let order = |id: &str| json!({"orderId": id, "userId": "u", "paymentDelay": "1ms", "paymentTimeout": "100ms"});
    let good = host.send("shop/order.created", order("o-1")).await.unwrap();
    let events = format!("/e/{}", host.event_key);
    let probe = || std::fs::read(guests::PROBE).unwrap();

    refused(
        &host,
        Method::POST,
        &events,
        "{\"name\": ",
        400,
        "not valid JSON",
    )
    .await;
    refused(
        &host,
        Method::POST,
        &events,
        "[{\"data\": {}}]",
        400,
        "event 0: \"name\" is missing",
    )
    .await;
    refused(
        &host,
        Method::POST,
        "/e/not-the-key",
        "{\"name\": \"a\"}",
        401,
        "event key not found",
    )
    .await;
    let huge = json!({"name": "big", "data": {"blob": "x".repeat(600 * 1024)}}).to_string();
    refused(
        &host,
        Method::POST,
        &events,
        huge,
        413,
        "at most 524288 bytes",
    )
    .await;
    refused(
        &host,
        Method::PUT,
        "/v1/apps/junk",
        "this is not wasm",
        422,
        "not WebAssembly",
    )
    .await;
    let mut truncated = probe();
    truncated.truncate(truncated.len() / 2);
    refused(
        &host,
        Method::PUT,
        "/v1/apps/truncated",
        truncated,
        422,
        "not a valid WebAssembly component",
    )
    .await;
    let command = std::fs::read(guests::NOT_AN_APP).unwrap();
    refused(
        &host,
        Method::PUT,
        "/v1/apps/command",
        command,
        422,
        "not a Stepwise app",
    )
    .await;
    refused(
        &host,
        Method::PUT,
        "/v1/apps/bad%20name",
        probe(),
        422,
        "invalid app name",
    )
    .await;
    refused(
        &host,
        Method::GET,
        "/v1/runs/01NOSUCHRUN",
        "",
        404,
        "not found",
    )
    .await;
    refused(
        &host,
        Method::GET,
        "/v1/runs?status=bogus",
        "",
        400,
        "unknown status",
    )
    .await;

    // None of it was stored or broke anything: the only app and event are
    // the good ones, the good run completes, and all of it survives a restart.
    let run = host.run_for_event(&good).await.unwrap();
    host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    host.restart().unwrap();
    let apps = host.get("/v1/apps").await.unwrap();
    assert_eq!(apps.as_array().unwrap().len(), 1, "{apps:#}");
    let events = host.get("/v1/events").await.unwrap();
    assert_eq!(events.as_array().unwrap().len(), 1, "{events:#}");
    host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    let next = host.send("shop/order.created", order("o-2")).await.unwrap();
    let next = host.run_for_event(&next).await.unwrap();
    host.wait_status(&next, "completed", PATIENCE)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn inngest_batches_and_duplicate_ids_are_handled_as_inngest_does() {
    let (_dir, host) = deployed("fan-out-loop", guests::FAN_OUT_LOOP).await;
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
