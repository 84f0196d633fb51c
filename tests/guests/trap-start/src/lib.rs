//! A component whose static constructor traps: the host must refuse it at
//! upload with a clear error, before any run exists.

use stepwise_sdk::{App, Ctx, Error, Function, export_app};

extern "C" fn explode() {
    std::process::abort();
}

/// Runs before any export (wasm-ld calls `.init_array` from
/// `__wasm_call_ctors`, which the bindings call first).
#[used]
#[unsafe(link_section = ".init_array")]
static EXPLODE_AT_START: extern "C" fn() = explode;

fn app() -> App {
    App::new().function(Function::new("never").on_event("never/happens"), never)
}

export_app!(app);

fn never(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}
