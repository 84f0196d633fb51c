//! Inngest's expressions: trigger and wait `if`s, flow-control keys,
//! `priority.run` and `cancelOn.if` are CEL, with the triggering `event`
//! (and, for waits and cancellations, the incoming `async` event) in scope.
//!
//! Every expression is compiled when its app is uploaded, so a typo is
//! refused with the parse error rather than found at run time; evaluation
//! reuses the compiled program from a cache. JSON numbers become CEL `int`
//! when they are whole and `double` otherwise, so `event.data.amount > 100`
//! works whatever the sender's JSON encoder wrote. Inngest's examples
//! sometimes use JavaScript's `===` and `!==`; they are read as `==`/`!=`.

use crate::model::EventRecord;
use cel::objects::Map;
use cel::{Context, Env, Program, Value};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Programs kept compiled; the cache is emptied when it grows past this.
const CACHE_LIMIT: usize = 4_096;

/// Why an expression was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// It does not parse.
    #[error("the expression {expression:?} is not valid CEL: {message}")]
    Parse {
        /// The expression as written.
        expression: String,
        /// The parser's complaint.
        message: String,
    },
    /// It failed on this event, or gave the wrong kind of value.
    #[error("the expression {expression:?} failed: {message}")]
    Eval {
        /// The expression as written.
        expression: String,
        /// What went wrong.
        message: String,
    },
}

fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib()))
}

fn cache() -> &'static Mutex<HashMap<String, Arc<Program>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Program>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Compiles `source` (or takes it from the cache).
pub fn compile(source: &str) -> Result<Arc<Program>, ExprError> {
    if let Some(program) = cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(source)
    {
        return Ok(program.clone());
    }
    if source.trim().is_empty() {
        return Err(ExprError::Parse {
            expression: source.into(),
            message: "it is empty".into(),
        });
    }
    let program = env()
        .compile(&javascript_equality(source))
        .map(Arc::new)
        .map_err(|e| ExprError::Parse {
            expression: source.into(),
            message: e.to_string().trim().to_string(),
        })?;
    let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(source.to_string(), program.clone());
    Ok(program)
}

/// `===` → `==` and `!==` → `!=`, outside string literals.
fn javascript_equality(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut quote: Option<char> = None;
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                out.push(c);
            }
            None if (c == '=' || c == '!') && chars.peek() == Some(&'=') => {
                out.push(c);
                out.push('=');
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                }
            }
            None => out.push(c),
        }
    }
    out
}

/// An event as expressions see it: `{id, name, data, ts, user, v}`.
pub fn event_value(event: &EventRecord) -> Value {
    let mut map: HashMap<String, Value> = HashMap::new();
    map.insert("id".into(), Value::from(event.id.clone()));
    map.insert("name".into(), Value::from(event.name.clone()));
    map.insert("data".into(), json_value(&event.data));
    map.insert("ts".into(), Value::Int(event.ts as i64));
    map.insert(
        "user".into(),
        event.user.as_ref().map(json_value).unwrap_or(Value::Null),
    );
    if let Some(v) = &event.v {
        map.insert("v".into(), Value::from(v.clone()));
    }
    Value::Map(Map::from(map))
}

/// A JSON value as CEL sees it (whole numbers as `int`).
pub fn json_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::from(s.clone()),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(json_value).collect())),
        Json::Object(fields) => {
            let map: HashMap<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect();
            Value::Map(Map::from(map))
        }
    }
}

/// The scope of one evaluation: the triggering event, and the incoming
/// one for waits and cancellations.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// The run's triggering event, `event` in expressions.
    pub event: &'a EventRecord,
    /// The event a wait or a `cancelOn` tests, `async` in expressions.
    pub incoming: Option<&'a EventRecord>,
}

impl<'a> Scope<'a> {
    /// Only `event` in scope.
    pub fn event(event: &'a EventRecord) -> Self {
        Scope {
            event,
            incoming: None,
        }
    }
}

fn evaluate(source: &str, scope: Scope<'_>) -> Result<Value, ExprError> {
    let program = compile(source)?;
    let mut context = Context::with_env(env().clone());
    context.add_variable_from_value("event", event_value(scope.event));
    if let Some(incoming) = scope.incoming {
        context.add_variable_from_value("async", event_value(incoming));
    }
    program.execute(&context).map_err(|e| ExprError::Eval {
        expression: source.into(),
        message: e.to_string(),
    })
}

/// A condition (`if`): true or false. A missing field makes it false, as in
/// Inngest, rather than an error.
pub fn condition(source: &str, scope: Scope<'_>) -> Result<bool, ExprError> {
    match evaluate(source, scope) {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(other) => Err(ExprError::Eval {
            expression: source.into(),
            message: format!("it gave {other:?}, not true or false"),
        }),
        Err(ExprError::Eval { message, .. }) if missing_field(&message) => Ok(false),
        Err(e) => Err(e),
    }
}

fn missing_field(message: &str) -> bool {
    message.contains("No such key") || message.contains("Undeclared reference")
}

