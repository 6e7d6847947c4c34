// Write analytics events to the Redis stream that streamproc reads.
//
// One file, no build step, no dependency of its own: pass it an ioredis or a node-redis
// (`redis` package) client. Copy it into your app or depend on this folder.
//
// - Every event gets an `id` (crypto.randomUUID()) unless it already has one: the daemon
//   skips a second entry with the same site + id, so a retried XADD never counts twice.
// - The entry is the JSON form of the event contract: one field `event` holding the event
//   as a JSON object (README, "The event contract"; schemas/event.schema.json).
// - Redis being away never holds a web request for long: use the client options below
//   (no offline queue, a command timeout) and the producer's own `timeoutMs`; then either
//   `await producer.produce(e)` (the promise rejects within the timeout) or
//   `producer.send(e)` (fire-and-forget: returns at once, never throws, failures are counted
//   and handed to `onError`).

import { randomUUID } from "node:crypto";

/** The event types the daemon accepts. */
export const EVENT_TYPES = Object.freeze(["page_view", "click", "api_request", "conversion", "custom"]);

/**
 * Attributes each event type requires besides `type`, `site` and `ts`
 * (the `required` lists of schemas/event.schema.json).
 * @type {Readonly<Record<string, readonly string[]>>}
 */
export const REQUIRED = Object.freeze({
  page_view: Object.freeze(["path"]),
  click: Object.freeze(["path", "x", "y"]),
  api_request: Object.freeze(["method", "route", "status", "duration_ms"]),
  conversion: Object.freeze(["name"]),
  custom: Object.freeze(["name"]),
});

/** Milliseconds a command may take before its promise rejects (both clients). */
export const DEFAULT_COMMAND_TIMEOUT_MS = 500;
/** Milliseconds a (re)connection attempt may take. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 1000;

/**
 * ioredis options that never let a command wait for Redis beyond `commandTimeout`.
 * Spread your own options over them: `new Redis(url, ioredisOptions({ commandTimeout: 300 }))`.
 *
 * - `enableOfflineQueue: false`: while disconnected, a command fails at once instead of
 *   waiting in a queue (ioredis's default waits through 20 reconnection attempts).
 * - `commandTimeout`: a command sent on a connection that has gone silent (a frozen server,
 *   a cut network) rejects with "Command timed out".
 * - `maxRetriesPerRequest: 1`: a command caught by a dropped connection is retried once.
 * - `enableReadyCheck: false`: the ready check runs `INFO`, which the `streamproc-producer`
 *   ACL user may not run (deploy/redis/README.md); without it ioredis logs a NOPERM warning on
 *   every connection.
 * - `connectTimeout`: how long one connection attempt may take.
 *
 * @param {Record<string, unknown>} [overrides]
 * @returns {Record<string, unknown>}
 */
export function ioredisOptions(overrides = {}) {
  return {
    enableOfflineQueue: false,
    commandTimeout: DEFAULT_COMMAND_TIMEOUT_MS,
    maxRetriesPerRequest: 1,
    enableReadyCheck: false,
    connectTimeout: DEFAULT_CONNECT_TIMEOUT_MS,
    ...overrides,
  };
}

/**
 * node-redis (`redis` package) options that never let a command wait for Redis beyond
 * `commandOptions.timeout`. `createClient(nodeRedisOptions({ url }))`.
 *
 * - `disableOfflineQueue: true`: while disconnected, a command fails at once with
 *   `ClientOfflineError` instead of waiting for the reconnection.
 * - `commandOptions.timeout`: a command that gets no reply rejects with `TimeoutError`.
 * - `socket.connectTimeout`: how long one connection attempt may take; `socket.reconnectStrategy`
 *   keeps reconnecting in the background (at most every 2 s).
 *
 * @param {Record<string, any>} [overrides]
 * @returns {Record<string, any>}
 */
export function nodeRedisOptions(overrides = {}) {
  const { socket = {}, commandOptions = {}, ...rest } = overrides;
  return {
    disableOfflineQueue: true,
    ...rest,
    commandOptions: { timeout: DEFAULT_COMMAND_TIMEOUT_MS, ...commandOptions },
    socket: {
      connectTimeout: DEFAULT_CONNECT_TIMEOUT_MS,
      reconnectStrategy: (/** @type {number} */ retries) => Math.min(50 * 2 ** retries, 2000),
      ...socket,
    },
  };
}

