//! Inngest's own JavaScript client (npm `inngest`) sends events to Stepwise:
//! configured in code and through Inngest's environment variables.

use crate::{PATIENCE, deployed};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use stepwise_tests::{HostProcess, guests};

/// The Inngest SDK release the test installs.
const INNGEST_VERSION: &str = "4.24.0";

/// `node_modules` with the pinned `inngest` package, installed once into the
/// target directory.
fn inngest_client() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tools/inngest-{INNGEST_VERSION}"));
    let installed = dir.join("node_modules/inngest/package.json");
    if !std::fs::read_to_string(&installed)
        .is_ok_and(|p| p.contains(&format!("\"version\": \"{INNGEST_VERSION}\"")))
    {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("package.json"),
            "{\"private\": true, \"type\": \"module\"}",
        )
        .unwrap();
        let status = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                &format!("inngest@{INNGEST_VERSION}"),
            ])
            .current_dir(&dir)
            .status()
            .expect("running npm (Node.js and npm are needed for this test)");
        assert!(
            status.success(),
            "npm could not install inngest@{INNGEST_VERSION}"
        );
    }
    let script = dir.join("inngest-send.mjs");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/clients/inngest-send.mjs"),
        &script,
    )
    .unwrap();
    script
}

/// Runs the client script with `env` and returns what it printed.
fn send_with_inngest(script: &Path, env: &[(&str, &str)]) -> Value {
    let mut command = Command::new("node");
    command.arg(script);
    for var in [
        "INNGEST_BASE_URL",
        "INNGEST_EVENT_API_BASE_URL",
        "INNGEST_EVENT_KEY",
        "INNGEST_DEV",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("running node");
    assert!(
        output.status.success(),
        "the Inngest client failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

async fn assert_runs_started(host: &HostProcess, sent: &Value) {
    let one = sent["one"]["ids"].as_array().expect("ids for one event");
    let batch = sent["batch"]["ids"].as_array().expect("ids for the batch");
    assert_eq!((one.len(), batch.len()), (1, 3), "{sent}");
    assert_eq!(batch[1], "inngest-dedupe-1");
    assert_eq!(batch[2], "inngest-dedupe-1");
    for id in one.iter().chain(&batch[..2]) {
        let run = host.run_for_event(id.as_str().unwrap()).await.unwrap();
        host.wait_status(&run, "completed", PATIENCE).await.unwrap();
    }
    // Four events accepted, three runs: the repeated id started nothing.
    assert_eq!(host.runs().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn inngest_sends_single_and_batched_events_to_stepwise() {
    let script = inngest_client();
    let (_dir, host) = deployed("fan-out-loop", guests::FAN_OUT_LOOP).await;
    let sent = send_with_inngest(
        &script,
        &[
            ("STEPWISE_URL", &host.url),
            ("STEPWISE_KEY", &host.event_key),
        ],
    );
    assert_runs_started(&host, &sent).await;

    // The same app configured only through Inngest's environment variables.
    let (_dir, host) = deployed("fan-out-loop", guests::FAN_OUT_LOOP).await;
    let sent = send_with_inngest(
        &script,
        &[
            ("INNGEST_BASE_URL", &host.url),
            ("INNGEST_EVENT_KEY", &host.event_key),
            ("INNGEST_DEV", "0"),
        ],
    );
    assert_runs_started(&host, &sent).await;
}
