//! The run state machine in process: real sled journal in a temp dir, a
//! fixed clock, no wasm and no HTTP. Each test drives `Runs` the way the
//! API, the executor and the scheduler do and reads the journal back.
//!
//! The scheduler's loops are never started: what a change hands it stays
//! observable (armed timers, branches asked for, woken runs counted as
//! queued), and nothing executes.

use super::{
    Accepted, CancelError, FUNCTION_FAILED, Recorded, Runs, Suspended, TENANT_KEY, Transition,
};
use crate::catalog::Catalog;
use crate::journal::usage::StorageUsage;
use crate::journal::{
    Batch, GroupCommit, Journal, QueryJournal, Row, RunFilter, RunJournal, SledJournal, TreeId,
};
use crate::model::{
    AppRecord, ErrorName, ErrorRecord, EventRecord, FixedClock, FunctionRecord, IncomingEvent,
    IndexKind, LogChunk, ParentStep, RUN_LEVEL_SEQ, RunKey, RunKind, RunRecord, RunStatus,
    StepKind, StepRecord, StepStatus, TenantRecord, Timer, TimerKind, WaitSpec, Waiter,
};
use crate::scheduler::{Admission, Job, RunStates, Scheduler, SchedulerLoops, SlotPolicy};
use crate::wit::types as wit;
use anyhow::Result;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fixed start time: 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;
const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;

/// The sled journal, counting the batches written to it, so that a test
/// can say a change wrote nothing at all.
struct Counted {
    sled: SledJournal,
    batches: AtomicUsize,
}

impl Journal for Counted {
    fn apply(&self, batch: Batch) -> Result<()> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.sled.apply(batch)
    }
    fn flush(&self) -> Result<()> {
        self.sled.flush()
    }
    fn unflushed(&self) -> bool {
        self.sled.unflushed()
    }
    fn usage(&self) -> &StorageUsage {
        self.sled.usage()
    }
    fn rows_after(&self, tree: TreeId, after: &[u8], limit: usize) -> Result<Vec<Row>> {
        self.sled.rows_after(tree, after, limit)
    }
    fn rows_with_prefix(&self, tree: TreeId, prefix: &[u8]) -> Result<Vec<Row>> {
        self.sled.rows_with_prefix(tree, prefix)
    }
}

impl RunJournal for Counted {
    fn run(&self, key: &RunKey) -> Result<Option<RunRecord>> {
        self.sled.run(key)
    }
    fn run_status(&self, key: &RunKey) -> Result<Option<RunStatus>> {
        self.sled.run_status(key)
    }
    fn run_events(&self, key: &RunKey) -> Result<Vec<EventRecord>> {
        self.sled.run_events(key)
    }
    fn steps(&self, key: &RunKey) -> Result<Vec<StepRecord>> {
        self.sled.steps(key)
    }
    fn step(&self, key: &RunKey, seq: u32) -> Result<Option<StepRecord>> {
        self.sled.step(key, seq)
    }
    fn active_runs(&self) -> Result<Vec<RunRecord>> {
        self.sled.active_runs()
    }
    fn timers(&self) -> Result<Vec<Timer>> {
        self.sled.timers()
    }
    fn waiters(&self, tenant: &str, name: &str) -> Result<Vec<Waiter>> {
        self.sled.waiters(tenant, name)
    }
    fn event_seen(&self, tenant: &str, id: &str) -> Result<Option<u64>> {
        self.sled.event_seen(tenant, id)
    }
    fn component(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        self.sled.component(hash)
    }
    fn has_component(&self, hash: &str) -> Result<bool> {
        self.sled.has_component(hash)
    }
    fn all_functions(&self) -> Result<Vec<FunctionRecord>> {
        self.sled.all_functions()
    }
    fn setting(&self, name: &str) -> Result<Option<String>> {
        self.sled.setting(name)
    }
    fn tenants(&self) -> Result<Vec<TenantRecord>> {
        self.sled.tenants()
    }
    fn index(&self, kind: IndexKind, key: &str) -> Result<Option<String>> {
        self.sled.index(kind, key)
    }
    fn index_scan(&self, kind: IndexKind, prefix: &str) -> Result<Vec<(String, String)>> {
        self.sled.index_scan(kind, prefix)
    }
}

impl QueryJournal for Counted {
    fn list_runs(&self, tenant: &str, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        self.sled.list_runs(tenant, filter)
    }
    fn list_events(&self, tenant: &str, limit: usize) -> Result<Vec<EventRecord>> {
        self.sled.list_events(tenant, limit)
    }
    fn logs(&self, key: &RunKey) -> Result<Vec<LogChunk>> {
        self.sled.logs(key)
    }
    fn apps(&self, tenant: &str) -> Result<Vec<AppRecord>> {
        self.sled.apps(tenant)
    }
    fn app(&self, tenant: &str, name: &str) -> Result<Option<AppRecord>> {
        self.sled.app(tenant, name)
    }
    fn functions(&self, tenant: &str) -> Result<Vec<FunctionRecord>> {
        self.sled.functions(tenant)
    }
}

struct Machine {
    _dir: tempfile::TempDir,
    journal: Arc<Counted>,
    clock: Arc<FixedClock>,
    catalog: Arc<Catalog>,
    scheduler: Scheduler,
    /// Kept and never started: woken jobs stay counted as queued.
    _loops: SchedulerLoops,
    runs: Arc<Runs>,
}

/// A state machine whose tenant `t` has two functions: `f`, triggered by
/// `a/b` and shaped by `configure`, and a plain `g`, triggered by `g/go`
/// (to invoke).
fn machine(configure: impl FnOnce(&mut wit::FunctionConfig)) -> Machine {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Counted {
        sled: SledJournal::open(&dir.path().join("j")).unwrap(),
        batches: AtomicUsize::new(0),
    });
    let shared: Arc<dyn Journal> = journal.clone();
    let catalog = Arc::new(Catalog::load(journal.as_ref()).unwrap());
    let mut f = crate::testing::function_config("f");
    configure(&mut f);
    let mut g = crate::testing::function_config("g");
    g.triggers = vec![wit::Trigger::Event(wit::EventTrigger {
        event: "g/go".into(),
        condition: None,
    })];
    let functions = crate::registration::functions("t", "app", "v1", vec![f, g]).unwrap();
    catalog.replace_app("t", "app", functions);
    let clock = FixedClock::at(T0);
    let (scheduler, loops) = Scheduler::new(SlotPolicy::default(), clock.clone());
    let config = crate::config::HostConfig::new(dir.path().to_path_buf());
    let tenants =
        Arc::new(crate::tenants::Tenants::load(shared.clone(), &config, clock.clone()).unwrap());
    let runs = Arc::new(Runs::new(
        shared.clone(),
        GroupCommit::start(shared),
        catalog.clone(),
        scheduler.clone(),
        tenants,
        clock.clone(),
        Default::default(),
    ));
    Machine {
        _dir: dir,
        journal,
        clock,
        catalog,
        scheduler,
        _loops: loops,
        runs,
    }
}

impl Machine {
    /// Sends event `name` to tenant `t`.
    async fn send_named(&self, name: &str, data: Value) -> Accepted {
        let event = IncomingEvent {
            name: name.into(),
            data,
            id: None,
            ts: None,
            v: None,
            user: None,
            trace: None,
        };
        self.runs.ingest("t", vec![event]).await.unwrap()
    }

    /// Sends `a/b`, which triggers `f`.
    async fn send(&self, data: Value) -> Accepted {
        self.send_named("a/b", data).await
    }

    /// A new run of `f` for `data` (for an `f` that starts one per event).
    async fn new_run(&self, data: Value) -> RunKey {
        let before = self.runs().len();
        self.send(data).await;
        let runs = self.runs();
        assert_eq!(runs.len(), before + 1, "the event starts one run");
        runs.last().unwrap().key.clone()
    }

    /// A new run of `f`, started (executing).
    async fn started_run(&self) -> RunKey {
        let key = self.new_run(json!({})).await;
        self.record(&key, Transition::Start).await.unwrap();
        key
    }

    /// Records `transition` on run `key`, as the executor does.
    async fn record(&self, key: &RunKey, transition: Transition) -> Option<RunRecord> {
        match self.runs.record(key, transition).await.unwrap() {
            Recorded::Run(run) => Some(*run),
            Recorded::Entries => Some(self.journal.run(key).unwrap().unwrap()),
            Recorded::Ended => None,
        }
    }

