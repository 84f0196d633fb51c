// Inngest's priority pattern in JavaScript, the same as
// examples/generate-report: enterprise customers' reports go first.
//
// `report/requested` with {"account": "a-1", "plan": "enterprise"} runs
// `generate-report-js`. Reports are built one at a time (concurrency 1), so
// a queue forms under load; `priority.run` gives enterprise requests 100
// seconds of head start in it, so they overtake waiting free ones.
import { Inngest, serve } from "stepwise";

const inngest = new Inngest({ id: "generate-report-js" });

export const generateReport = inngest.createFunction(
  {
    id: "generate-report-js",
    name: "Generate report (JavaScript)",
    concurrency: 1,
    priority: { run: "event.data.plan == 'enterprise' ? 100 : 0" },
  },
  { event: "report/requested" },
  async ({ event, step }) => {
    const data = event.data;
    const report = await step.run("build-report", () => ({ account: data.account ?? null, plan: data.plan ?? null }));
    return { report };
  },
);

export default serve({ client: inngest, functions: [generateReport] });
