//! Reading an app's registration: the function configs its `functions()`
//! returned, checked and turned into the records the host keeps.
//!
//! Everything a run would otherwise trip over later is refused here, with
//! the function, the option and what to do: ids, trigger names, cron
//! schedules, bounds of retries and flow control (Inngest's), and every
//! expression, compiled.

use crate::cron::Schedule;
use crate::expr;
use crate::model::check_name;
use crate::model::{
    BatchConfig, CancelOnConfig, ConcurrencyConfig, ConcurrencyScope, DebounceConfig, FlowConfig,
    FunctionRecord, RateLimitConfig, SingletonConfig, SingletonMode, ThrottleConfig,
    TimeoutsConfig, TriggerRecord,
};
use crate::retry::{DEFAULT_RETRIES, MAX_RETRIES};
use crate::wit::types as wit;
use std::collections::HashSet;

const SECOND: u64 = 1_000;
const DAY: u64 = 24 * 3_600 * SECOND;
const YEAR: u64 = 365 * DAY;

/// Why an app's registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// `functions()` returned nothing.
    #[error(
        "the app registers no functions: list them in the app's registration (App::new().function(...))"
    )]
    NoFunctions,
    /// A function id the host cannot use in URLs and keys.
    #[error("invalid function id {0:?}: use 1 to 128 letters, digits, '-', '_', '.', ':' or '/'")]
    InvalidId(String),
    /// Two functions with one id.
    #[error("the app registers function {0:?} twice; function ids must be unique")]
    DuplicateId(String),
    /// An option of one function.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// An option of one function that cannot be used: which function, which
/// option, and the problem (which says what to do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("function {function:?}: {problem}")]
pub struct ConfigError {
    /// The id of the function the option belongs to.
    pub function: String,
    /// The option, as Inngest names it (`throttle.period`, `cancelOn.if`).
    pub option: &'static str,
    /// What is wrong with it and what to do.
    pub problem: String,
}

/// A problem with one option, before it is known of which function.
struct OptionError {
    option: &'static str,
    problem: String,
}

impl OptionError {
    fn new(option: &'static str, problem: impl Into<String>) -> Self {
        OptionError {
            option,
            problem: problem.into(),
        }
    }

    fn of(self, function: &str) -> ConfigError {
        ConfigError {
            function: function.to_string(),
            option: self.option,
            problem: self.problem,
        }
    }
}

type Checked<T> = Result<T, OptionError>;

/// Turns `configs` into the functions of `app` version `hash` in `tenant`,
/// or says what is wrong with the first bad one.
pub fn functions(
    tenant: &str,
    app: &str,
    hash: &str,
    configs: Vec<wit::FunctionConfig>,
) -> Result<Vec<FunctionRecord>, RegistrationError> {
    if configs.is_empty() {
        return Err(RegistrationError::NoFunctions);
    }
    let mut seen = HashSet::new();
    let mut functions = Vec::new();
    for config in configs {
        let id = config.id.clone();
        check_function_id(&id)?;
        if !seen.insert(id.clone()) {
            return Err(RegistrationError::DuplicateId(id));
        }
        let function = function(tenant, app, hash, config).map_err(|e| e.of(&id))?;
        functions.push(function);
    }
    Ok(functions)
}

/// One function's record: each option checked by its own conversion.
fn function(
    tenant: &str,
    app: &str,
    hash: &str,
    config: wit::FunctionConfig,
) -> Checked<FunctionRecord> {
    let triggers = triggers(config.triggers)?;
    let retries = retries(config.retries)?;
    let concurrency = concurrency(config.concurrency)?;
    let throttle = config.throttle.map(throttle).transpose()?;
    let rate_limit = config.rate_limit.map(rate_limit).transpose()?;
    let debounce = config.debounce.map(debounce).transpose()?;
    let batch_events = config.batch_events.map(batch_events).transpose()?;
    if debounce.is_some() && batch_events.is_some() {
        return Err(OptionError::new(
            "debounce",
            "it has both debounce and batchEvents; a function may use one or the other",
        ));
    }
    optional_expression(config.priority.as_deref(), "priority.run")?;
    optional_expression(config.idempotency.as_deref(), "idempotency")?;
    let cancel_on = config
        .cancel_on
        .into_iter()
        .map(cancel_on)
        .collect::<Checked<Vec<_>>>()?;
    let timeouts = config
        .timeouts
        .map(timeouts)
        .transpose()?
        .filter(|t| t.start_ms.is_some() || t.finish_ms.is_some());
    let singleton = config.singleton.map(singleton).transpose()?;
    Ok(FunctionRecord {
        tenant: tenant.into(),
        id: config.id,
        name: config.name,
        app: app.into(),
        version: hash.into(),
        triggers,
        retries,
        flow: FlowConfig {
            concurrency,
            throttle,
            rate_limit,
            debounce,
            priority: config.priority,
            batch_events,
            idempotency: config.idempotency,
            cancel_on,
            timeouts,
            singleton,
        },
        on_failure: config.on_failure,
    })
}