    /// Fires `timer` as the scheduler does; whether its run is to be woken.
    fn fire(&self, timer: &Timer) -> bool {
        RunStates::fire(self.runs.as_ref(), timer).unwrap()
    }

    /// How run `key`'s jobs would queue now.
    fn admission(&self, key: &RunKey, branch: Option<u32>) -> Option<Admission> {
        let job = Job {
            run: key.clone(),
            branch,
        };
        self.runs.admission(&job).unwrap()
    }

    /// The tenant's runs, oldest first.
    fn runs(&self) -> Vec<RunRecord> {
        let filter = RunFilter {
            limit: 100,
            ..RunFilter::default()
        };
        let mut runs = self.journal.list_runs("t", &filter).unwrap();
        runs.reverse();
        runs
    }

    fn statuses(&self) -> Vec<RunStatus> {
        self.runs().iter().map(|r| r.status()).collect()
    }

    fn run(&self, key: &RunKey) -> RunRecord {
        self.journal.run(key).unwrap().expect("the run exists")
    }

    fn step(&self, key: &RunKey, seq: u32) -> StepRecord {
        self.journal
            .step(key, seq)
            .unwrap()
            .expect("the step exists")
    }

    /// Run `key`'s timers in the journal, soonest first.
    fn timers_of(&self, key: &RunKey) -> Vec<Timer> {
        let timers = self.journal.timers().unwrap();
        timers.into_iter().filter(|t| t.key == *key).collect()
    }

    /// Run `key`'s one timer of `kind`.
    fn timer(&self, key: &RunKey, kind: TimerKind) -> Timer {
        let timers: Vec<_> = self
            .timers_of(key)
            .into_iter()
            .filter(|t| t.kind == kind)
            .collect();
        assert_eq!(timers.len(), 1, "one {kind:?} timer: {timers:?}");
        timers.into_iter().next().unwrap()
    }

    /// Batches written to the journal so far.
    fn writes(&self) -> usize {
        self.journal.batches.load(Ordering::SeqCst)
    }

    /// Jobs of tenant `t` woken so far (the queue loop never takes them).
    fn woken(&self) -> usize {
        self.scheduler.queued_of("t")
    }

    /// The tenant's events, oldest first.
    fn events(&self) -> Vec<EventRecord> {
        let mut events = self.journal.list_events("t", 100).unwrap();
        events.reverse();
        events
    }

    fn function(&self, id: &str) -> FunctionRecord {
        self.catalog.get("t", id).expect("the function is deployed")
    }
}

/// A journal entry of kind `kind` at `seq`, started at T0.
fn entry(seq: u32, kind: StepKind, status: StepStatus) -> StepRecord {
    StepRecord::new(seq, format!("step-{seq}"), kind, status, T0)
}

/// A sleep at `seq` until `wake_at`.
fn sleeping(seq: u32, wake_at: u64) -> StepRecord {
    let mut step = entry(seq, StepKind::Sleep, StepStatus::Sleeping);
    step.wake_at = Some(wake_at);
    step
}

/// A wait at `seq` of run `key` for `shop/paid` with the run's
/// `data.order`, until `timeout_at`.
fn wait(key: &RunKey, seq: u32, order: &str, timeout_at: u64) -> Transition {
    let spec = WaitSpec {
        event: "shop/paid".into(),
        match_path: Some("data.order".into()),
        match_value: Some(json!(order)),
        condition: None,
    };
    let mut step = entry(seq, StepKind::Wait, StepStatus::Waiting);
    step.wake_at = Some(timeout_at);
    step.wait = Some(spec.clone());
    Transition::Wait {
        step,
        waiter: Waiter {
            key: key.clone(),
            seq,
            spec,
            timeout_at,
        },
    }
}

fn error(message: &str) -> ErrorRecord {
    ErrorRecord {
        name: "Error".into(),
        message: message.into(),
        retriable: true,
        retry_after_ms: None,
    }
}

fn log(offset: u64, text: &str) -> LogChunk {
    LogChunk {
        segment: 0,
        run_attempt: 0,
        attempt: 0,
        offset,
        stream: "stdout".into(),
        text: text.into(),
    }
}

// ---------------------------------------------------------------------------
// Transitions, one by one.

#[tokio::test]
async fn a_start_runs_the_run_from_the_clocks_time_and_arms_its_finish_timeout_once() {
    let m = machine(|c| {
        c.timeouts = Some(wit::Timeouts {
            start_ms: None,
            finish_ms: Some(10 * MINUTE),
        })
    });
    let key = m.new_run(json!({})).await;
    assert!(m.timers_of(&key).is_empty(), "no timer before the start");
    m.clock.advance(SECOND);
    let run = m.record(&key, Transition::Start).await.unwrap();
    assert_eq!(run, m.run(&key), "record returns the run as written");
    assert_eq!(run.status(), RunStatus::Running);
    assert_eq!(run.started_at, Some(T0 + SECOND));
    let finish = m.timer(&key, TimerKind::FinishTimeout);
    assert_eq!(
        (finish.at, finish.seq),
        (T0 + SECOND + 10 * MINUTE, RUN_LEVEL_SEQ)
    );
    assert_eq!(m.scheduler.armed_timers(), 1);

    // Resumed later: still the same start, and no second finish timeout.
    m.record(&key, Transition::Park(Suspended::Sleeping)).await;
    m.clock.advance(MINUTE);
    let run = m.record(&key, Transition::Start).await.unwrap();
    assert_eq!(run.status(), RunStatus::Running);
    assert_eq!(run.started_at, Some(T0 + SECOND), "the first start counts");
    assert_eq!(m.timer(&key, TimerKind::FinishTimeout), finish);
    assert_eq!(m.scheduler.armed_timers(), 1);
}

#[tokio::test]
async fn a_start_arms_no_timer_without_timeouts_finish() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    assert_eq!(m.run(&key).status(), RunStatus::Running);
    assert_eq!(m.run(&key).started_at, Some(T0));
    assert!(m.timers_of(&key).is_empty());
}

#[tokio::test]
async fn output_is_journaled_as_log_chunks_in_order() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let chunks = vec![log(0, "hello "), log(6, "world\n")];
    m.record(&key, Transition::Output(chunks.clone())).await;
    assert_eq!(m.journal.logs(&key).unwrap(), chunks);
    // The executor's synchronous path journals the same way.
    m.runs.record_output(&key, vec![log(12, "more\n")]).unwrap();
    let texts: Vec<_> = m
        .journal
        .logs(&key)
        .unwrap()
        .into_iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(texts, ["hello ", "world\n", "more\n"]);
}

#[tokio::test]
async fn a_step_done_journals_the_steps_outcome_and_leaves_the_run_running() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let mut done = entry(0, StepKind::Run, StepStatus::Completed);
    done.output = Some("42".into());
    done.ended_at = Some(T0);
    m.record(&key, Transition::StepDone(done.clone())).await;
    let mut failed = entry(1, StepKind::Run, StepStatus::Failed);
    failed.error = Some(error("no"));
    m.record(&key, Transition::StepDone(failed.clone())).await;
    assert_eq!(m.journal.steps(&key).unwrap(), [done, failed]);
    assert_eq!(m.run(&key).status(), RunStatus::Running);
    assert!(m.timers_of(&key).is_empty());
}

#[tokio::test]
async fn a_step_retry_marks_the_step_retrying_and_arms_its_retry_timer() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let mut step = entry(0, StepKind::Run, StepStatus::Retrying);
    step.attempts = 1;
    step.error = Some(error("flaky"));
    step.wake_at = Some(T0 + 15 * SECOND);
    m.record(&key, Transition::StepRetry(step.clone())).await;
    assert_eq!(m.step(&key, 0), step);
    let timer = m.timer(&key, TimerKind::StepRetry);
    assert_eq!((timer.at, timer.seq), (T0 + 15 * SECOND, 0));
    assert_eq!(m.scheduler.armed_timers(), 1);
    assert_eq!(
        m.run(&key).status(),
        RunStatus::Running,
        "a run between attempts is running"
    );
}

