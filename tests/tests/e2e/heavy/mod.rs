//! The heavy end-to-end tests: each takes tens of seconds or more (ten
//! host kills under load, floods of hostile runs, Python and JavaScript
//! builds of every example, Inngest's npm client). The README's test
//! command runs them; leave them out of a quick round with
//! `cargo test -p stepwise-tests --test e2e -- --skip heavy::`.

mod chaos;
mod conformance;
mod conformance_flow;
mod hostile;
mod inngest_client;
mod polyglot;
