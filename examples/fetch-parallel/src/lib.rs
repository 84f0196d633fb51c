//! Inngest's parallelism pattern: fetch several things at once.
//!
//! `fetch/requested` with `{"items": ["a", "b", "c"]}` runs `fetch-parallel`:
//! one step per item, all at once (`step.parallel`, Inngest's `Promise.all`
//! over steps). Each branch runs in an instance of its own, on whichever
//! core is free, and retries on its own if it fails; then `combine` sums
//! the results. With a `url` in the data each branch GETs `{url}/fetch/{item}`
//! (tests watch them overlap); without one it measures the item's name.

use serde::Deserialize;
use serde_json::{Value, json};
use stepwise_sdk::{App, Ctx, Error, Function, export_app, http};

fn app() -> App {
    App::new().function(
        Function::new("fetch-parallel")
            .name("Fetch in parallel")
            .on_event("fetch/requested")
            .retries(2),
        fetch_parallel,
    )
}

export_app!(app);

#[derive(Debug, Deserialize)]
struct FetchRequested {
    items: Vec<String>,
    #[serde(default)]
    url: Option<String>,
}

fn fetch(url: Option<&str>, item: &str) -> Result<Value, Error> {
    match url {
        Some(url) => {
            let response = http::get(&format!("{url}/fetch/{item}"))?;
            if response.status >= 400 {
                return Err(Error::new(format!("fetching {item}: HTTP {}", response.status)));
            }
            Ok(json!({"item": item, "size": response.text()?.len()}))
        }
        None => Ok(json!({"item": item, "size": item.len()})),
    }
}

fn fetch_parallel(ctx: Ctx<FetchRequested>) -> Result<Value, Error> {
    let data = &ctx.event.data;
    let url = data.url.as_deref();
    let fetched = ctx.step.parallel(
        data.items
            .iter()
            .map(|item| (format!("fetch-{item}"), move || fetch(url, item))),
    );
    let fetched = fetched.into_iter().collect::<Result<Vec<Value>, Error>>()?;
    let total: u64 = ctx.step.run("combine", || {
        Ok::<_, Error>(fetched.iter().filter_map(|f| f["size"].as_u64()).sum::<u64>())
    })?;
    Ok(json!({"fetched": fetched, "total": total}))
}
