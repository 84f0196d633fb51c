//! The durable-core benchmark: `cargo bench -p stepwise-tests --bench durable`.
//!
//! Runs an in-process host on a temp dir (real sled, fsync on) with the probe
//! component and reports medians:
//! (a) run start from a cached component, (b) durable steps per second for
//! one run and for 256 concurrent runs of a 10-step function, (c) replay cost
//! per journaled step, (d) resident memory with 10,000 runs sleeping,
//! (e) queue operations with 100,000 runs queued under concurrency keys
//! against an empty queue, (f) the speed-up of parallel steps on CPU-bound
//! branches. Timing is never asserted: this prints figures for BENCHMARKS.md.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwise_host::cluster::{Claim, Fence, Leases, RUNS_LEASE};
use stepwise_host::config::HostConfig;
use stepwise_host::model::IncomingEvent;
use stepwise_host::model::{DEFAULT_TENANT, RunKey};
use stepwise_host::retry::Backoff;
use stepwise_host::runtime::Stepwise;
use stepwise_tests::guests;

fn main() -> Result<()> {
    stepwise_host::memory::configure_allocator();
    // `cargo bench` passes `--bench`; any other argument filters sections.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!("machine: {}", machine());
        // Memory first, in a fresh process, so no other section's heap counts.
        if wants("memory") {
            memory_with_sleeping_runs(10_000).await?;
        }
        if wants("start") {
            start_cost().await?;
        }
        if wants("steps") {
            steps_per_second().await?;
        }
        if wants("steps") && on_postgres() {
            two_hosts_per_second().await?;
        }
        if wants("replay") {
            replay_cost().await?;
        }
        if wants("queue") {
            queue_cost();
        }
        if wants("parallel") {
            parallel_speedup().await?;
        }
        if wants("python") {
            guest_rows("Python", "guests/python/ten-steps/app.py").await?;
        }
        if wants("javascript") {
            guest_rows("JavaScript", "guests/js/ten-steps/app.js").await?;
        }
        Ok(())
    })
}

struct Bench {
    host: Arc<Stepwise>,
    _dir: tempfile::TempDir,
    version: String,
}

async fn bench_host(max_steps: u32) -> Result<Bench> {
    bench_host_with(max_steps, guests::PROBE).await
}

async fn bench_host_with(max_steps: u32, component: &str) -> Result<Bench> {
    bench_host_configured(component, |config| {
        config.limits.max_steps_per_run = max_steps;
    })
    .await
}

async fn bench_host_configured(
    component: &str,
    configure: impl FnOnce(&mut HostConfig),
) -> Result<Bench> {
    let dir = tempfile::tempdir()?;
    let mut config = HostConfig::new(dir.path().to_path_buf());
    config.store = bench_store()?;
    if let Some(url) = &config.store {
        config.fence = Some(lead(url).await?);
    }
    config.backoff = Backoff::scaled(0.001);
    // `STEPWISE_BENCH_NO_FSYNC=1`: sled as before its flushes were synced
    // to the disk (what the sync costs, back to back).
    config.journal_fsync = std::env::var("STEPWISE_BENCH_NO_FSYNC").is_err();
    configure(&mut config);
    let host = Stepwise::start(config).await?;
    let bytes = std::fs::read(component)?;
    let deployed = host
        .deploy(DEFAULT_TENANT, "probe", bytes.into())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Bench {
        host,
        _dir: dir,
        version: deployed.version,
    })
}

/// The runs lease on the database at `url`, won as `stepwise serve` wins
/// it: the bench host's flushes check it, as a serving host's do.
async fn lead(url: &str) -> Result<Fence> {
    let mut leases = Leases::open(
        url,
        "bench",
        "http://bench.invalid",
        Duration::from_secs(3_600),
    )
    .await?;
    let Claim::Won { epoch } = leases.claim(RUNS_LEASE).await? else {
        anyhow::bail!("another host holds the bench database's lease");
    };
    Ok(Fence::runs("bench", epoch))
}

/// With `STEPWISE_BENCH_STORE=postgres`, each bench host's journal is a
/// new database of a PostgreSQL cluster on this machine (started as the
/// tests start theirs), else sled in a temp dir.
fn bench_store() -> Result<Option<String>> {
    if !on_postgres() {
        return Ok(None);
    }
    let url = stepwise_tests::postgres::cluster()?.new_database()?;
    *LAST_DATABASE.lock().unwrap() = Some(url.clone());
    Ok(Some(url))
}

fn on_postgres() -> bool {
    std::env::var("STEPWISE_BENCH_STORE").is_ok_and(|s| s == "postgres")
}

