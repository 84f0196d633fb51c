//! The `stepwise` command line against a running host: deploy, send, runs,
//! run, cancel, as a user types them.

use crate::{PATIENCE, STEPWISE, start_host, step_output};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::process::Command;
use stepwise_host::api::views::{RunDetail, RunView};
use stepwise_tests::guests;

fn stepwise(server: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(STEPWISE)
        .args(args)
        .env("STEPWISE_SERVER", server)
        .output()
        .expect("running the CLI");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What `stepwise args` printed, read as JSON into a `T` (a `Value`, or
/// the API's view of a run or of a list of runs).
fn json<T: DeserializeOwned>(server: &str, args: &[&str]) -> T {
    let (ok, out, err) = stepwise(server, args);
    assert!(ok, "stepwise {args:?} failed: {err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stepwise {args:?} printed no JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_send_inspect_and_cancel_from_the_command_line() {
    let (_dir, host) = start_host();
    let server = host.url.clone();

    let (ok, out, err) = stepwise(&server, &["deploy", guests::PROCESS_ORDER, "--app", "shop"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("deployed shop") && out.contains("process-order  <- shop/order.created"),
        "{out}"
    );

    let data = r#"{"orderId":"o-7","userId":"u-7","paymentDelay":"1s","paymentTimeout":"1m"}"#;
    let sent: Value = json(
        &server,
        &["send", "shop/order.created", "--data", data, "--json"],
    );
    let event = sent["ids"][0].as_str().unwrap().to_string();
    let run = host.run_for_event(&event).await.unwrap();
    host.wait_status(&run, "sleeping", PATIENCE).await.unwrap();

    let runs: Vec<RunView> = json(&server, &["runs", "--json"]);
    let listed = &runs[0];
    assert_eq!(
        (listed.id.as_str(), listed.function.as_str()),
        (run.as_str(), "process-order")
    );
    assert!(
        listed.status == "sleeping" || listed.status == "waiting",
        "{listed:#?}"
    );

    let detail: RunDetail = json(&server, &["run", &run, "--json"]);
    let first = &detail.steps[0];
    assert_eq!(
        (first.id.as_str(), first.status.as_str()),
        ("get-user", "completed")
    );
    assert_eq!(first.attempts, 1);
    assert_eq!(step_output(first)["id"], "u-7");

    let (ok, table, _) = stepwise(&server, &["run", &run]);
    assert!(
        ok && table.contains("get-user") && table.contains("STEP"),
        "{table}"
    );
    let (ok, table, _) = stepwise(&server, &["runs"]);
    assert!(
        ok && table.contains(&run) && table.contains("process-order"),
        "{table}"
    );

    let (ok, out, err) = stepwise(&server, &["cancel", &run]);
    assert!(ok, "{err}");
    assert!(out.contains("cancelled"), "{out}");
    assert_eq!(
        json::<RunDetail>(&server, &["run", &run, "--json"])
            .run
            .status,
        "cancelled"
    );

    let (ok, _, err) = stepwise(&server, &["run", "01NOSUCHRUN"]);
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = stepwise(&server, &["send", "x", "--data", "{nope"]);
    assert!(!ok && err.contains("--data is not valid JSON"), "{err}");
    let (ok, _, err) = stepwise("http://127.0.0.1:9", &["runs"]);
    assert!(!ok && err.contains("could not reach the host"), "{err}");
}
