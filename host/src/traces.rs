//! OpenTelemetry traces of runs, exported over OTLP/HTTP
//! (`--otlp-endpoint`).
//!
//! A run is one trace, whose id is the run's id (a ULID is 128 bits, as a
//! trace id is), so that an operator finds a run's trace from its id and
//! back. Its root span covers the run from creation to end and links to the
//! span of the event that started it; under it, a span per step attempt
//! (exported as its outcome becomes durable) and a span per sleep, wait and
//! invoke (exported when the run ends, from its journal). The event's span
//! is made as the event is accepted and continues the W3C `traceparent` the
//! sender gave, so a sender's trace leads to every run its event started.
//!
//! Span ids are derived from what they stand for (run, step, attempt), not
//! drawn at random: a run resumed by replay after a crash, or executing on
//! a worker host, names the same spans, and a step body's outgoing HTTP
//! carries the `traceparent` of its attempt's span before that span exists.
//! Spans are made from durable changes only, so a replay exports nothing
//! twice.

use crate::journal::Journal;
use crate::metrics::Observation;
use crate::model::{EventRecord, RunKey, RunRecord, RunStatus, StepKind, StepRecord};
use anyhow::{Context, Result};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SpanExporter as _;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Spans waiting for export at most: past this, new spans are dropped (and
/// counted) rather than held without bound while the collector is away.
const QUEUE: usize = 16_384;
/// Spans sent in one export request at most.
const BATCH: usize = 512;
/// How long the exporter gathers spans before it sends what it has.
const GATHER: Duration = Duration::from_millis(200);

/// The host's trace exporter.
pub struct Traces {
    spans: mpsc::Sender<SpanData>,
    journal: Arc<dyn Journal>,
    scope: InstrumentationScope,
    /// Whether dropping spans was logged already (once is enough).
    warned_behind: AtomicBool,
}

impl Traces {
    /// Exports to the OTLP/HTTP collector at `endpoint` (its base URL, as
    /// in `OTEL_EXPORTER_OTLP_ENDPOINT`: spans go to `{endpoint}/v1/traces`),
    /// reading ended runs from `journal`. Needs a tokio runtime.
    pub fn start(endpoint: &str, journal: Arc<dyn Journal>) -> Result<Arc<Self>> {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .with_context(|| {
                format!("--otlp-endpoint {endpoint:?}: making the OTLP exporter for {url}")
            })?;
        exporter.set_resource(
            &Resource::builder()
                .with_service_name("stepwise")
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let (spans, queue) = mpsc::channel(QUEUE);
        tokio::spawn(export(exporter, queue, url));
        Ok(Arc::new(Traces {
            spans,
            journal,
            scope: InstrumentationScope::builder("stepwise")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            warned_behind: AtomicBool::new(false),
        }))
    }

    /// Queues `span` for export; drops it if the queue is full.
    fn send(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() && !self.warned_behind.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the trace exporter is behind (is the OTLP collector reachable?): spans are dropped"
            );
        }
    }

    /// Exports the spans among `observed` and, for each run that ended,
    /// its root span and its suspensions' spans; returns the rest (for the
    /// metrics).
    pub fn take_from(self: &Arc<Self>, observed: Vec<Observation>) -> Vec<Observation> {
        observed
            .into_iter()
            .filter_map(|observation| match observation {
                Observation::Span(span) => {
                    self.send(*span);
                    None
                }
                Observation::RunEnded { ref run, .. } => {
                    let (traces, run) = (self.clone(), run.clone());
                    tokio::task::spawn_blocking(move || {
                        if let Err(error) = traces.export_run(&run) {
                            tracing::warn!(run = %run.run, error = %format!("{error:#}"), "could not trace an ended run");
                        }
                    });
                    Some(observation)
                }
                other => Some(other),
            })
            .collect()
    }

    /// The span of an event accepted at `at_ms`, continuing the sender's
    /// `traceparent` if it gave a valid one: the span, and the event's own
    /// `traceparent` (kept with the event, for the runs it starts to link
    /// to).
    pub fn event_span(
        &self,
        name: &str,
        event_id: &str,
        tenant: &str,
        incoming: Option<&str>,
        at_ms: u64,
    ) -> (SpanData, String) {
        let parent = incoming.and_then(parse_traceparent);
        let ids = RandomIdGenerator::default();
        let trace_id = parent
            .as_ref()
            .map_or_else(|| ids.new_trace_id(), SpanContext::trace_id);
        let context = sampled(trace_id, ids.new_span_id());
        let traceparent = format_traceparent(&context);
        let at = time(at_ms);
        let span = SpanData {
            span_context: context,
            parent_span_id: parent
                .as_ref()
                .map_or(SpanId::INVALID, SpanContext::span_id),
            parent_span_is_remote: parent.is_some(),
            span_kind: SpanKind::Consumer,
            name: format!("event {name}").into(),
            start_time: at,
            end_time: at,
            attributes: vec![
                KeyValue::new("stepwise.tenant", tenant.to_string()),
                KeyValue::new("stepwise.event.name", name.to_string()),
                KeyValue::new("stepwise.event.id", event_id.to_string()),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        };
        (span, traceparent)
    }

    /// The span of one attempt of step `step` of `run` (index `attempt`,
    /// from 0), from `started_ms` to `ended_ms`; `error` if it failed.
    pub fn attempt_span(
        &self,
        run: &RunKey,
        step: &StepRecord,
        attempt: u32,
        (started_ms, ended_ms): (u64, u64),
        error: Option<&str>,
    ) -> SpanData {
        let mut span = self.child_span(
            run,
            attempt_span_id(&run.run, step.seq, attempt),
            format!("step {}", step.id),
            (started_ms, ended_ms),
        );
        span.attributes.extend([
            KeyValue::new("stepwise.step.id", step.id.clone()),
            KeyValue::new("stepwise.step.seq", i64::from(step.seq)),
            KeyValue::new("stepwise.step.attempt", i64::from(attempt)),
        ]);
        if let Some(error) = error {
            span.status = Status::error(error.to_string());
        }
        span
    }

    /// A span of `run`'s trace under its root span.
    fn child_span(
        &self,
        run: &RunKey,
        span_id: SpanId,
        name: String,
        (started_ms, ended_ms): (u64, u64),
    ) -> SpanData {
        SpanData {
            span_context: sampled(run_trace_id(&run.run), span_id),
            parent_span_id: root_span_id(&run.run),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time: time(started_ms),
            end_time: time(ended_ms.max(started_ms)),
            attributes: vec![KeyValue::new("stepwise.run.id", run.run.clone())],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// Exports the ended run `key`'s root span and its sleeps', waits' and
    /// invokes' spans, read from the journal.
    fn export_run(&self, key: &RunKey) -> Result<()> {
        let Some(run) = self.journal.run(key)? else {
            return Ok(());
        };
        let steps = self.journal.steps(key)?;
        let events = self.journal.run_events(key)?;
        for span in self.run_spans(&run, &steps, &events) {
            self.send(span);
        }
        Ok(())
    }

    /// The root span of the ended `run` and the spans of its suspensions.
    fn run_spans(
        &self,
        run: &RunRecord,
        steps: &[StepRecord],
        events: &[EventRecord],
    ) -> Vec<SpanData> {
        let ended_ms = run.ended_at().unwrap_or(run.created_at);
        let mut root = self.child_span(
            &run.key,
            root_span_id(&run.key.run),
            format!("run {}", run.function),
            (run.created_at, ended_ms),
        );
        root.parent_span_id = SpanId::INVALID;
        root.span_kind = SpanKind::Server;
        root.attributes.extend([
            KeyValue::new("stepwise.tenant", run.key.tenant.clone()),
            KeyValue::new("stepwise.app", run.app.clone()),
            KeyValue::new("stepwise.function", run.function.clone()),
            KeyValue::new("stepwise.version", run.version.clone()),
            KeyValue::new("stepwise.run.status", run.status().as_str()),
        ]);
        if let Some(event) = events.first() {
            root.attributes
                .push(KeyValue::new("stepwise.event.name", event.name.clone()));
        }
        root.links.links = events
            .iter()
            .filter_map(|event| event.trace.as_deref().and_then(parse_traceparent))
            .map(opentelemetry::trace::Link::with_context)
            .collect();
        if run.status() == RunStatus::Failed {
            let message = run.error().map_or("failed", |e| e.message.as_str());
            root.status = Status::error(message.to_string());
        }
        let mut spans = vec![root];
        for step in steps {
            let kind = match step.kind {
                StepKind::Sleep => "sleep",
                StepKind::Wait => "wait",
                StepKind::Invoke => "invoke",
                _ => continue,
            };
            let mut span = self.child_span(
                &run.key,
                suspension_span_id(&run.key.run, step.seq),
                format!("{kind} {}", step.id),
                (step.started_at, step.ended_at.unwrap_or(ended_ms)),
            );
            span.attributes.extend([
                KeyValue::new("stepwise.step.id", step.id.clone()),
                KeyValue::new("stepwise.step.seq", i64::from(step.seq)),
                KeyValue::new("stepwise.step.kind", kind),
            ]);
            if let Some(wait) = &step.wait {
                span.attributes
                    .push(KeyValue::new("stepwise.wait.event", wait.event.clone()));
            }
            if let Some(child) = &step.child {
                span.attributes
                    .push(KeyValue::new("stepwise.invoke.run", child.clone()));
                // The invoked run is a trace of its own: its root span.
                span.links
                    .links
                    .push(opentelemetry::trace::Link::with_context(sampled(
                        run_trace_id(child),
                        root_span_id(child),
                    )));
            }
            spans.push(span);
        }
        spans
    }
}

/// Sends what arrives on `queue` to the collector, in batches, until the
/// host stops.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut queue: mpsc::Receiver<SpanData>,
    url: String,
) {
    let mut last_warning: Option<std::time::Instant> = None;
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + GATHER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(span)) => batch.push(span),
                _ => break,
            }
        }
        let count = batch.len();
        if let Err(error) = exporter.export(batch).await
            && last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(60))
        {
            last_warning = Some(std::time::Instant::now());
            tracing::warn!(%url, spans = count, %error, "could not export spans to the OTLP collector");
        }
    }
}

