//! Reading an app's registration: the function configs its `functions()`
//! returned, checked and turned into the records the host keeps.
//!
//! Everything a run would otherwise trip over later is refused here, with
//! the function, the option and what to do: ids, trigger names, cron
//! schedules, bounds of retries and flow control (Inngest's), and every
//! expression, compiled.

use crate::cron::Schedule;
use crate::events::check_name;
use crate::expr;
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

/// Turns `configs` into the functions of `app` version `hash` in `tenant`,
/// or says what is wrong with the first bad one.
pub fn functions(
    tenant: &str,
    app: &str,
    hash: &str,
    configs: Vec<wit::FunctionConfig>,
) -> Result<Vec<FunctionRecord>, String> {
    if configs.is_empty() {
        return Err("the app registers no functions: list them in the app's registration (App::new().function(...))".into());
    }
    let mut seen = HashSet::new();
    let mut functions = Vec::new();
    for config in configs {
        let id = config.id.clone();
        check_function_id(&id)?;
        if !seen.insert(id.clone()) {
            return Err(format!(
                "the app registers function {id:?} twice; function ids must be unique"
            ));
        }
        let function =
            function(tenant, app, hash, config).map_err(|e| format!("function {id:?}: {e}"))?;
        functions.push(function);
    }
    Ok(functions)
}

