// Inngest's loop pattern in JavaScript, the same as examples/fan-out-loop:
// one step per item, each with an id built from the item.
//
// Send `batch/items.received` with `{"items": [{"id": "a", "qty": 2}, ...]}`.
import { Inngest, serve } from "stepwise";

const inngest = new Inngest({ id: "fan-out-loop-js" });

export const processItems = inngest.createFunction(
  { id: "fan-out-loop-js", name: "Process every item (JavaScript)" },
  { event: "batch/items.received" },
  async ({ event, step }) => {
    const items = event.data.items;
    let units = 0;
    for (const item of items) {
      // A dynamic id per item keeps ids unique and stable across replays.
      const done = await step.run(`process-item-${item.id}`, () => ({ id: item.id, units: item.qty ?? 1 }));
      units += done.units;
    }
    await step.run("report", () => {
      console.log(`processed ${items.length} items, ${units} units`);
    });
    return { items: items.length, units };
  },
);

export default serve({ client: inngest, functions: [processItems] });
