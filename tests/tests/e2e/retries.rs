//! Retries, NonRetriableError and handler failures, counted by the
//! loopback server rather than by the host's own records.

use crate::{PATIENCE, deployed, error, output, start_script, step_ids};
use serde_json::{Value, json};
use stepwise_tests::{Loopback, Plan, guests};

fn script(loopback: &Loopback, ops: Value) -> Value {
    json!({ "url": loopback.url, "ops": ops })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_flaky_example_succeeds_on_its_third_attempt() {
    let (_dir, host) = deployed("flaky-retry", guests::FLAKY_RETRY).await;
    let event = host
        .send("flaky/charge.requested", json!({}))
        .await
        .unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(done.run.output, Some(json!({"charged_on_attempt": 2})));
    assert_eq!(done.steps[0].attempts, 3);
    assert_eq!(done.steps[0].status, "completed");
    let log = crate::log_text(&done);
    assert_eq!(
        log, "charge failed on attempt 0\ncharge failed on attempt 1\n",
        "each attempt's output is kept, once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_retriable_error_stops_at_once() {
    let (_dir, host) = deployed("flaky-retry", guests::FLAKY_RETRY).await;
    let event = host
        .send("flaky/validate.requested", json!({"sku": 7}))
        .await
        .unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    let done = host.wait_status(&run, "failed", PATIENCE).await.unwrap();
    assert_eq!(error(&done.run).name, "NonRetriableError");
    assert_eq!(error(&done.run).message, "invalid payload: {\"sku\":7}");
    assert_eq!(done.steps[0].attempts, 1);
    assert_eq!(done.steps[0].status, "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn step_bodies_run_once_per_attempt_and_retries_are_bounded() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("twice", Plan::FailTimes(2));
    loopback.plan("never", Plan::FailTimes(100));
    loopback.plan("reject", Plan::Reject);

    let ok = host
        .send(
            "probe/script",
            script(
                &loopback,
                json!([{"run": "first"}, {"run": "twice"}, {"run": "after"}]),
            ),
        )
        .await
        .unwrap();
    let exhausted = host
        .send("probe/script", script(&loopback, json!([{"run": "never"}])))
        .await
        .unwrap();
    let rejected = host
        .send(
            "probe/script",
            script(&loopback, json!([{"run": "reject"}])),
        )
        .await
        .unwrap();
    let ok = host.run_for_event(&ok).await.unwrap();
    let exhausted = host.run_for_event(&exhausted).await.unwrap();
    let rejected = host.run_for_event(&rejected).await.unwrap();

    let done = host.wait_status(&ok, "completed", PATIENCE).await.unwrap();
    assert_eq!(
        loopback.hits(&ok, "first"),
        1,
        "a completed step never runs again"
    );
    assert_eq!(loopback.hits(&ok, "twice"), 3);
    assert_eq!(loopback.hits(&ok, "after"), 1);
    assert_eq!(done.steps[1].attempts, 3);
    assert_eq!(output(&done.run)[1]["hit"], 3);

    // The probe allows 3 retries: 4 attempts in all, then the error is the run's.
    let failed = host
        .wait_status(&exhausted, "failed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(loopback.hits(&exhausted, "never"), 4);
    assert_eq!(failed.steps[0].attempts, 4);
    assert!(
        error(&failed.run)
            .message
            .contains("planned failure 4 of 100"),
        "{failed:#?}"
    );

    let failed = host
        .wait_status(&rejected, "failed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(loopback.hits(&rejected, "reject"), 1);
    assert_eq!(error(&failed.run).name, "NonRetriableError");
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_errors_outside_steps_are_retried_then_fail_the_run() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    let retried = host
        .send(
            "probe/script",
            script(&loopback, json!([{"run": "s"}, {"fail": "boom"}])),
        )
        .await
        .unwrap();
    let fatal = host
        .send(
            "probe/script",
            script(&loopback, json!([{"fail_fatal": "bad input"}])),
        )
        .await
        .unwrap();
    let retried = host.run_for_event(&retried).await.unwrap();
    let fatal = host.run_for_event(&fatal).await.unwrap();

    let failed = host
        .wait_status(&retried, "failed", PATIENCE)
        .await
        .unwrap();
    assert_eq!(failed.run.attempt, 3, "{failed:#?}");
    assert_eq!(error(&failed.run).message, "boom");
    assert_eq!(
        loopback.hits(&retried, "s"),
        1,
        "the step before the error ran once over four attempts"
    );

    let failed = host.wait_status(&fatal, "failed", PATIENCE).await.unwrap();
    assert_eq!(failed.run.attempt, 0);
    assert_eq!(error(&failed.run).name, "NonRetriableError");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_in_a_step_body_is_a_failed_attempt() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    let event = host
        .send(
            "probe/script",
            script(
                &loopback,
                json!([{"run": "before"}, {"panic_in_step": "boom"}]),
            ),
        )
        .await
        .unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    let failed = host.wait_status(&run, "failed", PATIENCE).await.unwrap();
    assert_eq!(step_ids(&failed), ["before", "boom"]);
    assert_eq!(failed.steps[1].attempts, 4);
    assert_eq!(
        failed.steps[1].error.as_ref().map(|e| e.name.as_str()),
        Some("GuestTrap")
    );
    assert_eq!(loopback.hits(&run, "before"), 1);
    assert!(
        crate::log_text(&failed).contains("deliberate panic in boom"),
        "the panic message is in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handler_may_catch_a_step_that_failed_for_good_and_go_on() {
    let (_dir, host) = deployed("probe", guests::PROBE).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("flaky", Plan::FailTimes(100));
    let ops = json!([{"run_catch": "flaky"}, {"run": "after"}]);
    let run = start_script(&host, script(&loopback, ops)).await;
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(
        loopback.hits(&run, "flaky"),
        4,
        "all attempts were used first"
    );
    assert!(
        output(&done.run)[0]["caught"]
            .as_str()
            .unwrap()
            .contains("planned failure 4 of 100"),
        "{done:#?}"
    );
    assert_eq!(loopback.hits(&run, "after"), 1);
    assert_eq!(done.steps[0].status, "failed");
}
