//! Test harness: a real `stepwise` process on a temp dir, an HTTP client
//! for it, and a loopback server that step bodies call so that tests count
//! executions independently of the host's own records.

pub mod host;
pub mod loopback;
pub mod polyglot;

pub use host::{HostOptions, HostProcess};
pub use loopback::{Loopback, Plan};
pub use polyglot::guest_app;

/// The compiled example and test components, built by `build.rs`.
pub mod guests {
    /// `examples/process-order`.
    pub const PROCESS_ORDER: &str = env!("PROCESS_ORDER_WASM");
    /// `examples/fan-out-loop`.
    pub const FAN_OUT_LOOP: &str = env!("FAN_OUT_LOOP_WASM");
    /// `examples/flaky-retry`.
    pub const FLAKY_RETRY: &str = env!("FLAKY_RETRY_WASM");
    /// `tests/guests/probe`: scripted steps, and the benchmark's ten steps.
    pub const PROBE: &str = env!("PROBE_WASM");
    /// `tests/guests/not-an-app`: a WASI command, not a Stepwise app.
    pub const NOT_AN_APP: &str = env!("NOT_AN_APP_WASM");
    /// The Python examples' sources (built by the tests with `stepwise build`).
    pub const PYTHON_PROCESS_ORDER: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/python/process-order/app.py"
    );
    /// `examples/python/fan-out-loop/app.py`.
    pub const PYTHON_FAN_OUT_LOOP: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/python/fan-out-loop/app.py"
    );
    /// `examples/js/process-order/app.js`.
    pub const JS_PROCESS_ORDER: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/js/process-order/app.js"
    );
    /// `examples/js/fan-out-loop/app.js`.
    pub const JS_FAN_OUT_LOOP: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/js/fan-out-loop/app.js"
    );
    /// `examples/js/flaky-retry/app.js`.
    pub const JS_FLAKY_RETRY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/js/flaky-retry/app.js"
    );
    /// `examples/python/flaky-retry/app.py`.
    pub const PYTHON_FLAKY_RETRY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/python/flaky-retry/app.py"
    );
}