/// A key (concurrency, throttle, rate limit, debounce, batch, idempotency,
/// singleton): the value as text; strings as they are, anything else as
/// JSON. A missing field gives the empty key, as in Inngest.
pub fn key(source: &str, scope: Scope<'_>) -> Result<String, ExprError> {
    match evaluate(source, scope) {
        Ok(Value::String(s)) => Ok(s.to_string()),
        Ok(Value::Null) => Ok(String::new()),
        Ok(other) => match other.json() {
            Ok(json) => Ok(json.to_string()),
            Err(_) => Ok(format!("{other:?}")),
        },
        Err(ExprError::Eval { message, .. }) if missing_field(&message) => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// A number (`priority.run`).
pub fn number(source: &str, scope: Scope<'_>) -> Result<f64, ExprError> {
    match evaluate(source, scope) {
        Ok(Value::Int(i)) => Ok(i as f64),
        Ok(Value::UInt(u)) => Ok(u as f64),
        Ok(Value::Float(f)) => Ok(f),
        Ok(other) => Err(ExprError::Eval {
            expression: source.into(),
            message: format!("it gave {other:?}, not a number"),
        }),
        Err(ExprError::Eval { message, .. }) if missing_field(&message) => Ok(0.0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(data: Json) -> EventRecord {
        EventRecord {
            id: "e1".into(),
            name: "shop/order.created".into(),
            data,
            user: None,
            ts: 5,
            v: None,
            received_at: 5,
            trace: None,
        }
    }

    #[test]
    fn conditions_see_event_and_async() {
        let order = event(json!({"plan": "enterprise", "amount": 150, "price": 1.5}));
        let scope = Scope::event(&order);
        assert!(condition("event.data.plan == 'enterprise'", scope).unwrap());
        assert!(condition("event.data.amount > 100", scope).unwrap());
        assert!(condition("event.data.price > 1.0", scope).unwrap());
        assert!(condition("event.data.amount > 99.5", scope).unwrap());
        assert!(condition("event.data.price < 2", scope).unwrap());
        assert!(!condition("event.data.plan === 'free'", scope).unwrap());
        assert!(condition("event.name.startsWith('shop/')", scope).unwrap());
        assert!(!condition("event.data.missing == 'x'", scope).unwrap());
        let paid = event(json!({"plan": "enterprise"}));
        let both = Scope {
            event: &order,
            incoming: Some(&paid),
        };
        assert!(condition("async.data.plan == event.data.plan", both).unwrap());
    }

    #[test]
    fn keys_priorities_and_errors() {
        let e = event(json!({"userId": "u-1", "n": 7, "plan": "enterprise"}));
        let scope = Scope::event(&e);
        assert_eq!(key("event.data.userId", scope).unwrap(), "u-1");
        assert_eq!(key("event.data.n", scope).unwrap(), "7");
        assert_eq!(key("event.data.nothing", scope).unwrap(), "");
        assert_eq!(
            number("event.data.plan === 'enterprise' ? 100 : 0", scope).unwrap(),
            100.0
        );
        let err = compile("event.data.(").unwrap_err().to_string();
        assert!(err.contains("not valid CEL"), "{err}");
        assert!(condition("event.data.userId", scope).is_err());
    }

    #[test]
    fn javascript_equality_only_outside_strings() {
        assert_eq!(javascript_equality("a === 'x===y'"), "a == 'x===y'");
        assert_eq!(javascript_equality("a !== b"), "a != b");
        assert_eq!(javascript_equality("a == b"), "a == b");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text compiles or is refused with the parse error; a compiled
        /// expression evaluates to a value or an error, never a panic.
        #[test]
        fn any_text_compiles_or_is_refused_and_evaluates_without_panicking(
            source in "[a-z.=!<>&|()'\" 0-9?:+*-]{0,40}",
        ) {
            let event = EventRecord {
                id: "e".into(),
                name: "a/b".into(),
                data: serde_json::json!({"a": 1, "b": "x", "c": [1, 2]}),
                user: None,
                ts: 1,
                v: None,
                received_at: 1,
                trace: None,
            };
            match compile(&source) {
                Ok(_) => {
                    let scope = Scope { event: &event, incoming: Some(&event) };
                    let _ = condition(&source, scope);
                    let _ = key(&source, scope);
                    let _ = number(&source, scope);
                }
                Err(error) => prop_assert!(error.to_string().contains("not valid CEL") || error.to_string().contains("empty")),
            }
        }

        /// Equality on a data field agrees with Rust's comparison.
        #[test]
        fn data_equality_agrees_with_rust(a in any::<i32>(), b in any::<i32>()) {
            let event = EventRecord {
                id: "e".into(),
                name: "a/b".into(),
                data: serde_json::json!({"a": a}),
                user: None,
                ts: 1,
                v: None,
                received_at: 1,
                trace: None,
            };
            let source = format!("event.data.a == {b}");
            prop_assert_eq!(condition(&source, Scope::event(&event)).unwrap(), a == b);
        }
    }
}