#[tokio::test]
async fn a_sleep_arms_its_timer_and_the_run_sleeps_until_it_fires() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let step = sleeping(0, T0 + MINUTE);
    let run = m
        .record(&key, Transition::Sleep(step.clone()))
        .await
        .unwrap();
    assert_eq!(run.status(), RunStatus::Sleeping);
    assert_eq!(m.run(&key).status(), RunStatus::Sleeping);
    assert_eq!(m.step(&key, 0), step);
    let timer = m.timer(&key, TimerKind::Sleep);
    assert_eq!((timer.at, timer.seq), (T0 + MINUTE, 0));
    assert_eq!(m.scheduler.armed_timers(), 1, "armed in the scheduler too");
}

#[tokio::test]
async fn a_due_sleep_that_was_armed_completes_and_its_timer_goes() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    m.record(&key, Transition::Sleep(sleeping(0, T0 + MINUTE)))
        .await;
    assert_eq!(m.timer(&key, TimerKind::Sleep).at, T0 + MINUTE);
    m.clock.advance(MINUTE);
    let mut done = sleeping(0, T0 + MINUTE);
    done.status = StepStatus::Completed;
    done.output = Some("null".into());
    done.ended_at = Some(T0 + MINUTE);
    m.record(
        &key,
        Transition::SleepDue {
            step: done.clone(),
            armed: true,
        },
    )
    .await;
    assert_eq!(m.step(&key, 0), done);
    assert!(m.timers_of(&key).is_empty(), "the sleep's timer is deleted");
    assert_eq!(m.scheduler.armed_timers(), 0, "and disarmed");
}

#[tokio::test]
async fn a_due_sleep_that_was_never_armed_deletes_no_timer() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    // A timer with the very identity the due sleep would have had.
    m.record(&key, Transition::Sleep(sleeping(0, T0 + MINUTE)))
        .await;
    let mut done = sleeping(0, T0 + MINUTE);
    done.status = StepStatus::Completed;
    m.record(
        &key,
        Transition::SleepDue {
            step: done.clone(),
            armed: false,
        },
    )
    .await;
    assert_eq!(m.step(&key, 0), done, "the step is journaled completed");
    assert_eq!(m.timer(&key, TimerKind::Sleep).at, T0 + MINUTE);
    assert_eq!(m.scheduler.armed_timers(), 1);
}

#[tokio::test]
async fn a_park_puts_the_run_back_in_its_suspended_status() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    m.record(
        &key,
        Transition::RetryLater {
            wake_at: T0 + MINUTE,
            attempt: 1,
            error: None,
        },
    )
    .await;
    let run = m
        .record(&key, Transition::Park(Suspended::Waiting))
        .await
        .unwrap();
    assert_eq!(run.status(), RunStatus::Waiting);
    assert_eq!(m.run(&key).status(), RunStatus::Waiting);
    assert_eq!(
        m.run(&key).wake_at(),
        None,
        "a parked run has no timed resume"
    );
    m.record(&key, Transition::Park(Suspended::Sleeping)).await;
    assert_eq!(m.run(&key).status(), RunStatus::Sleeping);
}

/// Waits match only events accepted after them, on the match path's value.
#[tokio::test]
async fn a_wait_registers_its_waiter_and_only_a_later_matching_event_resolves_it() {
    let m = machine(|_| {});
    let key = m.new_run(json!({"order": "o-1"})).await;
    m.record(&key, Transition::Start).await;
    m.send_named("shop/paid", json!({"order": "o-1"})).await;

    let Transition::Wait { step, waiter } = wait(&key, 0, "o-1", T0 + MINUTE) else {
        unreachable!()
    };
    let run = m
        .record(
            &key,
            Transition::Wait {
                step: step.clone(),
                waiter: waiter.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(run.status(), RunStatus::Waiting);
    assert_eq!(
        m.step(&key, 0),
        step,
        "the earlier event did not resolve it"
    );
    assert_eq!(
        m.journal.waiters("t", "shop/paid").unwrap(),
        std::slice::from_ref(&waiter)
    );
    let timeout = m.timer(&key, TimerKind::WaitTimeout);
    assert_eq!((timeout.at, timeout.seq), (T0 + MINUTE, 0));

    // Another order's payment does not match.
    let other = m.send_named("shop/paid", json!({"order": "o-2"})).await;
    assert!(other.wake.is_empty());
    assert_eq!(m.step(&key, 0).status, StepStatus::Waiting);
    assert_eq!(m.journal.waiters("t", "shop/paid").unwrap(), [waiter]);

    m.clock.advance(SECOND);
    let woken = m.woken();
    let paid = m.send_named("shop/paid", json!({"order": "o-1"})).await;
    assert_eq!(paid.wake, std::slice::from_ref(&key));
    assert_eq!(m.woken(), woken + 1, "the run is queued again");
    let step = m.step(&key, 0);
    assert_eq!(step.status, StepStatus::Completed);
    assert_eq!(step.ended_at, Some(T0 + SECOND));
    let event: Value = serde_json::from_str(step.output.as_deref().unwrap()).unwrap();
    assert_eq!(event["name"], "shop/paid");
    assert_eq!(event["id"], paid.ids[0].as_str(), "the step gets the event");
    assert_eq!(event["data"]["order"], "o-1");
    assert!(m.journal.waiters("t", "shop/paid").unwrap().is_empty());
    assert!(m.timers_of(&key).is_empty(), "the timeout goes");
    assert_eq!(m.scheduler.armed_timers(), 0);
    assert_eq!(m.run(&key).status(), RunStatus::Queued);
}

#[tokio::test]
async fn an_invoke_starts_a_child_run_and_the_childs_end_resolves_the_invoking_step() {
    let m = machine(|_| {});
    let parent = m.started_run().await;
    let mut step = entry(0, StepKind::Invoke, StepStatus::Waiting);
    step.wake_at = Some(T0 + MINUTE);
    let woken = m.woken();
    let run = m
        .record(
            &parent,
            Transition::Invoke {
                step,
                function: Box::new(m.function("g")),
                data: json!({"x": 1}),
            },
        )
        .await
        .unwrap();
    assert_eq!(run.status(), RunStatus::Waiting);

    let step = m.step(&parent, 0);
    assert_eq!(step.status, StepStatus::Waiting);
    let child_key = RunKey::new("t", step.child.clone().expect("the step records its child"));
    let child = m.run(&child_key);
    assert_eq!(child.function, "g");
    assert_eq!(child.status(), RunStatus::Queued);
    assert_eq!(
        child.parent,
        Some(ParentStep {
            run: parent.run.clone(),
            seq: 0
        })
    );
    let events = m.journal.run_events(&child_key).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "inngest/function.invoked");
    assert_eq!(events[0].data, json!({"x": 1}));
    assert_eq!(m.woken(), woken + 1, "the child is queued");
    let timeout = m.timer(&parent, TimerKind::InvokeTimeout);
    assert_eq!((timeout.at, timeout.seq), (T0 + MINUTE, 0));

    // The child completes: the parent's step gets its output.
    m.record(&child_key, Transition::Start).await;
    m.clock.advance(SECOND);
    m.record(
        &child_key,
        Transition::End {
            status: RunStatus::Completed,
            output: Some(json!({"ok": true})),
            error: None,
        },
    )
    .await;
    let step = m.step(&parent, 0);
    assert_eq!(step.status, StepStatus::Completed);
    assert_eq!(
        serde_json::from_str::<Value>(step.output.as_deref().unwrap()).unwrap(),
        json!({"ok": true})
    );
    assert_eq!((step.ended_at, step.wake_at), (Some(T0 + SECOND), None));
    assert!(m.timers_of(&parent).is_empty(), "the invoke's timeout goes");
    assert_eq!(m.run(&parent).status(), RunStatus::Queued);
    assert_eq!(m.woken(), woken + 2, "the parent is queued again");
}

#[tokio::test]
async fn an_invoke_without_a_timeout_arms_no_timer_and_a_failed_child_fails_the_step() {
    let m = machine(|_| {});
    let parent = m.started_run().await;
    m.record(
        &parent,
        Transition::Invoke {
            step: entry(0, StepKind::Invoke, StepStatus::Waiting),
            function: Box::new(m.function("g")),
            data: json!({}),
        },
    )
    .await;
    assert!(m.timers_of(&parent).is_empty());
    let child = RunKey::new("t", m.step(&parent, 0).child.unwrap());
    m.record(&child, Transition::Start).await;
    m.record(
        &child,
        Transition::End {
            status: RunStatus::Failed,
            output: None,
            error: Some(ErrorRecord {
                name: "PaymentDeclined".into(),
                message: "card refused".into(),
                retriable: false,
                retry_after_ms: None,
            }),
        },
    )
    .await;
    let step = m.step(&parent, 0);
    assert_eq!(step.status, StepStatus::Failed);
    let error = step.error.unwrap();
    assert_eq!(
        error.name, "PaymentDeclined",
        "the child's error name carries over"
    );
    assert!(
        error.message.contains("invoked function g") && error.message.contains("card refused"),
        "{}",
        error.message
    );
    assert_eq!(m.run(&parent).status(), RunStatus::Queued);
}

#[tokio::test]
async fn branches_are_handed_to_the_scheduler_and_nothing_is_written() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let (writes, run) = (m.writes(), m.run(&key));
    m.record(&key, Transition::Branches(vec![1, 2]))
        .await
        .unwrap();
    assert!(m.runs.branch_pending(&key, 1));
    assert!(m.runs.branch_pending(&key, 2));
    assert!(!m.runs.branch_pending(&key, 3));
    assert_eq!(m.writes(), writes, "no batch written");
    assert_eq!(m.run(&key), run);
    assert!(m.journal.steps(&key).unwrap().is_empty());
}

