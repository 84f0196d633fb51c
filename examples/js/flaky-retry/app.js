// Retries in JavaScript, the same as examples/flaky-retry: `flaky-charge-js`'s
// step fails on attempts 0 and 1 and succeeds on attempt 2;
// `strict-validate-js`'s step throws NonRetriableError and stops at once.
import { Inngest, NonRetriableError, serve } from "stepwise";

const inngest = new Inngest({ id: "flaky-retry-js" });

export const flakyCharge = inngest.createFunction(
  { id: "flaky-charge-js", retries: 4 },
  { event: "flaky/charge.requested" },
  async ({ step, attempt }) => {
    const chargedOn = await step.run("charge", () => {
      if (attempt < 2) {
        console.error(`charge failed on attempt ${attempt}`);
        throw new Error(`payment gateway unavailable (attempt ${attempt})`);
      }
      return attempt;
    });
    return { charged_on_attempt: chargedOn };
  },
);

export const strictValidate = inngest.createFunction(
  { id: "strict-validate-js", retries: 4 },
  { event: "flaky/validate.requested" },
  async ({ event, step }) =>
    step.run("validate", () => {
      throw new NonRetriableError(`invalid payload: ${JSON.stringify(event.data)}`);
    }),
);

export default serve({ client: inngest, functions: [flakyCharge, strictValidate] });
