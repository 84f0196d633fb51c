// A cron function that sends an event and invokes another function, in
// JavaScript, the same as examples/daily-digest.
//
// `daily-digest-js` runs every day at 09:00 in Paris (a run missed while the
// host was down starts once when it comes back) and on demand with
// `digest/requested`. It collects the day's figures, announces them with
// `step.sendEvent` (sent once, whatever the replays) and has
// `render-digest-js` turn them into text with `step.invoke`, waiting for its
// result.
import { Inngest, serve } from "stepwise";

const inngest = new Inngest({ id: "daily-digest-js" });

/** `data.orders` if it is a whole number of orders, else 0. */
function orderCount(event) {
  const orders = event.data && event.data.orders;
  return Number.isInteger(orders) && orders >= 0 ? orders : 0;
}

export const renderDigest = inngest.createFunction(
  { id: "render-digest-js" },
  { event: "digest/render" },
  async ({ event, step }) => {
    const orders = orderCount(event);
    return step.run("render", () => `${orders} orders today`);
  },
);

export const dailyDigest = inngest.createFunction(
  { id: "daily-digest-js", name: "Daily digest (JavaScript)" },
  [{ cron: "TZ=Europe/Paris 0 9 * * *" }, { event: "digest/requested" }],
  async ({ event, step }) => {
    const orders = orderCount(event);
    const stats = await step.run("collect-stats", () => ({ orders, source: event.name }));
    const { ids } = await step.sendEvent("announce", [{ name: "digest/ready", data: { orders } }]);
    const digest = await step.invoke("render", { function: renderDigest, data: stats, timeout: "1m" });
    return { announced: ids.length, digest };
  },
);

export default serve({ client: inngest, functions: [dailyDigest, renderDigest] });