/**
 * A complete event from its attributes: `id` set to a fresh UUID when absent, `ts` set to
 * now when absent and turned into integer milliseconds when a `Date`. Checks what can be
 * checked cheaply here (known type, a site, the type's required attributes, an integer or
 * RFC 3339 `ts`); the daemon checks the rest and dead-letters what fails, with the reason.
 *
 * @param {Record<string, unknown>} attrs the event's attributes (README, "The event contract")
 * @param {number} [nowMs] the time to use when `attrs.ts` is absent (default `Date.now()`)
 * @returns {Record<string, unknown>} a new object; `attrs` is not changed
 * @throws {TypeError} when the event cannot be valid
 */
export function buildEvent(attrs, nowMs = Date.now()) {
  if (attrs === null || typeof attrs !== "object" || Array.isArray(attrs)) {
    throw new TypeError("streamproc: an event is an object of attributes");
  }
  const event = { ...attrs };
  const type = event.type;
  if (typeof type !== "string" || !EVENT_TYPES.includes(type)) {
    throw new TypeError(`streamproc: event type ${JSON.stringify(type)} is not one of ${EVENT_TYPES.join(", ")}`);
  }
  if (typeof event.site !== "string" || event.site.length === 0) {
    throw new TypeError("streamproc: `site` is required (a non-empty string)");
  }
  for (const name of REQUIRED[type]) {
    if (event[name] === undefined || event[name] === null) {
      throw new TypeError(`streamproc: a ${type} event requires \`${name}\``);
    }
  }
  if (event.ts === undefined || event.ts === null) {
    event.ts = nowMs;
  } else if (event.ts instanceof Date) {
    event.ts = event.ts.getTime();
  }
  const ts = event.ts;
  const tsOk = typeof ts === "number" ? Number.isSafeInteger(ts) && ts >= 0 : typeof ts === "string";
  if (!tsOk) {
    throw new TypeError(
      "streamproc: `ts` is integer milliseconds since the epoch, a Date or an RFC 3339 string with offset",
    );
  }
  if (event.id === undefined || event.id === null) {
    event.id = randomUUID();
  }
  return event;
}

/** Milliseconds `produce()` waits for Redis before it rejects (`timeoutMs`). */
export const DEFAULT_TIMEOUT_MS = DEFAULT_COMMAND_TIMEOUT_MS;
/** XADDs that may wait for Redis at once before new events fail at once (`maxInFlight`). */
export const DEFAULT_MAX_IN_FLIGHT = 1000;

/** Redis did not answer an XADD within the producer's `timeoutMs` (the event may still land). */
export class ProducerTimeoutError extends Error {
  /** @param {number} timeoutMs */
  constructor(timeoutMs) {
    super(`streamproc: Redis did not answer within ${timeoutMs} ms`);
    this.name = "ProducerTimeoutError";
    this.timeoutMs = timeoutMs;
  }
}

/** Too many XADDs are waiting for Redis already (`maxInFlight`): the event was not sent. */
export class ProducerOverloadedError extends Error {
  /** @param {number} maxInFlight */
  constructor(maxInFlight) {
    super(`streamproc: ${maxInFlight} events already waiting for Redis; event dropped`);
    this.name = "ProducerOverloadedError";
    this.maxInFlight = maxInFlight;
  }
}

/**
 * @typedef {object} ProducerOptions
 * @property {string | ((event: Record<string, unknown>) => string)} [stream]
 *   the stream key (default `"events"`), or a function choosing it per event (sharded streams
 *   such as `events:{0}` … `events:{7}`)
 * @property {number} [timeoutMs] how long `produce()` waits for Redis before it rejects with
 *   {@link ProducerTimeoutError} (default 500). Needed on top of the clients' own timeouts:
 *   node-redis's `commandOptions.timeout` stops counting once a command is written to the
 *   socket, so a frozen server or a silently cut network would hold the promise until TCP
 *   gives up.
 * @property {number} [maxInFlight] XADDs allowed to wait for Redis at once (default 1000);
 *   past that an event fails at once with {@link ProducerOverloadedError} instead of piling up
 *   in memory during an outage
 * @property {(error: Error, event: Record<string, unknown>) => void} [onError]
 *   called for every event `send()` could not write (default: one `console.warn` line when
 *   events start failing and one when they are written again, not one per event)
 */

/**
 * @typedef {object} ProducerStats
 * @property {number} sent events Redis confirmed
 * @property {number} failed events not confirmed: invalid, Redis away, timed out or overloaded
 *   (a timed-out XADD may still land later; sending the same event again is counted once)
 * @property {number} inFlight XADDs still waiting for a reply (timed-out ones included)
 */

