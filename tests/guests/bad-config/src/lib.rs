//! An app whose registration holds an expression that does not parse: the
//! host must refuse it at upload, naming the function, the option, the
//! expression and the parse error.

use stepwise_sdk::{App, Ctx, Error, Function, export_app};

fn app() -> App {
    App::new().function(
        Function::new("broken-priority")
            .on_event("bad/thing")
            .priority("event.data.plan == ? 100 : 0"),
        handler,
    )
}

export_app!(app);

fn handler(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}
