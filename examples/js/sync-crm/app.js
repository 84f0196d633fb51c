// Inngest's rate-limit and throttle pattern in JavaScript, the same as
// examples/sync-crm: keep a third-party API (a CRM) within its limits.
//
// `crm/contact.updated` with {"userId": "u-1", "contactId": "c-1"} runs
// `sync-crm-js`. At most 10 runs per minute per user are accepted (the rest
// are recorded as skipped), and at most 5 runs start per second across all
// users (the rest wait their turn). With a `url` in the data the step GETs
// `{url}/crm/{contactId}` with fetch (a step body is the only place where the
// network is open); without one it returns what it would have synced.
import { Inngest, serve } from "stepwise";

const inngest = new Inngest({ id: "sync-crm-js" });

export const syncCrm = inngest.createFunction(
  {
    id: "sync-crm-js",
    name: "Sync CRM contact (JavaScript)",
    rateLimit: { limit: 10, period: "1m", key: "event.data.userId" },
    throttle: { limit: 5, period: "1s" },
  },
  { event: "crm/contact.updated" },
  async ({ event, step }) => {
    const { contactId, userId, url } = event.data;
    const synced = await step.run("sync-contact", async () => {
      if (url === undefined || url === null) return { contact: contactId, crm: 200, user: userId };
      const response = await fetch(`${url}/crm/${contactId}`);
      if (response.status >= 400) throw new Error(`the CRM answered HTTP ${response.status}`);
      return { contact: contactId, crm: response.status, user: userId };
    });
    return { synced };
  },
);

export default serve({ client: inngest, functions: [syncCrm] });
