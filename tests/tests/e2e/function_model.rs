//! Inngest's function model besides flow control: trigger conditions and
//! cron, parallel steps, send_event, invoke, waits with `if`, failure
//! handlers, cancel-on, timeouts and bulk cancellation, and the checks made
//! at upload. Each test drives `tests/guests/flow` (or an example) on a
//! real host.

use crate::{PATIENCE, deployed, error, output, start_host, step_ids};
use serde_json::{Value, json};
use std::time::Duration;
use stepwise_host::api::views::RunDetail;
use stepwise_tests::{Loopback, Plan, guests};

async fn completed(host: &stepwise_tests::HostProcess, event: &str) -> RunDetail {
    let run = host.run_for_event(event).await.unwrap();
    host.wait_status(&run, "completed", PATIENCE).await.unwrap()
}

#[tokio::test]
async fn registration_shows_every_option_and_a_bad_expression_is_refused_at_upload() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let functions = host.get("/v1/functions").await.unwrap();
    let find = |id: &str| {
        functions
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no function {id} in {functions:#}"))
    };
    assert_eq!(
        find("keyed")["concurrency"][0],
        json!({"limit": 1, "key": "event.data.user", "scope": "function"})
    );
    assert_eq!(
        find("throttled")["throttle"],
        json!({"limit": 2, "period_ms": 2000, "burst": 0})
    );
    assert_eq!(
        find("debounced")["debounce"],
        json!({"period_ms": 1000, "key": "event.data.id", "timeout_ms": 4000})
    );
    assert_eq!(
        find("filtered")["triggers"][0],
        json!({"event": "flow/filtered", "if": "event.data.n > 5"})
    );
    assert_eq!(find("fails")["on_failure"], true);
    assert_eq!(
        find("cancellable")["cancel_on"][0],
        json!({"event": "flow/cancel", "match": "data.id"})
    );

    let (_dir2, fresh) = start_host();
    let refused = fresh
        .request(reqwest::Method::PUT, "/v1/apps/bad")
        .body(std::fs::read(guests::BAD_CONFIG).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let message = refused.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("broken-priority")
            && message.contains("priority.run")
            && message.contains("event.data.plan == ? 100 : 0")
            && message.contains("not valid CEL"),
        "{message}"
    );
    assert!(
        fresh
            .get("/v1/functions")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_trigger_condition_filters_events() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    host.send("flow/filtered", json!({"n": 3})).await.unwrap();
    let big = host.send("flow/filtered", json!({"n": 7})).await.unwrap();
    let any = host.send("flow/any", json!({"n": 1})).await.unwrap();
    completed(&host, &big).await;
    completed(&host, &any).await;
    let runs = host.runs_of("filtered").await.unwrap();
    assert_eq!(
        runs.len(),
        2,
        "n = 3 does not pass `event.data.n > 5`: {runs:#?}"
    );
}

#[tokio::test]
async fn parallel_branches_overlap_retry_on_their_own_and_join_in_order() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let loopback = Loopback::start().await.unwrap();
    for i in 0..3 {
        loopback.plan(
            &format!("branch-{i}"),
            Plan::Delay(Duration::from_millis(400)),
        );
    }
    let event = host
        .send("flow/fan", json!({"url": loopback.url, "branches": 3}))
        .await
        .unwrap();
    let run = completed(&host, &event).await;
    assert_eq!(
        loopback.max_in_flight(),
        3,
        "the three branches ran at once"
    );
    assert_eq!(
        step_ids(&run),
        ["branch-0", "branch-1", "branch-2", "left", "right"],
        "journal positions follow the call order, whatever order branches finish in"
    );
    assert_eq!(output(&run.run)["join"], json!([1, "two"]));

    // One branch fails once and is retried alone; one fails for good and
    // the handler sees its error; the others run once.
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("branch-1", Plan::FailTimes(1));
    loopback.plan("branch-2", Plan::Reject);
    let event = host
        .send("flow/fan", json!({"url": loopback.url, "branches": 3}))
        .await
        .unwrap();
    let run = completed(&host, &event).await;
    let id = run.run.id.as_str();
    assert_eq!(loopback.hits(id, "branch-0"), 1);
    assert_eq!(
        loopback.hits(id, "branch-1"),
        2,
        "failed once, retried once"
    );
    assert_eq!(
        loopback.hits(id, "branch-2"),
        3,
        "retries: 2, then failed for good"
    );
    let branches = &output(&run.run)["branches"];
    assert_eq!(branches[1]["hit"], 2);
    assert_eq!(branches[2]["failed"], "HTTP 400");
}