/**
 * A producer over an existing client (ioredis `Redis`/`Cluster`, or node-redis
 * `createClient()`/`createCluster()`, connected or connecting). The caller owns the client:
 * create it with {@link ioredisOptions} / {@link nodeRedisOptions} and close it on shutdown.
 *
 * @param {any} client
 * @param {ProducerOptions} [options]
 */
export function createProducer(client, options = {}) {
  const xadd = adderFor(client);
  const { stream = "events" } = options;
  const streamOf = typeof stream === "function" ? stream : () => stream;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
  /** @type {ProducerStats} */
  const stats = { sent: 0, failed: 0, inFlight: 0 };
  let failedInARow = 0;
  let warned = false;
  // The default onError warns once when events start failing and once when they get through
  // again, not once per event: an outage under traffic must not flood the application's log.
  const onError =
    options.onError ??
    ((error) => {
      if (!warned) {
        warned = true;
        console.warn(`streamproc: events are not being written (${error.message}); counting them in stats.failed`);
      }
    });
  const recovered = () => {
    if (warned) {
      warned = false;
      console.warn(`streamproc: events are written again, after ${failedInARow} failed`);
    }
    failedInARow = 0;
  };
  /** @type {Set<Promise<unknown>>} */
  const pending = new Set();

  /**
   * Write one event and wait for Redis: resolves with the stream entry id. Rejects within
   * `timeoutMs` when Redis is away (the client's error, or {@link ProducerTimeoutError}), at
   * once with {@link ProducerOverloadedError} past `maxInFlight`, and with a `TypeError` when
   * the event cannot be valid. To retry a rejected call, build the event once with
   * {@link buildEvent} and pass that same object again: it keeps its `id`, so the daemon
   * counts it once even if the first XADD did reach Redis.
   * @param {Record<string, unknown>} attrs
   * @returns {Promise<string>}
   */
  async function produce(attrs) {
    try {
      const event = buildEvent(attrs);
      if (stats.inFlight >= maxInFlight) {
        throw new ProducerOverloadedError(maxInFlight);
      }
      const entryId = await withTimeout(write(streamOf(event), JSON.stringify(event)), timeoutMs);
      stats.sent += 1;
      recovered();
      return String(entryId);
    } catch (error) {
      stats.failed += 1;
      failedInARow += 1;
      throw error;
    }
  }

  /**
   * @param {string} stream
   * @param {string} json
   */
  function write(stream, json) {
    stats.inFlight += 1;
    return Promise.resolve()
      .then(() => xadd(stream, json))
      .finally(() => {
        stats.inFlight -= 1;
      });
  }

  /**
   * Fire-and-forget: start writing one event and return at once. Never throws and never
   * rejects; an event that could not be written is counted in `stats.failed` and passed to
   * `onError`.
   * @param {Record<string, unknown>} attrs
   * @returns {void}
   */
  function send(attrs) {
    const done = produce(attrs).then(
      () => undefined,
      (error) => {
        try {
          onError(error instanceof Error ? error : new Error(String(error)), attrs);
        } catch {
          // an onError that throws must not turn into an unhandled rejection
        }
      },
    );
    pending.add(done);
    done.finally(() => pending.delete(done));
  }

  /**
   * Resolves once every `send()` started so far has been confirmed or given up (each within
   * `timeoutMs`): call it before closing the client on shutdown.
   * @returns {Promise<void>}
   */
  async function settled() {
    while (pending.size > 0) {
      await Promise.allSettled([...pending]);
    }
  }

  return { produce, send, settled, stats };
}

/**
 * `promise`, or a {@link ProducerTimeoutError} after `timeoutMs`; the timer does not keep the
 * process alive.
 * @template T
 * @param {Promise<T>} promise
 * @param {number} timeoutMs
 * @returns {Promise<T>}
 */
function withTimeout(promise, timeoutMs) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new ProducerTimeoutError(timeoutMs)), timeoutMs);
    timer.unref?.();
  });
  promise.catch(() => undefined); // a late failure after the timeout is not an unhandled rejection
  return /** @type {Promise<T>} */ (Promise.race([promise, expired])).finally(() => clearTimeout(timer));
}

/**
 * `(stream, json) => Promise<entry id>` for either client.
 * @param {any} client
 * @returns {(stream: string, json: string) => Promise<unknown>}
 */
function adderFor(client) {
  if (client && typeof client.xAdd === "function") {
    return (stream, json) => client.xAdd(stream, "*", { event: json }); // node-redis
  }
  if (client && typeof client.xadd === "function") {
    return (stream, json) => client.xadd(stream, "*", "event", json); // ioredis
  }
  throw new TypeError("streamproc: pass an ioredis client or a node-redis client");
}