fn function(
    tenant: &str,
    app: &str,
    hash: &str,
    config: wit::FunctionConfig,
) -> Result<FunctionRecord, String> {
    if config.triggers.is_empty() {
        return Err("it has no trigger; give it at least one event or cron schedule".into());
    }
    let triggers = config
        .triggers
        .into_iter()
        .map(trigger)
        .collect::<Result<Vec<_>, _>>()?;
    let retries = config.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        return Err(format!(
            "it asks for {retries} retries; at most {MAX_RETRIES} are allowed"
        ));
    }
    if config.concurrency.len() > 2 {
        return Err(format!(
            "it has {} concurrency limits; at most two are allowed, as in Inngest",
            config.concurrency.len()
        ));
    }
    let concurrency = config
        .concurrency
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
        .collect::<Result<Vec<_>, String>>()?;
    let throttle = config
        .throttle
        .map(|t| {
            positive(t.limit, "throttle.limit")?;
            within(t.period_ms, SECOND, 7 * DAY, "throttle.period", "1s and 7d")?;
            optional_expression(t.key.as_deref(), "throttle.key")?;
            Ok::<_, String>(ThrottleConfig {
                limit: t.limit,
                period_ms: t.period_ms,
                burst: t.burst.unwrap_or(0),
                key: t.key,
            })
        })
        .transpose()?;
    let rate_limit = config
        .rate_limit
        .map(|r| {
            positive(r.limit, "rateLimit.limit")?;
            within(r.period_ms, SECOND, DAY, "rateLimit.period", "1s and 24h")?;
            optional_expression(r.key.as_deref(), "rateLimit.key")?;
            Ok::<_, String>(RateLimitConfig {
                limit: r.limit,
                period_ms: r.period_ms,
                key: r.key,
            })
        })
        .transpose()?;
    let debounce = config
        .debounce
        .map(|d| {
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
            Ok::<_, String>(DebounceConfig {
                period_ms: d.period_ms,
                key: d.key,
                timeout_ms: d.timeout_ms,
            })
        })
        .transpose()?;
    let batch_events = config
        .batch_events
        .map(|b| {
            if !(1..=1_000).contains(&b.max_size) {
                return Err(format!(
                    "batchEvents.maxSize is {}; use 1 to 1000",
                    b.max_size
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
        })
        .transpose()?;
    if debounce.is_some() && batch_events.is_some() {
        return Err(
            "it has both debounce and batchEvents; a function may use one or the other".into(),
        );
    }
    optional_expression(config.priority.as_deref(), "priority.run")?;
    optional_expression(config.idempotency.as_deref(), "idempotency")?;
    let cancel_on = config
        .cancel_on
        .into_iter()
        .map(|c| {
            check_name(&c.event).map_err(|e| format!("cancelOn event {e}"))?;
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
        })
        .collect::<Result<Vec<_>, String>>()?;
    let timeouts = config
        .timeouts
        .map(|t| {
            for (value, name) in [
                (t.start_ms, "timeouts.start"),
                (t.finish_ms, "timeouts.finish"),
            ] {
                if let Some(ms) = value {
                    within(ms, 1, YEAR, name, "1ms and a year")?;
                }
            }
            Ok::<_, String>(TimeoutsConfig {
                start_ms: t.start_ms,
                finish_ms: t.finish_ms,
            })
        })
        .transpose()?
        .filter(|t| t.start_ms.is_some() || t.finish_ms.is_some());
    let singleton = config
        .singleton
        .map(|s| {
            optional_expression(s.key.as_deref(), "singleton.key")?;
            Ok::<_, String>(SingletonConfig {
                key: s.key,
                mode: match s.mode {
                    wit::SingletonMode::Skip => SingletonMode::Skip,
                    wit::SingletonMode::Cancel => SingletonMode::Cancel,
                },
            })
        })
        .transpose()?;
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

fn trigger(trigger: wit::Trigger) -> Result<TriggerRecord, String> {
    match trigger {
        wit::Trigger::Event(event) => {
            check_name(&event.event).map_err(|e| format!("trigger {e}"))?;
            optional_expression(event.condition.as_deref(), "trigger if")?;
            Ok(TriggerRecord {
                event: Some(event.event),
                condition: event.condition,
                cron: None,
            })
        }
        wit::Trigger::Cron(schedule) => {
            Schedule::parse(&schedule)?;
            Ok(TriggerRecord {
                event: None,
                condition: None,
                cron: Some(schedule.trim().to_string()),
            })
        }
    }
}

fn optional_expression(source: Option<&str>, option: &str) -> Result<(), String> {
    match source {
        Some(source) => expr::compile(source)
            .map(|_| ())
            .map_err(|e| format!("{option}: {e}")),
        None => Ok(()),
    }
}

fn positive(value: u32, option: &str) -> Result<(), String> {
    if value == 0 {
        return Err(format!("{option} is 0; give at least 1"));
    }
    Ok(())
}

fn within(ms: u64, min: u64, max: u64, option: &str, range: &str) -> Result<(), String> {
    if ms < min || ms > max {
        return Err(format!("{option} is {ms} ms; it must be between {range}"));
    }
    Ok(())
}

fn check_match_path(path: &str, option: &str) -> Result<(), String> {
    let path = path.strip_prefix("event.").unwrap_or(path);
    if path.starts_with("data.") || path.starts_with("user.") {
        Ok(())
    } else {
        Err(format!(
            "{option} {path:?} must be a dotted path into the event, such as \"data.orderId\""
        ))
    }
}

fn check_function_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid function id {id:?}: use 1 to 128 letters, digits, '-', '_', '.', ':' or '/'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str) -> wit::FunctionConfig {
        wit::FunctionConfig {
            id: id.into(),
            name: None,
            triggers: vec![wit::Trigger::Event(wit::EventTrigger {
                event: "a/b".into(),
                condition: None,
            })],
            retries: None,
            concurrency: vec![],
            throttle: None,
            rate_limit: None,
            debounce: None,
            priority: None,
            batch_events: None,
            idempotency: None,
            cancel_on: vec![],
            timeouts: None,
            singleton: None,
            on_failure: false,
        }
    }

    fn refused(config: wit::FunctionConfig) -> String {
        functions("t", "app", "h", vec![config]).unwrap_err()
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

        let ok = functions("t", "app", "h", vec![config("f")]).unwrap();
        assert_eq!(ok[0].retries, DEFAULT_RETRIES);
        assert_eq!(ok[0].triggers, vec![TriggerRecord::event("a/b")]);
    }
}
