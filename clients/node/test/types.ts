// Compiled by `npm run check` (tsc) against the real ioredis and node-redis types: the
// declarations in streamproc.d.ts fit both clients and the calls the README shows.
import { Redis } from "ioredis";
import { createClient } from "redis";
import {
  buildEvent,
  createProducer,
  ioredisOptions,
  nodeRedisOptions,
  ProducerTimeoutError,
  type BuiltEvent,
  type Producer,
} from "streamproc-producer";

const io = new Redis("redis://127.0.0.1:6379/0", ioredisOptions({ commandTimeout: 300 }));
const nr = createClient(nodeRedisOptions({ url: "redis://127.0.0.1:6379/0" }));

const a: Producer = createProducer(io, { stream: "events", timeoutMs: 300 });
const b: Producer = createProducer(nr, {
  stream: (event) => `events:{${event.site.length % 8}}`,
  onError: (error) => console.warn(error.message),
});

const built: BuiltEvent = buildEvent({ type: "conversion", site: "shop.example", name: "purchase", revenue: "19.90" });
export async function example(): Promise<string> {
  b.send({ type: "page_view", site: "shop.example", path: "/", ts: new Date() });
  try {
    return await a.produce(built);
  } catch (error) {
    if (error instanceof ProducerTimeoutError) return `timed out after ${error.timeoutMs} ms`;
    throw error;
  }
}
// @ts-expect-error a click needs x and y
buildEvent({ type: "click", site: "shop.example", path: "/" });
export const counts: number = a.stats.sent + a.stats.failed + a.stats.inFlight;