/// The database of the last bench host on PostgreSQL.
static LAST_DATABASE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// What PostgreSQL has done so far: CPU time of its processes (ms), and in
/// the bench's database, commits and rows written.
fn postgres_counters() -> Result<(f64, f64, f64)> {
    let tick = 100.0; // USER_HZ on Linux
    let mut cpu_ms = 0.0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        if !comm.ends_with("(postgres") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        cpu_ms += ticks * 1000.0 / tick;
    }
    let url = LAST_DATABASE
        .lock()
        .unwrap()
        .clone()
        .context("no bench database")?;
    let database = stepwise_tests::postgres::database_of(&url)?;
    // Backends report their counts at most once a second.
    std::thread::sleep(Duration::from_millis(1_500));
    let row = stepwise_tests::postgres::cluster()?.sql_in(
        database,
        "SELECT xact_commit || ' ' || (tup_inserted + tup_updated + tup_deleted) \
         FROM pg_stat_database WHERE datname = current_database()",
    )?;
    let mut parts = row.split_whitespace().map(|p| p.parse::<f64>());
    Ok((
        cpu_ms,
        parts.next().context("commits")??,
        parts.next().context("rows")??,
    ))
}

fn event(name: &str, data: Value) -> IncomingEvent {
    IncomingEvent {
        name: name.into(),
        data,
        id: None,
        ts: None,
        v: None,
        user: None,
        trace: None,
    }
}

/// Sends `events` and waits until every run they start has ended; the time
/// is from the events' acceptance (on disk) to the last run's end.
async fn run_all(host: &Stepwise, events: Vec<IncomingEvent>) -> Result<(Vec<RunKey>, Duration)> {
    let mut ended = host.subscribe_ended();
    let accepted = host.send(DEFAULT_TENANT, events).await?;
    let started = Instant::now();
    let mut pending: HashSet<RunKey> = accepted.wake.iter().cloned().collect();
    while !pending.is_empty() {
        let key = tokio::time::timeout(Duration::from_secs(120), ended.recv())
            .await
            .context("runs did not end within 2 minutes")??;
        pending.remove(&key);
    }
    Ok((accepted.wake, started.elapsed()))
}

/// Run-start costs in µs: `n` fresh instances of `version` after `warmup`.
async fn start_samples(
    host: &Stepwise,
    version: &str,
    warmup: usize,
    n: usize,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        host.executor.registration(version).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        host.executor.registration(version).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(samples)
}

/// Times in µs of `n` lone runs of the ten-step function, one after another.
async fn lone_run_samples(host: &Stepwise, n: usize) -> Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let (_, elapsed) = run_all(host, vec![event("bench/ten-steps", json!({}))]).await?;
        samples.push(elapsed.as_secs_f64() * 1e6);
    }
    Ok(samples)
}

