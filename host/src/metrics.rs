//! What an operator scrapes: `GET /metrics`, in the Prometheus text format.
//!
//! Every name starts `stepwise_`. Labels are bounded: a tenant (the
//! operator creates them), an app and a function (each tenant deploys a
//! bounded number), and a few fixed words (a status, an outcome, a reason);
//! never a run id, an event name or anything else a sender chooses.
//!
//! Counts of runs and steps are taken where run state changes, in
//! [`crate::runs`] ([`Observation`]s ride with a change's effects and are
//! counted once it is durable), so runs executed by worker hosts are
//! counted by the leader like its own. Levels (runs executing, queued,
//! sleeping, waiting; timers; guest memory) are read at scrape time from
//! the parts that hold them ([`Levels`]).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The function a run or step belongs to.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    /// The tenant that owns it.
    pub tenant: String,
    /// The app that serves it.
    pub app: String,
    /// Its id.
    pub function: String,
}

impl FunctionLabels {
    /// The labels of `run`'s function.
    pub fn of(run: &crate::model::RunRecord) -> Arc<Self> {
        Arc::new(FunctionLabels {
            tenant: run.key.tenant.clone(),
            app: run.app.clone(),
            function: run.function.clone(),
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunEndLabels {
    tenant: String,
    app: String,
    function: String,
    status: &'static str,
}

/// What became of a step attempt.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum StepOutcome {
    /// It completed.
    completed,
    /// It failed with attempts left: it is retried.
    retried,
    /// It failed for good.
    failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    tenant: String,
    app: String,
    function: String,
    outcome: StepOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

/// Why a request sending events was refused.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Refusal {
    /// No such key, or the wrong kind of key.
    key,
    /// The body or an event is larger than allowed.
    size,
    /// The body is not events (not JSON, no name, a reserved name).
    malformed,
    /// The tenant sent faster than its events per second.
    rate,
    /// The tenant has as many runs queued as it may.
    queue,
    /// The tenant stores as much as its quota allows.
    quota,
    /// The host could not take them (storage failed or unreachable).
    unavailable,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    reason: Refusal,
}

/// A tenant's limit that held something back.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LimitHit {
    /// Events per second (at intake, or a step's `sendEvent` waiting).
    events_per_second,
    /// Runs queued.
    queued_runs,
    /// Bytes stored.
    storage,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    tenant: String,
    limit: LimitHit,
}

/// Where a version's compiled code came from when an execution needed it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CodeSource {
    /// Linked already, in memory.
    memory,
    /// The compiled-code cache on disk.
    disk,
    /// Compiled from the component's bytes.
    compiled,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    source: CodeSource,
}

/// Something the run state machine did, counted once it is durable.
#[derive(Debug, Clone)]
pub enum Observation {
    /// A run was created (queued).
    RunStarted(Arc<FunctionLabels>),
    /// A run began executing for the first time, this long after it was
    /// created (ms).
    FirstStart {
        /// Its tenant.
        tenant: String,
        /// From creation to first start, ms.
        waited_ms: u64,
    },
    /// A run ended.
    RunEnded {
        /// The run (for its trace).
        run: crate::model::RunKey,
        /// Its function.
        labels: Arc<FunctionLabels>,
        /// `completed`, `failed` or `cancelled`.
        status: &'static str,
        /// From creation to end, ms.
        lasted_ms: u64,
    },
    /// A step attempt's outcome was journaled.
    Step {
        /// Its run's function.
        labels: Arc<FunctionLabels>,
        /// What became of it.
        outcome: StepOutcome,
        /// From the step's first call to this outcome (retries included),
        /// ms; `None` for a retried attempt.
        lasted_ms: Option<u64>,
    },
    /// A span to export (only on a host with `--otlp-endpoint`; see
    /// [`crate::traces`]).
    Span(Box<opentelemetry_sdk::trace::SpanData>),
}

/// Where [`Levels`] are read from at scrape time.
pub trait LevelSource: Send + Sync {
    /// The levels now.
    fn levels(&self) -> Levels;
}

/// How much of everything there is now.
#[derive(Debug, Default, Clone)]
pub struct Levels {
    /// Jobs executing (runs and parallel branches), here and on workers.
    pub executing: u64,
    /// Runs waiting for a slot, by tenant.
    pub queued: Vec<(String, u64)>,
    /// Runs sleeping (until a sleep's, a retry's or a delay's timer).
    pub sleeping: u64,
    /// Runs waiting for an event or an invoked run.
    pub waiting: u64,
    /// Timers armed in memory.
    pub timers: u64,
    /// Guest memory reserved by executing instances, bytes.
    pub instance_memory: u64,
    /// The most guest memory instances may reserve, bytes.
    pub instance_memory_budget: u64,
    /// Worker hosts with a session (when hosts share work).
    pub workers: Option<u64>,
    /// Bytes of events and run journals each tenant stores.
    pub stored: Vec<(String, u64)>,
    /// Syncs of the journal to the disk itself so far (sled, unless
    /// `--unsafe-no-fsync`).
    pub disk_syncs: Option<u64>,
}

/// Every metric of a host.
pub struct Metrics {
    registry: Registry,
    runs_started: Family<FunctionLabels, Counter>,
    runs_ended: Family<RunEndLabels, Counter>,
    run_seconds: Family<RunEndLabels, Histogram, fn() -> Histogram>,
    steps: Family<StepLabels, Counter>,
    step_seconds: Family<FunctionLabels, Histogram, fn() -> Histogram>,
    queue_wait_seconds: Family<TenantLabel, Histogram, fn() -> Histogram>,
    events_accepted: Family<TenantLabel, Counter>,
    events_refused: Family<RefusalLabel, Counter>,
    limit_hits: Family<LimitLabels, Counter>,
    flush_seconds: Histogram,
    flush_group: Histogram,
    code: Family<CodeLabel, Counter>,
    retention_deleted: Family<SweptLabel, Counter>,
    levels: Arc<LevelsCollector>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SweptLabel {
    kind: &'static str,
}

/// Durations from a millisecond to a week.
fn long_durations() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3_600.0, 86_400.0,
        604_800.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered.
    pub fn new() -> Self {
        let mut metrics = Metrics {
            registry: Registry::default(),
            runs_started: Family::default(),
            runs_ended: Family::default(),
            run_seconds: Family::new_with_constructor(long_durations as fn() -> Histogram),
            steps: Family::default(),
            step_seconds: Family::new_with_constructor(long_durations as fn() -> Histogram),
            queue_wait_seconds: Family::new_with_constructor(long_durations as fn() -> Histogram),
            events_accepted: Family::default(),
            events_refused: Family::default(),
            limit_hits: Family::default(),
            // 50 µs to ~1.6 s.
            flush_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 to 4,096 changes.
            flush_group: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            code: Family::default(),
            retention_deleted: Family::default(),
            levels: Arc::new(LevelsCollector::default()),
        };
        metrics.registry.register(
            "stepwise_runs_started",
            "Runs created (queued), by tenant, app and function",
            metrics.runs_started.clone(),
        );
        metrics.registry.register(
            "stepwise_runs_ended",
            "Runs ended, by tenant, app, function and status (completed, failed, cancelled)",
            metrics.runs_ended.clone(),
        );
        metrics.registry.register(
            "stepwise_run_duration_seconds",
            "From a run's creation to its end, by tenant, app, function and status",
            metrics.run_seconds.clone(),
        );
        metrics.registry.register(
            "stepwise_steps",
            "Step outcomes journaled, by tenant, app, function and outcome (completed, retried: an attempt failed with attempts left, failed: for good)",
            metrics.steps.clone(),
        );
        metrics.registry.register(
            "stepwise_step_duration_seconds",
            "From a step's first call to its final outcome (retries included), by tenant, app and function",
            metrics.step_seconds.clone(),
        );
        metrics.registry.register(
            "stepwise_queue_wait_seconds",
            "From a run's creation to its first start (flow control's delays included), by tenant",
            metrics.queue_wait_seconds.clone(),
        );
        metrics.registry.register(
            "stepwise_events_accepted",
            "Events accepted, by tenant",
            metrics.events_accepted.clone(),
        );
        metrics.registry.register(
            "stepwise_event_requests_refused",
            "Requests sending events that were refused, by reason (key, size, malformed, rate, queue, quota, unavailable)",
            metrics.events_refused.clone(),
        );
        metrics.registry.register(
            "stepwise_tenant_limit_hits",
            "Times a tenant's limit held something back, by tenant and limit (events_per_second, queued_runs, storage)",
            metrics.limit_hits.clone(),
        );
        metrics.registry.register(
            "stepwise_journal_flush_duration_seconds",
            "How long each journal flush (an fsync, or a PostgreSQL transaction) took",
            metrics.flush_seconds.clone(),
        );
        metrics.registry.register(
            "stepwise_journal_flush_group_size",
            "Changes made durable by one flush (group commit)",
            metrics.flush_group.clone(),
        );
        metrics.registry.register(
            "stepwise_compiled_code",
            "Times an execution needed a version's code, by where it came from (memory, disk, compiled)",
            metrics.code.clone(),
        );
        metrics.registry.register(
            "stepwise_retention_deleted",
            "Records retention deleted, by kind (runs: an ended run with its steps, output and events; events; event_ids; idempotency_keys)",
            metrics.retention_deleted.clone(),
        );
        metrics
            .registry
            .register_collector(Box::new(metrics.levels.clone()));
        metrics
    }