#[tokio::test]
async fn a_replay_queues_the_run_again_and_writes_nothing() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let (writes, woken, run) = (m.writes(), m.woken(), m.run(&key));
    m.record(&key, Transition::Replay).await.unwrap();
    assert_eq!(m.woken(), woken + 1);
    assert_eq!(m.writes(), writes, "no batch written");
    assert_eq!(m.run(&key), run);
}

#[tokio::test]
async fn a_retry_later_keeps_the_run_running_until_its_retry_timer() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let run = m
        .record(
            &key,
            Transition::RetryLater {
                wake_at: T0 + 20 * SECOND,
                attempt: 1,
                error: Some(error("handler threw")),
            },
        )
        .await
        .unwrap();
    assert_eq!(run, m.run(&key));
    assert_eq!(run.status(), RunStatus::Running);
    assert_eq!(run.wake_at(), Some(T0 + 20 * SECOND));
    assert_eq!(run.attempt, 1);
    assert_eq!(run.error(), Some(&error("handler threw")));
    let timer = m.timer(&key, TimerKind::RunRetry);
    assert_eq!((timer.at, timer.seq), (T0 + 20 * SECOND, RUN_LEVEL_SEQ));

    // Waiting for the tenant's budget: no error of its own, so the last
    // one stays.
    let run = m
        .record(
            &key,
            Transition::RetryLater {
                wake_at: T0 + 30 * SECOND,
                attempt: 1,
                error: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(run.error(), Some(&error("handler threw")));
    assert_eq!(run.wake_at(), Some(T0 + 30 * SECOND));
}

#[tokio::test]
async fn a_completed_run_keeps_its_output_and_end_time() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let mut ended = m.runs.subscribe_ended();
    m.clock.advance(5 * SECOND);
    let run = m
        .record(
            &key,
            Transition::End {
                status: RunStatus::Completed,
                output: Some(json!({"n": 1})),
                error: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(run, m.run(&key));
    assert_eq!(run.status(), RunStatus::Completed);
    assert_eq!(run.output(), Some(&json!({"n": 1})));
    assert_eq!(run.ended_at(), Some(T0 + 5 * SECOND));
    assert_eq!(run.error(), None);
    assert_eq!(ended.try_recv().unwrap(), key, "its end is announced");
    assert!(m.journal.active_runs().unwrap().is_empty());
    assert!(
        !m.events().iter().any(|e| e.name == FUNCTION_FAILED),
        "only failures emit an event"
    );
}

#[tokio::test]
async fn a_failed_run_emits_function_failed_and_starts_its_on_failure_run() {
    let m = machine(|c| c.on_failure = true);
    let key = m.new_run(json!({"order": "o-1"})).await;
    m.record(&key, Transition::Start).await;
    let woken = m.woken();
    m.record(
        &key,
        Transition::End {
            status: RunStatus::Failed,
            output: None,
            error: Some(error("boom")),
        },
    )
    .await;
    let run = m.run(&key);
    assert_eq!(run.status(), RunStatus::Failed);
    assert_eq!(run.error(), Some(&error("boom")));
    assert_eq!(run.ended_at(), Some(T0));

    let failed: Vec<_> = m
        .events()
        .into_iter()
        .filter(|e| e.name == FUNCTION_FAILED)
        .collect();
    assert_eq!(failed.len(), 1);
    let data = &failed[0].data;
    assert_eq!(data["function_id"], "f");
    assert_eq!(data["run_id"], key.run.as_str());
    assert_eq!(data["error"], json!({"name": "Error", "message": "boom"}));
    assert_eq!(data["event"]["data"], json!({"order": "o-1"}));

    let runs = m.runs();
    assert_eq!(runs.len(), 2);
    let handler = &runs[1];
    assert_eq!(handler.kind, RunKind::OnFailure);
    assert_eq!(handler.function, "f");
    assert_eq!(handler.status(), RunStatus::Queued);
    assert_eq!(handler.version, run.version);
    assert_eq!(m.journal.run_events(&handler.key).unwrap(), failed);
    assert_eq!(m.woken(), woken + 1, "the on-failure run is queued");

    // The on-failure run failing in turn emits nothing more.
    m.record(&handler.key, Transition::Start).await;
    m.record(
        &handler.key,
        Transition::End {
            status: RunStatus::Failed,
            output: None,
            error: Some(error("again")),
        },
    )
    .await;
    assert_eq!(m.runs().len(), 2);
    let failures = m
        .events()
        .iter()
        .filter(|e| e.name == FUNCTION_FAILED)
        .count();
    assert_eq!(failures, 1);
}

#[tokio::test]
async fn a_failed_run_without_on_failure_emits_the_event_but_starts_no_handler() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    m.record(
        &key,
        Transition::End {
            status: RunStatus::Failed,
            output: None,
            error: Some(error("boom")),
        },
    )
    .await;
    assert_eq!(m.statuses(), [RunStatus::Failed]);
    assert!(m.events().iter().any(|e| e.name == FUNCTION_FAILED));
}

/// Once a run has ended, what its execution still asks for is refused
/// without a write: no record, no timer, no step, no wake-up.
#[tokio::test]
async fn every_transition_on_an_ended_run_returns_none_and_writes_nothing() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let error = ErrorRecord::fatal(ErrorName::Cancelled, "by the test");
    m.runs.cancel(&key, error).await.unwrap();
    let cancelled = m.run(&key);
    assert_eq!(cancelled.status(), RunStatus::Cancelled);
    let (writes, woken, runs) = (m.writes(), m.woken(), m.runs().len());

    let Transition::Wait { step, waiter } = wait(&key, 5, "o-1", T0 + MINUTE) else {
        unreachable!()
    };
    let mut retrying = entry(1, StepKind::Run, StepStatus::Retrying);
    retrying.wake_at = Some(T0 + MINUTE);
    let transitions = vec![
        Transition::Start,
        Transition::Output(vec![log(0, "late")]),
        Transition::StepDone(entry(0, StepKind::Run, StepStatus::Completed)),
        Transition::StepRetry(retrying),
        Transition::Sleep(sleeping(2, T0 + MINUTE)),
        Transition::SleepDue {
            step: entry(3, StepKind::Sleep, StepStatus::Completed),
            armed: false,
        },
        Transition::Park(Suspended::Sleeping),
        Transition::Wait { step, waiter },
        Transition::Invoke {
            step: entry(6, StepKind::Invoke, StepStatus::Waiting),
            function: Box::new(m.function("g")),
            data: json!({}),
        },
        Transition::Branches(vec![7]),
        Transition::Replay,
        Transition::RetryLater {
            wake_at: T0 + MINUTE,
            attempt: 1,
            error: None,
        },
        Transition::End {
            status: RunStatus::Completed,
            output: Some(json!(1)),
            error: None,
        },
    ];
    for transition in transitions {
        let name = format!("{transition:?}");
        assert_eq!(m.record(&key, transition).await, None, "{name}");
    }
    m.runs.record_output(&key, vec![log(0, "late")]).unwrap();

    assert_eq!(m.writes(), writes, "no batch written");
    assert_eq!(m.run(&key), cancelled);
    assert!(m.journal.steps(&key).unwrap().is_empty());
    assert!(m.journal.logs(&key).unwrap().is_empty());
    assert!(m.timers_of(&key).is_empty());
    assert_eq!(m.scheduler.armed_timers(), 0);
    assert!(!m.runs.branch_pending(&key, 7));
    assert_eq!(m.woken(), woken);
    assert_eq!(m.runs().len(), runs, "no child run");

    // Nor on a run that never existed.
    let missing = RunKey::new("t", "no-such-run");
    assert_eq!(m.record(&missing, Transition::Start).await, None);
    assert_eq!(m.writes(), writes);
}

