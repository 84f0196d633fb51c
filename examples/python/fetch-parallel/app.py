"""Inngest's parallelism pattern in Python, the same as
examples/fetch-parallel: fetch several things at once.

`fetch/requested` with {"items": ["a", "b", "c"]} runs `fetch-parallel-py`:
one step per item, all at once (`step.parallel`). Each branch runs in an
instance of its own, on whichever core is free, and retries on its own if it
fails; then `combine` sums the results. With a `url` in the data each branch
GETs `{url}/fetch/{item}`; without one it measures the item's name.
"""

from stepwise import App, http

app = App("fetch-parallel-py")


class Error(Exception):
    """A retriable failure (named like the Rust SDK's default error)."""


def fetch(url, item):
    if url is None:
        return {"item": item, "size": len(item.encode())}
    response = http.get(f"{url}/fetch/{item}")
    if response.status >= 400:
        raise Error(f"fetching {item}: HTTP {response.status}")
    return {"item": item, "size": len(response.text().encode())}


@app.function(id="fetch-parallel-py", name="Fetch in parallel (Python)", event="fetch/requested", retries=2)
def fetch_parallel(ctx):
    data = ctx.event.data
    url = data.get("url")
    # `item=item` binds each branch to its own item.
    fetched = ctx.step.parallel([(f"fetch-{item}", lambda item=item: fetch(url, item)) for item in data["items"]])
    total = ctx.step.run("combine", lambda: sum(f["size"] for f in fetched))
    return {"fetched": fetched, "total": total}
