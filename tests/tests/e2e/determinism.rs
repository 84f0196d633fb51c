//! What the sandbox enforces outside step bodies: logical time, seeded
//! randomness, no network, stable step ids, and output logged once.

use crate::{PATIENCE, deployed, error, log_text, output, start_script, step_ids};
use serde_json::json;
use stepwise_tests::{Loopback, Plan, guests};

#[tokio::test(flavor = "multi_thread")]
async fn clock_and_random_outside_steps_replay_identically() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    // Step ids built from the clock and a random number read outside steps;
    // the sleep forces a replay, which must rebuild the same ids.
    let ops = json!([{"clock_step": "clock"}, {"random_step": "rand"}, {"sleep": {"id": "nap", "duration": "300ms"}}, {"local": "end"}]);
    let run = start_script(&host, json!({"ops": ops})).await;
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    let ids = step_ids(&done);
    assert_eq!(ids.len(), 4, "{done:#?}");
    assert!(
        ids[0].starts_with("clock-") && ids[1].starts_with("rand-"),
        "{ids:?}"
    );
    // The clock outside steps is the run's logical time: when it started.
    let clock: u64 = ids[0]["clock-".len()..].parse().unwrap();
    assert_eq!(Some(clock), done.run.started_at);
}

#[tokio::test(flavor = "multi_thread")]
async fn code_that_calls_other_steps_on_replay_fails_with_a_determinism_error() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("flip", Plan::FailTimes(1));
    // The step id carries ctx.attempt: `flip-0` fails, and the retry calls `flip-1`.
    let ops = json!([{"local": "a"}, {"attempt_step": "flip"}]);
    let run = start_script(&host, json!({"url": loopback.url, "ops": ops})).await;
    let failed = host.wait_status(&run, "failed", PATIENCE).await.unwrap();
    assert_eq!(error(&failed.run).name, "DeterminismError", "{failed:#?}");
    let message = error(&failed.run).message.as_str();
    assert!(
        message.contains("journal has run \"flip-0\" but the code called run \"flip-1\""),
        "{message}"
    );
    assert!(
        message.contains("journal: [run \"a\", run \"flip-0\"]"),
        "{message}"
    );
    assert!(
        message.contains("calls:   [run \"a\", run \"flip-1\"]"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_step_ids_get_suffixes() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    let ops = json!([{"local": "a"}, {"local": "a"}, {"local": "b"}, {"local": "a"}]);
    let run = start_script(&host, json!({"ops": ops})).await;
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(step_ids(&done), ["a", "a:1", "b", "a:2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_outside_a_step_is_refused_with_the_rule() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    let event = host
        .send(
            "probe/script",
            json!({"url": loopback.url, "ops": [{"http_outside": null}, {"run": "inside"}]}),
        )
        .await
        .unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    let error = output(&done.run)[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("only allowed inside a step body"),
        "{done:#?}"
    );
    assert_eq!(
        loopback.hits(&run, "inside"),
        1,
        "inside a step the same client works"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn output_printed_again_on_replay_is_logged_once() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    let ops = json!([{"print": "before"}, {"sleep": {"id": "a", "duration": "200ms"}}, {"print": "middle"}, {"sleep": {"id": "b", "duration": "200ms"}}, {"print": "after"}]);
    let run = start_script(&host, json!({"ops": ops})).await;
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(log_text(&done), "before\nmiddle\nafter\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_side_sleep_is_refused_outside_steps_and_allowed_inside() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    let inside = json!({"ops": [{"thread_sleep": {"ms": 20, "step": "nap-inside"}}]});
    let outside = json!({"ops": [{"local": "a"}, {"thread_sleep": {"ms": 20}}]});
    let inside = host.send("probe/script", inside).await.unwrap();
    let outside = host.send("probe/script", outside).await.unwrap();
    let inside = host.run_for_event(&inside).await.unwrap();
    let outside = host.run_for_event(&outside).await.unwrap();

    let done = host
        .wait_status(&inside, "completed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(done.run.output, Some(json!([20])));
    let failed = host
        .wait_status(&outside, "failed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(error(&failed.run).name, "SandboxError", "{failed:#?}");
    assert!(error(&failed.run).message.contains("Use step.sleep"));
}