// ---------------------------------------------------------------------------
// Timers firing.

#[tokio::test]
async fn a_sleep_ending_completes_its_step_and_queues_the_run() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    m.record(&key, Transition::Sleep(sleeping(0, T0 + MINUTE)))
        .await;
    let timer = m.timer(&key, TimerKind::Sleep);
    m.clock.advance(MINUTE);
    assert!(m.fire(&timer), "the sleeping run is woken");
    let step = m.step(&key, 0);
    assert_eq!(step.status, StepStatus::Completed);
    assert_eq!(step.output.as_deref(), Some("null"));
    assert_eq!(step.ended_at, Some(T0 + MINUTE));
    assert_eq!(m.run(&key).status(), RunStatus::Queued);
    assert!(m.timers_of(&key).is_empty());

    // Fired again (a duplicate), it changes nothing.
    assert!(!m.fire(&timer));
    assert_eq!(m.step(&key, 0), step);
    assert_eq!(m.run(&key).status(), RunStatus::Queued);
}

#[tokio::test]
async fn a_wait_that_times_out_completes_its_step_with_null() {
    let m = machine(|_| {});
    let key = m.new_run(json!({"order": "o-1"})).await;
    m.record(&key, Transition::Start).await;
    m.record(&key, wait(&key, 0, "o-1", T0 + MINUTE)).await;
    let timer = m.timer(&key, TimerKind::WaitTimeout);
    m.clock.advance(MINUTE);
    assert!(m.fire(&timer));
    let step = m.step(&key, 0);
    assert_eq!(step.status, StepStatus::Completed);
    assert_eq!(step.output.as_deref(), Some("null"));
    assert_eq!(step.ended_at, Some(T0 + MINUTE));
    assert!(m.journal.waiters("t", "shop/paid").unwrap().is_empty());
    assert!(m.timers_of(&key).is_empty());
    assert_eq!(m.run(&key).status(), RunStatus::Queued);

    // A matching event after the timeout finds no waiter.
    let late = m.send_named("shop/paid", json!({"order": "o-1"})).await;
    assert!(late.wake.is_empty());
    assert_eq!(m.step(&key, 0).output.as_deref(), Some("null"));
}

#[tokio::test]
async fn a_due_step_retry_queues_the_run_unless_the_step_moved_on() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let mut step = entry(0, StepKind::Run, StepStatus::Retrying);
    step.wake_at = Some(T0 + 10 * SECOND);
    m.record(&key, Transition::StepRetry(step.clone())).await;
    let first = m.timer(&key, TimerKind::StepRetry);

    // The step was retried meanwhile and waits for a later attempt: the
    // first timer is stale.
    step.attempts = 2;
    step.wake_at = Some(T0 + 30 * SECOND);
    m.record(&key, Transition::StepRetry(step)).await;
    m.clock.advance(10 * SECOND);
    assert!(!m.fire(&first));
    assert_eq!(m.run(&key).status(), RunStatus::Running);

    let second = m.timer(&key, TimerKind::StepRetry);
    assert_eq!(second.at, T0 + 30 * SECOND);
    m.clock.advance(20 * SECOND);
    assert!(m.fire(&second));
    assert_eq!(m.run(&key).status(), RunStatus::Queued);
    assert!(m.timers_of(&key).is_empty());
}

#[tokio::test]
async fn a_due_run_retry_queues_the_run_only_for_the_retry_it_waits_for() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let retry = |wake_at| Transition::RetryLater {
        wake_at,
        attempt: 1,
        error: Some(error("handler threw")),
    };
    m.record(&key, retry(T0 + 10 * SECOND)).await;
    let stale = m.timer(&key, TimerKind::RunRetry);
    m.record(&key, retry(T0 + 20 * SECOND)).await;
    m.clock.advance(10 * SECOND);
    assert!(!m.fire(&stale), "the run waits for a later retry");
    assert_eq!(m.run(&key).wake_at(), Some(T0 + 20 * SECOND));

    let due = m.timer(&key, TimerKind::RunRetry);
    m.clock.advance(10 * SECOND);
    assert!(m.fire(&due));
    let run = m.run(&key);
    assert_eq!((run.status(), run.wake_at()), (RunStatus::Queued, None));
    assert!(m.timers_of(&key).is_empty());
}

#[tokio::test]
async fn an_invoke_that_times_out_fails_its_step() {
    let m = machine(|_| {});
    let parent = m.started_run().await;
    let mut step = entry(0, StepKind::Invoke, StepStatus::Waiting);
    step.wake_at = Some(T0 + MINUTE);
    m.record(
        &parent,
        Transition::Invoke {
            step,
            function: Box::new(m.function("g")),
            data: json!({}),
        },
    )
    .await;
    let timer = m.timer(&parent, TimerKind::InvokeTimeout);
    m.clock.advance(MINUTE);
    assert!(m.fire(&timer));
    let step = m.step(&parent, 0);
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.error.unwrap().name, "InvokeTimeoutError");
    assert_eq!(m.run(&parent).status(), RunStatus::Queued);
}

#[tokio::test]
async fn a_run_not_started_within_timeouts_start_is_cancelled() {
    let m = machine(|c| {
        c.timeouts = Some(wit::Timeouts {
            start_ms: Some(30 * SECOND),
            finish_ms: None,
        })
    });
    let late = m.new_run(json!({})).await;
    let timer = m.timer(&late, TimerKind::StartTimeout);
    assert_eq!(timer.at, T0 + 30 * SECOND);

    // A run that started in time is not touched by its start timeout.
    let prompt = m.new_run(json!({})).await;
    m.record(&prompt, Transition::Start).await;
    let prompt_timer = m.timer(&prompt, TimerKind::StartTimeout);

    m.clock.advance(30 * SECOND);
    let mut ended = m.runs.subscribe_ended();
    assert!(!m.fire(&timer), "a cancelled run is not woken");
    let run = m.run(&late);
    assert_eq!(run.status(), RunStatus::Cancelled);
    assert_eq!(run.ended_at(), Some(T0 + 30 * SECOND));
    let error = run.error().unwrap();
    assert_eq!(error.name, "FunctionTimeoutError");
    assert!(
        error.message.contains("timeouts.start"),
        "{}",
        error.message
    );
    assert_eq!(ended.try_recv().unwrap(), late);

    assert!(!m.fire(&prompt_timer));
    assert_eq!(m.run(&prompt).status(), RunStatus::Running);
}

#[tokio::test]
async fn a_run_over_timeouts_finish_is_cancelled() {
    let m = machine(|c| {
        c.timeouts = Some(wit::Timeouts {
            start_ms: None,
            finish_ms: Some(MINUTE),
        })
    });
    let key = m.started_run().await;
    m.record(&key, Transition::Sleep(sleeping(0, T0 + 10 * MINUTE)))
        .await;
    let finish = m.timer(&key, TimerKind::FinishTimeout);
    m.timer(&key, TimerKind::Sleep);
    m.clock.advance(MINUTE);
    assert!(!m.fire(&finish));
    let run = m.run(&key);
    assert_eq!(run.status(), RunStatus::Cancelled);
    let error = run.error().unwrap();
    assert_eq!(error.name, "FunctionTimeoutError");
    assert!(
        error.message.contains("timeouts.finish"),
        "{}",
        error.message
    );
    assert!(m.timers_of(&key).is_empty(), "its sleep's timer goes too");
}

// ---------------------------------------------------------------------------
// Flow control.

