//! Reading Inngest's event JSON: one object or an array of them.
//!
//! Inngest's own clients send this format to `POST /e/{key}`, so it is read
//! as Inngest reads it: `name` is required, `data` defaults to `{}`, `id`,
//! `ts`, `v` and `user` are optional. Every mistake is reported with the
//! index of the event and the field, so a sender can fix its payload.

use serde_json::Value;
use std::fmt;

/// Most events in one request, as in Inngest.
pub const MAX_EVENTS_PER_REQUEST: usize = 5_000;

/// An event as a sender gave it, checked but not yet accepted (sent
/// between hosts as JSON when a step on a worker host sends it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IncomingEvent {
    /// The event's name, checked (printable, 1 to 256 characters).
    pub name: String,
    /// The `data` object (`{}` if the sender gave none or `null`).
    pub data: Value,
    /// The sender's id (its de-duplication key), if any.
    pub id: Option<String>,
    /// The sender's timestamp in ms, if any.
    pub ts: Option<u64>,
    /// The sender's schema version, if any.
    pub v: Option<String>,
    /// The `user` object, if any.
    pub user: Option<Value>,
    /// The W3C `traceparent` of the request that sent it, if any.
    pub trace: Option<String>,
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// The body is not JSON at all.
    NotJson(String),
    /// The JSON is not an event or a list of events.
    Invalid(String),
    /// The request holds too many events.
    TooMany(usize),
    /// One event is larger than allowed.
    TooLarge {
        /// Its index in the request.
        index: usize,
        /// Its size in bytes.
        bytes: usize,
        /// The most bytes an event may have (the tenant's limit).
        max: usize,
    },
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventError::NotJson(e) => write!(
                f,
                "the body is not valid JSON ({e}); send an event object such as {{\"name\": \"app/user.created\", \"data\": {{}}}} or an array of them"
            ),
            EventError::Invalid(e) => write!(f, "{e}"),
            EventError::TooMany(n) => write!(
                f,
                "the request holds {n} events; send at most {MAX_EVENTS_PER_REQUEST} per request"
            ),
            EventError::TooLarge { index, bytes, max } => write!(
                f,
                "event {index} is {bytes} bytes; an event may be at most {max} bytes: move large payloads to storage and send a reference"
            ),
        }
    }
}

impl std::error::Error for EventError {}

/// Reads a request body of one event or an array of events, each at most
/// `max_event_bytes`.
pub fn parse_events(body: &[u8], max_event_bytes: usize) -> Result<Vec<IncomingEvent>, EventError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(EventError::Invalid(
                    "the array holds no events; send at least one".into(),
                ));
            }
            items
        }
        Value::Object(_) => vec![value],
        other => {
            return Err(EventError::Invalid(format!(
                "expected an event object or an array of events, got {}",
                kind(&other)
            )));
        }
    };
    if items.len() > MAX_EVENTS_PER_REQUEST {
        return Err(EventError::TooMany(items.len()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| parse_event(index, item, max_event_bytes))
        .collect()
}

/// Reads event number `index` of a request (or of a `step.send_event`).
pub fn parse_event(index: usize, item: Value, max: usize) -> Result<IncomingEvent, EventError> {
    let bytes = serde_json::to_vec(&item).map(|v| v.len()).unwrap_or(0);
    if bytes > max {
        return Err(EventError::TooLarge { index, bytes, max });
    }
    let invalid = |what: String| EventError::Invalid(format!("event {index}: {what}"));
    let Value::Object(mut fields) = item else {
        return Err(invalid(format!("expected an object, got {}", kind(&item))));
    };
    let name = match fields.remove("name") {
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(invalid(format!(
                "\"name\" must be a string, got {}",
                kind(&other)
            )));
        }
        None => {
            return Err(invalid(
                "\"name\" is missing; every event needs a name such as \"app/user.created\"".into(),
            ));
        }
    };
    check_name(&name).map_err(&invalid)?;
    let data = match fields.remove("data") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(data @ Value::Object(_)) => data,
        Some(other) => {
            return Err(invalid(format!(
                "\"data\" must be an object, got {}",
                kind(&other)
            )));
        }
    };
    let id = match fields.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.is_empty() => None,
        Some(Value::String(id)) => {
            if id.len() > 1024 {
                return Err(invalid("\"id\" must be at most 1024 characters".into()));
            }
            check_printable("id", &id).map_err(&invalid)?;
            Some(id)
        }
        Some(other) => {
            return Err(invalid(format!(
                "\"id\" must be a string, got {}",
                kind(&other)
            )));
        }
    };
    let ts = match fields.remove("ts") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => None,
            Some(ts) => Some(ts),
            None => {
                return Err(invalid(
                    "\"ts\" must be milliseconds since the Unix epoch, a whole number".into(),
                ));
            }
        },
        Some(other) => {
            return Err(invalid(format!(
                "\"ts\" must be a number, got {}",
                kind(&other)
            )));
        }
    };
    let v = match fields.remove("v") {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => Some(v),
        Some(other) => {
            return Err(invalid(format!(
                "\"v\" must be a string, got {}",
                kind(&other)
            )));
        }
    };
    let user = match fields.remove("user") {
        None | Some(Value::Null) => None,
        Some(user @ Value::Object(_)) => Some(user),
        Some(other) => {
            return Err(invalid(format!(
                "\"user\" must be an object, got {}",
                kind(&other)
            )));
        }
    };
    Ok(IncomingEvent {
        name,
        data,
        id,
        ts,
        v,
        user,
        trace: None,
    })
}

