// Sends events to a Stepwise host with Inngest's own JavaScript client, as an
// existing Inngest app would after pointing it at Stepwise.
//
// With STEPWISE_URL and STEPWISE_KEY set it configures the client in code
// (baseUrl, eventKey, isDev: false); without them it relies on Inngest's
// environment variables (INNGEST_BASE_URL, INNGEST_EVENT_KEY, INNGEST_DEV=0).
// Prints the client's answers as JSON: {"one": ..., "batch": ...}.
import { Inngest } from "inngest";

const options = process.env.STEPWISE_URL
  ? { id: "stepwise-client-test", baseUrl: process.env.STEPWISE_URL, eventKey: process.env.STEPWISE_KEY, isDev: false }
  : { id: "stepwise-client-test" };
const inngest = new Inngest(options);

const one = await inngest.send({ name: "batch/items.received", data: { items: [{ id: "a", qty: 2 }] } });
const batch = await inngest.send([
  { name: "batch/items.received", data: { items: [{ id: "b" }] } },
  { name: "batch/items.received", data: { items: [{ id: "c" }] }, id: "inngest-dedupe-1" },
  { name: "batch/items.received", data: { items: [{ id: "c" }] }, id: "inngest-dedupe-1" },
]);
console.log(JSON.stringify({ one, batch }));