#[tokio::test]
async fn a_rate_limit_skips_within_its_period_and_admits_after_it() {
    let m = machine(|c| {
        c.rate_limit = Some(wit::RateLimit {
            limit: 1,
            period_ms: 60_000,
            key: None,
        })
    });
    m.send(json!({})).await;
    m.send(json!({})).await;
    assert_eq!(m.statuses(), [RunStatus::Queued, RunStatus::Skipped]);
    let skipped = &m.runs()[1];
    assert_eq!(skipped.error().unwrap().name, "RateLimited");
    assert_eq!(
        skipped.created_at, T0,
        "the transition's time is the clock's"
    );
    // A period later, the limit admits one again.
    m.clock.advance(60_000);
    m.send(json!({})).await;
    assert_eq!(
        m.statuses(),
        [RunStatus::Queued, RunStatus::Skipped, RunStatus::Queued]
    );
}

#[tokio::test]
async fn debounce_holds_one_run_back_until_its_period_after_the_last_event() {
    let m = machine(|c| {
        c.debounce = Some(wit::Debounce {
            period_ms: 5_000,
            key: None,
            timeout_ms: None,
        })
    });
    m.send(json!({"n": 1})).await;
    m.clock.advance(2_000);
    m.send(json!({"n": 2})).await;
    let runs = m.runs();
    assert_eq!(runs.len(), 1, "one run for the burst");
    let timers = m.journal.timers().unwrap();
    let start = timers
        .iter()
        .find(|t| t.kind == TimerKind::DelayedStart)
        .expect("a delayed start");
    assert_eq!(
        start.at,
        T0 + 2_000 + 5_000,
        "the period counts from the last event"
    );
    let events = m.journal.run_events(&runs[0].key).unwrap();
    assert_eq!(
        events.last().unwrap().data["n"],
        2,
        "it runs with the last event"
    );
}

#[tokio::test]
async fn an_idempotency_key_starts_one_run_per_value() {
    let m = machine(|c| c.idempotency = Some("event.data.order".into()));
    m.send(json!({"order": "o-1"})).await;
    m.send(json!({"order": "o-1"})).await;
    m.send(json!({"order": "o-2"})).await;
    assert_eq!(m.runs().len(), 2);
}

#[tokio::test]
async fn concurrency_limits_become_the_runs_queue_keys() {
    let m = machine(|c| {
        c.concurrency = vec![
            wit::Concurrency {
                limit: 2,
                key: Some("event.data.user".into()),
                scope: wit::ConcurrencyScope::Function,
            },
            wit::Concurrency {
                limit: 5,
                key: None,
                scope: wit::ConcurrencyScope::Tenant,
            },
        ]
    });
    let u1 = m.new_run(json!({"user": "u-1"})).await;
    let u1_again = m.new_run(json!({"user": "u-1"})).await;
    let u2 = m.new_run(json!({"user": "u-2"})).await;
    let spec = |key| m.admission(key, None).unwrap().spec.concurrency;
    let (a, b, c) = (spec(&u1), spec(&u1_again), spec(&u2));
    let limits: Vec<_> = a.iter().map(|k| k.limit).collect();
    let tenant_cap = m.runs.tenants.limits("t").max_tenant_executing;
    assert_eq!(limits, [2, 5, tenant_cap], "function, tenant, host's cap");
    assert!(a[0].key.contains("u-1"), "{:?}", a[0].key);
    assert_eq!(a[0], b[0], "one limit per key value");
    assert_ne!(a[0], c[0], "another value, another limit");
    assert_eq!(a[1], c[1], "the tenant-wide limit is shared");
    assert_eq!(a[2].key, format!("{TENANT_KEY}t"));
    assert_eq!(a, b);

    // A branch counts against the same limits.
    let branch = m.admission(&u1, Some(3)).unwrap();
    assert_eq!(branch.spec.concurrency, a);
    assert!(!branch.first_start);
}

#[tokio::test]
async fn a_throttle_applies_to_the_runs_first_start_only() {
    let m = machine(|c| {
        c.throttle = Some(wit::Throttle {
            limit: 3,
            period_ms: MINUTE,
            burst: Some(1),
            key: Some("event.data.user".into()),
        })
    });
    let key = m.new_run(json!({"user": "u-1"})).await;
    let admission = m.admission(&key, None).unwrap();
    assert!(admission.first_start);
    let throttle = admission.spec.throttle.expect("a throttle key");
    assert_eq!(
        (throttle.limit, throttle.period_ms, throttle.burst),
        (3, MINUTE, 1)
    );
    assert!(throttle.key.contains("u-1"), "{:?}", throttle.key);
    let other = m.new_run(json!({"user": "u-2"})).await;
    let other = m.admission(&other, None).unwrap().spec.throttle.unwrap();
    assert_ne!(other.key, throttle.key, "one throttle per key value");

    m.record(&key, Transition::Start).await;
    let resumed = m.admission(&key, None).unwrap();
    assert!(!resumed.first_start, "a resumed run is not throttled again");
    assert_eq!(resumed.spec.throttle, Some(throttle));
}

#[tokio::test]
async fn priority_gives_a_head_start_in_seconds_within_its_bounds() {
    let m = machine(|c| c.priority = Some("event.data.boost".into()));
    let mut priorities = Vec::new();
    for boost in [json!(30), json!(-20), json!(9_999), json!(null)] {
        let key = m.new_run(json!({ "boost": boost })).await;
        priorities.push(m.admission(&key, None).unwrap().spec.priority_ms);
    }
    assert_eq!(priorities, [30_000, -20_000, 600_000, 0]);
}

#[tokio::test]
async fn an_ended_run_has_no_admission() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    assert!(m.admission(&key, None).is_some());
    m.record(
        &key,
        Transition::End {
            status: RunStatus::Completed,
            output: None,
            error: None,
        },
    )
    .await;
    assert_eq!(m.admission(&key, None), None);
}

#[tokio::test]
async fn a_batch_collects_events_until_it_is_full_then_starts_one_run() {
    let m = machine(|c| {
        c.batch_events = Some(wit::BatchEvents {
            max_size: 3,
            timeout_ms: 10 * SECOND,
            key: None,
        })
    });
    let woken = m.woken();
    m.send(json!({"n": 1})).await;
    m.send(json!({"n": 2})).await;
    let runs = m.runs();
    assert_eq!(runs.len(), 1, "one run collects the batch");
    let key = runs[0].key.clone();
    assert_eq!(runs[0].wake_at(), Some(T0 + 10 * SECOND), "held back");
    assert_eq!(m.timer(&key, TimerKind::DelayedStart).at, T0 + 10 * SECOND);
    assert_eq!(m.woken(), woken, "nothing starts yet");

    m.send(json!({"n": 3})).await;
    let run = m.run(&key);
    assert_eq!(run.event_ids.len(), 3);
    assert_eq!(run.wake_at(), None);
    assert_eq!(m.woken(), woken + 1, "full: it starts at once");
    assert!(m.timers_of(&key).is_empty(), "its delayed start goes");
    let ns: Vec<_> = m
        .journal
        .run_events(&key)
        .unwrap()
        .iter()
        .map(|e| e.data["n"].clone())
        .collect();
    assert_eq!(ns, [json!(1), json!(2), json!(3)]);

    m.send(json!({"n": 4})).await;
    assert_eq!(m.runs().len(), 2, "the next event opens another batch");
}

#[tokio::test]
async fn a_batch_that_is_not_full_starts_when_its_timeout_fires() {
    let m = machine(|c| {
        c.batch_events = Some(wit::BatchEvents {
            max_size: 10,
            timeout_ms: 10 * SECOND,
            key: None,
        })
    });
    m.send(json!({"n": 1})).await;
    m.send(json!({"n": 2})).await;
    let key = m.runs()[0].key.clone();
    let start = m.timer(&key, TimerKind::DelayedStart);
    m.clock.advance(10 * SECOND);
    assert!(m.fire(&start), "the held-back run is woken");
    let run = m.run(&key);
    assert_eq!((run.status(), run.wake_at()), (RunStatus::Queued, None));
    assert_eq!(m.journal.run_events(&key).unwrap().len(), 2);
    assert!(m.timers_of(&key).is_empty());

    m.send(json!({"n": 3})).await;
    assert_eq!(m.runs().len(), 2, "its window closed with the timeout");
    assert_eq!(m.run(&key).event_ids.len(), 2);
}

