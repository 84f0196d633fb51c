//! End-to-end tests: each starts a real `stepwise` process on a temp dir,
//! deploys real components over HTTP and drives them with events.

mod bad_input;
mod budgets;
mod cli;
mod crash;
mod determinism;
mod egress;
mod fairness;
mod fixture;
mod flow_control;
mod function_model;
mod heavy;
mod intake;
mod keys;
mod operations;
mod postgres;
mod process_order;
mod retries;
mod several_hosts;
mod tenants;
mod traces;
mod uploads;
mod versions;

use stepwise_host::api::views::{RunDetail, RunView, StepView};
use stepwise_host::model::ErrorRecord;
use stepwise_tests::{HostOptions, HostProcess};

/// The host binary under test.
pub const STEPWISE: &str = env!("CARGO_BIN_EXE_stepwise-e2e");

/// Generous bound for a run to get somewhere on a loaded 2-core machine.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// A fresh host on a temp dir (kept alive by the returned guard).
pub fn start_host() -> (tempfile::TempDir, HostProcess) {
    start_host_with(HostOptions::default())
}

/// Shared by every test's host, so that each component is compiled once.
pub fn compiled_cache() -> String {
    format!("{}/compiled", env!("CARGO_TARGET_TMPDIR"))
}

/// A fresh host with `options`.
pub fn start_host_with(options: HostOptions) -> (tempfile::TempDir, HostProcess) {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = start_host_on(dir.path(), options);
    (dir, host)
}

/// A host on the data directory `dir` with `options`.
pub fn start_host_on(dir: &std::path::Path, mut options: HostOptions) -> HostProcess {
    options
        .extra_args
        .extend(["--compiled-dir".to_string(), compiled_cache()]);
    HostProcess::start(STEPWISE, dir, options).expect("starting the host")
}

/// A run's output, for a test to read into; a run without one fails the
/// test (with the run).
pub fn output(run: &RunView) -> &serde_json::Value {
    run.output
        .as_ref()
        .unwrap_or_else(|| panic!("run {} has no output: {run:#?}", run.id))
}

/// A run's error; a run without one fails the test (with the run).
pub fn error(run: &RunView) -> &ErrorRecord {
    run.error
        .as_ref()
        .unwrap_or_else(|| panic!("run {} has no error: {run:#?}", run.id))
}

/// A step's output, for a test to read into; a step without one fails
/// the test (with the step).
pub fn step_output(step: &StepView) -> &serde_json::Value {
    step.output
        .as_ref()
        .unwrap_or_else(|| panic!("step {} has no output: {step:#?}", step.id))
}

/// The times cron `runs` were scheduled for (their events' `ts`), in the
/// runs' order; fails the test if any time fired twice.
pub async fn cron_times_once_each(api: &stepwise_tests::Api, runs: &[RunView]) -> Vec<u64> {
    let mut scheduled = Vec::new();
    for run in runs {
        let detail = api.run(&run.id).await.unwrap();
        scheduled.push(detail.events[0]["ts"].as_u64().unwrap());
    }
    let mut unique = scheduled.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        scheduled.len(),
        "no time fired twice: {scheduled:?}"
    );
    scheduled
}

/// The ids of a run's steps, in order.
pub fn step_ids(run: &RunDetail) -> Vec<String> {
    run.steps.iter().map(|s| s.id.clone()).collect()
}

/// A run's whole output log.
pub fn log_text(run: &RunDetail) -> String {
    run.logs.iter().map(|l| l.text.as_str()).collect()
}

/// Sends `probe/script` with `data` and returns the id of the run it starts.
pub async fn start_script(host: &stepwise_tests::Api, data: serde_json::Value) -> String {
    let event = host
        .send("probe/script", data)
        .await
        .expect("sending the script");
    host.run_for_event(&event).await.expect("the script's run")
}

/// The Python or JavaScript example at `source`, built with `stepwise build`.
pub fn guest_app(source: &str) -> String {
    let tools = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools");
    stepwise_tests::guest_app(STEPWISE, std::path::Path::new(source), &tools)
        .unwrap_or_else(|e| panic!("building {source}: {e:#}"))
        .to_string_lossy()
        .into_owned()
}

/// A fresh host with `component` deployed as `app`.
pub async fn deployed(app: &str, component: &str) -> (tempfile::TempDir, HostProcess) {
    let (dir, host) = start_host();
    host.deploy(app, component).await.expect("deploying");
    (dir, host)
}
