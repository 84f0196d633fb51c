"""A cron function that sends an event and invokes another function, in
Python, the same as examples/daily-digest.

`daily-digest-py` runs every day at 09:00 in Paris (a run missed while the
host was down starts once when it comes back) and on demand with
`digest/requested`. It collects the day's figures, announces them with
`step.send_event` (sent once, whatever the replays) and has
`render-digest-py` turn them into text with `step.invoke`, waiting for its
result.
"""

from stepwise import App, TriggerCron, TriggerEvent

app = App("daily-digest-py")


def order_count(event):
    """`data.orders` if it is a whole number of orders, else 0."""
    orders = event.data.get("orders") if isinstance(event.data, dict) else None
    return orders if isinstance(orders, int) and not isinstance(orders, bool) and orders >= 0 else 0


@app.function(
    id="daily-digest-py",
    name="Daily digest (Python)",
    trigger=[TriggerCron(cron="TZ=Europe/Paris 0 9 * * *"), TriggerEvent(event="digest/requested")],
)
def daily_digest(ctx):
    orders = order_count(ctx.event)
    stats = ctx.step.run("collect-stats", lambda: {"orders": orders, "source": ctx.event.name})
    sent = ctx.step.send_event("announce", [{"name": "digest/ready", "data": {"orders": orders}}])
    text = ctx.step.invoke("render", function="render-digest-py", data=stats, timeout="1m")
    return {"announced": len(sent), "digest": text}


@app.function(id="render-digest-py", event="digest/render")
def render_digest(ctx):
    orders = order_count(ctx.event)
    return ctx.step.run("render", lambda: f"{orders} orders today")
