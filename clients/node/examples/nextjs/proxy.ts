// proxy.ts (Next.js 16; `middleware.ts` before): a page view for every page request.
// Proxy runs on the Node.js runtime, so ioredis can connect from here. This suits a
// self-hosted `next start`, where proxy shares the server process and its one Redis client.
// Where proxy is deployed apart (a CDN) or as Edge-runtime middleware, which cannot open TCP
// connections, post the event to a route handler instead.
import { NextResponse, type NextFetchEvent, type NextRequest } from "next/server";
import { analytics } from "@/lib/analytics";

export function proxy(request: NextRequest, event: NextFetchEvent): NextResponse {
  // Fire-and-forget: the request never waits for Redis. waitUntil keeps the XADD alive
  // after the response on platforms that end the invocation with it; produce() settles
  // within the producer's timeoutMs either way.
  event.waitUntil(
    analytics
      .produce({
        type: "page_view",
        site: request.nextUrl.hostname,
        path: request.nextUrl.pathname,
        referrer: request.headers.get("referer"),
        visitor: request.cookies.get("vid")?.value,
        ip: request.headers.get("x-forwarded-for")?.split(",")[0]?.trim(),
        ua: request.headers.get("user-agent"),
      })
      .catch((error: Error) => console.warn(`page view dropped: ${error.message}`)),
  );
  return NextResponse.next();
}

export const config = {
  // Pages only: not static files, images or the API.
  matcher: ["/((?!api|_next/static|_next/image|favicon.ico).*)"],
};
