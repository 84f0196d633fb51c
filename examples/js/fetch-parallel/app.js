// Inngest's parallelism pattern in JavaScript, the same as
// examples/fetch-parallel: fetch several things at once.
//
// `fetch/requested` with {"items": ["a", "b", "c"]} runs `fetch-parallel-js`:
// one step per item, all at once (`Promise.all` over `step.run`). Each branch
// runs in an instance of its own, on whichever core is free, and retries on
// its own if it fails; then `combine` sums the results. With a `url` in the
// data each branch GETs `{url}/fetch/{item}`; without one it measures the
// item's name.
import { Inngest, serve } from "stepwise";

const inngest = new Inngest({ id: "fetch-parallel-js" });

/** Bytes of a string in UTF-8, as the Rust example measures it. */
const byteLength = (text) => new TextEncoder().encode(text).length;

async function fetchItem(url, item) {
  if (url === undefined || url === null) return { item, size: byteLength(item) };
  const response = await fetch(`${url}/fetch/${item}`);
  if (response.status >= 400) throw new Error(`fetching ${item}: HTTP ${response.status}`);
  return { item, size: byteLength(await response.text()) };
}

export const fetchParallel = inngest.createFunction(
  { id: "fetch-parallel-js", name: "Fetch in parallel (JavaScript)", retries: 2 },
  { event: "fetch/requested" },
  async ({ event, step }) => {
    const { items, url } = event.data;
    const fetched = await Promise.all(items.map((item) => step.run(`fetch-${item}`, () => fetchItem(url, item))));
    const total = await step.run("combine", () => fetched.reduce((sum, f) => sum + f.size, 0));
    return { fetched, total };
  },
);

export default serve({ client: inngest, functions: [fetchParallel] });
