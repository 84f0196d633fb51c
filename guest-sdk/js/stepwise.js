// Write durable step functions for Stepwise in JavaScript, the way Inngest's
// TypeScript SDK reads, so that porting an Inngest function is mostly
// changing an import:
//
//   import { Inngest, NonRetriableError, serve } from "stepwise";
//   const inngest = new Inngest({ id: "shop" });
//   const processOrder = inngest.createFunction(
//     { id: "process-order", retries: 3 },
//     { event: "shop/order.created" },
//     async ({ event, step }) => {
//       const user = await step.run("get-user", () => getUser(event.data.userId));
//       await step.sleep("wait-for-payment", "1h");
//       const payment = await step.waitForEvent("wait-payment",
//         { event: "shop/payment.success", match: "data.orderId", timeout: "24h" });
//       if (!payment) await step.run("cancel-order", () => cancel(user));
//     });
//   export default serve({ client: inngest, functions: [processOrder] });
//
// `stepwise build app.js` bundles this module with the app and turns it into
// a component. A step's body runs once and its JSON output is journaled; code
// outside steps runs again on every replay, sees the run's logical time and
// a random generator seeded by the run id, and may not use the network
// (`fetch` works inside step bodies only).

import * as host from "stepwise:durable/step@0.1.0";

/** The longest sleep or wait, as in Inngest: one year. */
export const MAX_DURATION_MS = 365 * 24 * 60 * 60 * 1000;
const UNITS_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** Stops retries at once: the step or run fails with this message. */
export class NonRetriableError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "NonRetriableError";
  }
}

/** Retries after `retryAfter` (a duration, a Date, or ms) instead of the backoff table. */
export class RetryAfterError extends Error {
  constructor(message, retryAfter, options) {
    super(message, options);
    this.name = "RetryAfterError";
    this.retryAfterMs = retryAfter instanceof Date ? Math.max(0, retryAfter.getTime() - Date.now()) : parseDuration(retryAfter);
  }
}

/** A step that failed for good; catch it to handle the failure. Left
 * uncaught it fails the run without further retries. */
export class StepError extends Error {
  constructor(name, message) {
    super(message);
    this.name = name;
  }
}

/** Milliseconds of an Inngest duration ("30s", "1h30m", "7d") or a number of ms. */
export function parseDuration(value) {
  let ms;
  if (typeof value === "number") {
    ms = Math.round(value);
  } else if (typeof value === "string") {
    ms = parseDurationText(value);
  } else {
    throw new NonRetriableError(`invalid duration ${JSON.stringify(value)}: give a string such as "30s" or milliseconds`);
  }
  if (!(ms >= 0 && ms <= MAX_DURATION_MS)) {
    throw new NonRetriableError(`invalid duration ${JSON.stringify(value)}: it must be between 0 and a year`);
  }
  return ms;
}

function parseDurationText(text) {
  const complain = (why) =>
    new NonRetriableError(
      `invalid duration ${JSON.stringify(text)}: ${why}; write it as Inngest does, e.g. "30s", "10m", "1h30m", "7d" (units ms, s, m, h, d, w)`,
    );
  let rest = text.trim();
  if (!rest) throw complain("it is empty");
  let total = 0;
  while (rest) {
    const match = /^(\d+)([a-z]*)/.exec(rest);
    if (!match) throw complain("expected a number");
    const [whole, number, unit] = match;
    if (!unit) throw complain("a number has no unit");
    if (!(unit in UNITS_MS)) throw complain(`unknown unit ${JSON.stringify(unit)}`);
    total += Number(number) * UNITS_MS[unit];
    rest = rest.slice(whole.length);
  }
  return total;
}

function toJson(value, what) {
  let text;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (error) {
    throw new NonRetriableError(`${what} is not JSON-serialisable: ${error.message}`);
  }
  return text === undefined ? "null" : text;
}

function toWitError(error) {
  if (error instanceof StepError) {
    return { name: error.name, message: error.message, retriable: false, retryAfterMs: undefined };
  }
  if (error instanceof NonRetriableError) {
    return { name: "NonRetriableError", message: error.message, retriable: false, retryAfterMs: undefined };
  }
  if (error instanceof RetryAfterError) {
    return { name: "RetryAfterError", message: error.message, retriable: true, retryAfterMs: BigInt(error.retryAfterMs) };
  }
  const name = (error && error.name) || "Error";
  const message = error && error.message !== undefined ? error.message : String(error);
  return { name, message, retriable: true, retryAfterMs: undefined };
}

function fromWitEvent(event) {
  return {
    id: event.id,
    name: event.name,
    data: JSON.parse(event.data),
    ts: Number(event.ts),
    ...(event.user !== undefined && event.user !== null ? { user: JSON.parse(event.user) } : {}),
  };
}

