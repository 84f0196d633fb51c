//! Flow control, as Inngest documents it: concurrency, throttle, rate limit,
//! debounce, batches, idempotency, singletons and priority. Each test drives
//! `tests/guests/flow` (or an example) on a real host; the loopback server
//! sees which step bodies ran, in which order and how many at once.

use crate::{PATIENCE, deployed, error, output};
use serde_json::{Value, json};
use std::time::Duration;
use stepwise_host::api::views::RunView;
use stepwise_tests::{Loopback, Plan, guests};

fn ended(runs: &[RunView], n: usize) -> bool {
    runs.len() >= n
        && runs
            .iter()
            .all(|r| ["completed", "failed", "cancelled", "skipped"].contains(&r.status.as_str()))
}

fn count(runs: &[RunView], status: &str) -> usize {
    runs.iter().filter(|r| r.status == status).count()
}

/// Runs oldest first (the API lists newest first).
fn oldest_first(mut runs: Vec<RunView>) -> Vec<RunView> {
    runs.sort_by_key(|r| r.id.clone());
    runs
}

#[tokio::test]
async fn concurrency_bounds_the_step_bodies_in_flight_and_drops_nothing() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let loopback = Loopback::start().await.unwrap();
    for step in ["a", "b"] {
        loopback.plan(step, Plan::Delay(Duration::from_millis(250)));
    }
    let events = (0..6)
        .map(|i| json!({"name": "flow/limited", "data": {"url": loopback.url, "i": i}}))
        .collect();
    host.send_batch(events).await.unwrap();
    let runs = host
        .wait_runs("limited", PATIENCE, |runs| ended(runs, 6))
        .await
        .unwrap();
    assert_eq!(
        count(&runs, "completed"),
        6,
        "nothing is dropped: {runs:#?}"
    );
    assert_eq!(
        loopback.total_hits(),
        12,
        "each of the 12 step bodies ran once"
    );
    assert_eq!(
        loopback.max_in_flight(),
        2,
        "concurrency 2: two step bodies at once, never more"
    );
}

#[tokio::test]
async fn a_keyed_limit_holds_one_key_while_others_run() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("work", Plan::Delay(Duration::from_millis(250)));
    let events = (0..6)
        .map(|i| json!({"name": "flow/keyed", "data": {"url": loopback.url, "user": if i % 2 == 0 { "ann" } else { "bob" }}}))
        .collect();
    host.send_batch(events).await.unwrap();
    let runs = host
        .wait_runs("keyed", PATIENCE, |runs| ended(runs, 6))
        .await
        .unwrap();
    assert_eq!(count(&runs, "completed"), 6);
    assert_eq!(
        loopback.max_in_flight(),
        2,
        "one step per user at a time, and the two users side by side"
    );
}

#[tokio::test]
async fn a_throttle_delays_starts_in_order_and_drops_nothing() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    // 2 starts per 2 s: two at once, then one a second.
    let events = (0..5)
        .map(|i| json!({"name": "flow/throttled", "data": {"i": i}}))
        .collect();
    host.send_batch(events).await.unwrap();
    let runs = host
        .wait_runs("throttled", PATIENCE, |runs| ended(runs, 5))
        .await
        .unwrap();
    assert_eq!(count(&runs, "completed"), 5);
    let runs = oldest_first(runs);
    let started: Vec<u64> = runs.iter().map(|r| r.started_at.unwrap()).collect();
    // First in, first out: no run starts a throttle window before one
    // created earlier (the two of a burst start together, on two cores).
    for (i, earlier) in started.iter().enumerate() {
        for later in &started[i + 1..] {
            assert!(*later + 100 >= *earlier, "first in, first out: {started:?}");
        }
    }
    // Lower bounds only: a loaded machine can only make starts later.
    assert!(
        started[2] - started[0] >= 900,
        "the third start waits for the throttle: {started:?}"
    );
    assert!(
        started[4] - started[0] >= 2_900,
        "the fifth start waits two more seconds: {started:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_starts_ten_of_thirty_and_records_the_rest_as_skipped() {
    let (_dir, host) = deployed("sync-crm", guests::SYNC_CRM).await;
    let loopback = Loopback::start().await.unwrap();
    let events = (0..30)
        .map(|i| json!({"name": "crm/contact.updated", "data": {"userId": "u-1", "contactId": format!("c-{i}"), "url": loopback.url}}))
        .collect();
    host.send_batch(events).await.unwrap();
    // Another user has a limit of their own.
    host.send(
        "crm/contact.updated",
        json!({"userId": "u-2", "contactId": "c-x", "url": loopback.url}),
    )
    .await
    .unwrap();
    let runs = host
        .wait_runs("sync-crm", PATIENCE, |runs| ended(runs, 31))
        .await
        .unwrap();
    assert_eq!(count(&runs, "completed"), 11, "10 for u-1, 1 for u-2");
    assert_eq!(count(&runs, "skipped"), 20);
    let skipped = runs.iter().find(|r| r.status == "skipped").unwrap();
    assert_eq!(error(skipped).name, "RateLimited");
    assert!(skipped.started_at.is_none(), "a skipped run never starts");
    assert_eq!(loopback.total_hits(), 11, "skipped runs call nothing");
    let listed: Vec<RunView> = host.get_as("/v1/runs?status=skipped").await.unwrap();
    assert_eq!(listed.len(), 20, "skipped runs are listed");
}

