//! Helpers the host's unit tests share.

use crate::wit::types as wit;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Polls `future` once: its output if it is ready (it stays registered as a
/// waiter otherwise, keeping its place in line).
pub fn poll_once<F: Future>(future: Pin<&mut F>) -> Option<F::Output> {
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// A function `id` triggered by event `a/b`, every option unset.
pub fn function_config(id: &str) -> wit::FunctionConfig {
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