#[tokio::test]
async fn send_event_sends_once_even_if_the_host_dies_after_sending() {
    let (_dir, mut host) = deployed("flow", guests::FLOW).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("after", Plan::Hold);
    let event = host
        .send("flow/send", json!({"url": loopback.url, "n": 5}))
        .await
        .unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    assert!(loopback.wait_hits(&run, "after", 1, PATIENCE).await);
    host.kill();
    host.restart().unwrap();
    loopback.release();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    let ids = output(&done.run)["ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 2);
    // A send from a step returns once the host has accepted its events and
    // started the runs they trigger, and the run passes its send step before
    // it completes: any second send by the replay has started its runs by
    // now, so their count is final here.
    let started = host.runs_of("received").await.unwrap();
    assert_eq!(
        started.len(),
        2,
        "the replay did not send again: {started:#?}"
    );
    let received = host
        .wait_runs("received", PATIENCE, |runs| {
            runs.len() >= 2 && runs.iter().all(|r| r.status == "completed")
        })
        .await
        .unwrap();
    assert_eq!(
        received.len(),
        2,
        "the replay did not send again: {received:#?}"
    );
    let mut copies: Vec<Value> = received.iter().map(|r| output(r)["copy"].clone()).collect();
    copies.sort_by_key(|c| c.as_i64());
    assert_eq!(copies, [json!(1), json!(2)]);
}

#[tokio::test]
async fn invoke_returns_the_child_output_its_error_or_a_timeout() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let ok = host.send("flow/parent", json!({"n": 21})).await.unwrap();
    let failing = host
        .send("flow/parent", json!({"n": 1, "fail": true}))
        .await
        .unwrap();
    let slow = host
        .send(
            "flow/parent",
            json!({"n": 1, "sleep": "1m", "timeout": "1s"}),
        )
        .await
        .unwrap();
    let run = completed(&host, &ok).await;
    assert_eq!(run.run.output, Some(json!({"child": 42})));
    assert_eq!(run.steps[0].kind, "invoke");
    let child = run.steps[0].child.clone().unwrap();
    let child_run = host.run(&child).await.unwrap();
    assert_eq!(child_run.run.parent, Some(run.run.id.clone()));
    assert_eq!(child_run.events[0]["name"], "inngest/function.invoked");

    let run = completed(&host, &failing).await;
    let message = output(&run.run)["child_error"].as_str().unwrap();
    assert!(message.contains("the child was told to fail"), "{message}");

    let run = completed(&host, &slow).await;
    let message = output(&run.run)["child_error"].as_str().unwrap();
    assert!(
        message.contains("did not end before the invoke's timeout"),
        "{message}"
    );
}

#[tokio::test]
async fn a_wait_condition_lets_only_matching_events_through() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let event = host
        .send("flow/wait-if", json!({"order": "o-1", "total": 100}))
        .await
        .unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    host.wait_status(&run, "waiting", PATIENCE).await.unwrap();
    // The host answers a send once the event is accepted and the waiters
    // it matches are resolved (the run queued again), all in one change:
    // a run still waiting right after the answer was not resumed by it.
    host.send("flow/paid", json!({"order": "o-1", "amount": 50}))
        .await
        .unwrap();
    let status = host.run(&run).await.unwrap().run.status;
    assert_eq!(status, "waiting", "too small a payment does not resume it");
    host.send("flow/paid", json!({"order": "o-2", "amount": 500}))
        .await
        .unwrap();
    let status = host.run(&run).await.unwrap().run.status;
    assert_eq!(
        status, "waiting",
        "another order's payment does not resume it"
    );
    host.send("flow/paid", json!({"order": "o-1", "amount": 150}))
        .await
        .unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(
        done.run.output,
        Some(json!({"order": "o-1", "amount": 150}))
    );
}

