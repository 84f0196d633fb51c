// Write durable step functions for Stepwise in JavaScript, the way Inngest's
// TypeScript SDK reads, so that porting an Inngest function is mostly
// changing an import:
//
//   import { Inngest, NonRetriableError, serve } from "stepwise";
//   const inngest = new Inngest({ id: "shop" });
//   const processOrder = inngest.createFunction(
//     { id: "process-order", retries: 3, throttle: { limit: 10, period: "1m" },
//       cancelOn: [{ event: "shop/order.cancelled", match: "data.orderId" }] },
//     { event: "shop/order.created" },
//     async ({ event, step }) => {
//       const [user, stock] = await Promise.all([
//         step.run("get-user", () => getUser(event.data.userId)),
//         step.run("check-stock", () => checkStock(event.data.items)),
//       ]);
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
// random numbers seeded by the run id, and may not use the network (`fetch`
// works inside step bodies only).
//
// Sections: errors and durations; function options (createFunction's
// config, checked when it is called); steps (a queue that keeps host calls
// in code order and turns step.runs of one tick into one parallel group);
// the app (serve and the component's exports).

import * as host from "stepwise:durable/step@0.1.0";

// Math.random is seeded when the component is built, so every run would draw
// the same numbers. Draw from crypto.getRandomValues instead: the host makes
// it the run's replayable stream outside steps and real inside them.
const randomWords = new Uint32Array(2);
Math.random = function random() {
  crypto.getRandomValues(randomWords);
  // 53 random bits, as a float in [0, 1).
  return (randomWords[0] * 2 ** 21 + (randomWords[1] >>> 11)) / 2 ** 53;
};

// ---------------------------------------------------------------------------
// Errors and durations

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

/** A step that failed for good, or a failed invoke; catch it to handle the
 * failure. Left uncaught it fails the run without further retries. `name`
 * is the class name of the original error. */
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

function fromWitError(error) {
  return new StepError(error.name, error.message);
}

