// One Redis connection and one producer per server process (Next.js 16, Node.js runtime).
// Kept on globalThis so that hot reloading in `next dev` does not open a connection per edit.
import { Redis } from "ioredis";
import { createProducer, ioredisOptions, type Producer } from "streamproc-producer";

const cache = globalThis as typeof globalThis & { streamproc?: { redis: Redis; producer: Producer } };

function connect(): { redis: Redis; producer: Producer } {
  // STREAMPROC_PRODUCER_URL=redis://streamproc-producer:PASSWORD@redis.internal:6379/0
  const redis = new Redis(process.env.STREAMPROC_PRODUCER_URL ?? "redis://127.0.0.1:6379/0", ioredisOptions());
  // Without a listener, ioredis prints every connection error; one line is enough.
  redis.on("error", (error) => console.warn(`analytics redis: ${error.message}`));
  const producer = createProducer(redis, {
    stream: "events",
    onError: (error) => console.warn(`analytics event dropped: ${error.message}`),
  });
  return { redis, producer };
}

cache.streamproc ??= connect();
export const analytics: Producer = cache.streamproc.producer;
