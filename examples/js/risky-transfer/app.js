// Inngest's failure-handler pattern in JavaScript, the same as
// examples/risky-transfer: roll back a transfer that failed for good.
//
// `bank/transfer.init` with {"transferId": "t-1", "amount": 50} runs
// `risky-transfer-js`: it debits the source, then credits the destination.
// With "failCredit": true the credit fails on every attempt; after its retry
// the run fails, and `onFailure` runs as a run of its own: it reverses the
// debit and notifies an admin, each a durable step.
import { Inngest, serve } from "stepwise";

const inngest = new Inngest({ id: "risky-transfer-js" });

export const riskyTransfer = inngest.createFunction(
  {
    id: "risky-transfer-js",
    name: "Risky transfer (JavaScript)",
    retries: 1,
    onFailure: async ({ error, originalEvent, step }) => {
      const original = originalEvent.data;
      const reversed = await step.run("rollback-funds", () => ({
        amount: original.amount ?? null,
        reversed: original.transferId ?? null,
      }));
      const message = `Transfer failed: ${error.message}`;
      const alert = await step.run("notify-admin", () => ({ alert: message }));
      return { notified: alert, rolled_back: reversed };
    },
  },
  { event: "bank/transfer.init" },
  async ({ event, step }) => {
    const data = event.data;
    const debited = await step.run("debit-source", () => ({
      debited: data.amount ?? null,
      transferId: data.transferId ?? null,
    }));
    const credited = await step.run("credit-destination", () => {
      if (data.failCredit === true) throw new Error("the destination bank is unavailable");
      return { credited: data.amount ?? null, transferId: data.transferId ?? null };
    });
    return { credited, debited };
  },
);

export default serve({ client: inngest, functions: [riskyTransfer] });