    /// Reads levels from `source` at every scrape from now on.
    pub fn read_levels_from(&self, source: Arc<dyn LevelSource>) {
        let _ = self.levels.source.set(source);
    }

    /// The metrics now, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// Counts what a change did, once it is durable.
    pub fn observe(&self, observations: impl IntoIterator<Item = Observation>) {
        for observation in observations {
            match observation {
                Observation::RunStarted(labels) => {
                    self.runs_started.get_or_create(&labels).inc();
                }
                Observation::FirstStart { tenant, waited_ms } => {
                    self.queue_wait_seconds
                        .get_or_create(&TenantLabel { tenant })
                        .observe(seconds(waited_ms));
                }
                Observation::RunEnded {
                    labels,
                    status,
                    lasted_ms,
                    ..
                } => {
                    let labels = RunEndLabels {
                        tenant: labels.tenant.clone(),
                        app: labels.app.clone(),
                        function: labels.function.clone(),
                        status,
                    };
                    self.runs_ended.get_or_create(&labels).inc();
                    self.run_seconds
                        .get_or_create(&labels)
                        .observe(seconds(lasted_ms));
                }
                Observation::Step {
                    labels,
                    outcome,
                    lasted_ms,
                } => {
                    self.steps
                        .get_or_create(&StepLabels {
                            tenant: labels.tenant.clone(),
                            app: labels.app.clone(),
                            function: labels.function.clone(),
                            outcome,
                        })
                        .inc();
                    if let Some(ms) = lasted_ms {
                        self.step_seconds
                            .get_or_create(&labels)
                            .observe(seconds(ms));
                    }
                }
                Observation::Span(_) => {}
            }
        }
    }

