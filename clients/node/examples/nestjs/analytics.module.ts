// A NestJS provider: one node-redis client and producer for the application, an interceptor
// that records every HTTP request as an `api_request` event, and a clean shutdown.
//
//   @Module({ imports: [AnalyticsModule] }) export class AppModule {}
//   app.enableShutdownHooks();   // in main.ts, so that onApplicationShutdown runs on SIGTERM
import {
  CallHandler,
  ExecutionContext,
  Global,
  HttpException,
  Inject,
  Injectable,
  Logger,
  Module,
  NestInterceptor,
  OnApplicationShutdown,
} from "@nestjs/common";
import { APP_INTERCEPTOR } from "@nestjs/core";
import { createClient, type RedisClientType } from "redis";
import { Observable, catchError, tap, throwError } from "rxjs";
import { createProducer, nodeRedisOptions, type EventInput, type Producer } from "streamproc-producer";

export const REDIS = Symbol("streamproc redis client");

@Injectable()
export class Analytics implements OnApplicationShutdown {
  private readonly logger = new Logger(Analytics.name);
  private readonly producer: Producer;

  constructor(@Inject(REDIS) private readonly redis: RedisClientType) {
    this.producer = createProducer(redis, {
      stream: process.env.STREAMPROC_STREAM ?? "events",
      onError: (error) => this.logger.warn(`event dropped: ${error.message}`),
    });
  }

  /** Fire-and-forget: returns at once; a failure is logged and counted, never thrown. */
  track(event: EventInput): void {
    this.producer.send(event);
  }

  /** Waits for Redis (at most the producer's timeoutMs) and throws if the event was not written. */
  async record(event: EventInput): Promise<string> {
    return this.producer.produce(event);
  }

  get stats() {
    return this.producer.stats;
  }

  async onApplicationShutdown(): Promise<void> {
    await this.producer.settled(); // every track() confirmed or given up
    this.redis.destroy();
  }
}

@Injectable()
export class ApiTimingInterceptor implements NestInterceptor {
  constructor(private readonly analytics: Analytics) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const started = performance.now();
    const http = context.switchToHttp();
    const request = http.getRequest<{ method: string; hostname: string; route?: { path?: string }; url: string }>();
    const record = (status: number) =>
      this.analytics.track({
        type: "api_request",
        site: request.hostname,
        method: request.method,
        route: request.route?.path ?? request.url, // the route pattern keeps cardinality low
        status,
        duration_ms: performance.now() - started,
      });
    return next.handle().pipe(
      tap({ complete: () => record(http.getResponse<{ statusCode: number }>().statusCode) }),
      catchError((error: unknown) => {
        // The exception filter sets the response status after this runs: take it from the error.
        const status = error instanceof HttpException ? error.getStatus() : 500;
        record(status);
        return throwError(() => error);
      }),
    );
  }
}

@Global()
@Module({
  providers: [
    {
      provide: REDIS,
      useFactory: (): RedisClientType => {
        const logger = new Logger("AnalyticsRedis");
        const client = createClient(
          nodeRedisOptions({ url: process.env.STREAMPROC_PRODUCER_URL ?? "redis://127.0.0.1:6379/0" }),
        ) as RedisClientType;
        // node-redis emits "error" on every failed (re)connection; without a listener that
        // event would crash the process.
        client.on("error", (error: Error) => logger.warn(error.message));
        // Not awaited: the application starts even when Redis is away, and the client keeps
        // reconnecting in the background; meanwhile events fail at once (ClientOfflineError).
        client.connect().catch((error: Error) => logger.warn(`not connected: ${error.message}`));
        return client;
      },
    },
    Analytics,
    { provide: APP_INTERCEPTOR, useClass: ApiTimingInterceptor },
  ],
  exports: [Analytics],
})
export class AnalyticsModule {}