/// The W3C `traceparent` of the attempt `attempt` of step `seq` of run
/// `run_id`: what a step body's outgoing HTTP carries.
pub fn attempt_traceparent(run_id: &str, seq: u32, attempt: u32) -> String {
    format_traceparent(&sampled(
        run_trace_id(run_id),
        attempt_span_id(run_id, seq, attempt),
    ))
}

/// A sampled span context (every span of a traced host is exported).
fn sampled(trace_id: TraceId, span_id: SpanId) -> SpanContext {
    SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

/// The trace of run `run_id`: its ULID's 128 bits (a hash, for an id that
/// is not a ULID).
fn run_trace_id(run_id: &str) -> TraceId {
    match ulid::Ulid::from_string(run_id) {
        Ok(ulid) if ulid.0 != 0 => TraceId::from_bytes(ulid.0.to_be_bytes()),
        _ => {
            let digest = Sha256::digest(run_id.as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            TraceId::from_bytes(bytes)
        }
    }
}

/// A span id derived from `parts` (never the invalid all-zero id).
fn derived_span_id(parts: &[&[u8]]) -> SpanId {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    if bytes == [0; 8] {
        bytes[7] = 1;
    }
    SpanId::from_bytes(bytes)
}

fn root_span_id(run_id: &str) -> SpanId {
    derived_span_id(&[b"run", run_id.as_bytes()])
}

fn attempt_span_id(run_id: &str, seq: u32, attempt: u32) -> SpanId {
    derived_span_id(&[
        b"attempt",
        run_id.as_bytes(),
        &seq.to_be_bytes(),
        &attempt.to_be_bytes(),
    ])
}

fn suspension_span_id(run_id: &str, seq: u32) -> SpanId {
    derived_span_id(&[b"suspension", run_id.as_bytes(), &seq.to_be_bytes()])
}

/// The span context in a W3C `traceparent` header value, if it is a valid
/// one.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    use opentelemetry::propagation::TextMapPropagator;
    let carrier = HashMap::from([("traceparent".to_string(), value.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// `context` as a W3C `traceparent` header value.
fn format_traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_reads_back_as_it_was_written() {
        let written = attempt_traceparent("01M9948E5TS4E8Y8B76D1R5Q5C", 3, 1);
        let context = parse_traceparent(&written).expect("valid");
        assert_eq!(format_traceparent(&context), written);
        assert_eq!(
            context.trace_id(),
            run_trace_id("01M9948E5TS4E8Y8B76D1R5Q5C")
        );
        assert!(parse_traceparent("00-0000-zz-01").is_none());
        assert!(parse_traceparent("garbage").is_none());
    }

    #[test]
    fn span_ids_name_what_they_stand_for() {
        let run = "01M9948E5TS4E8Y8B76D1R5Q5C";
        assert_eq!(attempt_span_id(run, 1, 0), attempt_span_id(run, 1, 0));
        let ids = [
            root_span_id(run),
            attempt_span_id(run, 1, 0),
            attempt_span_id(run, 1, 1),
            attempt_span_id(run, 2, 0),
            suspension_span_id(run, 1),
            attempt_span_id("01M9948E5TS4E8Y8B76D1R5Q5D", 1, 0),
        ];
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