#[tokio::test]
async fn a_skip_singleton_skips_new_runs_while_one_is_active() {
    let m = machine(|c| {
        c.singleton = Some(wit::Singleton {
            key: None,
            mode: wit::SingletonMode::Skip,
        })
    });
    let first = m.started_run().await;
    m.send(json!({})).await;
    assert_eq!(m.statuses(), [RunStatus::Running, RunStatus::Skipped]);
    let skipped = &m.runs()[1];
    let error = skipped.error().unwrap();
    assert_eq!(error.name, "Singleton");
    assert!(error.message.contains(&first.run), "{}", error.message);

    // Once it ends, its claim goes and a new run starts.
    m.record(
        &first,
        Transition::End {
            status: RunStatus::Completed,
            output: None,
            error: None,
        },
    )
    .await;
    m.send(json!({})).await;
    assert_eq!(
        m.statuses(),
        [RunStatus::Completed, RunStatus::Skipped, RunStatus::Queued]
    );
}

#[tokio::test]
async fn a_cancel_singleton_replaces_the_active_run() {
    let m = machine(|c| {
        c.singleton = Some(wit::Singleton {
            key: Some("event.data.user".into()),
            mode: wit::SingletonMode::Cancel,
        })
    });
    let old = m.started_run().await;
    let other_key = m.new_run(json!({"user": "u-2"})).await;
    m.send(json!({})).await;
    let runs = m.runs();
    assert_eq!(runs.len(), 3);
    let old = m.run(&old);
    assert_eq!(old.status(), RunStatus::Cancelled);
    assert_eq!(old.error().unwrap().name, "Cancelled");
    assert_eq!(m.run(&other_key).status(), RunStatus::Queued, "another key");
    assert_eq!(runs[2].status(), RunStatus::Queued);
}

#[tokio::test]
async fn a_cancel_on_event_cancels_the_matching_active_run() {
    let m = machine(|c| {
        c.cancel_on = vec![wit::CancelOn {
            event: "a/cancel".into(),
            match_: Some("data.order".into()),
            condition: None,
            timeout_ms: None,
        }]
    });
    let target = m.new_run(json!({"order": "o-1"})).await;
    let bystander = m.new_run(json!({"order": "o-2"})).await;
    m.record(&target, Transition::Start).await;
    m.record(&target, Transition::Sleep(sleeping(0, T0 + MINUTE)))
        .await;
    let listeners = |m: &Machine| {
        m.journal
            .index_scan(IndexKind::CancelOn, "t\0a/cancel\0")
            .unwrap()
            .len()
    };
    assert_eq!(listeners(&m), 2, "one listener per run");
    m.timer(&target, TimerKind::Sleep);

    m.clock.advance(SECOND);
    let accepted = m.send_named("a/cancel", json!({"order": "o-1"})).await;
    let run = m.run(&target);
    assert_eq!(run.status(), RunStatus::Cancelled);
    assert_eq!(run.ended_at(), Some(T0 + SECOND));
    let error = run.error().unwrap();
    assert_eq!(error.name, "Cancelled");
    assert!(
        error.message.contains("a/cancel") && error.message.contains(&accepted.ids[0]),
        "{}",
        error.message
    );
    assert!(m.timers_of(&target).is_empty(), "its sleep's timer goes");
    assert_eq!(m.run(&bystander).status(), RunStatus::Queued);
    assert_eq!(listeners(&m), 1, "the cancelled run's listener goes");
}

#[tokio::test]
async fn a_cancel_on_listener_expires_after_its_timeout() {
    let m = machine(|c| {
        c.cancel_on = vec![wit::CancelOn {
            event: "a/cancel".into(),
            match_: None,
            condition: None,
            timeout_ms: Some(MINUTE),
        }]
    });
    let key = m.new_run(json!({})).await;
    m.clock.advance(MINUTE + 1);
    m.send_named("a/cancel", json!({})).await;
    assert_eq!(m.run(&key).status(), RunStatus::Queued);
}

/// Cron firing goes through `Runs::run_crons`, the loop the host runs. The
/// schedule is due (by the fixed clock, moved to it, and by the wall clock,
/// which is past it), so one poll fires it: the run and the schedule's next
/// time are written before the loop awaits the flush, and the loop is
/// dropped there.
#[tokio::test]
async fn a_cron_schedule_starts_a_run_and_moves_to_its_next_time() {
    const SCHEDULE: &str = "0 12 1 * *";
    let m = machine(|c| c.triggers = vec![wit::Trigger::Cron(SCHEDULE.into())]);
    m.runs.schedule_crons("t", &[], &[m.function("f")]).unwrap();
    let index = crate::cron::index_key("t", "f", SCHEDULE);
    let noon = T0 + 12 * 60 * MINUTE;
    let stored = |m: &Machine| m.journal.index(IndexKind::Cron, &index).unwrap();
    assert_eq!(stored(&m), Some(noon.to_string()), "the next fire time");
    assert_eq!(m.runs.arm_crons().unwrap(), 1);
    assert!(m.runs().is_empty());

    m.clock.advance(noon - T0);
    let mut crons = std::pin::pin!(m.runs.clone().run_crons());
    assert!(crate::testing::poll_once(crons.as_mut()).is_none());
    let runs = m.runs();
    assert!(!runs.is_empty(), "the due schedule fired");
    let events = m.journal.run_events(&runs[0].key).unwrap();
    assert_eq!(events[0].name, crate::cron::CRON_EVENT);
    assert_eq!(events[0].ts, noon, "the time it was due");
    assert_eq!(runs[0].created_at, noon);
    assert_eq!(events[0].data, json!({"cron": SCHEDULE}));
    let next: u64 = stored(&m).unwrap().parse().unwrap();
    assert!(next > noon, "the schedule moves on");
}

// ---------------------------------------------------------------------------
// Cancelling.

#[tokio::test]
async fn cancelling_a_run_removes_its_timers_and_waiters_and_ends_it() {
    let m = machine(|_| {});
    let key = m.new_run(json!({"order": "o-1"})).await;
    m.record(&key, Transition::Start).await;
    let mut retrying = entry(0, StepKind::Run, StepStatus::Retrying);
    retrying.wake_at = Some(T0 + 10 * SECOND);
    m.record(&key, Transition::StepRetry(retrying)).await;
    m.record(&key, Transition::Sleep(sleeping(1, T0 + MINUTE)))
        .await;
    m.record(&key, wait(&key, 2, "o-1", T0 + 2 * MINUTE)).await;
    let mut invoking = entry(3, StepKind::Invoke, StepStatus::Waiting);
    invoking.wake_at = Some(T0 + 3 * MINUTE);
    m.record(
        &key,
        Transition::Invoke {
            step: invoking,
            function: Box::new(m.function("g")),
            data: json!({}),
        },
    )
    .await;
    m.record(
        &key,
        Transition::RetryLater {
            wake_at: T0 + 4 * MINUTE,
            attempt: 1,
            error: None,
        },
    )
    .await;
    let kinds: Vec<_> = m.timers_of(&key).iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [
            TimerKind::StepRetry,
            TimerKind::Sleep,
            TimerKind::WaitTimeout,
            TimerKind::InvokeTimeout,
            TimerKind::RunRetry
        ]
    );
    assert_eq!(m.journal.waiters("t", "shop/paid").unwrap().len(), 1);

    let mut ended = m.runs.subscribe_ended();
    m.clock.advance(SECOND);
    let reason = ErrorRecord::fatal(ErrorName::Cancelled, "by the test");
    let run = m.runs.cancel(&key, reason.clone()).await.unwrap();
    assert_eq!(run, m.run(&key));
    assert_eq!(run.status(), RunStatus::Cancelled);
    assert_eq!(run.ended_at(), Some(T0 + SECOND));
    assert_eq!((run.error(), run.wake_at()), (Some(&reason), None));
    assert!(m.timers_of(&key).is_empty(), "every timer goes");
    assert!(m.journal.waiters("t", "shop/paid").unwrap().is_empty());
    assert_eq!(m.scheduler.armed_timers(), 0);
    assert_eq!(ended.try_recv().unwrap(), key);

    // A payment now resumes nothing.
    let paid = m.send_named("shop/paid", json!({"order": "o-1"})).await;
    assert!(paid.wake.is_empty());

    match m.runs.cancel(&key, reason.clone()).await {
        Err(CancelError::AlreadyEnded(id, status)) => {
            assert_eq!((id, status), (key.run.clone(), "cancelled"));
        }
        other => panic!("cancelling twice: {other:?}"),
    }
    let missing = RunKey::new("t", "no-such-run");
    assert!(matches!(
        m.runs.cancel(&missing, reason).await,
        Err(CancelError::NotFound(_))
    ));
}

