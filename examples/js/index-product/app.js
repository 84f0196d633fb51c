// Inngest's debounce pattern in JavaScript, the same as examples/index-product:
// re-index a product once its edits settle.
//
// Every `product/updated` with {"productId": "p-1", ...} pushes the run of
// `index-product-js` for that product back by 10 seconds (up to a minute
// after the first edit); the one run gets the last event, so it indexes the
// latest data.
import { Inngest, serve } from "stepwise";

const inngest = new Inngest({ id: "index-product-js" });

export const indexProduct = inngest.createFunction(
  {
    id: "index-product-js",
    name: "Index product (JavaScript)",
    debounce: { period: "10s", key: "event.data.productId", timeout: "1m" },
  },
  { event: "product/updated" },
  async ({ event, step }) => {
    const product = event.data;
    const indexed = await step.run("index", () => ({
      events: 1,
      name: product.name ?? null,
      productId: product.productId ?? null,
    }));
    return { indexed };
  },
);

export default serve({ client: inngest, functions: [indexProduct] });
