// Types of streamproc.js (written by hand; the JavaScript carries the same JSDoc).

export type EventType = "page_view" | "click" | "api_request" | "conversion" | "custom";

/** Attributes every event may carry (README, "The event contract"). */
interface Common {
  site: string;
  /** Integer milliseconds since the epoch, a Date, or an RFC 3339 string with offset; default now. */
  ts?: number | Date | string;
  /** Idempotency key: a second entry with the same site + id is skipped. Default: a fresh UUID. */
  id?: string;
  session?: string | null;
  visitor?: string | null;
  ip?: string | null;
  ua?: string | null;
}

export interface PageView extends Common {
  type: "page_view";
  path: string;
  referrer?: string | null;
  device?: string | null;
  browser?: string | null;
  os?: string | null;
  country?: string | null;
  utm_source?: string | null;
  utm_medium?: string | null;
  utm_campaign?: string | null;
}

export interface Click extends Common {
  type: "click";
  path: string;
  /** Position relative to the page, in [0, 1]. */
  x: number;
  y: number;
  selector?: string | null;
}

export interface ApiRequest extends Common {
  type: "api_request";
  method: string;
  route: string;
  status: number;
  duration_ms: number;
}

export interface Conversion extends Common {
  type: "conversion";
  name: string;
  /** Exact decimal: pass a string ("19.90") to keep it exact. */
  revenue?: string | number | null;
  currency?: string | null;
}

export interface Custom extends Common {
  type: "custom";
  name: string;
  props?: Record<string, unknown> | null;
}

export type EventInput = PageView | Click | ApiRequest | Conversion | Custom;

/** An event as written to the stream: `id` and `ts` always set, `ts` in integer milliseconds or a string. */
export type BuiltEvent = EventInput & { id: string; ts: number | string };

export const EVENT_TYPES: readonly EventType[];
export const REQUIRED: Readonly<Record<EventType, readonly string[]>>;
export const DEFAULT_COMMAND_TIMEOUT_MS: number;
export const DEFAULT_CONNECT_TIMEOUT_MS: number;
export const DEFAULT_TIMEOUT_MS: number;
export const DEFAULT_MAX_IN_FLIGHT: number;

export function ioredisOptions<T extends object = {}>(overrides?: T): Record<string, unknown> & T;
export function nodeRedisOptions<T extends object = {}>(overrides?: T): Record<string, any> & T;

/** @throws {TypeError} when the event cannot be valid */
export function buildEvent(attrs: EventInput, nowMs?: number): BuiltEvent;

export class ProducerTimeoutError extends Error {
  readonly timeoutMs: number;
  constructor(timeoutMs: number);
}

export class ProducerOverloadedError extends Error {
  readonly maxInFlight: number;
  constructor(maxInFlight: number);
}

export interface ProducerOptions {
  /** Stream key (default "events"), or a function choosing it per event. */
  stream?: string | ((event: BuiltEvent) => string);
  /** How long produce() waits for Redis before rejecting (default 500). */
  timeoutMs?: number;
  /** XADDs allowed to wait for Redis at once (default 1000). */
  maxInFlight?: number;
  /** Called for every event send() could not write (default: one console.warn line when events
   * start failing and one when they are written again). */
  onError?: (error: Error, event: EventInput) => void;
}

export interface ProducerStats {
  readonly sent: number;
  readonly failed: number;
  readonly inFlight: number;
}

export interface Producer {
  /** Resolves with the stream entry id; rejects within timeoutMs when Redis is away. */
  produce(event: EventInput): Promise<string>;
  /** Fire-and-forget: returns at once, never throws; failures go to stats.failed and onError. */
  send(event: EventInput): void;
  /** Resolves once every send() started so far is confirmed or given up. */
  settled(): Promise<void>;
  readonly stats: ProducerStats;
}

/** `client`: an ioredis Redis/Cluster or a node-redis client/cluster. */
export function createProducer(client: unknown, options?: ProducerOptions): Producer;
