//! A thousand runs of mixed functions under load while the host is killed
//! with SIGKILL ten times and restarted (and, on PostgreSQL, on three hosts
//! whose leader is killed). Afterwards: every accepted event
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

/// Sends `events` in batches of `batch` a second through the hosts of
/// `apis` in turn, retrying a batch through the next one until one accepts
/// it (a killed host refuses until it is up again; on several hosts, its
/// standbys answer 502 until one of them leads). Events have ids, so a
/// batch sent again starts nothing twice.
async fn send_all(apis: Vec<Api>, events: Vec<Value>, batch: usize) {
    let mut turn = 0;
    for chunk in events.chunks(batch) {
        loop {
            let api = &apis[turn % apis.len()];
            turn += 1;
            match api.send_batch(chunk.to_vec()).await {
                Ok(ids) if ids.len() == chunk.len() => break,
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
        listen: Some(format!("127.0.0.1:{}", stepwise_tests::free_port())),
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
    let sending = tokio::spawn(send_all(vec![(*host).clone()], events(&loopback.url), 25));

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
    let reran = bodies_ran_again_only_across(&host, &runs, &loopback, &ups).await;
    println!(
        "{expected} runs, {KILLS} kills, {reran} step bodies ran again after a kill, {} calls in all",
        loopback.total_hits()
    );
    assert!(
        reran > 0,
        "no step body ran again, though kills landed while bodies ran"
    );
}

/// Checks that a step body ran again only across one of `ups` (a host
/// killed at `.0`, its successor up by `.1`: the first execution before
/// `.1`, the second after `.0`), and that the journal of every run holds
/// the last execution of each body; returns how many bodies ran again.
async fn bodies_ran_again_only_across(
    api: &Api,
    runs: &[stepwise_host::api::views::RunView],
    loopback: &Loopback,
    ups: &[(u64, u64)],
) -> usize {
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
                    .any(|(down, up)| pair[0] <= *up && *down <= pair[1]),
                "{key} ran at {} and again at {}, not across a kill (down and up again at {ups:?}): a completed step ran twice",
                pair[0],
                pair[1]
            );
        }
    }
    for run in runs {
        let id = run.id.as_str();
        let detail = api.run(id).await.unwrap();
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
    reran
}

/// A random number below `n` (the test's own; no crate needed).
fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_ms());
    hasher.finish() % n
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_carry_a_thousand_runs_through_a_killed_leader_and_a_restarted_standby() {
    let Some(mut set) = crate::several_hosts::Hosts::start(3, "2s") else {
        return;
    };
    let apis: Vec<Api> = (0..3).map(|i| set.default_tenant(i)).collect();
    apis[2].deploy("probe", guests::PROBE).await.unwrap();
    apis[2].deploy("flow", guests::FLOW).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    for step in ["a", "c", "branch-0", "branch-1", "branch-2"] {
        loopback.plan(step, Plan::Delay(Duration::from_millis(40)));
    }
    let sending = tokio::spawn(send_all(apis.clone(), events(&loopback.url), 50));

    // The leader dies while a step body is in flight; a standby takes
    // over. Then the other standby is killed and started again.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    while loopback.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (old_leader, _) = set.leader();
    let killed: usize = old_leader.strip_prefix("host-").unwrap().parse().unwrap();
    set.hosts[killed].kill();
    let killed_at = now_ms();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while set.leader().0 == old_leader {
        assert!(std::time::Instant::now() < deadline, "nobody took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took_over_at = now_ms();
    let (new_leader, _) = set.leader();
    let other = (0..3)
        .find(|i| *i != killed && format!("host-{i}") != new_leader)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    set.hosts[other].restart().unwrap();
    set.hosts[killed].restart().unwrap();
    sending.await.unwrap();

    let expected = SCRIPTS + FANS;
    let runs = apis[other]
        .wait_for_runs(Duration::from_secs(300), |runs| {
            runs.len() >= expected && runs.iter().all(|r| r.status == "completed")
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), expected, "one run per event, none twice");

    // A body ran again only across the change of leader.
    let change = [(killed_at, took_over_at)];
    let reran = bodies_ran_again_only_across(&apis[0], &runs, &loopback, &change).await;
    println!(
        "{expected} runs on three hosts, the leader killed, a standby restarted: {reran} bodies ran again, {} calls in all",
        loopback.total_hits()
    );
    assert!(
        reran > 0,
        "the kill landed while bodies ran, yet none ran again"
    );
}
