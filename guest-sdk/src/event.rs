//! Events as a handler sees them, with `data` in the handler's own type.

use crate::Error;
use crate::bindings::stepwise::durable::types as wit;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event. `D` is the type of its `data`: a struct of the handler's, or
/// `serde_json::Value` when left open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<D = Value> {
    /// The sender's id, or one the host made.
    pub id: String,
    /// The event name, e.g. `shop/order.created`.
    pub name: String,
    /// The event's payload.
    pub data: D,
    /// When it happened, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The sender's `user` object, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
}

impl<D: DeserializeOwned> Event<D> {
    /// Reads a WIT event, failing without retries if `data` does not fit `D`:
    /// the same event would not fit on the next attempt either.
    pub(crate) fn from_wit(event: wit::Event) -> Result<Self, Error> {
        let data = serde_json::from_str(&event.data).map_err(|e| {
            Error::non_retriable(format!(
                "the data of event {:?} ({}) does not fit the handler's type: {e}",
                event.name, event.id
            ))
        })?;
        let user = match event.user {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                Error::non_retriable(format!("the user of event {:?} is not JSON: {e}", event.id))
            })?),
            None => None,
        };
        Ok(Event {
            id: event.id,
            name: event.name,
            data,
            ts: event.ts,
            user,
        })
    }
}

impl Event<Value> {
    /// The data in a type of the caller's choosing.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_value(self.data.clone()).map_err(|e| {
            Error::non_retriable(format!(
                "the data of event {:?} does not fit the expected type: {e}",
                self.name
            ))
        })
    }
}