/** The step tools of a run, as `step` in Inngest's handlers. */
class Step {
  /** Runs `fn` once, durably: its (JSON) output is journaled, and every
   * replay gets the journaled output instead of running `fn` again. A thrown
   * error is retried with backoff; when the last attempt fails (or it is a
   * NonRetriableError) a StepError is thrown here. */
  async run(id, fn, ...args) {
    const memo = host.begin(id);
    if (memo.tag === "done") return JSON.parse(memo.val);
    if (memo.tag === "failed") throw new StepError(memo.val.name, memo.val.message);
    let outcome;
    try {
      outcome = { tag: "ok", val: toJson(await fn(...args), `the output of step ${JSON.stringify(id)}`) };
    } catch (error) {
      outcome = { tag: "err", val: toWitError(error) };
    }
    // Returns only when the outcome is final (and on disk).
    host.complete(id, outcome);
    if (outcome.tag === "err") throw new StepError(outcome.val.name, outcome.val.message);
    return JSON.parse(outcome.val);
  }

  /** Pauses the run for `duration` ("1h", "30m", ms), up to a year. No
   * instance stays in memory meanwhile. */
  async sleep(id, duration) {
    host.sleep(id, BigInt(parseDuration(duration)));
  }

  /** Pauses the run until `when` (a Date, an ISO string, or ms since the epoch). */
  async sleepUntil(id, when) {
    const ms = when instanceof Date ? when.getTime() : typeof when === "string" ? Date.parse(when) : Number(when);
    if (!Number.isFinite(ms)) throw new NonRetriableError(`sleepUntil ${JSON.stringify(id)}: invalid time ${JSON.stringify(when)}`);
    host.sleepUntil(id, BigInt(Math.max(0, Math.round(ms))));
  }

  /** Pauses the run until `opts.event` arrives (with the same value at the
   * dotted path `opts.match` as the triggering event, if given) and returns
   * it; returns null when `opts.timeout` passes first. Only events accepted
   * after the wait began can match. */
  async waitForEvent(id, opts) {
    const options = {
      event: opts.event,
      match: opts.match === undefined ? undefined : opts.match,
      timeoutMs: BigInt(parseDuration(opts.timeout)),
    };
    const found = host.waitForEvent(id, options);
    return found === undefined || found === null ? null : fromWitEvent(found);
  }
}

/** A client, as Inngest's `new Inngest({ id })`: it creates functions. */
export class Inngest {
  constructor(options = {}) {
    this.id = options.id;
  }

  /** Creates function `config.id` run for `trigger` (`{ event }`, or a list
   * of them), with `handler({ event, events, step, runId, attempt })`. */
  createFunction(config, trigger, handler) {
    if (!config || typeof config.id !== "string") {
      throw new Error("createFunction needs a config with an id: createFunction({ id: \"my-fn\" }, { event }, handler)");
    }
    const triggers = (Array.isArray(trigger) ? trigger : [trigger]).map((t) => {
      if (!t || typeof t.event !== "string") throw new Error(`function ${config.id}: a trigger needs an event name ({ event: "app/thing.happened" })`);
      return { tag: "event", val: t.event };
    });
    return { id: config.id, name: config.name, retries: config.retries, triggers, handler };
  }
}

/** The app: every function it serves, as Inngest's `serve({ client,
 * functions })`. The app's default export must be this value. */
export function serve({ client, functions }) {
  const byId = new Map();
  for (const fn of functions) {
    if (byId.has(fn.id)) throw new Error(`function ${fn.id} is listed twice`);
    byId.set(fn.id, fn);
  }
  return {
    client,
    functions() {
      return [...byId.values()].map((fn) => ({
        id: fn.id,
        name: fn.name,
        triggers: fn.triggers,
        retries: fn.retries,
      }));
    },
    async handle(functionId, ctx) {
      const fn = byId.get(functionId);
      if (!fn) {
        throw witErr(new NonRetriableError(`this app has no function ${JSON.stringify(functionId)}; it was probably removed from serve()`));
      }
      const events = ctx.events.map(fromWitEvent);
      let output;
      try {
        output = await fn.handler({
          event: fromWitEvent(ctx.event),
          events,
          step: new Step(),
          runId: ctx.runId,
          attempt: ctx.attempt,
        });
      } catch (error) {
        throw witErr(error);
      }
      try {
        return toJson(output, "the function's output");
      } catch (error) {
        throw witErr(error);
      }
    },
  };
}

/** An error whose payload componentize-js returns as the `err` case. */
function witErr(error) {
  const wrapped = new Error(error && error.message);
  wrapped.payload = toWitError(error);
  return wrapped;
}
