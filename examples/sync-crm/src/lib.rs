//! Inngest's rate-limit and throttle pattern: keep a third-party API (a CRM)
//! within its limits.
//!
//! `crm/contact.updated` with `{"userId": "u-1", "contactId": "c-1"}` runs
//! `sync-crm`. At most 10 runs per minute per user are accepted (`rateLimit`:
//! the rest are recorded as skipped, not queued), and at most 5 runs start
//! per second across all users (`throttle`: the rest wait their turn, first
//! in first out). With a `url` in the data the step GETs
//! `{url}/crm/{contactId}` (tests count those calls); without one it returns
//! what it would have synced.

use serde::Deserialize;
use serde_json::{Value, json};
use stepwise_sdk::{App, Ctx, Error, Function, RateLimit, Throttle, export_app, http};

fn app() -> App {
    App::new().function(
        Function::new("sync-crm")
            .name("Sync CRM contact")
            .on_event("crm/contact.updated")
            .rate_limit(RateLimit::new(10, "1m").key("event.data.userId"))
            .throttle(Throttle::new(5, "1s")),
        sync_crm,
    )
}

export_app!(app);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContactUpdated {
    user_id: String,
    contact_id: String,
    #[serde(default)]
    url: Option<String>,
}

fn sync_crm(ctx: Ctx<ContactUpdated>) -> Result<Value, Error> {
    let data = &ctx.event.data;
    let synced: Value = ctx.step.run("sync-contact", || match &data.url {
        Some(url) => {
            let response = http::get(&format!("{url}/crm/{}", data.contact_id))?;
            if response.status >= 400 {
                return Err(Error::new(format!("the CRM answered HTTP {}", response.status)));
            }
            Ok(json!({"contact": data.contact_id, "user": data.user_id, "crm": response.status}))
        }
        None => Ok(json!({"contact": data.contact_id, "user": data.user_id, "crm": 200})),
    })?;
    Ok(json!({"synced": synced}))
}