#[tokio::test]
async fn a_final_failure_starts_the_failure_handler_and_emits_function_failed() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let event = host.send("flow/fails", json!({"id": "x-1"})).await.unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    host.wait_status(&run, "failed", PATIENCE).await.unwrap();
    let handlers = host
        .wait_runs("fails", PATIENCE, |runs| {
            runs.iter()
                .any(|r| r.kind == "on_failure" && r.status == "completed")
        })
        .await
        .unwrap();
    let handler = handlers.iter().find(|r| r.kind == "on_failure").unwrap();
    assert_eq!(
        handler.output,
        Some(json!({"id": "x-1", "failed_run": run, "error": "failing for \"x-1\""}))
    );
    let detail = host.run(&handler.id).await.unwrap();
    assert_eq!(detail.events[0]["name"], "inngest/function.failed");
    assert_eq!(
        detail.events[0]["data"]["event"]["data"],
        json!({"id": "x-1"})
    );
    let watchers = host
        .wait_runs("watch-failures", PATIENCE, |runs| {
            runs.iter().any(|r| r.status == "completed")
        })
        .await
        .unwrap();
    assert_eq!(output(&watchers[0])["run_id"], run);
    assert_eq!(watchers.len(), 1, "only failures of `fails` pass its `if`");
}

#[tokio::test]
async fn the_risky_transfer_example_rolls_back_after_its_last_attempt() {
    let (_dir, host) = deployed("risky-transfer", guests::RISKY_TRANSFER).await;
    let event = host
        .send(
            "bank/transfer.init",
            json!({"transferId": "t-1", "amount": 50, "failCredit": true}),
        )
        .await
        .unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    let failed = host.wait_status(&run, "failed", PATIENCE).await.unwrap();
    assert_eq!(failed.steps[1].attempts, 2, "retries: 1");
    let runs = host
        .wait_runs("risky-transfer", PATIENCE, |runs| {
            runs.iter()
                .any(|r| r.kind == "on_failure" && r.status == "completed")
        })
        .await
        .unwrap();
    let handler = runs.iter().find(|r| r.kind == "on_failure").unwrap();
    assert_eq!(
        handler.output,
        Some(json!({
            "rolled_back": {"reversed": "t-1", "amount": 50},
            "notified": {"alert": "Transfer failed: the destination bank is unavailable"}
        }))
    );
}

#[tokio::test]
async fn cancel_on_events_match_by_path_or_condition() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let mut runs = Vec::new();
    for id in ["a", "b", "c"] {
        let event = host
            .send("flow/cancellable", json!({"id": id}))
            .await
            .unwrap();
        let run = host.run_for_event(&event).await.unwrap();
        host.wait_status(&run, "sleeping", PATIENCE).await.unwrap();
        runs.push(run);
    }
    host.send("flow/cancel", json!({"id": "a"})).await.unwrap();
    host.send("flow/cancel-if", json!({"id": "b", "reason": "typo"}))
        .await
        .unwrap();
    host.send("flow/cancel-if", json!({"id": "c", "reason": "fraud"}))
        .await
        .unwrap();
    let a = host
        .wait_status(&runs[0], "cancelled", PATIENCE)
        .await
        .unwrap();
    assert!(error(&a.run).message.contains("flow/cancel"));
    host.wait_status(&runs[2], "cancelled", PATIENCE)
        .await
        .unwrap();
    assert_eq!(host.run(&runs[1]).await.unwrap().run.status, "sleeping");
    assert_eq!(
        host.get("/health").await.unwrap()["armed_timers"],
        1,
        "the cancelled runs' sleep timers are gone"
    );
}

#[tokio::test]
async fn timeouts_cancel_runs_that_wait_or_take_too_long() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("work", Plan::Hold);
    // The first run holds the only slot; the second waits past its 1 s
    // start timeout.
    let first = host
        .send("flow/slow-start", json!({"url": loopback.url}))
        .await
        .unwrap();
    let first = host.run_for_event(&first).await.unwrap();
    assert!(loopback.wait_hits(&first, "work", 1, PATIENCE).await);
    let second = host
        .send("flow/slow-start", json!({"url": loopback.url}))
        .await
        .unwrap();
    let second = host.run_for_event(&second).await.unwrap();
    let late = host
        .wait_status(&second, "cancelled", PATIENCE)
        .await
        .unwrap();
    assert_eq!(error(&late.run).name, "FunctionTimeoutError");
    assert!(late.run.started_at.is_none());
    loopback.release();
    host.wait_status(&first, "completed", PATIENCE)
        .await
        .unwrap();

    let slow = host.send("flow/slow-finish", json!({})).await.unwrap();
    let slow = host.run_for_event(&slow).await.unwrap();
    let slow = host
        .wait_status(&slow, "cancelled", PATIENCE)
        .await
        .unwrap();
    assert!(
        error(&slow.run).message.contains("timeouts.finish"),
        "{slow:#?}"
    );
}