#[tokio::test]
async fn debounce_runs_once_with_the_last_event_and_its_timeout_bounds_the_delay() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    // Three events 200 ms apart, inside one 1 s debounce period (the pause
    // is the input here, not a wait for the host).
    for n in 1..=3 {
        host.send("flow/debounced", json!({"id": "p-1", "n": n}))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    host.send("flow/debounced", json!({"id": "p-2", "n": 9}))
        .await
        .unwrap();
    let runs = host
        .wait_runs("debounced", PATIENCE, |runs| ended(runs, 2))
        .await
        .unwrap();
    assert_eq!(runs.len(), 2, "one run per key: {runs:#?}");
    let mut outputs: Vec<Value> = runs.iter().map(|r| output(r).clone()).collect();
    outputs.sort_by_key(|o| o["id"].as_str().map(str::to_string));
    assert_eq!(
        outputs,
        vec![json!({"id": "p-1", "n": 3}), json!({"id": "p-2", "n": 9})],
        "each run got its key's last event"
    );

    // Events every 400 ms for 6 s never leave a 1 s quiet window: only the
    // 4 s timeout can start a run while they keep coming.
    let busy = |runs: &[RunView]| {
        runs.iter()
            .filter(|r| r.output.as_ref().is_some_and(|o| o["id"] == "busy"))
            .count()
    };
    let mut started_while_sending = false;
    for n in 0..15 {
        host.send("flow/debounced", json!({"id": "busy", "n": n}))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        started_while_sending |= busy(&host.runs_of("debounced").await.unwrap()) > 0;
    }
    assert!(
        started_while_sending,
        "the debounce timeout started a run while events kept coming"
    );
    let runs = host
        .wait_runs("debounced", PATIENCE, |runs| busy(runs) == 2)
        .await
        .unwrap();
    assert!(
        runs.iter()
            .any(|r| r.output == Some(json!({"id": "busy", "n": 14}))),
        "the run after the last window got the last event: {runs:#?}"
    );
}

