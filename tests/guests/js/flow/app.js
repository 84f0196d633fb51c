// The `tests/guests/flow` app in JavaScript: one function per feature of
// Inngest's function model, with the same function ids, events, step ids and
// outputs as the Rust guest, so that the conformance tests can compare the
// journals the three languages leave (`burn`, the benchmark's, is left out).
//
// Every step body that matters calls `{url}/step/{run}/{step}` on the test's
// loopback server (when the event carries a `url`).
//
// Where JavaScript differs from Rust: `step.parallel` is `Promise.allSettled`
// over step.runs made in one tick (each branch's result, as Rust's
// `Vec<Result>`), and `step.join` is `Promise.all` over two step.runs.
import { Inngest, NonRetriableError, StepError, serve } from "stepwise";

const inngest = new Inngest({ id: "flow" });

/** Calls the loopback server for this step, if the event names one. */
async function call({ event, runId }, step) {
  const url = event.data.url;
  if (typeof url !== "string") return step;
  const response = await fetch(`${url}/step/${runId}/${step}`);
  if (response.status >= 200 && response.status <= 299) return response.json();
  throw new Error(`HTTP ${response.status}`);
}

/** `value` if it is a whole number (serde_json's `as_i64`), else `fallback`. */
const whole = (value, fallback) => (Number.isInteger(value) ? value : fallback);

const oneStep = async (ctx) => ctx.step.run("work", () => call(ctx, "work"));

const twoSteps = async (ctx) => {
  const a = await ctx.step.run("a", () => call(ctx, "a"));
  const b = await ctx.step.run("b", () => call(ctx, "b"));
  return [a, b];
};

const echo = async ({ event, step }) => step.run("echo", () => event.data);

const countEvents = async ({ events, step }) => {
  const ids = events.map((e) => e.data.n ?? null);
  return step.run("count", () => ids);
};

/** A step, then a long sleep: a run that stays active. */
const nap = async (ctx) => {
  const first = await ctx.step.run("before", () => call(ctx, "before"));
  await ctx.step.sleep("nap", "10m");
  return first;
};

const limited = inngest.createFunction({ id: "limited", concurrency: 2 }, { event: "flow/limited" }, twoSteps);

const keyed = inngest.createFunction(
  { id: "keyed", concurrency: { limit: 1, key: "event.data.user" } },
  { event: "flow/keyed" },
  oneStep,
);

const throttled = inngest.createFunction(
  { id: "throttled", throttle: { limit: 2, period: "2s" } },
  { event: "flow/throttled" },
  oneStep,
);

const debounced = inngest.createFunction(
  { id: "debounced", debounce: { period: "1s", key: "event.data.id", timeout: "4s" } },
  { event: "flow/debounced" },
  echo,
);

const batched = inngest.createFunction(
  { id: "batched", batchEvents: { maxSize: 3, timeout: "1s" } },
  { event: "flow/batched" },
  countEvents,
);

const idempotent = inngest.createFunction(
  { id: "idempotent", idempotency: "event.data.orderId" },
  { event: "flow/idempotent" },
  echo,
);

const singleSkip = inngest.createFunction(
  { id: "single-skip", singleton: { key: "event.data.id", mode: "skip" } },
  { event: "flow/single-skip" },
  nap,
);

const singleCancel = inngest.createFunction(
  { id: "single-cancel", singleton: { key: "event.data.id", mode: "cancel" } },
  { event: "flow/single-cancel" },
  nap,
);

const cancellable = inngest.createFunction(
  {
    id: "cancellable",
    cancelOn: [
      { event: "flow/cancel", match: "data.id" },
      { event: "flow/cancel-if", if: "async.data.reason == 'fraud' && async.data.id == event.data.id" },
    ],
  },
  { event: "flow/cancellable" },
  nap,
);

const slowStart = inngest.createFunction(
  { id: "slow-start", concurrency: 1, timeouts: { start: "1s" } },
  { event: "flow/slow-start" },
  oneStep,
);

const slowFinish = inngest.createFunction(
  { id: "slow-finish", timeouts: { finish: "1s" } },
  { event: "flow/slow-finish" },
  nap,
);