#[tokio::test]
async fn bulk_cancellation_stops_a_functions_runs_in_a_time_range() {
    let (_dir, host) = deployed("flow", guests::FLOW).await;
    let mut runs = Vec::new();
    for id in ["a", "b", "c"] {
        let event = host
            .send("flow/cancellable", json!({"id": id}))
            .await
            .unwrap();
        runs.push(host.run_for_event(&event).await.unwrap());
    }
    for run in &runs {
        host.wait_status(run, "sleeping", PATIENCE).await.unwrap();
    }
    let unknown = host
        .post("/v1/runs/cancel", json!({"function": "nope"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("404"), "{unknown}");
    let answer = host
        .post("/v1/runs/cancel", json!({"function": "cancellable"}))
        .await
        .unwrap();
    assert_eq!(answer["cancelled"].as_array().unwrap().len(), 3);
    for run in &runs {
        assert_eq!(host.run(run).await.unwrap().run.status, "cancelled");
    }
}

#[tokio::test]
async fn a_cron_run_missed_while_the_host_was_down_starts_once_not_once_per_miss() {
    let (_dir, mut host) = deployed("ticker", guests::TICKER).await;
    host.wait_runs("tick", PATIENCE, |runs| {
        runs.iter().filter(|r| r.status == "completed").count() >= 2
    })
    .await
    .unwrap();
    host.kill();
    let down_at = stepwise_host::model::now_ms();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let up_at = stepwise_host::model::now_ms();
    host.restart().unwrap();
    let runs = host
        .wait_runs("tick", PATIENCE, |runs| {
            runs.iter().any(|r| r.created_at > up_at)
        })
        .await
        .unwrap();
    let scheduled = crate::cron_times_once_each(&host, &runs).await;
    // Three or four ticks fell in the 7 s the host was down; one of them
    // starts on restart, the others are skipped.
    let missed = scheduled
        .iter()
        .filter(|ts| **ts > down_at + 2_000 && **ts < up_at)
        .count();
    assert_eq!(
        missed, 0,
        "only the first missed time runs: {scheduled:?} (down {down_at}..{up_at})"
    );
    let caught_up = runs
        .iter()
        .zip(&scheduled)
        .filter(|(run, ts)| run.created_at > up_at && **ts < up_at)
        .count();
    assert_eq!(
        caught_up, 1,
        "the missed time started once on restart: {scheduled:?}"
    );
}

#[tokio::test]
async fn a_ten_thousand_step_loop_completes_and_resumes_by_replaying_it_all() {
    let options = stepwise_tests::HostOptions {
        extra_args: vec!["--max-steps-per-run".into(), "10001".into()],
        ..Default::default()
    };
    let (_dir, host) = crate::start_host_with(options);
    host.deploy("probe", guests::PROBE).await.unwrap();
    // One id repeated: the journal holds item, item:1, ..., item:9999; then
    // a sleep suspends the run, and it resumes by replaying all of them.
    let mut ops: Vec<Value> = (0..10_000).map(|_| json!({"local": "item"})).collect();
    ops.push(json!({"sleep": {"id": "rest", "duration": "200ms"}}));
    let run = crate::start_script(&host, json!({"ops": ops})).await;
    let done = host
        .wait_status(&run, "completed", Duration::from_secs(300))
        .await
        .unwrap();
    let ids = step_ids(&done);
    assert_eq!(ids.len(), 10_001);
    assert_eq!(ids[1], "item:1");
    assert_eq!(ids[9_999], "item:9999");
    assert_eq!(output(&done.run).as_array().unwrap().len(), 10_001);
}

#[tokio::test]
async fn a_host_killed_during_a_parallel_group_reruns_only_the_unfinished_branch() {
    let (_dir, mut host) = deployed("flow", guests::FLOW).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("branch-1", Plan::Hold);
    let event = host
        .send("flow/fan", json!({"url": loopback.url, "branches": 3}))
        .await
        .unwrap();
    let run = host.run_for_event(&event).await.unwrap();
    assert!(loopback.wait_hits(&run, "branch-1", 1, PATIENCE).await);
    // The other two branches finish and are journaled; then the host dies
    // with branch-1's body in flight.
    host.wait_for(&run, PATIENCE, |r| r.steps.len() == 2)
        .await
        .unwrap();
    host.kill();
    loopback.release();
    host.restart().unwrap();
    let done = host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(loopback.hits(&run, "branch-0"), 1);
    assert_eq!(loopback.hits(&run, "branch-2"), 1);
    assert_eq!(
        loopback.hits(&run, "branch-1"),
        2,
        "the interrupted branch ran again"
    );
    assert_eq!(output(&done.run)["branches"][1]["hit"], 2);
}
