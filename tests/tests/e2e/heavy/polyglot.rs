//! The sandbox's rules hold for Python and JavaScript guests too: outside
//! steps the clock is the run's logical time and random numbers repeat on
//! replay (but differ between runs); `fetch` is refused outside steps.

use crate::{PATIENCE, deployed, guest_app, output, step_ids};
use serde_json::{Value, json};
use stepwise_host::api::views::RunDetail;
use stepwise_tests::{HostProcess, Loopback};

const PYTHON_SANDBOX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/python/sandbox/app.py");
const JS_SANDBOX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/js/sandbox/app.js");

/// Two runs of the sandbox check; both must complete (no determinism error
/// on the replay after the sleep).
async fn two_runs(host: &HostProcess, data: Value) -> [RunDetail; 2] {
    let mut done = Vec::new();
    for _ in 0..2 {
        let event = host.send("sandbox/check", data.clone()).await.unwrap();
        let run = host.run_for_event(&event).await.unwrap();
        done.push(host.wait_status(&run, "completed", PATIENCE).await.unwrap());
    }
    [done[0].clone(), done[1].clone()]
}

fn check(runs: &[RunDetail; 2]) {
    for run in runs {
        assert_eq!(
            output(&run.run)["clock"],
            json!(run.run.started_at),
            "the clock outside steps is logical: {run:#?}"
        );
        let number = output(&run.run)["random"].to_string();
        assert_eq!(
            step_ids(run),
            [format!("random-{number}"), "nap".to_string()]
        );
    }
    assert_ne!(
        output(&runs[0].run)["random"],
        output(&runs[1].run)["random"],
        "random numbers differ between runs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_and_javascript_guests_live_by_the_sandbox_rules() {
    let python = guest_app(PYTHON_SANDBOX);
    let js = guest_app(JS_SANDBOX);
    let loopback = Loopback::start().await.unwrap();
    let (_dir, host) = deployed("sandbox-py", &python).await;
    let runs = two_runs(&host, json!({})).await;
    check(&runs);

    let (_dir, host) = deployed("sandbox-js", &js).await;
    let runs = two_runs(&host, json!({"url": format!("{}/outside", loopback.url)})).await;
    check(&runs);
    let outside = output(&runs[0].run)["outside"].as_str().unwrap();
    assert_ne!(outside, "reached", "fetch outside a step must fail");
}