const ranked = inngest.createFunction(
  { id: "ranked", concurrency: 1, priority: { run: "event.data.vip ? 60 : 0" } },
  { event: "flow/ranked" },
  oneStep,
);

const filtered = inngest.createFunction(
  { id: "filtered" },
  [{ event: "flow/filtered", if: "event.data.n > 5" }, { event: "flow/any" }],
  echo,
);

const parent = inngest.createFunction({ id: "parent" }, { event: "flow/parent" }, async ({ event, step }) => {
  const { timeout } = event.data;
  try {
    const output = await step.invoke("call-child", {
      function: "child",
      data: event.data,
      timeout: typeof timeout === "string" ? timeout : undefined,
    });
    return { child: output };
  } catch (error) {
    if (!(error instanceof StepError)) throw error;
    return { child_error: error.message };
  }
});

const child = inngest.createFunction({ id: "child", retries: 0 }, { event: "flow/child" }, async ({ event, step }) => {
  const data = event.data;
  if (typeof data.sleep === "string") await step.sleep("slow", data.sleep);
  const n = whole(data.n, 0);
  const fail = data.fail === true;
  return step.run("double", () => {
    if (fail) throw new NonRetriableError("the child was told to fail");
    return n * 2;
  });
});

const sender = inngest.createFunction({ id: "sender" }, { event: "flow/send" }, async (ctx) => {
  const n = ctx.event.data.n ?? null;
  const { ids } = await ctx.step.sendEvent("announce", [
    { name: "flow/sent", data: { n, copy: 1 } },
    { name: "flow/sent", data: { n, copy: 2 } },
  ]);
  // A step after the send: a crash or a retry here replays the send from
  // the journal instead of sending again.
  const after = await ctx.step.run("after", () => call(ctx, "after"));
  return { ids, after };
});

const received = inngest.createFunction({ id: "received" }, { event: "flow/sent" }, echo);

const waitIf = inngest.createFunction({ id: "wait-if" }, { event: "flow/wait-if" }, async ({ step }) => {
  const paid = await step.waitForEvent("big-payment", {
    event: "flow/paid",
    match: "data.order",
    if: "async.data.amount >= event.data.total",
    timeout: "1m",
  });
  return paid ? paid.data : null;
});

const fails = inngest.createFunction(
  {
    id: "fails",
    retries: 0,
    onFailure: async ({ error, event, originalEvent, step }) => {
      const original = originalEvent.data;
      const failedRun = event.data.run_id ?? null;
      return step.run("cleanup", () => ({ id: original.id ?? null, failed_run: failedRun, error: error.message }));
    },
  },
  { event: "flow/fails" },
  async ({ event, step }) =>
    step.run("doomed", () => {
      throw new Error(`failing for ${JSON.stringify(event.data.id ?? null)}`);
    }),
);

const watchFailures = inngest.createFunction(
  { id: "watch-failures" },
  { event: "inngest/function.failed", if: "event.data.function_id == 'fails'" },
  echo,
);

/** Parallel branches that call the loopback server (the test delays or
 * fails them to watch them overlap and retry). */
const fan = inngest.createFunction({ id: "fan", retries: 2 }, { event: "flow/fan" }, async (ctx) => {
  const requested = whole(ctx.event.data.branches, -1);
  const count = requested >= 0 ? requested : 3;
  const ids = Array.from({ length: count }, (_, i) => `branch-${i}`);
  const settled = await Promise.allSettled(ids.map((id) => ctx.step.run(id, () => call(ctx, id))));
  const branches = settled.map((s) => (s.status === "fulfilled" ? s.value : { failed: s.reason.message }));
  const [left, right] = await Promise.all([ctx.step.run("left", () => 1), ctx.step.run("right", () => "two")]);
  return { branches, join: [left, right] };
});

export default serve({
  client: inngest,
  functions: [
    limited,
    keyed,
    throttled,
    debounced,
    batched,
    idempotent,
    singleSkip,
    singleCancel,
    cancellable,
    slowStart,
    slowFinish,
    ranked,
    filtered,
    parent,
    child,
    sender,
    received,
    waitIf,
    fails,
    watchFailures,
    fan,
  ],
});
