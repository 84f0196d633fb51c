//! A component that imports an interface the host does not provide
//! (`acme:vault/secrets`): the host must refuse it at upload, naming it.

use stepwise_sdk::{App, Ctx, Error, Function, export_app};

mod vault {
    wit_bindgen::generate!({
        inline: "package acme:vault; interface secrets { get: func(name: string) -> string; } world vault { import secrets; }",
    });
}

fn app() -> App {
    App::new().function(Function::new("peek").on_event("vault/peek"), peek)
}

export_app!(app);

fn peek(ctx: Ctx) -> Result<String, Error> {
    ctx.step
        .run("peek", || Ok::<_, Error>(vault::acme::vault::secrets::get("root")))
}
