//! Where an event meets a wait: Inngest's `match` paths, read the same way
//! when a wait is set up (in the run's trigger) and when an event arrives.

use super::{EventRecord, WaitSpec};
use serde_json::Value;

impl WaitSpec {
    /// Whether `event` satisfies the wait (its name is already known to
    /// match): with a `match` path, the value must exist in both events and
    /// be equal.
    pub fn matches(&self, event: &EventRecord) -> bool {
        match (&self.match_path, &self.match_value) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(path), Some(expected)) => event.lookup(path).is_some_and(|v| v == expected),
        }
    }
}

impl EventRecord {
    /// The value at a dotted path (`data.orderId`, `event.data.items.0.id`),
    /// as Inngest's `match` reads it; `None` where it is absent or null.
    pub fn lookup(&self, path: &str) -> Option<&Value> {
        let path = path.strip_prefix("event.").unwrap_or(path);
        let mut parts = path.split('.');
        let mut current: &Value = match parts.next()? {
            "data" => &self.data,
            "user" => self.user.as_ref()?,
            _ => return None,
        };
        for part in parts {
            current = match current {
                Value::Object(map) => map.get(part)?,
                Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        if current.is_null() {
            None
        } else {
            Some(current)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(data: Value) -> EventRecord {
        EventRecord {
            id: "e".into(),
            name: "shop/payment.success".into(),
            data,
            user: None,
            ts: 1,
            v: None,
            received_at: 1,
            trace: None,
        }
    }

    #[test]
    fn match_compares_the_same_path_in_both_events() {
        let spec = |value: Option<Value>| WaitSpec {
            event: "shop/payment.success".into(),
            match_path: Some("data.orderId".into()),
            match_value: value,
            condition: None,
        };
        let paid = event(json!({"orderId": "o-1", "amount": 5}));
        assert!(spec(Some(json!("o-1"))).matches(&paid));
        assert!(!spec(Some(json!("o-2"))).matches(&paid));
        assert!(
            !spec(None).matches(&paid),
            "absent in the trigger: nothing matches"
        );
        assert!(!spec(Some(json!("o-1"))).matches(&event(json!({}))));
        let any = WaitSpec {
            match_path: None,
            ..spec(None)
        };
        assert!(any.matches(&event(json!({}))));
    }

    #[test]
    fn lookup_walks_objects_and_arrays() {
        let e = event(json!({"items": [{"id": "a"}], "n": null}));
        assert_eq!(e.lookup("data.items.0.id"), Some(&json!("a")));
        assert_eq!(e.lookup("event.data.items.0.id"), Some(&json!("a")));
        assert_eq!(e.lookup("data.n"), None);
        assert_eq!(e.lookup("data.missing"), None);
        assert_eq!(e.lookup("name"), None);
    }
}