fn triggers(triggers: Vec<wit::Trigger>) -> Checked<Vec<TriggerRecord>> {
    if triggers.is_empty() {
        return Err(OptionError::new(
            "triggers",
            "it has no trigger; give it at least one event or cron schedule",
        ));
    }
    triggers.into_iter().map(trigger).collect()
}

fn retries(retries: Option<u32>) -> Checked<u32> {
    let retries = retries.unwrap_or(DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        return Err(OptionError::new(
            "retries",
            format!("it asks for {retries} retries; at most {MAX_RETRIES} are allowed"),
        ));
    }
    Ok(retries)
}

fn concurrency(limits: Vec<wit::Concurrency>) -> Checked<Vec<ConcurrencyConfig>> {
    if limits.len() > 2 {
        return Err(OptionError::new(
            "concurrency",
            format!(
                "it has {} concurrency limits; at most two are allowed, as in Inngest",
                limits.len()
            ),
        ));
    }
    limits
        .into_iter()
        .map(|c| {
            positive(c.limit, "concurrency.limit")?;
            optional_expression(c.key.as_deref(), "concurrency.key")?;
            Ok(ConcurrencyConfig {
                limit: c.limit,
                key: c.key,
                scope: match c.scope {
                    wit::ConcurrencyScope::Function => ConcurrencyScope::Function,
                    wit::ConcurrencyScope::Tenant => ConcurrencyScope::Tenant,
                },
            })
        })
        .collect()
}

fn throttle(t: wit::Throttle) -> Checked<ThrottleConfig> {
    positive(t.limit, "throttle.limit")?;
    within(t.period_ms, SECOND, 7 * DAY, "throttle.period", "1s and 7d")?;
    optional_expression(t.key.as_deref(), "throttle.key")?;
    Ok(ThrottleConfig {
        limit: t.limit,
        period_ms: t.period_ms,
        burst: t.burst.unwrap_or(0),
        key: t.key,
    })
}

fn rate_limit(r: wit::RateLimit) -> Checked<RateLimitConfig> {
    positive(r.limit, "rateLimit.limit")?;
    within(r.period_ms, SECOND, DAY, "rateLimit.period", "1s and 24h")?;
    optional_expression(r.key.as_deref(), "rateLimit.key")?;
    Ok(RateLimitConfig {
        limit: r.limit,
        period_ms: r.period_ms,
        key: r.key,
    })
}

fn debounce(d: wit::Debounce) -> Checked<DebounceConfig> {
    within(d.period_ms, SECOND, 7 * DAY, "debounce.period", "1s and 7d")?;
    if let Some(timeout) = d.timeout_ms {
        within(
            timeout,
            d.period_ms,
            7 * DAY,
            "debounce.timeout",
            "its period and 7d",
        )?;
    }
    optional_expression(d.key.as_deref(), "debounce.key")?;
    Ok(DebounceConfig {
        period_ms: d.period_ms,
        key: d.key,
        timeout_ms: d.timeout_ms,
    })
}

fn batch_events(b: wit::BatchEvents) -> Checked<BatchConfig> {
    if !(1..=1_000).contains(&b.max_size) {
        return Err(OptionError::new(
            "batchEvents.maxSize",
            format!("batchEvents.maxSize is {}; use 1 to 1000", b.max_size),
        ));
    }
    within(
        b.timeout_ms,
        SECOND,
        60 * SECOND,
        "batchEvents.timeout",
        "1s and 60s",
    )?;
    optional_expression(b.key.as_deref(), "batchEvents.key")?;
    Ok(BatchConfig {
        max_size: b.max_size,
        timeout_ms: b.timeout_ms,
        key: b.key,
    })
}

fn cancel_on(c: wit::CancelOn) -> Checked<CancelOnConfig> {
    check_name(&c.event)
        .map_err(|e| OptionError::new("cancelOn.event", format!("cancelOn event {e}")))?;
    if let Some(path) = &c.match_ {
        check_match_path(path, "cancelOn.match")?;
    }
    optional_expression(c.condition.as_deref(), "cancelOn.if")?;
    if let Some(timeout) = c.timeout_ms {
        within(timeout, 1, YEAR, "cancelOn.timeout", "1ms and a year")?;
    }
    Ok(CancelOnConfig {
        event: c.event,
        match_path: c.match_,
        condition: c.condition,
        timeout_ms: c.timeout_ms,
    })
}

