//! Stepwise: a host for durable step functions compiled to WebAssembly
//! components.
//!
//! Data flows one way: [`api`] (HTTP) → [`runs`] (the run state machine,
//! the only writer of run state: ingest, match triggers and waiters, apply
//! every run transition) → [`journal`] (sled: the only code that touches
//! storage), and [`scheduler`] (ready runs, timers) → [`executor`] (wasmtime,
//! host calls, which change runs only through [`runs`], mostly as
//! [`runs::Transition`]s) → [`runs`]. [`runtime`] wires them together;
//! [`cli`] is the `stepwise` command. [`wit`] holds the bindings generated
//! from the WIT package, and [`config`] the settings and their defaults.

pub mod api;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod cron;
pub mod deploys;
pub mod executor;
pub mod expr;
pub mod journal;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod registration;
pub mod retry;
pub mod runs;
pub mod runtime;
pub mod scheduler;
pub mod tenants;
#[cfg(test)]
mod testing;
pub mod traces;
pub mod wit;
pub mod work;
