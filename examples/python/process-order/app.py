"""Inngest's process-order pattern in Python, the same as examples/process-order.

Build: stepwise build examples/python/process-order/app.py
Deploy: stepwise deploy examples/python/process-order/app.wasm --app process-order-py
"""

from stepwise import App, NonRetriableError

app = App("process-order-py")


def db_get_user(user_id):
    """Stands in for a database read."""
    if not user_id:
        raise NonRetriableError("the order has no userId")
    return {"id": user_id, "name": f"User {user_id}", "email": f"{user_id}@example.com"}


def cancel(order_id, user):
    return {"order_id": order_id, "status": "cancelled", "detail": f"no payment arrived; {user['email']} notified"}


def ship(order_id, user, payment):
    amount = payment.get("amount")
    return {"order_id": order_id, "status": "shipped", "detail": f"paid {json_number(amount)}; shipping to {user['name']}"}


def json_number(value):
    # Match the Rust example's rendering of the amount (JSON text).
    return "null" if value is None else str(value)


@app.function(id="process-order-py", name="Process order (Python)", event="shop/order.created", retries=3)
def process_order(ctx):
    order = ctx.event.data
    step = ctx.step

    # 1. Step: load the user (retried with backoff if it fails).
    user = step.run("get-user", lambda: db_get_user(order["userId"]))

    # 2. Durable pause: no instance stays in memory while the run sleeps.
    step.sleep("wait-for-payment", order.get("paymentDelay", "1h"))

    # 3. Wait for the payment of this order (same `data.orderId`).
    payment = step.wait_for_event(
        "wait-payment",
        event="shop/payment.success",
        match="data.orderId",
        timeout=order.get("paymentTimeout", "24h"),
    )

    # 4. Branch on the outcome.
    if payment is None:
        outcome = step.run("cancel-order", lambda: cancel(order["orderId"], user))
    else:
        outcome = step.run("ship-order", lambda: ship(order["orderId"], user, payment.data))
    print(f"order {outcome['order_id']} {outcome['status']}")
    return outcome