#[tokio::test]
async fn cancelling_a_held_back_run_removes_its_delayed_start() {
    let m = machine(|c| {
        c.debounce = Some(wit::Debounce {
            period_ms: 5 * SECOND,
            key: None,
            timeout_ms: None,
        })
    });
    m.send(json!({})).await;
    let key = m.runs()[0].key.clone();
    m.timer(&key, TimerKind::DelayedStart);
    let reason = ErrorRecord::fatal(ErrorName::Cancelled, "by the test");
    m.runs.cancel(&key, reason).await.unwrap();
    assert!(m.timers_of(&key).is_empty());
    // Its debounce window closed with it: the next event starts a new run.
    m.send(json!({})).await;
    assert_eq!(m.statuses(), [RunStatus::Cancelled, RunStatus::Queued]);
}

/// While an execution is registered, a step's outcome is checked against
/// the run's end in memory: one cancelled under it is refused, with no read
/// of the run; once every execution has left, the journal says again.
#[tokio::test]
async fn a_registered_execution_knows_its_run_ended_without_reading_it() {
    let m = machine(|_| {});
    let key = m.started_run().await;
    let execution = m.runs.enter(&key).unwrap().expect("an active run");
    let branch = m.runs.enter(&key).unwrap().expect("its branch too");
    let done = entry(0, StepKind::Run, StepStatus::Completed);
    assert!(matches!(
        m.runs
            .record(&key, Transition::StepDone(done.clone()))
            .await
            .unwrap(),
        Recorded::Entries
    ));
    let error = ErrorRecord::fatal(ErrorName::Cancelled, "by the test");
    m.runs.cancel(&key, error).await.unwrap();
    let writes = m.writes();
    let late = entry(1, StepKind::Run, StepStatus::Completed);
    assert!(matches!(
        m.runs
            .record(&key, Transition::StepDone(late.clone()))
            .await
            .unwrap(),
        Recorded::Ended
    ));
    drop(execution);
    assert!(
        matches!(
            m.runs
                .record(&key, Transition::StepDone(late.clone()))
                .await
                .unwrap(),
            Recorded::Ended
        ),
        "the branch still holds the run's registration"
    );
    drop(branch);
    assert!(matches!(
        m.runs
            .record(&key, Transition::StepDone(late))
            .await
            .unwrap(),
        Recorded::Ended
    ));
    assert_eq!(m.writes(), writes, "nothing written after the end");
    assert_eq!(m.journal.steps(&key).unwrap(), vec![done]);
    assert!(
        m.runs.enter(&key).unwrap().is_none(),
        "an ended run has nothing to execute"
    );
}

/// A run that ends before its `timeouts.finish` disarms it, in the journal
/// and in the scheduler, instead of leaving it armed until due.
#[tokio::test]
async fn an_ended_run_disarms_its_finish_timeout() {
    let m = machine(|c| {
        c.timeouts = Some(wit::Timeouts {
            start_ms: None,
            finish_ms: Some(MINUTE),
        })
    });
    let key = m.started_run().await;
    m.timer(&key, TimerKind::FinishTimeout);
    assert_eq!(m.scheduler.armed_timers(), 1);
    m.record(
        &key,
        Transition::End {
            status: RunStatus::Completed,
            output: Some(json!(1)),
            error: None,
        },
    )
    .await;
    assert!(m.timers_of(&key).is_empty());
    assert_eq!(m.scheduler.armed_timers(), 0);
}

/// A parent cancelled while its child runs takes no write when the child
/// ends: its invoke step stays as the cancellation left it.
#[tokio::test]
async fn a_cancelled_parent_is_not_written_by_its_childs_end() {
    let m = machine(|_| {});
    let parent = m.started_run().await;
    m.record(
        &parent,
        Transition::Invoke {
            step: entry(0, StepKind::Invoke, StepStatus::Waiting),
            function: Box::new(m.function("g")),
            data: json!({}),
        },
    )
    .await
    .unwrap();
    let child = RunKey::new("t", m.step(&parent, 0).child.unwrap());
    let error = ErrorRecord::fatal(ErrorName::Cancelled, "by the test");
    m.runs.cancel(&parent, error).await.unwrap();
    m.record(&child, Transition::Start).await;
    m.record(
        &child,
        Transition::End {
            status: RunStatus::Completed,
            output: Some(json!(1)),
            error: None,
        },
    )
    .await;
    assert_eq!(m.step(&parent, 0).status, StepStatus::Waiting);
    assert_eq!(m.run(&parent).status(), RunStatus::Cancelled);
}

/// `start` starts the run and registers its execution in one change: the
/// run is running, and once cancelled its execution's steps are refused.
#[tokio::test]
async fn start_runs_the_run_and_registers_its_execution_at_once() {
    let m = machine(|_| {});
    let key = m.new_run(json!({})).await;
    let (run, execution) = m.runs.start(&key).unwrap().expect("a queued run starts");
    assert_eq!(run.status(), RunStatus::Running);
    assert_eq!(run.started_at, Some(T0));
    assert_eq!(m.run(&key), run);
    let error = ErrorRecord::fatal(ErrorName::Cancelled, "by the test");
    m.runs.cancel(&key, error).await.unwrap();
    let late = entry(0, StepKind::Run, StepStatus::Completed);
    assert!(matches!(
        m.runs
            .record(&key, Transition::StepDone(late))
            .await
            .unwrap(),
        Recorded::Ended
    ));
    drop(execution);
    assert!(
        m.runs.start(&key).unwrap().is_none(),
        "an ended run does not start"
    );
    assert!(m.journal.steps(&key).unwrap().is_empty());
}

#[tokio::test]
async fn retention_deletes_ended_runs_and_old_events_and_nothing_a_live_run_needs() {
    let m = machine(|_| {});
    let retention = m.runs.tenants.limits("t").retention_ms;
    let ended = m.started_run().await;
    m.record(
        &ended,
        Transition::StepDone(entry(0, StepKind::Run, StepStatus::Completed)),
    )
    .await;
    m.record(
        &ended,
        Transition::Output(vec![LogChunk {
            segment: 0,
            run_attempt: 0,
            attempt: 0,
            offset: 0,
            stream: "stdout".into(),
            text: "hello".into(),
        }]),
    )
    .await;
    m.record(
        &ended,
        Transition::End {
            status: RunStatus::Completed,
            output: Some(json!(1)),
            error: None,
        },
    )
    .await;
    let sleeping_run = m.started_run().await;
    m.record(
        &sleeping_run,
        Transition::Sleep(sleeping(0, T0 + 30 * 24 * 60 * MINUTE)),
    )
    .await;
    m.runs.settled().await.unwrap();
    let used = m.runs.storage_used("t");
    assert!(used > 0);

    let mut sweeper = super::Sweeper::default();
    let nothing = m.runs.sweep(&mut sweeper).await.unwrap();
    assert!(
        nothing.iter().all(|(_, n)| *n == 0),
        "nothing has expired yet: {nothing:?}"
    );
    m.clock.advance(retention + SECOND);
    let deleted = m.runs.sweep(&mut sweeper).await.unwrap();
    let count = |kind| deleted.iter().find(|(k, _)| *k == kind).unwrap().1;
    assert_eq!(
        count(crate::journal::retention::Swept::Runs),
        1,
        "{deleted:?}"
    );
    assert_eq!(
        count(crate::journal::retention::Swept::Events),
        2,
        "{deleted:?}"
    );
    assert!(
        m.journal.run(&ended).unwrap().is_none(),
        "the ended run is gone"
    );
    assert!(
        m.journal.steps(&ended).unwrap().is_empty(),
        "with its steps"
    );
    assert!(m.journal.logs(&ended).unwrap().is_empty(), "its output");
    assert!(
        m.journal.run_events(&ended).unwrap().is_empty(),
        "its events"
    );
    assert!(m.events().is_empty(), "old events are gone");
    assert_eq!(
        m.run(&sleeping_run).status(),
        RunStatus::Sleeping,
        "a live run stays, however old"
    );
    assert_eq!(
        m.journal.run_events(&sleeping_run).unwrap().len(),
        1,
        "and so do the events it was triggered by"
    );
    assert!(
        m.runs.storage_used("t") < used,
        "the tenant's storage went down"
    );
    let again = m.runs.sweep(&mut sweeper).await.unwrap();
    assert!(again.iter().all(|(_, n)| *n == 0), "{again:?}");
}
