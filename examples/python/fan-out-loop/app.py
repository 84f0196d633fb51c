"""Inngest's loop pattern in Python, the same as examples/fan-out-loop: one
step per item, each with an id built from the item.

Send `batch/items.received` with `{"items": [{"id": "a", "qty": 2}, ...]}`.
"""

from stepwise import App

app = App("fan-out-loop-py")


@app.function(id="fan-out-loop-py", name="Process every item (Python)", event="batch/items.received")
def process_items(ctx):
    items = ctx.event.data["items"]
    units = 0
    for item in items:
        # A dynamic id per item keeps ids unique and stable across replays.
        done = ctx.step.run(f"process-item-{item['id']}", lambda: {"id": item["id"], "units": item.get("qty", 1)})
        units += done["units"]

    def report():
        print(f"processed {len(items)} items, {units} units")

    ctx.step.run("report", report)
    return {"items": len(items), "units": units}
