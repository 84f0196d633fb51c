//! Inngest's debounce pattern: re-index a product once its edits settle.
//!
//! Every `product/updated` with `{"productId": "p-1", ...}` pushes the run of
//! `index-product` for that product back by 10 seconds (up to a minute after
//! the first edit); the one run gets the last event, so it indexes the
//! latest data.

use serde_json::{Value, json};
use stepwise_sdk::{App, Ctx, Debounce, Error, Function, export_app};

fn app() -> App {
    App::new().function(
        Function::new("index-product")
            .name("Index product")
            .on_event("product/updated")
            .debounce(
                Debounce::new("10s")
                    .key("event.data.productId")
                    .timeout("1m"),
            ),
        index_product,
    )
}

export_app!(app);

fn index_product(ctx: Ctx) -> Result<Value, Error> {
    let product = ctx.event.data.clone();
    let indexed: Value = ctx.step.run("index", || {
        Ok::<_, Error>(json!({
            "productId": product["productId"],
            "name": product["name"],
            "events": 1,
        }))
    })?;
    Ok(json!({"indexed": indexed}))
}