    /// `count` events of `tenant` were accepted.
    pub fn events_accepted(&self, tenant: &str, count: usize) {
        self.events_accepted
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(count as u64);
    }

    /// A request sending events was refused.
    pub fn event_request_refused(&self, reason: Refusal) {
        self.events_refused
            .get_or_create(&RefusalLabel { reason })
            .inc();
    }

    /// `tenant`'s `limit` held something back.
    pub fn limit_hit(&self, tenant: &str, limit: LimitHit) {
        self.limit_hits
            .get_or_create(&LimitLabels {
                tenant: tenant.to_string(),
                limit,
            })
            .inc();
    }

    /// A journal flush took `elapsed` and made `changes` durable.
    pub fn flushed(&self, elapsed: std::time::Duration, changes: u64) {
        self.flush_seconds.observe(elapsed.as_secs_f64());
        self.flush_group.observe(changes as f64);
    }

    /// Retention deleted `count` records of `kind`.
    pub fn retention_deleted(&self, kind: &'static str, count: u64) {
        self.retention_deleted
            .get_or_create(&SweptLabel { kind })
            .inc_by(count);
    }

    /// An execution found a version's code at `source`.
    pub fn code_from(&self, source: CodeSource) {
        self.code.get_or_create(&CodeLabel { source }).inc();
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1_000.0
}

/// Writes [`Levels`] at scrape time.
#[derive(Default)]
struct LevelsCollector {
    source: OnceLock<Arc<dyn LevelSource>>,
}

impl std::fmt::Debug for LevelsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelsCollector").finish_non_exhaustive()
    }
}

