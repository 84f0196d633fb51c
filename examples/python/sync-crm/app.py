"""Inngest's rate-limit and throttle pattern in Python, the same as
examples/sync-crm: keep a third-party API (a CRM) within its limits.

`crm/contact.updated` with {"userId": "u-1", "contactId": "c-1"} runs
`sync-crm-py`. At most 10 runs per minute per user are accepted (the rest are
recorded as skipped), and at most 5 runs start per second across all users
(the rest wait their turn). With a `url` in the data the step GETs
`{url}/crm/{contactId}` with `stepwise.http` (a step body is the only place
where the network is open); without one it returns what it would have synced.
"""

from stepwise import App, RateLimit, Throttle, http

app = App("sync-crm-py")


class Error(Exception):
    """A retriable failure (named like the Rust SDK's default error)."""


@app.function(
    id="sync-crm-py",
    name="Sync CRM contact (Python)",
    event="crm/contact.updated",
    rate_limit=RateLimit(10, "1m", key="event.data.userId"),
    throttle=Throttle(5, "1s"),
)
def sync_crm(ctx):
    data = ctx.event.data
    contact, user, url = data["contactId"], data["userId"], data.get("url")

    def sync_contact():
        if url is None:
            return {"contact": contact, "crm": 200, "user": user}
        response = http.get(f"{url}/crm/{contact}")
        if response.status >= 400:
            raise Error(f"the CRM answered HTTP {response.status}")
        return {"contact": contact, "crm": response.status, "user": user}

    return {"synced": ctx.step.run("sync-contact", sync_contact)}
