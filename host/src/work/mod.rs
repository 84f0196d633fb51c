//! Runs executing on any host: the leader hands jobs to worker hosts.
//!
//! Among several hosts on one database, one leads (it holds the runs
//! lease, see [`crate::cluster`]): it keeps run state, accepts every
//! request and schedules every job. Executing a job is the costly part
//! (wasm), and that is what it shares: every standby is also a worker,
//! which claims jobs from the leader ([`leader::Workers`]), executes them
//! in its own sandbox, and sends every change its executions ask for back
//! to the leader's run state machine ([`worker::Remote`], a
//! [`crate::runs::RunAccess`]). Restate splits its partition processor and
//! its invokers the same way.
//!
//! A worker holds a *session*. The leader fences a session off when the
//! worker stops claiming for a lease's time (killed, paused, cut off) or
//! leaves: it waits for the session's calls in progress, refuses every
//! later one, and its jobs go back to the scheduler, which executes them
//! again by replay here or on another worker. So a run executes on one
//! host at a time, and a host that lost it cannot write.

pub mod leader;
pub mod wire;
pub mod worker;

pub use leader::{SharedDispatch, Workers};
pub use worker::WorkerStats;
