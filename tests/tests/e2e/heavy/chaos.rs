//! A thousand runs of mixed functions under load while the host is killed
//! with SIGKILL ten times and restarted. Afterwards: every accepted event
//! has its run, every run completed, and every step body ran once, unless
//! the host died while it was in flight (then once more after the
//! restart). The loopback server counts the executions, outside the host.

use crate::{STEPWISE, compiled_cache, step_output};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stepwise_tests::{Api, HostOptions, HostProcess, Loopback, Plan, guests};

const SCRIPTS: usize = 800;
const FANS: usize = 200;
const KILLS: usize = 10;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn now_ms() -> u64 {
    stepwise_host::model::now_ms()
}

/// The 1,000 events, each with an id so that a retried request after a
/// kill starts nothing twice.
fn events(url: &str) -> Vec<Value> {
    let script = |i: usize| {
        json!({"id": format!("script-{i}"), "name": "probe/script", "data": {"url": url, "ops": [
            {"run": "a"}, {"local": "b"}, {"sleep": {"id": "nap", "duration": "300ms"}}, {"run": "c"}
        ]}})
    };
    let fan = |i: usize| json!({"id": format!("fan-{i}"), "name": "flow/fan", "data": {"url": url, "branches": 3}});
    (0..SCRIPTS).map(script).chain((0..FANS).map(fan)).collect()
}

/// Sends `events` in batches of 25 a second, retrying each batch until the
/// host (up again after a kill) accepts it.
async fn send_all(api: Api, events: Vec<Value>) {
    for batch in events.chunks(25) {
        loop {
            match api.send_batch(batch.to_vec()).await {
                Ok(ids) if ids.len() == batch.len() => break,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_runs_survive_ten_kills_and_completed_steps_never_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let options = HostOptions {
        listen: Some(format!("127.0.0.1:{}", free_port())),
        extra_args: vec!["--compiled-dir".into(), compiled_cache()],
        ..HostOptions::default()
    };
    let mut host = HostProcess::start(STEPWISE, dir.path(), options).unwrap();
    host.deploy("probe", guests::PROBE).await.unwrap();
    host.deploy("flow", guests::FLOW).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    // Bodies that take a while, so that a kill can land while one runs.
    for step in ["a", "c", "branch-0", "branch-1", "branch-2"] {
        loopback.plan(step, Plan::Delay(Duration::from_millis(40)));
    }
    let sending = tokio::spawn(send_all((*host).clone(), events(&loopback.url)));

    // Ten kills at random moments while the events arrive and run, each
    // while a step body is in flight (a call to the loopback server is
    // open, so its result cannot be journaled yet).
    let ups = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..KILLS {
        let pause = 1_500 + rand_below(3_000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        while loopback.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        host.kill();
        // The new life starts here: it resumes runs before it prints its
        // address, so its calls may arrive before `restart` returns.
        let starting = now_ms();
        host.restart().unwrap();
        // When the new host was up: a call the old one sent may still
        // arrive after the kill, but none arrives after this.
        ups.lock().unwrap().push((starting, now_ms()));
    }
    sending.await.unwrap();

    // Every event has its one run, and every run completes.
    let expected = SCRIPTS + FANS;
    let runs = host
        .wait_for_runs(Duration::from_secs(300), |runs| {
            runs.len() >= expected && runs.iter().all(|r| r.status == "completed")
        })
        .await
        .unwrap();
    assert_eq!(
        runs.len(),
        expected,
        "one run per accepted event, none twice"
    );

    // A step body ran again only in a later life of the host: a restarted
    // host came up between its two executions.
    let ups = ups.lock().unwrap().clone();
    let mut arrivals: HashMap<String, Vec<u64>> = HashMap::new();
    for (key, at) in loopback.arrival_times() {
        arrivals.entry(key).or_default().push(at);
    }
    let mut reran = 0;
    for (key, times) in &arrivals {
        for pair in times.windows(2) {
            reran += 1;
            assert!(
                ups.iter()
                    .any(|(starting, up)| pair[0] <= *up && *starting <= pair[1]),
                "{key} ran at {} and again at {} within one life of the host: a completed step ran twice (restarts up at {ups:?})",
                pair[0],
                pair[1]
            );
        }
    }
    // And the journal holds the last execution of each body: none after it.
    for run in &runs {
        let id = run.id.as_str();
        let detail = host.run(id).await.unwrap();
        let journaled: Vec<(String, Value)> = detail
            .steps
            .iter()
            .filter(|s| s.output.as_ref().is_some_and(|o| o["hit"].is_u64()))
            .map(|s| (s.id.clone(), step_output(s)["hit"].clone()))
            .collect();
        assert!(!journaled.is_empty(), "{detail:#?}");
        for (step, hit) in journaled {
            let times = &arrivals[&format!("{id}/{step}")];
            assert_eq!(
                hit.as_u64(),
                Some(times.len() as u64),
                "{id}/{step}: the journal holds hit {hit} of {}",
                times.len()
            );
        }
    }
    println!(
        "{expected} runs, {KILLS} kills, {reran} step bodies ran again after a kill, {} calls in all",
        loopback.total_hits()
    );
    assert!(
        reran > 0,
        "no step body ran again, though kills landed while bodies ran"
    );
}

/// A random number below `n` (the test's own; no crate needed).
fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_ms());
    hasher.finish() % n
}