/// Checks an event name (also used for trigger and wait names).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("\"name\" is empty; give the event a name such as \"app/user.created\"".into());
    }
    if name.len() > 256 {
        return Err(format!("\"name\" {name:?} must be at most 256 characters"));
    }
    check_printable("name", name)
}

/// What event names and ids may hold, said in every refusal.
pub const PRINTABLE_RULE: &str = "printable characters only: letters, digits, punctuation, symbols and spaces (any language); no control characters (U+0000-U+001F, U+007F-U+009F: newline, tab, ESC, CR, BEL, ...), line separators or bidirectional overrides";

/// Whether `c` must never reach a log line or a terminal as it is: a
/// control character (it could forge a log line or drive the terminal), a
/// line or paragraph separator, or a bidirectional override (it reorders
/// what is shown).
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Checks that `field` (an event's `name` or `id`) holds printable text
/// only, naming the first offending character and where it is.
pub fn check_printable(field: &str, text: &str) -> Result<(), String> {
    match text.chars().enumerate().find(|(_, c)| is_unprintable(*c)) {
        None => Ok(()),
        Some((at, c)) => Err(format!(
            "\"{field}\" holds U+{:04X} at character {at}; an event {field} may hold {PRINTABLE_RULE}",
            c as u32
        )),
    }
}

/// `text` with every unprintable character ([`is_unprintable`]) written as
/// an escape (`\u{1b}`), and backslashes doubled so an escape cannot be
/// faked: safe to print to a terminal or a log line whatever a user sent.
pub fn escape_unprintable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| is_unprintable(c) || c == '\\') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_EVENT_BYTES;

    fn parse_events_default(body: &[u8]) -> Result<Vec<IncomingEvent>, EventError> {
        parse_events(body, MAX_EVENT_BYTES)
    }

    #[test]
    fn reads_one_event_or_many() {
        let one =
            parse_events_default(br#"{"name":"a/b","data":{"x":1},"id":"e1","ts":5}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "a/b");
        assert_eq!(one[0].data["x"], 1);
        assert_eq!(one[0].id.as_deref(), Some("e1"));
        assert_eq!(one[0].ts, Some(5));
        let many = parse_events_default(br#"[{"name":"a"},{"name":"b","data":null}]"#).unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].data, serde_json::json!({}));
    }

    #[test]
    fn explains_what_is_wrong() {
        let err = |body: &[u8]| parse_events_default(body).unwrap_err().to_string();
        assert!(err(b"{nope").contains("not valid JSON"));
        assert!(err(b"42").contains("got a number"));
        assert!(err(b"[]").contains("no events"));
        assert!(err(br#"[{"name":"a"},{"data":{}}]"#).contains("event 1: \"name\" is missing"));
        assert!(err(br#"{"name":"a","data":[1]}"#).contains("\"data\" must be an object"));
        assert!(err(br#"{"name":"  "}"#).contains("empty"));
        assert!(err(br#"{"name":"a","ts":-1}"#).contains("\"ts\""));
        for bad in ["a\u{1b}[2Jb", "a\rb", "a\u{7}", "a\nERROR x", "a\u{0}"] {
            let body = serde_json::json!({"name": bad}).to_string();
            let message = err(body.as_bytes());
            assert!(
                message.contains("\"name\" holds U+")
                    && message.contains("printable characters only"),
                "{message}"
            );
            let body = serde_json::json!({"name": "a/b", "id": bad}).to_string();
            assert!(err(body.as_bytes()).contains("\"id\" holds U+"));
        }
        assert!(err(r#"{"name":"a\u202eb"}"#.as_bytes()).contains("U+202E"));
        let fine =
            parse_events_default("{\"name\":\"app/usuário créé ✓\",\"id\":\"a b-c\"}".as_bytes());
        assert!(fine.is_ok(), "any language, spaces and symbols: {fine:?}");
        let big = format!(
            r#"{{"name":"a","data":{{"s":"{}"}}}}"#,
            "x".repeat(MAX_EVENT_BYTES)
        );
        assert!(err(big.as_bytes()).contains("at most 524288 bytes"));
        let many = format!(
            "[{}]",
            vec![r#"{"name":"a"}"#; MAX_EVENTS_PER_REQUEST + 1].join(",")
        );
        assert!(err(many.as_bytes()).contains("at most 5000"));
    }
}

#[cfg(test)]
mod escaping {
    use super::*;

    #[test]
    fn escaping_leaves_nothing_a_terminal_or_a_log_would_act_on() {
        assert_eq!(escape_unprintable("plain/name ✓"), "plain/name ✓");
        assert_eq!(
            escape_unprintable("a\u{1b}[31mb\rc\u{7}\nd\\n"),
            "a\\u{1b}[31mb\\rc\\u{7}\\nd\\\\n"
        );
        assert_eq!(escape_unprintable("\u{9b}x\u{202e}"), "\\u{9b}x\\u{202e}");
        let escaped = escape_unprintable("\u{0}\u{1f}\u{7f}\u{2028}");
        assert!(!escaped.chars().any(is_unprintable), "{escaped}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::config::MAX_EVENT_BYTES;
    use proptest::prelude::*;

    /// Any JSON value, a few levels deep.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// No body, however broken, panics the parser: it answers events or
        /// an error that says what was wrong.
        #[test]
        fn any_bytes_are_parsed_or_refused_with_a_reason(body in prop::collection::vec(any::<u8>(), 0..300)) {
            match parse_events(&body, MAX_EVENT_BYTES) {
                Ok(events) => prop_assert!(!events.is_empty()),
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }

        /// Any JSON value either is events (each with a name and object
        /// data) or is refused.
        #[test]
        fn any_json_is_events_or_refused(value in json()) {
            let body = serde_json::to_vec(&value).unwrap();
            if let Ok(events) = parse_events(&body, MAX_EVENT_BYTES) {
                for event in events {
                    prop_assert!(!event.name.trim().is_empty());
                    prop_assert!(event.data.is_object());
                }
            }
        }

        /// A well-formed event survives the round trip with its fields.
        #[test]
        fn well_formed_events_round_trip(
            name in "[a-z]{1,8}/[a-z.]{1,12}",
            data in prop::collection::btree_map("[a-z]{1,6}", any::<i32>(), 0..5),
            id in prop::option::of("[A-Za-z0-9-]{1,20}"),
            ts in prop::option::of(1u64..u64::MAX / 2),
        ) {
            let mut event = serde_json::json!({"name": name, "data": data});
            if let Some(id) = &id { event["id"] = Value::from(id.clone()); }
            if let Some(ts) = ts { event["ts"] = Value::from(ts); }
            let parsed = parse_events(event.to_string().as_bytes(), MAX_EVENT_BYTES).unwrap();
            prop_assert_eq!(parsed.len(), 1);
            prop_assert_eq!(&parsed[0].name, &name);
            prop_assert_eq!(&parsed[0].id, &id);
            prop_assert_eq!(parsed[0].ts, ts);
            prop_assert_eq!(parsed[0].data.as_object().unwrap().len(), data.len());
        }
    }
}