#[tokio::test]
async fn batches_hand_several_events_to_one_run() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let events = (0..7)
        .map(|n| json!({"name": "flow/batched", "data": {"n": n}}))
        .collect();
    host.send_batch(events).await.unwrap();
    let runs = host
        .wait_runs("batched", PATIENCE, |runs| ended(runs, 3))
        .await
        .unwrap();
    let mut sizes: Vec<usize> = runs
        .iter()
        .map(|r| {
            r.output
                .as_ref()
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        vec![1, 3, 3],
        "two full batches of 3, and the last event after the 1 s timeout"
    );
    let mut all: Vec<i64> = runs
        .iter()
        .flat_map(|r| {
            r.output
                .as_ref()
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|n| n.as_i64())
        .collect();
    all.sort();
    assert_eq!(
        all,
        (0..7).collect::<Vec<_>>(),
        "every event in exactly one batch"
    );
}

#[tokio::test]
async fn an_idempotency_key_starts_one_run_per_value() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    host.send_batch(vec![
        json!({"name": "flow/idempotent", "data": {"orderId": "o-1", "try": 1}}),
        json!({"name": "flow/idempotent", "data": {"orderId": "o-1", "try": 2}}),
    ])
    .await
    .unwrap();
    host.send("flow/idempotent", json!({"orderId": "o-1", "try": 3}))
        .await
        .unwrap();
    host.send("flow/idempotent", json!({"orderId": "o-2", "try": 1}))
        .await
        .unwrap();
    // The host answers a send once it has admitted the event (started, held
    // or refused its runs) durably: the runs listed now are all there are.
    let started = host.runs_of("idempotent").await.unwrap();
    assert_eq!(started.len(), 2, "one run per order id: {started:#?}");
    let runs = host
        .wait_runs("idempotent", PATIENCE, |runs| ended(runs, 2))
        .await
        .unwrap();
    assert_eq!(runs.len(), 2, "one run per order id: {runs:#?}");
    let mut outputs: Vec<Value> = runs.iter().map(|r| output(r).clone()).collect();
    outputs.sort_by_key(|o| o["orderId"].as_str().map(str::to_string));
    assert_eq!(
        outputs,
        vec![
            json!({"orderId": "o-1", "try": 1}),
            json!({"orderId": "o-2", "try": 1})
        ]
    );
}

#[tokio::test]
async fn singletons_skip_or_replace_the_active_run() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    for function in ["single-skip", "single-cancel"] {
        let first = host
            .send(&format!("flow/{function}"), json!({"id": "k"}))
            .await
            .unwrap();
        let first = host.run_for_event(&first).await.unwrap();
        host.wait_status(&first, "sleeping", PATIENCE)
            .await
            .unwrap();
        let second = host
            .send(&format!("flow/{function}"), json!({"id": "k"}))
            .await
            .unwrap();
        let second = host.run_for_event(&second).await.unwrap();
        let other = host
            .send(&format!("flow/{function}"), json!({"id": "other"}))
            .await
            .unwrap();
        let other = host.run_for_event(&other).await.unwrap();
        host.wait_status(&other, "sleeping", PATIENCE)
            .await
            .unwrap();
        if function == "single-skip" {
            let skipped = host.run(&second).await.unwrap();
            assert_eq!(skipped.run.status, "skipped", "{skipped:#?}");
            assert_eq!(error(&skipped.run).name, "Singleton");
            assert_eq!(host.run(&first).await.unwrap().run.status, "sleeping");
        } else {
            host.wait_status(&second, "sleeping", PATIENCE)
                .await
                .unwrap();
            let replaced = host.run(&first).await.unwrap();
            assert_eq!(replaced.run.status, "cancelled", "{replaced:#?}");
        }
    }
}

#[tokio::test]
async fn priority_lets_a_later_run_overtake_waiting_ones() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("work", Plan::Hold);
    // The first run holds the only slot until released.
    let blocker = host
        .send(
            "flow/ranked",
            json!({"url": loopback.url, "name": "blocker"}),
        )
        .await
        .unwrap();
    let blocker = host.run_for_event(&blocker).await.unwrap();
    assert!(loopback.wait_hits(&blocker, "work", 1, PATIENCE).await);
    let mut names = std::collections::HashMap::new();
    for (name, vip) in [("free-1", false), ("free-2", false), ("vip", true)] {
        let id = host
            .send(
                "flow/ranked",
                json!({"url": loopback.url, "name": name, "vip": vip}),
            )
            .await
            .unwrap();
        names.insert(host.run_for_event(&id).await.unwrap(), name);
    }
    loopback.release();
    host.wait_runs("ranked", PATIENCE, |runs| ended(runs, 4))
        .await
        .unwrap();
    let order: Vec<&str> = loopback
        .arrivals()
        .iter()
        .filter_map(|a| names.get(a.split('/').next().unwrap_or("")).copied())
        .collect();
    assert_eq!(order, ["vip", "free-1", "free-2"], "60 s of head start");
}
