//! The run state machine in process: real sled journal in a temp dir, a
//! fixed clock, no wasm and no HTTP. Each test drives `Runs` the way the
//! API and the executor do and reads the journal back.

use super::Runs;
use crate::catalog::Catalog;
use crate::journal::{GroupCommit, Journal, RunFilter, SledJournal};
use crate::model::IncomingEvent;
use crate::model::{FixedClock, RunRecord, RunStatus, TimerKind};
use crate::scheduler::{Scheduler, SlotPolicy};
use crate::wit::types as wit;
use serde_json::{Value, json};
use std::sync::Arc;

/// A fixed start time: 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;

struct Machine {
    _dir: tempfile::TempDir,
    journal: Arc<dyn Journal>,
    clock: Arc<FixedClock>,
    events: Runs,
}

/// A state machine whose tenant `t` has one function, `f`, triggered by
/// `a/b`, shaped by `configure`.
fn machine(configure: impl FnOnce(&mut wit::FunctionConfig)) -> Machine {
    let dir = tempfile::tempdir().unwrap();
    let journal: Arc<dyn Journal> = Arc::new(SledJournal::open(&dir.path().join("j")).unwrap());
    let catalog = Arc::new(Catalog::load(journal.as_ref()).unwrap());
    let mut config = crate::testing::function_config("f");
    configure(&mut config);
    let functions = crate::registration::functions("t", "app", "v1", vec![config]).unwrap();
    catalog.replace_app("t", "app", functions);
    let (scheduler, _loops) = Scheduler::new(SlotPolicy::default());
    let clock = FixedClock::at(T0);
    let config = crate::config::HostConfig::new(dir.path().to_path_buf());
    let tenants = Arc::new(crate::tenants::Tenants::load(journal.clone(), &config).unwrap());
    let events = Runs::new(
        journal.clone(),
        GroupCommit::start(journal.clone()),
        catalog,
        scheduler,
        tenants,
        clock.clone(),
    );
    Machine {
        _dir: dir,
        journal,
        clock,
        events,
    }
}

impl Machine {
    async fn send(&self, data: Value) {
        let event = IncomingEvent {
            name: "a/b".into(),
            data,
            id: None,
            ts: None,
            v: None,
            user: None,
        };
        self.events.ingest("t", vec![event]).await.unwrap();
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
        self.runs().iter().map(|r| r.status).collect()
    }
}

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
    assert_eq!(skipped.error.as_ref().unwrap().name, "RateLimited");
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
