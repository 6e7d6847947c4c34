// app/api/checkout/route.ts: a route handler that records a conversion and its own timing.
import { after, type NextRequest } from "next/server";
import { analytics } from "@/lib/analytics";

export async function POST(request: NextRequest): Promise<Response> {
  const started = performance.now();
  const order = (await request.json()) as { id: string; total: string; currency: string };
  const site = request.nextUrl.hostname;
  const visitor = request.cookies.get("vid")?.value;

  // ... create the order ...

  // Awaited: the response waits for Redis, at most the producer's timeoutMs (500 ms by default),
  // and a failure is this request's to handle. The event id is derived from the order, so a
  // retried request cannot count the purchase twice.
  try {
    await analytics.produce({
      type: "conversion",
      site,
      id: `order-${order.id}`,
      name: "purchase",
      revenue: order.total, // a string keeps the decimal exact
      currency: order.currency,
      visitor,
    });
  } catch (error) {
    console.warn(`conversion for order ${order.id} not recorded: ${(error as Error).message}`);
  }

  const response = Response.json({ ok: true });
  // Fire-and-forget after the response is sent: `after` runs once the response is finished.
  after(() =>
    analytics.send({
      type: "api_request",
      site,
      method: "POST",
      route: "/api/checkout",
      status: response.status,
      duration_ms: performance.now() - started,
    }),
  );
  return response;
}