impl Collector for LevelsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.source.get() else {
            return Ok(());
        };
        let levels = source.levels();
        let mut gauge = |name: &str, help: &str, value: u64| {
            let gauge = ConstGauge::new(value as i64);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)
        };
        gauge(
            "stepwise_runs_executing",
            "Jobs executing now (runs and parallel branches), on this host and its workers",
            levels.executing,
        )?;
        gauge(
            "stepwise_runs_sleeping",
            "Runs sleeping now (until a sleep, a retry or a delayed start is due)",
            levels.sleeping,
        )?;
        gauge(
            "stepwise_runs_waiting",
            "Runs waiting now for an event or an invoked run",
            levels.waiting,
        )?;
        gauge(
            "stepwise_timers_armed",
            "Timers armed (sleeps, retries, timeouts, delayed starts)",
            levels.timers,
        )?;
        gauge(
            "stepwise_instance_memory_bytes",
            "Guest memory reserved by executing instances",
            levels.instance_memory,
        )?;
        gauge(
            "stepwise_instance_memory_budget_bytes",
            "The most guest memory instances may reserve (--guest-memory)",
            levels.instance_memory_budget,
        )?;
        if let Some(workers) = levels.workers {
            gauge(
                "stepwise_workers",
                "Worker hosts with a session on this leader",
                workers,
            )?;
        }
        if let Some(syncs) = levels.disk_syncs {
            let counter = ConstCounter::new(syncs);
            let metric = encoder.encode_descriptor(
                "stepwise_journal_fsyncs",
                "Syncs of the sled journal to the disk itself (fdatasync), one per group flush",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let mut by_tenant = |name: &str, help: &str, values: &[(String, u64)]| {
            let metric = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            let mut metric = metric;
            for (tenant, value) in values {
                let labels = TenantLabel {
                    tenant: tenant.clone(),
                };
                ConstGauge::new(*value as i64).encode(metric.encode_family(&labels)?)?;
            }
            Ok::<_, std::fmt::Error>(())
        };
        by_tenant(
            "stepwise_runs_queued",
            "Runs waiting for an executing slot now, by tenant",
            &levels.queued,
        )?;
        by_tenant(
            "stepwise_stored_bytes",
            "Bytes of events and run journals each tenant stores (its storage quota counts these)",
            &levels.stored,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Arc<FunctionLabels> {
        Arc::new(FunctionLabels {
            tenant: "acme".into(),
            app: "shop".into(),
            function: "checkout".into(),
        })
    }

    #[test]
    fn observations_become_labelled_series() {
        let metrics = Metrics::new();
        metrics.observe([
            Observation::RunStarted(labels()),
            Observation::Step {
                labels: labels(),
                outcome: StepOutcome::retried,
                lasted_ms: None,
            },
            Observation::Step {
                labels: labels(),
                outcome: StepOutcome::completed,
                lasted_ms: Some(250),
            },
            Observation::RunEnded {
                run: crate::model::RunKey {
                    tenant: "acme".into(),
                    run: "01M9948E5TS4E8Y8B76D1R5Q5C".into(),
                },
                labels: labels(),
                status: "completed",
                lasted_ms: 2_000,
            },
        ]);
        metrics.event_request_refused(Refusal::rate);
        metrics.flushed(std::time::Duration::from_micros(300), 7);
        let text = metrics.render();
        for line in [
            r#"stepwise_runs_started_total{tenant="acme",app="shop",function="checkout"} 1"#,
            r#"stepwise_steps_total{tenant="acme",app="shop",function="checkout",outcome="retried"} 1"#,
            r#"stepwise_steps_total{tenant="acme",app="shop",function="checkout",outcome="completed"} 1"#,
            r#"stepwise_runs_ended_total{tenant="acme",app="shop",function="checkout",status="completed"} 1"#,
            r#"stepwise_step_duration_seconds_bucket{tenant="acme",app="shop",function="checkout",le="0.5"} 1"#,
            r#"stepwise_step_duration_seconds_bucket{tenant="acme",app="shop",function="checkout",le="0.1"} 0"#,
            r#"stepwise_event_requests_refused_total{reason="rate"} 1"#,
            "stepwise_journal_flush_group_size_sum 7.0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    struct Fixed;
    impl LevelSource for Fixed {
        fn levels(&self) -> Levels {
            Levels {
                executing: 3,
                queued: vec![("acme".into(), 5)],
                waiting: 2,
                workers: None,
                ..Levels::default()
            }
        }
    }

    #[test]
    fn levels_are_read_at_scrape_time() {
        let metrics = Metrics::new();
        assert!(!metrics.render().contains("stepwise_runs_executing"));
        metrics.read_levels_from(Arc::new(Fixed));
        let text = metrics.render();
        for line in [
            "stepwise_runs_executing 3",
            "stepwise_runs_waiting 2",
            r#"stepwise_runs_queued{tenant="acme"} 5"#,
            "# TYPE stepwise_runs_queued gauge",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("stepwise_workers"), "no workers: no series");
    }
}
