//! Test harness: a real `stepwise` process on a temp dir, an HTTP client
//! for it, and a loopback server that step bodies call so that tests count
//! executions independently of the host's own records.

pub mod host;
pub mod loopback;
pub mod otlp;
pub mod polyglot;
pub mod postgres;

pub use host::{Api, HostOptions, HostProcess, store_footprint};
pub use loopback::{Loopback, Plan};
pub use polyglot::guest_app;

/// A loopback TCP port nothing listens on now (for a host that must listen
/// on the same port again after a restart, or a server's own port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The source of example `name` in `language` (`python` or `js`), for
/// `stepwise build`.
pub fn example_source(language: &str, name: &str) -> String {
    let file = if language == "python" {
        "app.py"
    } else {
        "app.js"
    };
    format!(
        "{}/../examples/{language}/{name}/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The compiled example and test components, built by `build.rs`.
pub mod guests {
    /// `examples/process-order`.
    pub const PROCESS_ORDER: &str = env!("PROCESS_ORDER_WASM");
    /// `examples/fan-out-loop`.
    pub const FAN_OUT_LOOP: &str = env!("FAN_OUT_LOOP_WASM");
    /// `examples/flaky-retry`.
    pub const FLAKY_RETRY: &str = env!("FLAKY_RETRY_WASM");
    /// `examples/sync-crm`: rate limit and throttle.
    pub const SYNC_CRM: &str = env!("SYNC_CRM_WASM");
    /// `examples/index-product`: debounce.
    pub const INDEX_PRODUCT: &str = env!("INDEX_PRODUCT_WASM");
    /// `examples/generate-report`: priority.
    pub const GENERATE_REPORT: &str = env!("GENERATE_REPORT_WASM");
    /// `examples/risky-transfer`: on-failure rollback.
    pub const RISKY_TRANSFER: &str = env!("RISKY_TRANSFER_WASM");
    /// `examples/fetch-parallel`: parallel steps.
    pub const FETCH_PARALLEL: &str = env!("FETCH_PARALLEL_WASM");
    /// `examples/daily-digest`: cron, send_event and invoke.
    pub const DAILY_DIGEST: &str = env!("DAILY_DIGEST_WASM");
    /// `tests/guests/flow`: one function per feature of Inngest's model.
    pub const FLOW: &str = env!("FLOW_WASM");
    /// `tests/guests/ticker`: a cron function every two seconds.
    pub const TICKER: &str = env!("TICKER_WASM");
    /// `tests/guests/bad-config`: a registration with a broken expression.
    pub const BAD_CONFIG: &str = env!("BAD_CONFIG_WASM");
    /// `tests/guests/hostile`: one attack on the host per function.
    pub const HOSTILE: &str = env!("HOSTILE_WASM");
    /// `tests/guests/trap-start`: a component whose constructor traps.
    pub const TRAP_START: &str = env!("TRAP_START_WASM");
    /// `tests/guests/foreign-import`: imports `acme:vault/secrets`.
    pub const FOREIGN_IMPORT: &str = env!("FOREIGN_IMPORT_WASM");
    /// `tests/guests/order-compatible`: a next version of process-order
    /// that replays its runs.
    pub const ORDER_COMPATIBLE: &str = env!("ORDER_COMPATIBLE_WASM");
    /// `tests/guests/order-breaking`: a next version of process-order that
    /// diverges from its runs.
    pub const ORDER_BREAKING: &str = env!("ORDER_BREAKING_WASM");
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
