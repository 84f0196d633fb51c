//! Inngest's loop pattern: one step per item, each with an id built from the
//! item, so that every item is processed once however often the run replays.
//!
//! Send `batch/items.received` with `{"items": [{"id": "a", "qty": 2}, ...]}`.

use serde::{Deserialize, Serialize};
use stepwise_sdk::{App, Ctx, Error, Function, export_app};

fn app() -> App {
    App::new().function(
        Function::new("fan-out-loop")
            .name("Process every item")
            .on_event("batch/items.received"),
        process_items,
    )
}

export_app!(app);

#[derive(Debug, Deserialize)]
struct Batch {
    items: Vec<Item>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    id: String,
    #[serde(default = "one")]
    qty: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Serialize, Deserialize)]
struct Processed {
    id: String,
    units: u32,
}

#[derive(Debug, Serialize)]
struct Summary {
    items: usize,
    units: u32,
}

fn process_items(ctx: Ctx<Batch>) -> Result<Summary, Error> {
    let mut units = 0;
    for item in &ctx.event.data.items {
        // A dynamic id per item keeps ids unique and stable across replays.
        let done: Processed = ctx
            .step
            .run(&format!("process-item-{}", item.id), || process(item))?;
        units += done.units;
    }
    // A summary step after the loop; a repeated id would get `:1`, `:2`.
    ctx.step.run("report", || {
        println!(
            "processed {} items, {units} units",
            ctx.event.data.items.len()
        );
        Ok::<_, Error>(())
    })?;
    Ok(Summary {
        items: ctx.event.data.items.len(),
        units,
    })
}

fn process(item: &Item) -> Result<Processed, Error> {
    Ok(Processed {
        id: item.id.clone(),
        units: item.qty,
    })
}
