// The benchmark's ten-step function, in JavaScript (the probe's `ten-steps`).
import { Inngest, serve } from "stepwise";

const inngest = new Inngest({ id: "bench-js" });

export const tenSteps = inngest.createFunction({ id: "ten-steps" }, { event: "bench/ten-steps" }, async ({ step }) => {
  let total = 0;
  for (let i = 0; i < 10; i++) {
    total += await step.run(`step-${i}`, () => i);
  }
  return total;
});

export default serve({ client: inngest, functions: [tenSteps] });