fn timeouts(t: wit::Timeouts) -> Checked<TimeoutsConfig> {
    for (value, name) in [
        (t.start_ms, "timeouts.start"),
        (t.finish_ms, "timeouts.finish"),
    ] {
        if let Some(ms) = value {
            within(ms, 1, YEAR, name, "1ms and a year")?;
        }
    }
    Ok(TimeoutsConfig {
        start_ms: t.start_ms,
        finish_ms: t.finish_ms,
    })
}

fn singleton(s: wit::Singleton) -> Checked<SingletonConfig> {
    optional_expression(s.key.as_deref(), "singleton.key")?;
    Ok(SingletonConfig {
        key: s.key,
        mode: match s.mode {
            wit::SingletonMode::Skip => SingletonMode::Skip,
            wit::SingletonMode::Cancel => SingletonMode::Cancel,
        },
    })
}

fn trigger(trigger: wit::Trigger) -> Checked<TriggerRecord> {
    match trigger {
        wit::Trigger::Event(event) => {
            check_name(&event.event)
                .map_err(|e| OptionError::new("triggers.event", format!("trigger {e}")))?;
            optional_expression(event.condition.as_deref(), "trigger if")?;
            Ok(TriggerRecord {
                event: Some(event.event),
                condition: event.condition,
                cron: None,
            })
        }
        wit::Trigger::Cron(schedule) => {
            Schedule::parse(&schedule).map_err(|e| OptionError::new("triggers.cron", e))?;
            Ok(TriggerRecord {
                event: None,
                condition: None,
                cron: Some(schedule.trim().to_string()),
            })
        }
    }
}

fn optional_expression(source: Option<&str>, option: &'static str) -> Checked<()> {
    match source {
        Some(source) => expr::compile(source)
            .map(|_| ())
            .map_err(|e| OptionError::new(option, format!("{option}: {e}"))),
        None => Ok(()),
    }
}

fn positive(value: u32, option: &'static str) -> Checked<()> {
    if value == 0 {
        return Err(OptionError::new(
            option,
            format!("{option} is 0; give at least 1"),
        ));
    }
    Ok(())
}

fn within(ms: u64, min: u64, max: u64, option: &'static str, range: &str) -> Checked<()> {
    if ms < min || ms > max {
        return Err(OptionError::new(
            option,
            format!("{option} is {ms} ms; it must be between {range}"),
        ));
    }
    Ok(())
}

fn check_match_path(path: &str, option: &'static str) -> Checked<()> {
    let path = path.strip_prefix("event.").unwrap_or(path);
    if path.starts_with("data.") || path.starts_with("user.") {
        Ok(())
    } else {
        Err(OptionError::new(
            option,
            format!(
                "{option} {path:?} must be a dotted path into the event, such as \"data.orderId\""
            ),
        ))
    }
}

fn check_function_id(id: &str) -> Result<(), RegistrationError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RegistrationError::InvalidId(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str) -> wit::FunctionConfig {
        crate::testing::function_config(id)
    }

    fn refused(config: wit::FunctionConfig) -> String {
        functions("t", "app", "h", vec![config])
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_options_are_refused_with_the_option_named() {
        let mut c = config("f");
        c.priority = Some("event.data.plan ==".into());
        let err = refused(c);
        assert!(
            err.contains("function \"f\": priority.run") && err.contains("not valid CEL"),
            "{err}"
        );

        let mut c = config("f");
        c.triggers = vec![wit::Trigger::Cron("not a cron".into())];
        assert!(refused(c).contains("not a valid schedule"));

        let mut c = config("f");
        c.rate_limit = Some(wit::RateLimit {
            limit: 10,
            period_ms: 10,
            key: None,
        });
        assert!(refused(c).contains("rateLimit.period is 10 ms"));

        let mut c = config("f");
        c.concurrency = vec![
            wit::Concurrency {
                limit: 1,
                key: None,
                scope: wit::ConcurrencyScope::Function,
            };
            3
        ];
        assert!(refused(c).contains("at most two"));

        let mut c = config("f");
        c.throttle = Some(wit::Throttle {
            limit: 0,
            period_ms: 60_000,
            burst: None,
            key: None,
        });
        match functions("t", "app", "h", vec![c]) {
            Err(RegistrationError::Config(error)) => {
                assert_eq!(
                    (error.function.as_str(), error.option),
                    ("f", "throttle.limit")
                );
                assert!(error.problem.contains("give at least 1"), "{error}");
            }
            other => panic!("a zero throttle limit is refused by its option: {other:?}"),
        }

        let ok = functions("t", "app", "h", vec![config("f")]).unwrap();
        assert_eq!(ok[0].retries, DEFAULT_RETRIES);
        assert_eq!(ok[0].triggers, vec![TriggerRecord::event("a/b")]);
    }
}
