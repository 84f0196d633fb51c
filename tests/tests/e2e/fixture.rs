//! A data directory written by an older release (tests/fixtures) opens with
//! today's host: its keys still work (migrated out of the journal), and its
//! sleeping and waiting runs finish.

use crate::{PATIENCE, STEPWISE, compiled_cache};
use serde_json::json;
use std::path::Path;
use stepwise_tests::{HostOptions, HostProcess};

/// The release that wrote the fixture, and the keys it printed.
const FIXTURE: &str = "release-e13e8b6";
const OLD_EVENT_KEY: &str = "swe_49f29526b75ac3fd239aa185c1a9b0a549755f08043482f6";
const OLD_MANAGEMENT_KEY: &str = "swm_2ce1418afb69758c22dc41aec5a4248f4cca0d30333a5e80";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_of_the_previous_release_opens_and_finishes_its_runs() {
    if stepwise_tests::host::on_postgres() {
        eprintln!("sled only: the fixture is a sled data directory");
        return;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(FIXTURE)
        .join("journal");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, &dir.path().join("journal"));
    let host = HostProcess::start(
        STEPWISE,
        dir.path(),
        HostOptions {
            extra_args: vec!["--compiled-dir".into(), compiled_cache()],
            ..HostOptions::default()
        },
    )
    .unwrap();
    // The keys the old release printed still work.
    assert_eq!(host.event_key, OLD_EVENT_KEY);
    assert_eq!(host.management_key, OLD_MANAGEMENT_KEY);
    let api = host.as_tenant(OLD_MANAGEMENT_KEY, OLD_EVENT_KEY);

    let runs = api.runs_of("process-order").await.unwrap();
    assert_eq!(runs.len(), 3, "{runs:#?}");
    let sleeping = api.run_for_event("fixture-sleeping").await.unwrap();
    let waiting = api.run_for_event("fixture-waiting").await.unwrap();
    let completed = api.run_for_event("fixture-completed").await.unwrap();
    assert_eq!(api.run(&completed).await.unwrap().run.status, "completed");

    // The sleep ended long ago: the run goes on to wait for its payment.
    api.wait_status(&sleeping, "waiting", PATIENCE)
        .await
        .unwrap();
    assert_eq!(api.run(&waiting).await.unwrap().run.status, "waiting");
    for (order, run) in [("o-sleeping", &sleeping), ("o-waiting", &waiting)] {
        api.send(
            "shop/payment.success",
            json!({"orderId": order, "amount": 42}),
        )
        .await
        .unwrap();
        let done = api.wait_status(run, "completed", PATIENCE).await.unwrap();
        let steps = crate::step_ids(&done);
        assert_eq!(
            steps,
            ["get-user", "wait-for-payment", "wait-payment", "ship-order"],
            "{done:#?}"
        );
    }
}