/** The step error an imported host function returned as its `err` case. */
function hostError(error) {
  const payload = error && error.payload !== undefined ? error.payload : error;
  if (payload && typeof payload.name === "string" && typeof payload.message === "string") return fromWitError(payload);
  return error;
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

// ---------------------------------------------------------------------------
// Function options: Inngest's createFunction config, turned into the WIT
// function-config. A wrong option throws when createFunction is called,
// naming it; `stepwise build` runs the app's top level, so it stops the build.

class InvalidOption extends Error {}

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

function text(value, option) {
  if (typeof value !== "string" || !value.trim()) {
    throw new InvalidOption(`${option}: expected a non-empty string, got ${JSON.stringify(value)}`);
  }
  return value;
}

function optionalText(value, option) {
  return value === undefined || value === null ? undefined : text(value, option);
}

function count(value, option, minimum = 1) {
  if (!Number.isInteger(value) || value < minimum || value > 0xffffffff) {
    throw new InvalidOption(`${option}: expected a whole number of at least ${minimum}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function ms(value, option) {
  try {
    return BigInt(parseDuration(value));
  } catch (error) {
    throw new InvalidOption(`${option}: ${error.message}`);
  }
}

function optionalMs(value, option) {
  return value === undefined || value === null ? undefined : ms(value, option);
}

function shape(value, option, expected) {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) throw new InvalidOption(`${option}: expected ${expected}, got ${JSON.stringify(value)}`);
  return value;
}

const asList = (value) => (value === undefined || value === null ? [] : Array.isArray(value) ? value : [value]);

function witTriggers(triggers) {
  const found = asList(triggers).map((t) => {
    if (isObject(t) && t.event !== undefined) {
      return { tag: "event", val: { event: text(t.event, "trigger event"), condition: optionalText(t.if, "trigger if") } };
    }
    if (isObject(t) && t.cron !== undefined) return { tag: "cron", val: text(t.cron, "trigger cron") };
    throw new InvalidOption(`trigger: expected { event, if? } or { cron }, got ${JSON.stringify(t)}`);
  });
  if (!found.length) throw new InvalidOption(`no trigger: give { event: "app/thing.happened" } or { cron: "0 * * * *" }`);
  return found;
}

const SCOPES = { fn: "function", env: "tenant", account: "tenant" };

function witConcurrency(value) {
  const limits = asList(value);
  if (limits.length > 2) throw new InvalidOption(`concurrency: at most two limits are allowed, as in Inngest; got ${limits.length}`);
  return limits.map((limit) => {
    if (typeof limit === "number") limit = { limit };
    if (!isObject(limit)) throw new InvalidOption(`concurrency: expected a number or { limit, key, scope }, got ${JSON.stringify(limit)}`);
    const scope = limit.scope ?? "fn";
    if (!(scope in SCOPES)) throw new InvalidOption(`concurrency.scope: expected "fn", "env" or "account", got ${JSON.stringify(scope)}`);
    return { limit: count(limit.limit, "concurrency.limit"), key: optionalText(limit.key, "concurrency.key"), scope: SCOPES[scope] };
  });
}

function witPriority(value) {
  const priority = shape(value, "priority", '{ run: "event.data.plan == \'pro\' ? 60 : 0" }');
  return priority && optionalText(priority.run, "priority.run");
}

function witCancelOn(value) {
  return asList(value).map((c, i) => {
    const option = `cancelOn[${i}]`;
    shape(c, option, "{ event, match?, if?, timeout? }");
    return {
      event: text(c && c.event, `${option}.event`),
      match: optionalText(c.match, `${option}.match`),
      condition: optionalText(c.if, `${option}.if`),
      timeoutMs: optionalMs(c.timeout, `${option}.timeout`),
    };
  });
}

const MODES = ["skip", "cancel"];

function witSingleton(value) {
  const s = shape(value, "singleton", '{ key?, mode: "skip" | "cancel" }');
  if (!s) return undefined;
  if (!MODES.includes(s.mode)) throw new InvalidOption(`singleton.mode: expected "skip" or "cancel", got ${JSON.stringify(s.mode)}`);
  return { key: optionalText(s.key, "singleton.key"), mode: s.mode };
}

function witRetries(value) {
  if (value === undefined || value === null) return undefined;
  count(value, "retries", 0);
  if (value > 20) throw new InvalidOption(`retries: at most 20 are allowed, as in Inngest; got ${value}`);
  return value;
}

/** The WIT function-config of createFunction's `config` and `trigger`. */
function functionConfig(config, trigger) {
  const throttle = shape(config.throttle, "throttle", "{ limit, period, burst?, key? }");
  const rateLimit = shape(config.rateLimit, "rateLimit", "{ limit, period, key? }");
  const debounce = shape(config.debounce, "debounce", "{ period, key?, timeout? }");
  const batch = shape(config.batchEvents, "batchEvents", "{ maxSize, timeout, key? }");
  const timeouts = shape(config.timeouts, "timeouts", "{ start?, finish? }");
  if (config.onFailure !== undefined && typeof config.onFailure !== "function") {
    throw new InvalidOption(`onFailure: expected a function, got ${JSON.stringify(config.onFailure)}`);
  }
  return {
    id: config.id,
    name: optionalText(config.name, "name"),
    triggers: witTriggers(trigger),
    retries: witRetries(config.retries),
    concurrency: witConcurrency(config.concurrency),
    throttle: throttle && {
      limit: count(throttle.limit, "throttle.limit"),
      periodMs: ms(throttle.period, "throttle.period"),
      burst: throttle.burst === undefined ? undefined : count(throttle.burst, "throttle.burst", 0),
      key: optionalText(throttle.key, "throttle.key"),
    },
    rateLimit: rateLimit && {
      limit: count(rateLimit.limit, "rateLimit.limit"),
      periodMs: ms(rateLimit.period, "rateLimit.period"),
      key: optionalText(rateLimit.key, "rateLimit.key"),
    },
    debounce: debounce && {
      periodMs: ms(debounce.period, "debounce.period"),
      key: optionalText(debounce.key, "debounce.key"),
      timeoutMs: optionalMs(debounce.timeout, "debounce.timeout"),
    },
    priority: witPriority(config.priority),
    batchEvents: batch && {
      maxSize: count(batch.maxSize, "batchEvents.maxSize"),
      timeoutMs: ms(batch.timeout, "batchEvents.timeout"),
      key: optionalText(batch.key, "batchEvents.key"),
    },
    idempotency: optionalText(config.idempotency, "idempotency"),
    cancelOn: witCancelOn(config.cancelOn),
    timeouts: timeouts && {
      startMs: optionalMs(timeouts.start, "timeouts.start"),
      finishMs: optionalMs(timeouts.finish, "timeouts.finish"),
    },
    singleton: witSingleton(config.singleton),
    onFailure: config.onFailure !== undefined,
  };
}

// ---------------------------------------------------------------------------
// Steps

/** An event for sendEvent, as the host takes it. */
function eventPayload(event, index) {
  if (!isObject(event)) throw new NonRetriableError(`sendEvent: event ${index} is ${JSON.stringify(event)}; give { name, data }`);
  if (typeof event.name !== "string" || !event.name) {
    throw new NonRetriableError(`sendEvent: event ${index} has no name; give it name: "app/thing.happened"`);
  }
  const ts = event.ts === undefined || event.ts === null ? undefined : event.ts instanceof Date ? event.ts.getTime() : event.ts;
  if (ts !== undefined && !(Number.isInteger(ts) && ts >= 0)) {
    throw new NonRetriableError(`sendEvent: event ${index} (${event.name}) has ts ${JSON.stringify(event.ts)}; give ms since the epoch`);
  }
  return {
    name: event.name,
    data: toJson(event.data ?? {}, `the data of event ${JSON.stringify(event.name)}`),
    id: event.id === undefined || event.id === null ? undefined : String(event.id),
    ts: ts === undefined ? undefined : BigInt(ts),
    user: event.user === undefined || event.user === null ? undefined : toJson(event.user, `the user of event ${JSON.stringify(event.name)}`),
  };
}

/** The id of an invoke target: an id, or what createFunction returned. */
function invokedId(fn) {
  const id = typeof fn === "string" ? fn : fn && typeof fn.id === "string" ? fn.id : undefined;
  if (!id) throw new NonRetriableError(`invoke: function is ${JSON.stringify(fn)}; give a function createFunction returned, or its id`);
  return id;
}

/** The step tools of a run, as `step` in Inngest's handlers.
 *
 * Every call joins one queue, so the host sees them in the order the code
 * made them. The step.runs made in one tick (as in `Promise.all([step.run(..),
 * step.run(..)])`) form one group: a lone one is `begin`/`complete`, several
 * are one host `parallel` call, whose branches the host runs at once. */
class Step {
  /** Calls not yet made to the host, in code order. */
  #queue = [];
  /** The group that step.runs of the current tick join. */
  #group = null;
  #draining = false;
  /** True while the synchronous part of a step body runs: a step call then
   * is nested in it, and goes straight to the host, which fails the run
   * saying steps cannot be nested (queued, it would wait for the body that
   * waits for it). */
  #inBody = false;

  /** Runs `fn` once, durably: its (JSON) output is journaled, and every
   * replay gets the journaled output instead of running `fn` again. A thrown
   * error is retried with backoff; when the last attempt fails (or it is a
   * NonRetriableError) a StepError is thrown here. */
  run(id, fn, ...args) {
    return new Promise((resolve, reject) => {
      const call = { id, body: () => fn(...args), resolve, reject };
      if (this.#inBody) {
        this.#runGroup([call]);
      } else if (this.#group) {
        this.#group.calls.push(call);
      } else {
        const group = { calls: [call] };
        group.execute = () => this.#runGroup(group.calls);
        this.#group = group;
        // The group takes the step.runs of this tick only.
        queueMicrotask(() => this.#close(group));
        this.#enqueue(group);
      }
    });
  }

  /** Pauses the run for `duration` ("1h", "30m", ms), up to a year. No
   * instance stays in memory meanwhile. */
  sleep(id, duration) {
    return this.#call(() => {
      const ms = BigInt(parseDuration(duration));
      return () => host.sleep(id, ms);
    });
  }

  /** Pauses the run until `when` (a Date, an ISO string, or ms since the epoch). */
  sleepUntil(id, when) {
    return this.#call(() => {
      const ms = when instanceof Date ? when.getTime() : typeof when === "string" ? Date.parse(when) : Number(when);
      if (!Number.isFinite(ms)) throw new NonRetriableError(`sleepUntil ${JSON.stringify(id)}: invalid time ${JSON.stringify(when)}`);
      return () => host.sleepUntil(id, BigInt(Math.max(0, Math.round(ms))));
    });
  }

  /** Pauses the run until `opts.event` arrives and returns it; returns null
   * when `opts.timeout` passes first. `opts.match` (a dotted path such as
   * "data.orderId") asks for the same value there as in the triggering
   * event; `opts.if` is a CEL expression over `event` (the triggering one)
   * and `async` (the awaited one). Only events accepted after the wait
   * began can match. */
  waitForEvent(id, opts) {
    return this.#call(() => {
      if (!isObject(opts) || typeof opts.event !== "string") {
        throw new NonRetriableError(`waitForEvent ${JSON.stringify(id)}: give { event, timeout, match?, if? }`);
      }
      const options = {
        event: opts.event,
        match: opts.match ?? undefined,
        condition: opts.if ?? undefined,
        timeoutMs: BigInt(parseDuration(opts.timeout)),
      };
      return () => {
        const found = host.waitForEvent(id, options);
        return found === undefined || found === null ? null : fromWitEvent(found);
      };
    });
  }

  /** Sends an event or a list of events ({ name, data, id?, ts? }), once: a
   * replay gets the journaled ids back instead of sending again. Returns
   * `{ ids }`, as Inngest does. */
  sendEvent(id, payload) {
    return this.#call(() => {
      const events = asList(payload).map(eventPayload);
      return () => {
        try {
          return { ids: [...host.sendEvent(id, events)] };
        } catch (error) {
          throw hostError(error);
        }
      };
    });
  }

  /** Runs another function of the app's tenant (what createFunction
   * returned, or its id) with `opts.data` as its event's data, and returns
   * its output (Inngest's step.invoke). Its failure, or `opts.timeout`
   * passing first, throws a StepError. */
  invoke(id, opts) {
    return this.#call(() => {
      if (!isObject(opts)) throw new NonRetriableError(`invoke ${JSON.stringify(id)}: give { function, data?, timeout? }`);
      const functionId = invokedId(opts.function);
      const data = toJson(opts.data ?? {}, `the data of invoke ${JSON.stringify(id)}`);
      const timeout = opts.timeout === undefined || opts.timeout === null ? undefined : BigInt(parseDuration(opts.timeout));
      return () => {
        try {
          return JSON.parse(host.invoke(id, functionId, data, timeout));
        } catch (error) {
          throw hostError(error);
        }
      };
    });
  }

  /** Queues a host call other than step.run: `prepare` checks the
   * arguments now and returns the call. */
  #call(prepare) {
    return new Promise((resolve, reject) => {
      let make;
      try {
        make = prepare();
      } catch (error) {
        reject(error);
        return;
      }
      const execute = () => {
        try {
          resolve(make());
        } catch (error) {
          reject(error);
        }
      };
      if (this.#inBody) {
        execute();
        return;
      }
      // step.runs made after this call come after it.
      this.#group = null;
      this.#enqueue({ execute });
    });
  }

  #close(group) {
    if (this.#group === group) this.#group = null;
  }

  #enqueue(op) {
    this.#queue.push(op);
    if (!this.#draining) {
      this.#draining = true;
      queueMicrotask(() => this.#drain());
    }
  }

  async #drain() {
    while (this.#queue.length) {
      const op = this.#queue.shift();
      this.#close(op);
      await op.execute();
    }
    this.#draining = false;
  }

  /** Runs a group of step.runs: `begin` for one, `parallel` for several;
   * then the bodies the host asks for, in order; then settles every call,
   * in order (so Promise.all rejects with the first failed branch). */
  async #runGroup(calls) {
    try {
      const memos = calls.length === 1 ? [host.begin(calls[0].id)] : host.parallel(calls.map((c) => c.id));
      const outcomes = [];
      for (let i = 0; i < calls.length; i++) {
        outcomes.push(await this.#outcome(calls[i], memos[i], calls.length > 1));
      }
      calls.forEach((call, i) => {
        const outcome = outcomes[i];
        if (outcome.tag === "ok") call.resolve(JSON.parse(outcome.val));
        else call.reject(outcome.error);
      });
    } catch (error) {
      for (const call of calls) call.reject(error);
    }
  }

  /** One call's outcome: the journaled one, or its body's, completed. */
  async #outcome(call, memo, grouped) {
    switch (memo.tag) {
      case "done":
        return { tag: "ok", val: memo.val };
      case "failed":
        return { tag: "err", error: fromWitError(memo.val) };
      case "execute": {
        let outcome;
        try {
          let output;
          this.#inBody = true;
          try {
            output = call.body();
          } finally {
            this.#inBody = false;
          }
          outcome = { tag: "ok", val: toJson(await output, `the output of step ${JSON.stringify(call.id)}`) };
        } catch (error) {
          outcome = { tag: "err", val: toWitError(error) };
        }
        // Returns only when the outcome is final (and on disk).
        host.complete(call.id, outcome);
        return outcome.tag === "ok" ? outcome : { tag: "err", error: fromWitError(outcome.val) };
      }
      default: {
        // `elsewhere`: another instance runs this branch, and the host
        // replays the group once it is journaled instead of returning here.
        const why = grouped
          ? "runs in another instance; the host does not return here"
          : "was answered with `elsewhere`, which only a parallel group may be";
        return { tag: "err", error: new NonRetriableError(`step ${JSON.stringify(call.id)} ${why}`) };
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The app

/** A client, as Inngest's `new Inngest({ id })`: it creates functions. */
export class Inngest {
  constructor(options = {}) {
    this.id = options.id;
  }

  /** Creates function `config.id`, run for `trigger` (`{ event, if? }`,
   * `{ cron }`, or a list of them) with `handler({ event, events, step,
   * runId, attempt, logger })`. `config` takes Inngest's options: name,
   * retries, concurrency, throttle, rateLimit, debounce, priority,
   * batchEvents, idempotency, cancelOn, timeouts, singleton and onFailure
   * (`async ({ error, event, originalEvent, step, runId }) => ...`, a run of
   * its own when a run fails for good). A wrong option throws here. */
  createFunction(config, trigger, handler) {
    if (!isObject(config) || typeof config.id !== "string" || !config.id) {
      throw new Error('createFunction needs a config with an id: createFunction({ id: "my-fn" }, { event }, handler)');
    }
    if (typeof trigger === "function" && handler === undefined) {
      // Inngest v4's shape: createFunction({ id, triggers: [...] }, handler).
      [handler, trigger] = [trigger, config.triggers];
    }
    if (typeof handler !== "function") {
      throw new Error(`function ${config.id}: createFunction needs a handler: createFunction(config, trigger, async ({ event, step }) => ...)`);
    }
    let wit;
    try {
      wit = functionConfig(config, trigger);
    } catch (error) {
      if (error instanceof InvalidOption) throw new Error(`function ${config.id}: ${error.message}`);
      throw error;
    }
    return { id: config.id, config: wit, handler, onFailure: config.onFailure };
  }
}

/** The app: every function it serves, as Inngest's `serve({ client,
 * functions })`. The app's default export must be this value. */
export function serve({ client, functions }) {
  const byId = new Map();
  for (const fn of functions) {
    if (!fn || !fn.config) throw new Error("serve: functions must be what inngest.createFunction returned");
    if (byId.has(fn.id)) throw new Error(`function ${fn.id} is listed twice; function ids must be unique`);
    byId.set(fn.id, fn);
  }
  const find = (functionId) => {
    const fn = byId.get(functionId);
    if (!fn) {
      throw witErr(new NonRetriableError(`this app has no function ${JSON.stringify(functionId)}; it was probably removed from serve()`));
    }
    return fn;
  };
  return {
    client,
    functions() {
      return [...byId.values()].map((fn) => fn.config);
    },
    async handle(functionId, ctx) {
      const fn = find(functionId);
      return run(fn.handler, () => ({
        event: fromWitEvent(ctx.event),
        events: ctx.events.map(fromWitEvent),
        step: new Step(),
        runId: ctx.runId,
        attempt: ctx.attempt,
        logger: console,
      }));
    },
    async onFailure(functionId, ctx) {
      const fn = find(functionId);
      if (typeof fn.onFailure !== "function") {
        throw witErr(new NonRetriableError(`function ${JSON.stringify(functionId)} has no onFailure handler in this version of the app`));
      }
      return run(fn.onFailure, () => ({
        error: fromWitError(ctx.error),
        event: fromWitEvent(ctx.event),
        originalEvent: fromWitEvent(ctx.originalEvent),
        step: new Step(),
        runId: ctx.runId,
        attempt: ctx.attempt,
        logger: console,
      }));
    },
  };
}

/** Runs a handler with the context `makeCtx` builds; its output as JSON
 * text, or its error in the shape the component returns as `err`. */
async function run(handler, makeCtx) {
  let ctx;
  try {
    ctx = makeCtx();
  } catch (error) {
    throw witErr(new NonRetriableError(`the run's events could not be read: ${error.message}`));
  }
  try {
    return toJson(await handler(ctx), "the function's output");
  } catch (error) {
    throw witErr(error);
  }
}

/** An error whose payload componentize-js returns as the `err` case. */
function witErr(error) {
  const wrapped = new Error(error && error.message);
  wrapped.payload = toWitError(error);
  return wrapped;
}
