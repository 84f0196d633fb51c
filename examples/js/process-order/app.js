// Inngest's process-order pattern in JavaScript, the same as
// examples/process-order (Rust) and examples/python/process-order.
//
// Build:  stepwise build examples/js/process-order/app.js
// Deploy: stepwise deploy examples/js/process-order/app.wasm --app process-order-js
import { Inngest, NonRetriableError, serve } from "stepwise";

const inngest = new Inngest({ id: "process-order-js" });

/** Stands in for a database read. */
function dbGetUser(userId) {
  if (!userId) throw new NonRetriableError("the order has no userId");
  return { id: userId, name: `User ${userId}`, email: `${userId}@example.com` };
}

function cancel(orderId, user) {
  return { order_id: orderId, status: "cancelled", detail: `no payment arrived; ${user.email} notified` };
}

function ship(orderId, user, payment) {
  const amount = payment.amount === undefined ? null : payment.amount;
  return { order_id: orderId, status: "shipped", detail: `paid ${JSON.stringify(amount)}; shipping to ${user.name}` };
}

export const processOrder = inngest.createFunction(
  { id: "process-order-js", name: "Process order (JavaScript)", retries: 3 },
  { event: "shop/order.created" },
  async ({ event, step }) => {
    const order = event.data;

    // 1. Step: load the user (retried with backoff if it fails).
    const user = await step.run("get-user", () => dbGetUser(order.userId));

    // 2. Durable pause: no instance stays in memory while the run sleeps.
    await step.sleep("wait-for-payment", order.paymentDelay ?? "1h");

    // 3. Wait for the payment of this order (same `data.orderId`).
    const payment = await step.waitForEvent("wait-payment", {
      event: "shop/payment.success",
      match: "data.orderId",
      timeout: order.paymentTimeout ?? "24h",
    });

    // 4. Branch on the outcome.
    const outcome = payment
      ? await step.run("ship-order", () => ship(order.orderId, user, payment.data))
      : await step.run("cancel-order", () => cancel(order.orderId, user));
    console.log(`order ${outcome.order_id} ${outcome.status}`);
    return outcome;
  },
);

export default serve({ client: inngest, functions: [processOrder] });
