// What the sandbox shows a JavaScript guest outside steps: the run's
// logical time, and random numbers that differ per run but repeat on every
// replay (the sleep forces one); and fetch, refused outside steps.
import { Inngest, serve } from "stepwise";

const inngest = new Inngest({ id: "sandbox-js" });

export const check = inngest.createFunction({ id: "sandbox" }, { event: "sandbox/check" }, async ({ event, step }) => {
  const clock = Date.now();
  const number = crypto.getRandomValues(new Uint32Array(1))[0];
  await step.run(`random-${number}`, () => number);
  await step.sleep("nap", "200ms");
  let outside;
  try {
    await fetch(event.data.url);
    outside = "reached";
  } catch (error) {
    outside = String(error && (error.message || error));
  }
  return { clock, random: number, outside };
});

export default serve({ client: inngest, functions: [check] });
