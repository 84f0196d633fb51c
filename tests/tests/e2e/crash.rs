//! SIGKILL the host mid-step, while sleeping, while waiting, right after an
//! event is acknowledged; restart it on the same data directory; the run
//! finishes and no completed step body runs twice (counted by the loopback
//! server the step bodies call).

use crate::{PATIENCE, deployed, output, start_script};
use serde_json::json;
use std::time::Duration;
use stepwise_tests::{Loopback, Plan, guests};

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_step_the_run_resumes_and_completed_steps_do_not_rerun() {
    let (_dir, mut host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("slow", Plan::Hold);
    let ops = json!([{"run": "a"}, {"run": "b"}, {"run": "slow"}, {"run": "c"}]);
    let run = start_script(&host, json!({"url": loopback.url, "ops": ops})).await;
    assert!(
        loopback.wait_hits(&run, "slow", 1, PATIENCE).await,
        "the step body never started"
    );

    host.kill();
    loopback.release();
    host.restart().unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();

    assert_eq!(loopback.hits(&run, "a"), 1);
    assert_eq!(loopback.hits(&run, "b"), 1);
    assert_eq!(
        loopback.hits(&run, "slow"),
        2,
        "the interrupted body runs again: it never completed"
    );
    assert_eq!(loopback.hits(&run, "c"), 1);
    assert_eq!(output(&done.run)[2]["hit"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_sleeping_the_run_wakes_after_restart() {
    let (_dir, mut host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    let ops = json!([{"run": "a"}, {"sleep": {"id": "nap", "duration": "1500ms"}}, {"run": "b"}]);
    let run = start_script(&host, json!({"url": loopback.url, "ops": ops})).await;
    host.wait_status(&run, "sleeping", PATIENCE).await.unwrap();

    host.kill();
    host.restart().unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();

    assert_eq!(
        loopback.hits_of_run(&run),
        [("a".to_string(), 1), ("b".to_string(), 1)].into()
    );
    let nap = &done.steps[1];
    assert!(nap.duration_ms.unwrap() >= 1_500, "{nap:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_waiting_the_run_still_receives_its_event() {
    let (_dir, mut host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    let ops = json!([
        {"run": "a"},
        {"wait": {"id": "approval", "event": "probe/approved", "matching": "data.key", "timeout": "5m"}},
        {"run": "b"}
    ]);
    let event = host
        .send(
            "probe/script",
            json!({"url": loopback.url, "key": "k-1", "ops": ops}),
        )
        .await
        .unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    host.wait_status(&run, "waiting", PATIENCE).await.unwrap();

    host.kill();
    host.restart().unwrap();
    assert_eq!(host.run(&run).await.unwrap().run.status, "waiting");
    host.send("probe/approved", json!({"key": "k-1", "by": "ops"}))
        .await
        .unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();

    assert_eq!(
        output(&done.run)[1]["data"],
        json!({"key": "k-1", "by": "ops"})
    );
    assert_eq!(
        loopback.hits_of_run(&run),
        [("a".to_string(), 1), ("b".to_string(), 1)].into()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_event_survives_an_immediate_kill() {
    let (_dir, mut host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("a", Plan::Hold);
    let mut events = Vec::new();
    for _ in 0..5 {
        let ops = json!([{"run": "a"}, {"run": "b"}]);
        events.push(
            host.send("probe/script", json!({"url": loopback.url, "ops": ops}))
                .await
                .unwrap(),
        );
    }
    host.kill();
    loopback.release();
    host.restart().unwrap();
    for event in events {
        let run = host.run_for_event(&event).await.unwrap();
        host.wait_status(&run, "completed", PATIENCE).await.unwrap();
        assert_eq!(loopback.hits(&run, "b"), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_sleeping_run_never_resumes() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    let ops = json!([{"run": "a"}, {"sleep": {"id": "nap", "duration": "500ms"}}, {"run": "b"}]);
    let run = start_script(&host, json!({"url": loopback.url, "ops": ops})).await;
    host.wait_status(&run, "sleeping", PATIENCE).await.unwrap();
    let cancelled = host
        .request(reqwest::Method::POST, &format!("/v1/runs/{run}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let after = host.run(&run).await.unwrap();
    assert_eq!(after.run.status, "cancelled");
    assert_eq!(
        loopback.hits(&run, "b"),
        0,
        "the step after the sleep never ran"
    );
    let again = host
        .request(reqwest::Method::POST, &format!("/v1/runs/{run}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}
