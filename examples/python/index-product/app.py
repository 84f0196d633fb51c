"""Inngest's debounce pattern in Python, the same as examples/index-product:
re-index a product once its edits settle.

Every `product/updated` with {"productId": "p-1", ...} pushes the run of
`index-product-py` for that product back by 10 seconds (up to a minute after
the first edit); the one run gets the last event, so it indexes the latest
data.
"""

from stepwise import App, Debounce

app = App("index-product-py")


@app.function(
    id="index-product-py",
    name="Index product (Python)",
    event="product/updated",
    debounce=Debounce("10s", key="event.data.productId", timeout="1m"),
)
def index_product(ctx):
    product = ctx.event.data
    indexed = ctx.step.run(
        "index",
        lambda: {"events": 1, "name": product.get("name"), "productId": product.get("productId")},
    )
    return {"indexed": indexed}
