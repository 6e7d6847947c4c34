// Test driver: produces events through streamproc.js with a real ioredis or node-redis client.
// Run by tests/test_producers.py; not part of the helper.
//
//   node test/driver.mjs produce CLIENT URL STREAM   stdin: {"events": [...], "retry": [i, ...]}
//       builds each event once (buildEvent: id and ts), writes the first half with awaited
//       produce() and the second half with fire-and-forget send(), then writes the events at
//       the `retry` indices again (same object, same id), as a web app retrying would.
//       stdout: {"stats": ..., "ids": [...], "warnings": [...]}
//   node test/driver.mjs outage CLIENT URL STREAM N
//       writes one event, prints "connected", waits for a line on stdin (the test takes Redis
//       away meanwhile: "frozen" or "stopped"; after "stopped" it first waits until the client
//       has seen the connection close), then send()s N events and produce()s N events, and
//       send()s N more through a second producer with the default onError; prints "outage
//       done", waits for a line on stdin (Redis is back), waits until the client is ready and
//       writes one more event through the second producer.
//       stdout (last line): {"stats": ..., "rejected": {error name: count}, "sendErrors": {...}}
//
// CLIENT: "ioredis" or "node-redis", with the helper's recommended options
// (ioredisOptions / nodeRedisOptions); DRIVER_READY_CHECK=1 turns ioredis's ready check back on.
import { createInterface } from "node:readline";
import { Redis } from "ioredis";
import { createClient } from "redis";
import { buildEvent, createProducer, ioredisOptions, nodeRedisOptions } from "../streamproc.js";

const [mode, kind, url, stream, ...rest] = process.argv.slice(2);
const warnings = [];
const originalWarn = console.warn;
console.warn = (...args) => {
  warnings.push(args.map(String).join(" "));
  originalWarn(...args);
};

async function connect() {
  if (kind === "ioredis") {
    const client = new Redis(url, ioredisOptions({ enableReadyCheck: process.env.DRIVER_READY_CHECK === "1" }));
    client.on("error", (error) => warnings.push(`client error: ${error.message}`));
    await new Promise((resolve, reject) => {
      client.once("ready", resolve);
      client.once("end", () => reject(new Error("ioredis could not connect")));
    });
    return { client, close: () => client.disconnect(), ready: () => client.status === "ready" };
  }
  if (kind === "node-redis") {
    const client = createClient(nodeRedisOptions({ url }));
    client.on("error", (error) => warnings.push(`client error: ${error.message}`));
    await client.connect();
    return { client, close: () => client.destroy(), ready: () => client.isReady };
  }
  throw new Error(`unknown client ${kind}`);
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

async function produceMode() {
  const { events, retry } = JSON.parse(await readStdin());
  const { client, close } = await connect();
  const producer = createProducer(client, { stream, timeoutMs: 5000 });
  const built = events.map((attrs) => buildEvent(attrs));
  const half = Math.floor(built.length / 2);
  for (const event of built.slice(0, half)) {
    await producer.produce(event);
  }
  for (const event of built.slice(half)) {
    producer.send(event);
  }
  await producer.settled();
  for (const i of retry) {
    await producer.produce(built[i]);
  }
  close();
  return { stats: { ...producer.stats }, ids: built.map((e) => e.id), warnings };
}

function count(into, error) {
  const key = `${error.constructor?.name ?? error.name}: ${error.message}`;
  into[key] = (into[key] ?? 0) + 1;
}

async function outageMode() {
  const n = Number(rest[0]);
  const { client, close, ready } = await connect();
  const sendErrors = {};
  const producer = createProducer(client, { stream, onError: (error) => count(sendErrors, error) });
  const event = { type: "page_view", site: "outage.example", path: "/" };
  await producer.produce(event);
  process.stdout.write("connected\n");
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const how = String((await lines.next()).value).trim();
  while (how === "stopped" && ready()) await new Promise((resolve) => setTimeout(resolve, 10));

  const quiet = createProducer(client, { stream }); // the default onError
  for (let i = 0; i < n; i++) {
    producer.send({ ...event, path: `/send/${i}` });
    quiet.send({ ...event, path: `/quiet/${i}` });
  }
  const rejected = {};
  const outcomes = await Promise.allSettled(
    Array.from({ length: n }, (_, i) => producer.produce({ ...event, path: `/produce/${i}` })),
  );
  for (const outcome of outcomes) {
    if (outcome.status === "rejected") count(rejected, outcome.reason);
  }
  await producer.settled();
  await quiet.settled();
  const failed = { ...quiet.stats };
  process.stdout.write("outage done\n");
  await lines.next(); // Redis is back
  while (!ready()) await new Promise((resolve) => setTimeout(resolve, 10));
  await quiet.produce({ ...event, path: "/back" });
  close();
  return { stats: { ...producer.stats }, quietStats: failed, rejected, sendErrors, warnings };
}

const result = mode === "produce" ? await produceMode() : await outageMode();
process.stdout.write(JSON.stringify(result) + "\n");