/// Steps/s of 256 concurrent ten-step runs, `rounds` times after a warm-up round.
async fn concurrent_rates(host: &Stepwise, rounds: usize) -> Result<Vec<f64>> {
    let mut rates = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        let events = (0..256)
            .map(|_| event("bench/ten-steps", json!({})))
            .collect();
        let (_, elapsed) = run_all(host, events).await?;
        if round > 0 {
            rates.push(2_560.0 / elapsed.as_secs_f64());
        }
    }
    Ok(rates)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn percentile(mut samples: Vec<f64>, p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

async fn start_cost() -> Result<()> {
    let bench = bench_host(1_000).await?;
    let samples = start_samples(&bench.host, &bench.version, 200, 3_000).await?;
    println!(
        "(a) run start from a cached component (new store + WASI context + instantiate from InstancePre + one export call + drop): median {:.1} µs, p99 {:.1} µs",
        median(samples.clone()),
        percentile(samples, 0.99)
    );
    Ok(())
}

fn fsync_cost(host: &Stepwise) -> Result<f64> {
    use stepwise_host::journal::Op;
    let mut samples = Vec::new();
    for i in 0..300 {
        host.journal.apply(vec![Op::PutSetting {
            name: format!("bench/fsync/{i}"),
            value: "x".repeat(200),
        }])?;
        let t = Instant::now();
        host.journal.flush()?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(samples))
}

async fn steps_per_second() -> Result<()> {
    let bench = bench_host(1_000).await?;
    let host = &bench.host;
    let fsync = fsync_cost(host)?;
    println!("    journal insert + flush (one fsync) on this disk: median {fsync:.0} µs");

    lone_run_samples(host, 5).await?;
    let lone = lone_run_samples(host, 60).await?;
    let lone_median = median(lone.clone());
    println!(
        "(b1) one run of 10 durable steps, event accepted (on disk) to run ended: median {:.0} µs ({:.0} steps/s), p90 {:.0} µs; {:.2}x ten fsyncs",
        lone_median,
        10.0 / (lone_median / 1e6),
        percentile(lone, 0.9),
        lone_median / (10.0 * fsync)
    );

    let before = on_postgres().then(postgres_counters).transpose()?;
    let rates = concurrent_rates(host, 5).await?;
    println!(
        "(b2) 256 concurrent runs x 10 durable steps: median {:.0} steps/s (min {:.0}, max {:.0})",
        median(rates.clone()),
        rates.iter().cloned().fold(f64::MAX, f64::min),
        rates.iter().cloned().fold(0.0, f64::max)
    );
    if let Some((cpu, commits, rows)) = before {
        let (cpu_after, commits_after, rows_after) = postgres_counters()?;
        // Six rounds of 2,560 steps (the warm-up included).
        let steps = 6.0 * 2_560.0;
        println!(
            "    PostgreSQL during (b2): {:.1} µs of its CPU, {:.2} transactions (reads included) and {:.2} rows written per step",
            (cpu_after - cpu) * 1000.0 / steps,
            (commits_after - commits) / steps,
            (rows_after - rows) / steps
        );
    }
    Ok(())
}

/// (b2) with a second host executing jobs for the first: a `stepwise
/// serve` standing by on the same database (a process of its own, on the
/// same 2 cores), which claims jobs from this bench host over HTTP.
async fn two_hosts_per_second() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let url = bench_store()?.context("two hosts need PostgreSQL")?;
    let mut leases = Leases::open(
        &url,
        "bench",
        &format!("http://{address}"),
        Duration::from_secs(3_600),
    )
    .await?;
    let Claim::Won { epoch } = leases.claim(RUNS_LEASE).await? else {
        anyhow::bail!("another host holds the bench database's lease");
    };
    let dir = tempfile::tempdir()?;
    let mut config = HostConfig::new(dir.path().to_path_buf());
    config.store = Some(url.clone());
    config.fence = Some(Fence::runs("bench", epoch));
    config.backoff = Backoff::scaled(0.001);
    config.limits.max_steps_per_run = 1_000;
    config.forwarding_secret = Some(leases.forwarding_secret().to_string());
    config.share_work = Some(Duration::from_secs(8));
    let host = Stepwise::start(config).await?;
    host.deploy(
        DEFAULT_TENANT,
        "probe",
        std::fs::read(guests::PROBE)?.into(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let router = stepwise_host::api::router(
        host.clone(),
        Arc::new(stepwise_host::api::throttle::AuthThrottle::new(0)),
    );
    // The connection layer `stepwise serve` uses, with its defaults.
    let limits = stepwise_host::api::conn::ConnLimits {
        max_connections: 1_024,
        max_per_source: 1_024,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        body_rate: stepwise_host::api::body_rate::MinRate {
            window: Duration::from_secs(10),
            min_bytes: 64 * 1024,
        },
        shutdown_grace: Duration::from_secs(1),
    };
    tokio::spawn(stepwise_host::api::conn::serve(
        listener,
        router,
        limits,
        std::future::pending(),
    ));

    let worker_dir = tempfile::tempdir()?;
    let worker = std::process::Command::new(env!("CARGO_BIN_EXE_stepwise-e2e"))
        .args(["serve", "--store", &url, "--listen", "127.0.0.1:0"])
        .args(["--host-id", "bench-worker", "--data"])
        .arg(worker_dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the worker host")?;
    let worker = KillOnDrop(worker);
    let workers = host.workers.clone().context("the bench host shares work")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while workers.view().is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "the worker host did not join");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    lone_run_samples(&host, 5).await?;
    let lone = lone_run_samples(&host, 60).await?;
    println!(
        "(b1, two hosts: an idle worker takes the run) one run of 10 durable steps: median {:.0} µs, p90 {:.0} µs",
        median(lone.clone()),
        percentile(lone, 0.9)
    );
    let before = (
        process_cpu_ms("self")?,
        process_cpu_ms(&worker.0.id().to_string())?,
        postgres_counters()?,
    );
    let executed_before = workers.view()[0].executed;
    let rates = concurrent_rates(&host, 5).await?;
    let on_worker = workers.view()[0].executed - executed_before;
    let after = (
        process_cpu_ms("self")?,
        process_cpu_ms(&worker.0.id().to_string())?,
        postgres_counters()?,
    );
    println!(
        "(b2, two hosts: the leader and a worker) 256 concurrent runs x 10 durable steps: median {:.0} steps/s (min {:.0}, max {:.0}); the worker executed {on_worker} of {} jobs",
        median(rates.clone()),
        rates.iter().cloned().fold(f64::MAX, f64::min),
        rates.iter().cloned().fold(0.0, f64::max),
        6 * 256,
    );
    let steps = 6.0 * 2_560.0;
    println!(
        "    per step during it: leader process {:.1} µs of CPU, worker process {:.1} µs, PostgreSQL {:.1} µs, {:.2} transactions and {:.2} rows written",
        (after.0 - before.0) * 1000.0 / steps,
        (after.1 - before.1) * 1000.0 / steps,
        (after.2.0 - before.2.0) * 1000.0 / steps,
        (after.2.1 - before.2.1) / steps,
        (after.2.2 - before.2.2) / steps
    );
    drop(leases);
    Ok(())
}

/// A child process killed when the bench is done with it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user and system) of process `pid` (or `self`) so far, ms.
fn process_cpu_ms(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat.rsplit_once(") ").context("a /proc stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks * 10.0)
}

async fn replay_cost() -> Result<()> {
    let bench = bench_host(10_000).await?;
    let host = &bench.host;
    let mut per_size = Vec::new();
    for steps in [10usize, 1_000, 10_000] {
        let ops: Vec<Value> = (0..steps)
            .map(|i| json!({"local": format!("s{i}")}))
            .collect();
        let (runs, _) = run_all(host, vec![event("probe/script", json!({"ops": ops}))]).await?;
        let key = &runs[0];
        for _ in 0..5 {
            host.replay(key, None).await?;
        }
        let mut samples = Vec::new();
        for _ in 0..30 {
            let report = host.replay(key, None).await?;
            anyhow::ensure!(
                report.replayed == steps,
                "replayed {} of {steps}",
                report.replayed
            );
            samples.push(report.elapsed.as_secs_f64() * 1e6);
        }
        per_size.push((steps, median(samples)));
    }
    let (small, t_small) = per_size[0];
    let (large, t_large) = per_size[1];
    let (huge, t_huge) = per_size[2];
    println!(
        "(c) replay: {small} journaled steps {t_small:.0} µs, {large} steps {t_large:.0} µs, {huge} steps {t_huge:.0} µs; marginal cost {:.2} µs per journaled step up to {large}, {:.2} µs from {large} to {huge} (linear if alike)",
        (t_large - t_small) / (large - small) as f64,
        (t_huge - t_large) / (huge - large) as f64
    );
    Ok(())
}

/// (e) The queue's cost per job cycle (push, pop, release) with `queued`
/// other runs waiting under concurrency keys, against an empty queue.
fn queue_cost() {
    use stepwise_host::model::{ConcurrencyKey, QueueSpec};
    use stepwise_host::scheduler::{Admission, Job, Queue};
    // Like a keyed function: one limit per user (1,000 users, limit 1) under
    // a function-wide limit of 100.
    let admission = |user: usize| Admission {
        spec: QueueSpec {
            concurrency: vec![
                ConcurrencyKey {
                    key: "fn:bench".into(),
                    limit: 100,
                },
                ConcurrencyKey {
                    key: format!("user:{user}"),
                    limit: 1,
                },
            ],
            ..QueueSpec::default()
        },
        first_start: true,
    };
    let job = |n: usize| Job::run(RunKey::new(DEFAULT_TENANT, format!("run-{n:08}")));
    let cycles = 200_000;
    let measure = |queued: usize| -> f64 {
        let mut queue = Queue::new();
        for n in 0..queued {
            queue.push(job(n), &admission(n % 1_000), n as u64);
        }
        // The slots are full, as under load: every cycle frees one and the
        // queue picks the next job among all those waiting.
        let mut leases = std::collections::VecDeque::new();
        let mut next = queued;
        for _ in 0..100 {
            queue.push(job(next), &admission(next % 1_000), next as u64);
            next += 1;
            if let Some((_, lease)) = queue.pop(u64::MAX / 2) {
                leases.push_back(lease);
            }
        }
        let started = Instant::now();
        for _ in 0..cycles {
            queue.push(job(next), &admission(next % 1_000), next as u64);
            next += 1;
            if let Some(lease) = leases.pop_front() {
                queue.release(lease);
            }
            if let Some((_, lease)) = queue.pop(u64::MAX / 2) {
                leases.push_back(lease);
            }
        }
        started.elapsed().as_secs_f64() * 1e9 / cycles as f64
    };
    let samples = |queued: usize| median((0..5).map(|_| measure(queued)).collect());
    let empty = samples(0);
    let full = samples(100_000);
    println!(
        "(e) queue, one job cycle (enqueue + release a slot + dequeue) under 2 concurrency keys (1,000 keys of limit 1, one of limit 100): empty queue {empty:.0} ns, 100,000 runs queued {full:.0} ns; {:.2}x",
        full / empty
    );
}

/// (f) Two CPU-bound branches as `step.parallel` against the same two
/// steps one after the other, on this machine's cores.
async fn parallel_speedup() -> Result<()> {
    let bench = bench_host_with(1_000, guests::FLOW).await?;
    let host = &bench.host;
    let time = |parallel: bool| {
        let data = json!({"branches": 2, "rounds": 60_000_000u64, "parallel": parallel});
        async move {
            let (_, elapsed) = run_all(host, vec![event("bench/burn", data)]).await?;
            Ok::<_, anyhow::Error>(elapsed.as_secs_f64() * 1e3)
        }
    };
    time(true).await?;
    time(false).await?;
    let (mut sequential, mut parallel) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        sequential.push(time(false).await?);
        parallel.push(time(true).await?);
    }
    let (s, p) = (median(sequential), median(parallel));
    println!(
        "(f) two CPU-bound steps: one after the other {s:.0} ms, as step.parallel {p:.0} ms; speed-up {:.2}x on {} cores",
        s / p,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    Ok(())
}

fn resident_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).context("statm")?.parse()?;
    Ok(pages * 4096)
}

async fn memory_with_sleeping_runs(count: usize) -> Result<()> {
    let bench = bench_host(1_000).await?;
    let host = &bench.host;
    let sleep = json!({"ops": [{"sleep": {"id": "nap", "duration": "1h"}}]});
    // Warm up: one run through to sleep, so the idle figure includes a
    // pooled instance slot and a compiled component.
    host.send(DEFAULT_TENANT, vec![event("probe/script", sleep.clone())])
        .await?;
    wait_until_sleeping(host, 1).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = resident_bytes()?;
    for _ in 0..(count / 1_000) {
        let events = (0..1_000)
            .map(|_| event("probe/script", sleep.clone()))
            .collect();
        host.send(DEFAULT_TENANT, events).await?;
    }
    wait_until_sleeping(host, count + 1).await?;
    // Let the host's housekeeping notice it is quiet (it looks every 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let loaded = resident_bytes()?;
    println!(
        "(d) resident memory: idle host {:.1} MiB; with {count} runs sleeping {:.1} MiB; difference {:.1} MiB",
        idle as f64 / 1048576.0,
        loaded as f64 / 1048576.0,
        (loaded.saturating_sub(idle)) as f64 / 1048576.0
    );
    Ok(())
}

async fn wait_until_sleeping(host: &Stepwise, timers: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while host.scheduler.armed_timers() < timers || host.scheduler.active_runs() > 0 {
        anyhow::ensure!(Instant::now() < deadline, "runs did not all go to sleep");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let disk = Path::new("/proc/mounts").exists();
    format!(
        "{cpu}, {cores} cores available{}",
        if disk { ", Linux" } else { "" }
    )
}

/// The Python or JavaScript build of the ten-step function: start cost and
/// steps/s.
async fn guest_rows(language: &str, app: &str) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tools = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools");
    let stepwise = root.join("../target/release/stepwise");
    anyhow::ensure!(
        stepwise.exists(),
        "build the CLI first: cargo build --release -p stepwise-host"
    );
    let source = root.join(app);
    let component = stepwise_tests::guest_app(stepwise.to_str().unwrap(), &source, &tools)?;
    let size = std::fs::metadata(&component)?.len();
    let bench = bench_host_with(1_000, component.to_str().unwrap()).await?;
    let host = &bench.host;
    let samples = start_samples(host, &bench.version, 50, 500).await?;
    println!(
        "({language} a) run start ({:.1} MB component): median {:.1} µs, p99 {:.1} µs",
        size as f64 / 1e6,
        median(samples.clone()),
        percentile(samples, 0.99)
    );
    let lone = lone_run_samples(host, 30).await?;
    println!(
        "({language} b1) one run of 10 durable steps: median {:.0} µs",
        median(lone)
    );
    let rates = concurrent_rates(host, 3).await?;
    println!(
        "({language} b2) 256 concurrent runs x 10 durable steps: median {:.0} steps/s",
        median(rates)
    );
    Ok(())
}
