//! Several hosts on one PostgreSQL database: the one holding the runs
//! lease leads, the others forward every request to it and take over when
//! it stops or dies, and a host that lost its lease cannot write. On sled
//! each host has its own journal, so these run only on PostgreSQL.

use crate::tenants::{ADMIN, create_tenant};
use crate::{PATIENCE, STEPWISE, compiled_cache, output, start_script};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use stepwise_host::cluster::{Claim, Fence, Leases, RUNS_LEASE};
use stepwise_host::journal::postgres::lease::Fenced;
use stepwise_host::journal::{Journal, Op, PgJournal, RunJournal};
use stepwise_tests::host::{on_postgres, pretty};
use stepwise_tests::loopback::{Loopback, Plan};
use stepwise_tests::postgres::{Cluster, cluster, database_of};
use stepwise_tests::{Api, HostOptions, HostProcess, guests};

/// Hosts started one after another on one new database: the first leads.
/// Each listens on a port of its own, the same again after a restart.
pub struct Hosts {
    url: String,
    /// The hosts, `host-0` first.
    pub hosts: Vec<HostProcess>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Hosts {
    /// `count` hosts whose leases last `ttl`; `None` on sled.
    pub fn start(count: usize, ttl: &str) -> Option<Hosts> {
        if !on_postgres() {
            eprintln!("several hosts share a journal only on PostgreSQL: skipped on sled");
            return None;
        }
        let url = cluster().unwrap().new_database().unwrap();
        let mut hosts = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..count {
            let dir = tempfile::tempdir().unwrap();
            let options = HostOptions {
                extra_args: vec![
                    "--store".to_string(),
                    url.clone(),
                    "--lease-ttl".to_string(),
                    ttl.to_string(),
                    "--host-id".to_string(),
                    format!("host-{i}"),
                    "--admin-key".to_string(),
                    ADMIN.to_string(),
                    "--compiled-dir".to_string(),
                    compiled_cache(),
                ],
                listen: Some(format!("127.0.0.1:{}", stepwise_tests::free_port())),
                ..HostOptions::default()
            };
            hosts.push(HostProcess::start(STEPWISE, dir.path(), options).unwrap());
            dirs.push(dir);
        }
        Some(Hosts {
            url,
            hosts,
            _dirs: dirs,
        })
    }

    /// The default tenant (whose keys the first host printed) through host
    /// `i`.
    pub fn default_tenant(&self, i: usize) -> Api {
        let first = &self.hosts[0];
        self.hosts[i].as_tenant(&first.management_key, &first.event_key)
    }

    /// Who holds the runs lease, and at what epoch.
    pub fn leader(&self) -> (String, i64) {
        let row = cluster()
            .unwrap()
            .sql_in(
                database_of(&self.url).unwrap(),
                "SELECT holder || ' ' || epoch FROM stepwise.leases WHERE name = 'runs'",
            )
            .unwrap();
        let (holder, epoch) = row.split_once(' ').expect("a lease row");
        (holder.to_string(), epoch.parse().unwrap())
    }

    /// Waits for `holder` to hold the runs lease; how long that took.
    pub fn wait_leader(&self, holder: &str, patience: Duration) -> Duration {
        let start = Instant::now();
        while self.leader().0 != holder {
            assert!(
                start.elapsed() < patience,
                "{holder} did not take the runs lease over in {patience:?}; the leader is {:?}; its log:\n{}",
                self.leader(),
                self.hosts.last().unwrap().log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_forwards_every_request_and_answers_as_the_leader() {
    let Some(set) = Hosts::start(2, "2s") else {
        return;
    };
    assert_eq!(set.leader(), ("host-0".to_string(), 1));
    assert!(
        set.hosts[1]
            .start_output
            .iter()
            .any(|l| l.contains("standing by: host host-0 leads")),
        "{:?}",
        set.hosts[1].start_output
    );
    let (on_a, on_b) = (set.default_tenant(0), set.default_tenant(1));
    let leader = on_a.get("/health").await.unwrap();
    assert_eq!(
        (&leader["role"], &leader["host_id"], &leader["epoch"]),
        (&json!("leader"), &json!("host-0"), &json!(1)),
        "{leader}"
    );
    let standby = on_b.get("/health").await.unwrap();
    assert_eq!(
        (&standby["role"], &standby["host_id"], &standby["leader"]),
        (&json!("standby"), &json!("host-1"), &json!(on_a.url)),
        "{standby}"
    );
    on_b.deploy("probe", guests::PROBE).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    let ops = json!([{"run": "a"}, {"run": "b"}]);
    let run = start_script(&on_b, json!({"url": loopback.url, "ops": ops})).await;
    let done_on_b = on_b.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(
        pretty(&on_a.run(&run).await.unwrap()),
        pretty(&done_on_b),
        "the same answer from either host"
    );
    assert_eq!(
        pretty(&on_a.runs().await.unwrap()),
        pretty(&on_b.runs().await.unwrap())
    );
    assert_eq!(loopback.total_hits(), 2, "only the leader executes");

    // A key made through one host and revoked through the other.
    let acme = create_tenant(&set.hosts[1], "acme");
    let (code, _) = call(&acme, Method::GET, "/v1/runs").await;
    assert_eq!(code, StatusCode::OK);
    let admin_on_a = set.hosts[0].as_tenant(ADMIN, "");
    let (_, tenant) = call(&admin_on_a, Method::GET, "/v1/tenants/acme").await;
    let management = tenant["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "management")
        .unwrap_or_else(|| panic!("no management key: {tenant}"));
    let revoke = format!(
        "/v1/tenants/acme/keys/{}",
        management["id"].as_str().unwrap()
    );
    let (code, answer) = call(&admin_on_a, Method::DELETE, &revoke).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let (code, answer) = call(&acme, Method::GET, "/v1/runs").await;
    assert_eq!(
        code,
        StatusCode::UNAUTHORIZED,
        "a key revoked on host A is refused by host B: {answer}"
    );
}

async fn call(api: &Api, method: Method, path: &str) -> (StatusCode, Value) {
    let response = api.request(method, path).send().await.unwrap();
    let code = response.status();
    (code, response.json().await.unwrap_or(Value::Null))
}

/// Two hosts with a 2 s lease, the probe app deployed through the standby
/// (`host-1`, whose API is returned), and a loopback server that holds every
/// call to step `slow` until released; `None` on sled.
async fn two_hosts_holding_slow() -> Option<(Hosts, Api, Loopback)> {
    let set = Hosts::start(2, "2s")?;
    let on_b = set.default_tenant(1);
    on_b.deploy("probe", guests::PROBE).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("slow", Plan::Hold);
    Some((set, on_b, loopback))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leader_is_replaced_and_its_runs_carry_on() {
    let Some((mut set, on_b, loopback)) = two_hosts_holding_slow().await else {
        return;
    };
    let executing = start_script(
        &on_b,
        json!({"url": loopback.url, "ops": [{"run": "a"}, {"run": "slow"}, {"run": "c"}]}),
    )
    .await;
    let sleeping = start_script(
        &on_b,
        json!({"url": loopback.url, "ops": [{"run": "a"}, {"sleep": {"id": "nap", "duration": "3s"}}, {"run": "b"}]}),
    )
    .await;
    let waiting = start_script(
        &on_b,
        json!({"url": loopback.url, "ops": [
            {"wait": {"id": "approval", "event": "probe/approved", "matching": "data.key", "timeout": "5m"}},
            {"run": "after"},
        ], "key": "k-1"}),
    )
    .await;
    assert!(loopback.wait_hits(&executing, "slow", 1, PATIENCE).await);
    on_b.wait_status(&sleeping, "sleeping", PATIENCE)
        .await
        .unwrap();
    on_b.wait_status(&waiting, "waiting", PATIENCE)
        .await
        .unwrap();

    set.hosts[0].kill();
    let killed_at = Instant::now();
    loopback.release();
    // Sent at once, through the standby: it waits for a new leader (itself)
    // instead of failing. The event, accepted by the new leader, resumes a
    // run waiting since the old one.
    on_b.send("probe/approved", json!({"key": "k-1"}))
        .await
        .unwrap();
    set.wait_leader("host-1", PATIENCE);
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "a 2 s lease was taken over only after {took:?}"
    );
    assert_eq!(set.leader(), ("host-1".to_string(), 2));

    for run in [&executing, &sleeping, &waiting] {
        on_b.wait_status(run, "completed", PATIENCE).await.unwrap();
    }
    assert_eq!(
        loopback.hits(&executing, "slow"),
        2,
        "the body the kill interrupted runs again on the new leader"
    );
    for (run, step) in [(&executing, "a"), (&executing, "c"), (&sleeping, "a")] {
        assert_eq!(loopback.hits(run, step), 1, "{step} of {run} ran again");
    }
    assert_eq!(loopback.hits(&sleeping, "b"), 1);
    assert_eq!(loopback.hits(&waiting, "after"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_leader_hands_its_lease_over_at_once() {
    // A lease that would take 60 s to expire: only a release explains a
    // quick takeover.
    let Some(mut set) = Hosts::start(2, "60s") else {
        return;
    };
    let on_b = set.default_tenant(1);
    on_b.deploy("probe", guests::PROBE).await.unwrap();
    let stopped_at = Instant::now();
    set.hosts[0].signal(libc::SIGTERM);
    let status = set.hosts[0].wait_exit(PATIENCE).expect("the leader stops");
    assert!(status.success(), "{status:?}: {}", set.hosts[0].log());
    set.wait_leader("host-1", PATIENCE);
    let took = stopped_at.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the lease moved only {took:?} after SIGTERM: it expired, it was not released"
    );
    // Woken by the release's NOTIFY, not by its next poll.
    assert!(
        set.hosts[1]
            .log()
            .contains("a lease was released: claiming it now"),
        "{}",
        set.hosts[1].log()
    );
    let loopback = Loopback::start().await.unwrap();
    let run = start_script(&on_b, json!({"url": loopback.url, "ops": [{"run": "a"}]})).await;
    let done = on_b.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(output(&done.run)[0]["hit"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_leader_cannot_write_once_another_host_took_its_lease() {
    let Some((mut set, on_b, loopback)) = two_hosts_holding_slow().await else {
        return;
    };
    let ops = json!([{"run": "a"}, {"run": "slow"}, {"run": "c"}]);
    let run = start_script(&on_b, json!({"url": loopback.url, "ops": ops})).await;
    assert!(loopback.wait_hits(&run, "slow", 1, PATIENCE).await);

    // Host A stops in the middle of the step, B takes the run over and
    // runs the step again; then both bodies end.
    set.hosts[0].signal(libc::SIGSTOP);
    set.wait_leader("host-1", PATIENCE);
    assert!(loopback.wait_hits(&run, "slow", 2, PATIENCE).await);
    loopback.release();
    let done = on_b.wait_status(&run, "completed", PATIENCE).await.unwrap();

    // A wakes with its step's result: its writes are refused and it stops.
    set.hosts[0].signal(libc::SIGCONT);
    let status = set.hosts[0]
        .wait_exit(PATIENCE)
        .expect("the host that lost its lease stops");
    assert_eq!(status.code(), Some(75), "{}", set.hosts[0].log());
    assert!(
        set.hosts[0].log().contains("runs lease"),
        "{}",
        set.hosts[0].log()
    );

    let after = on_b.run(&run).await.unwrap();
    assert_eq!(
        pretty(&after),
        pretty(&done),
        "nothing changed after A woke"
    );
    let ids: Vec<&str> = after.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "slow", "c"], "one journaled result per step");
    assert_eq!(loopback.hits(&run, "slow"), 2, "the body ran twice");
    assert_eq!(
        output(&after.run)[1]["hit"],
        2,
        "the result journaled is the new leader's"
    );
}

#[test]
fn a_flush_under_a_lost_lease_is_refused_and_writes_nothing() {
    if !on_postgres() {
        eprintln!("leases are PostgreSQL's: skipped on sled");
        return;
    }
    let url = cluster().unwrap().new_database().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ttl = Duration::from_secs(60);
    let (mut a, mut b) = runtime.block_on(async {
        (
            Leases::open(&url, "a", "http://a", ttl).await.unwrap(),
            Leases::open(&url, "b", "http://b", ttl).await.unwrap(),
        )
    });
    assert_eq!(
        runtime.block_on(a.claim(RUNS_LEASE)).unwrap(),
        Claim::Won { epoch: 1 }
    );
    assert!(matches!(
        runtime.block_on(b.claim(RUNS_LEASE)).unwrap(),
        Claim::HeldBy { ref holder, .. } if holder == "a"
    ));
    let fence = Fence::runs("a", 1);
    let lost = fence.lost.clone();
    let journal = PgJournal::open_fenced(&url, Some(fence)).unwrap();
    let put = |name: &str| {
        vec![Op::PutSetting {
            name: name.to_string(),
            value: "v".to_string(),
        }]
    };
    journal.apply(put("while-held")).unwrap();
    journal.flush().unwrap();

    runtime.block_on(a.release(RUNS_LEASE, 1)).unwrap();
    assert_eq!(
        runtime.block_on(b.claim(RUNS_LEASE)).unwrap(),
        Claim::Won { epoch: 2 }
    );
    journal.apply(put("after-losing")).unwrap();
    let refused = journal.flush().unwrap_err();
    assert!(refused.downcast_ref::<Fenced>().is_some(), "{refused:#}");
    assert!(
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), lost.notified()).await })
            .is_ok(),
        "the host is told"
    );
    let again = journal.flush().unwrap_err();
    assert!(again.downcast_ref::<Fenced>().is_some(), "{again:#}");
    assert!(!runtime.block_on(a.renew(RUNS_LEASE, 1)).unwrap());
    assert!(runtime.block_on(b.renew(RUNS_LEASE, 2)).unwrap());

    let fresh = PgJournal::open(&url).unwrap();
    assert_eq!(fresh.setting("while-held").unwrap().as_deref(), Some("v"));
    assert_eq!(fresh.setting("after-losing").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_restarted_under_load_loses_nothing_acknowledged() {
    if !on_postgres() {
        eprintln!("the database restarts only on PostgreSQL: skipped on sled");
        return;
    }
    let cluster = Cluster::private().unwrap();
    let url = cluster.new_database().unwrap();
    let (_dir, host) = crate::postgres::host_on(&url);
    host.deploy("probe", guests::PROBE).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    let script = json!({"url": loopback.url, "ops": [{"run": "a"}, {"run": "b"}, {"run": "c"}]});

    // Events go in all along; the database restarts in the middle.
    let sender = {
        let api: Api = (*host).clone();
        let script = script.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut refused = 0;
            for _ in 0..80 {
                match api.send("probe/script", script.clone()).await {
                    Ok(id) => acknowledged.push(id),
                    Err(error) => {
                        let error = error.to_string();
                        assert!(
                            error.contains("503") && error.contains("cannot reach its database"),
                            "{error}"
                        );
                        refused += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (acknowledged, refused)
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let restarted = tokio::task::spawn_blocking(move || {
        cluster.restart_immediately().unwrap();
        cluster
    });
    let (acknowledged, refused) = sender.await.unwrap();
    let _cluster = restarted.await.unwrap();
    eprintln!(
        "{} events acknowledged, {refused} refused while the database restarted",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 40, "{}", host.log());
    // Events refused meanwhile (503) may still have been kept: runs may
    // outnumber the events acknowledged, never the other way round.

    let deadline = Instant::now() + PATIENCE;
    let runs = loop {
        let runs = host.runs().await;
        if let Ok(runs) = &runs
            && runs.len() >= acknowledged.len()
            && runs.iter().all(|r| r.status == "completed")
        {
            break runs.clone();
        }
        assert!(
            Instant::now() < deadline,
            "not every run completed: {runs:?}\n{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for event in &acknowledged {
        let started: Vec<_> = runs
            .iter()
            .filter(|r| r.event_ids.contains(event))
            .collect();
        assert_eq!(started.len(), 1, "event {event} started {started:?}");
        for step in ["a", "b", "c"] {
            let hits = loopback.hits(&started[0].id, step);
            assert!((1..=2).contains(&hits), "{step}: {hits} hits");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrency_limit_holds_across_hosts() {
    let Some(set) = Hosts::start(3, "2s") else {
        return;
    };
    let apis: Vec<Api> = (0..3).map(|i| set.default_tenant(i)).collect();
    apis[2].deploy("flow", guests::FLOW).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("work", Plan::Delay(Duration::from_millis(150)));
    // One user's runs, sent through every host: one step at a time.
    for i in 0..9 {
        apis[i % 3]
            .send("flow/keyed", json!({"url": loopback.url, "user": "ann"}))
            .await
            .unwrap();
    }
    let runs = apis[1]
        .wait_runs("keyed", PATIENCE, |runs| {
            runs.len() >= 9 && runs.iter().all(|r| r.status == "completed")
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 9, "one run per event");
    assert_eq!(loopback.total_hits(), 9, "each body ran once");
    assert_eq!(
        loopback.max_in_flight(),
        1,
        "a concurrency limit of 1: never two bodies at once, whichever host took the event"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_fires_once_per_tick_across_hosts_and_a_leader_change() {
    let Some(mut set) = Hosts::start(3, "2s") else {
        return;
    };
    let on_c = set.default_tenant(2);
    on_c.deploy("ticker", guests::TICKER).await.unwrap();
    on_c.wait_runs("tick", PATIENCE, |runs| {
        runs.iter().filter(|r| r.status == "completed").count() >= 2
    })
    .await
    .unwrap();
    set.hosts[0].kill();
    let killed_at = stepwise_host::model::now_ms();
    // Host 1 or host 2 takes over; host 2 forwards to it, or leads.
    let deadline = Instant::now() + PATIENCE;
    while set.leader().0 == "host-0" {
        assert!(Instant::now() < deadline, "nobody took the lease over");
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs = on_c
        .wait_runs("tick", PATIENCE, |runs| {
            runs.iter()
                .filter(|r| r.status == "completed" && r.created_at > killed_at)
                .count()
                >= 2
        })
        .await
        .unwrap();
    // No tick fired twice across the hosts and the change of leader.
    crate::cron_times_once_each(&on_c, &runs).await;
}

/// A client calling from `source` (a loopback address of its own).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_keys_through_a_standby_count_against_their_sender_only() {
    let Some(set) = Hosts::start(2, "2s") else {
        return;
    };
    let (leader, standby) = (&set.hosts[0].url, &set.hosts[1].url);
    let attacker = client_from("127.0.0.2");
    let honest = client_from("127.0.0.3");
    let mut throttled = false;
    for _ in 0..30 {
        let answer = attacker
            .post(format!("{standby}/e/swe_{}", "0".repeat(48)))
            .json(&json!({"name": "x/y", "data": {}}))
            .send()
            .await
            .unwrap();
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = true;
            break;
        }
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(throttled, "30 wrong keys were never throttled");

    // Another client of the same standby is not the attacker.
    let sent = honest
        .post(format!("{standby}/e/{}", set.hosts[0].event_key))
        .json(&json!({"name": "x/y", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sent.status(),
        StatusCode::OK,
        "{}",
        sent.text().await.unwrap()
    );

    // Claiming another source without the hosts' secret changes nothing.
    let spoofed = attacker
        .post(format!("{leader}/e/{}", set.hosts[0].event_key))
        .header("x-stepwise-forwarded-for", "10.9.9.9")
        .header("x-stepwise-forwarding-key", "a guess")
        .json(&json!({"name": "x/y", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
}

impl Hosts {
    /// Waits until the leader, host `leader`, has a session for each of
    /// the other hosts (they execute jobs for it); its `/health`.
    pub async fn wait_workers(&self, leader: usize) -> Value {
        let api = self.default_tenant(leader);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let health = api.get("/health").await.unwrap();
            if health["workers"].as_array().map(Vec::len) == Some(self.hosts.len() - 1) {
                return health;
            }
            assert!(
                Instant::now() < deadline,
                "the other hosts did not join as workers: {health}\n{}",
                self.hosts[leader].log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Two hosts whose leases last `ttl`, the second a worker of the first
/// (whose API is returned), the probe app deployed, and a loopback server
/// that holds each run's first call to step `slow` until released;
/// `None` on sled.
async fn two_hosts_holding_slow_once(ttl: &str) -> Option<(Hosts, Api, Loopback)> {
    let set = Hosts::start(2, ttl)?;
    let on_a = set.default_tenant(0);
    on_a.deploy("probe", guests::PROBE).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("slow", Plan::HoldFirst);
    set.wait_workers(0).await;
    Some((set, on_a, loopback))
}

/// What host `i` says it executes for the leader (a standby's `/health`).
async fn executing_on(set: &Hosts, i: usize) -> (u64, u64) {
    let health = set.default_tenant(i).get("/health").await.unwrap();
    assert_eq!(health["role"], "standby", "{health}");
    (
        health["executing"].as_u64().unwrap(),
        health["executed"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_execute_on_every_host_and_each_body_runs_once() {
    let Some(set) = Hosts::start(3, "2s") else {
        return;
    };
    let on_c = set.default_tenant(2);
    on_c.deploy("probe", guests::PROBE).await.unwrap();
    set.wait_workers(0).await;
    let loopback = Loopback::start().await.unwrap();
    loopback.plan("b", Plan::Delay(Duration::from_millis(100)));
    let script = json!({"url": loopback.url, "ops": [
        {"run": "a"}, {"run": "b"}, {"sleep": {"id": "nap", "duration": "200ms"}}, {"run": "c"},
    ]});
    let mut runs = Vec::new();
    for i in 0..30 {
        runs.push(start_script(&set.default_tenant(i % 3), script.clone()).await);
    }
    for run in &runs {
        let done = on_c.wait_status(run, "completed", PATIENCE).await.unwrap();
        let ids: Vec<&str> = done.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "nap", "c"], "{run}");
        for step in ["a", "b", "c"] {
            assert_eq!(loopback.hits(run, step), 1, "{step} of {run}");
        }
    }
    let leader = set.default_tenant(0).get("/health").await.unwrap();
    let workers = leader["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{leader}");
    for i in 1..3 {
        let (_, executed) = executing_on(&set, i).await;
        assert!(
            executed > 0,
            "host-{i} executed nothing: {leader}\n{}",
            set.hosts[i].log()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_workers_run_resumes_on_another_host_by_replay() {
    let Some((mut set, _on_b, loopback)) = two_hosts_holding_slow().await else {
        return;
    };
    set.wait_workers(0).await;
    let on_a = set.default_tenant(0);
    let ops = json!([{"run": "a"}, {"run": "slow"}, {"run": "c"}]);
    let run = start_script(&on_a, json!({"url": loopback.url, "ops": ops})).await;
    assert!(loopback.wait_hits(&run, "slow", 1, PATIENCE).await);
    assert_eq!(
        executing_on(&set, 1).await.0,
        1,
        "an idle worker takes the job"
    );

    set.hosts[1].kill();
    let killed_at = Instant::now();
    assert!(
        loopback.wait_hits(&run, "slow", 2, PATIENCE).await,
        "{}",
        set.hosts[0].log()
    );
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the run of a worker killed with a 2 s lease resumed only after {took:?}"
    );
    loopback.release();
    let done = on_a.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(
        loopback.hits(&run, "a"),
        1,
        "a is replayed from the journal"
    );
    assert_eq!(loopback.hits(&run, "c"), 1);
    assert_eq!(output(&done.run)[1]["hit"], 2);
    let health = on_a.get("/health").await.unwrap();
    assert_eq!(health["workers"], json!([]), "{health}");
    assert!(
        set.hosts[0].log().contains("stopped claiming"),
        "{}",
        set.hosts[0].log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_worker_cannot_write_once_its_run_moved() {
    let Some((set, on_a, loopback)) = two_hosts_holding_slow_once("2s").await else {
        return;
    };
    let ops = json!([{"run": "a"}, {"run": "slow"}, {"sleep": {"id": "nap", "duration": "4s"}}, {"run": "c"}]);
    let run = start_script(&on_a, json!({"url": loopback.url, "ops": ops})).await;
    assert!(loopback.wait_hits(&run, "slow", 1, PATIENCE).await);
    assert_eq!(executing_on(&set, 1).await.0, 1, "the worker executes it");

    // The worker stops in the middle of the step; the leader fences its
    // session off and runs the step again itself, and the run sleeps.
    set.hosts[1].signal(libc::SIGSTOP);
    on_a.wait_status(&run, "sleeping", PATIENCE).await.unwrap();
    assert_eq!(loopback.hits(&run, "slow"), 2, "the body ran again");

    // The worker wakes with its step's result while the run still goes
    // on: the leader refuses it, and the worker joins again.
    loopback.release();
    set.hosts[1].signal(libc::SIGCONT);
    let deadline = Instant::now() + PATIENCE;
    while !set.hosts[1].log().contains("is fenced off") {
        assert!(
            Instant::now() < deadline,
            "the worker was not refused: {}",
            set.hosts[1].log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set.wait_workers(0).await;

    let done = on_a.wait_status(&run, "completed", PATIENCE).await.unwrap();
    let ids: Vec<&str> = done.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a", "slow", "nap", "c"],
        "one journaled result per step"
    );
    assert_eq!(loopback.hits(&run, "slow"), 2, "the body ran twice");
    assert_eq!(
        output(&done.run)[1]["hit"],
        2,
        "the result journaled is the leader's, not the paused worker's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_worker_hands_its_jobs_back_at_once() {
    // A session that would take 60 s to be fenced off: only the worker's
    // leaving explains a quick resumption.
    let Some((mut set, on_a, loopback)) = two_hosts_holding_slow_once("60s").await else {
        return;
    };
    let ops = json!([{"run": "a"}, {"run": "slow"}, {"run": "c"}]);
    let run = start_script(&on_a, json!({"url": loopback.url, "ops": ops})).await;
    assert!(loopback.wait_hits(&run, "slow", 1, PATIENCE).await);
    assert_eq!(executing_on(&set, 1).await.0, 1, "the worker executes it");

    let stopped_at = Instant::now();
    set.hosts[1].signal(libc::SIGTERM);
    let status = set.hosts[1].wait_exit(PATIENCE).expect("the worker stops");
    assert!(status.success(), "{status:?}: {}", set.hosts[1].log());
    let done = on_a
        .wait_status(&run, "completed", PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}\nthe worker's log:\n{}", set.hosts[1].log()));
    let took = stopped_at.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the run resumed only {took:?} after its worker stopped: the session expired, it was not left"
    );
    assert!(
        set.hosts[0].log().contains("a worker host left"),
        "{}",
        set.hosts[0].log()
    );
    assert_eq!(loopback.hits(&run, "slow"), 2);
    assert_eq!(output(&done.run)[1]["hit"], 2);
    loopback.release();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_executes_under_the_terms_and_functions_the_leader_has_now() {
    let Some(set) = Hosts::start(2, "2s") else {
        return;
    };
    set.wait_workers(0).await;
    let admin = set.hosts[0].as_tenant(ADMIN, "");
    let acme = create_tenant(&set.hosts[1], "acme");
    acme.deploy("hostile", guests::HOSTILE).await.unwrap();
    acme.deploy("flow", guests::FLOW).await.unwrap();
    let loopback = Loopback::start().await.unwrap();
    let loopback_address = loopback.url.trim_start_matches("http://").to_string();
    let counter = format!("{}/egress/probe", loopback.url);
    let worker_port = set.hosts[1].url.rsplit(':').next().unwrap().to_string();
    let (_, executed_before) = executing_on(&set, 1).await;

    // Not allowed yet; allowed at once after the change on the leader,
    // with the worker's own API still refused, even listed exactly.
    let refused = crate::egress::call(&acme, &counter).await;
    assert_eq!(refused.run.status, "failed", "{refused:#?}");
    crate::egress::allow(
        &admin,
        "acme",
        json!([loopback_address, format!("127.0.0.1:{worker_port}")]),
    )
    .await;
    let reached = crate::egress::call(&acme, &counter).await;
    assert_eq!(reached.run.status, "completed", "{reached:#?}");
    assert_eq!(loopback.total_hits(), 1);
    let own = crate::egress::call(&acme, &format!("http://127.0.0.1:{worker_port}/health")).await;
    assert_eq!(own.run.status, "failed", "{own:#?}");
    let error = serde_json::to_string(&own.run.error).unwrap();
    assert!(error.contains("own API"), "{error}");

    // A function deployed a moment ago is invoked from the worker.
    let parent = acme.send("flow/parent", json!({"n": 21})).await.unwrap();
    let run = acme.run_for_event(&parent).await.unwrap();
    let done = acme.wait_status(&run, "completed", PATIENCE).await.unwrap();
    assert_eq!(done.run.output, Some(json!({"child": 42})));

    // Parallel branches spread over the hosts, and events sent from a
    // step start runs, each once.
    loopback.plan("branch-0", Plan::Delay(Duration::from_millis(300)));
    loopback.plan("branch-1", Plan::Delay(Duration::from_millis(300)));
    let fan = acme
        .send("flow/fan", json!({"url": loopback.url, "branches": 3}))
        .await
        .unwrap();
    let send = acme
        .send("flow/send", json!({"url": loopback.url, "n": 5}))
        .await
        .unwrap();
    let fan = acme.run_for_event(&fan).await.unwrap();
    let fanned = acme.wait_status(&fan, "completed", PATIENCE).await.unwrap();
    let out = output(&fanned.run);
    assert_eq!(out["join"], json!([1, "two"]), "{out}");
    for i in 0..3 {
        assert_eq!(loopback.hits(&fan, &format!("branch-{i}")), 1, "{out}");
    }
    let send = acme.run_for_event(&send).await.unwrap();
    acme.wait_status(&send, "completed", PATIENCE)
        .await
        .unwrap();
    let received = acme
        .wait_runs("received", PATIENCE, |runs| {
            runs.len() >= 2 && runs.iter().all(|r| r.status == "completed")
        })
        .await
        .unwrap();
    assert_eq!(received.len(), 2, "one run per event sent");

    let (_, executed_after) = executing_on(&set, 1).await;
    assert!(
        executed_after >= executed_before + 4,
        "the worker executed {} jobs of these runs: {}",
        executed_after - executed_before,
        set.hosts[1].log()
    );
}
