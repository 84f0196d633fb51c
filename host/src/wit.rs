//! Host bindings of the `stepwise:durable/app` world, generated from `wit/`:
//! the executor implements the imports and calls the exports with them, and
//! registration reads the function configs they describe.
//!
//! Every import is async (it may wait for a group commit) and trappable
//! (suspending a run unwinds the guest with a trap carrying a marker).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "app",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use stepwise::durable::{step, types};
