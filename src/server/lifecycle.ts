// Listening and graceful stop of the HTTP server. Shutdown order: stop
// accepting connections, answer what is in flight (bounded), answer whatever
// is still waiting at the bound with 503 SHUTTING_DOWN, then close the
// connections. Draining the scheduler and releasing the GPU belong to the
// caller (serve command), which runs them alongside.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Express } from 'express';
import { ShuttingDownError } from '../scheduler/types.js';
import type { Logger } from '../util/logger.js';
import { RequestTimeoutError, toHttpFailure } from './errors.js';

/** Readiness seen by the health routes: false once shutdown began. */
export class ServerLifecycle {
  private drainingSince: number | null = null;

  get ready(): boolean {
    return this.drainingSince === null;
  }

  beginDrain(): void {
    this.drainingSince ??= Date.now();
  }
}

/**
 * After the shutdown timeout, how long the 503 answers written to requests
 * still waiting may take to reach their clients before every connection is
 * closed. Part of the bound stated in docs/operating.md.
 */
export const SHUTDOWN_ANSWER_GRACE_MS = 500;

export interface HttpServerHandle {
  server: Server;
  /** http://host:port as bound (port 0 resolved). */
  url: string;
  port: number;
  /** Requests whose response has not finished. */
  inFlight(): number;
  /**
   * Stop accepting, wait up to `timeoutMs` for in-flight responses, answer
   * those still waiting with 503 SHUTTING_DOWN (+ Retry-After), then close
   * every connection. Resolves with how many requests were answered so.
   */
  close(timeoutMs: number): Promise<number>;
}

export interface ListenOptions {
  host: string;
  port: number;
  lifecycle: ServerLifecycle;
  logger: Logger;
  /** server.requestTimeoutMs / server.headersTimeoutMs; Node's defaults (300 s / 60 s) without. */
  timeouts?: { requestTimeoutMs: number; headersTimeoutMs: number };
  /** server.apiKeys is set: binding beyond loopback is then not a warning. */
  keysRequired?: boolean;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost|::ffff:127\.\d+\.\d+\.\d+)$/;

/** The JSON error body of a failure, in the protocol of the route it hit (V2 bodies are {"error": "<message>"}). */
function errorBody(url: string | undefined, code: string, message: string): string {
  return JSON.stringify((url ?? '').startsWith('/v2') ? { error: message } : { error: { code, message } });
}

/**
 * A raw HTTP/1.1 answer for a socket whose request never reached express
 * (headers or body too slow, unparsable request line): JSON like every other
 * error, then the connection closes.
 */
function rawAnswer(status: number, reason: string, body: string): string {
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/** The server with its timeouts; slow or unparsable requests get a JSON 408 / 400 on the raw socket. */
export function createHttpServer(app: Express, opts: Pick<ListenOptions, 'timeouts' | 'logger'>): Server {
  const t = opts.timeouts;
  const server = createServer(
    t === undefined
      ? {}
      : {
          requestTimeout: t.requestTimeoutMs,
          // Node refuses a headers timeout above the request timeout.
          headersTimeout: Math.min(t.headersTimeoutMs, t.requestTimeoutMs),
          // Node checks both timeouts on this period (default 30 s): a quarter of the shorter one keeps the overshoot small.
          connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(Math.min(t.headersTimeoutMs, t.requestTimeoutMs) / 4))),
        },
    app,
  );
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const res = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    const canAnswer = socket.writable && (res == null || !res.headersSent);
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      const failure = new RequestTimeoutError(
        t === undefined
          ? 'the request did not arrive in time'
          : `the request did not arrive in time (headers within server.headersTimeoutMs = ${t.headersTimeoutMs} ms, the whole request within server.requestTimeoutMs = ${t.requestTimeoutMs} ms)`,
      );
      opts.logger.info({ err: err.code }, 'slow client: request timed out');
      if (canAnswer) socket.end(rawAnswer(408, 'Request Timeout', errorBody(res?.req.url, failure.code, failure.message)));
      else socket.destroy();
    } else if (err.code === 'ECONNRESET' || !canAnswer) {
      socket.destroy();
    } else {
      // The request line or headers do not parse (HPE_*): the client gets a JSON 400, never the bare one.
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      const reason = status === 431 ? 'Request Header Fields Too Large' : 'Bad Request';
      socket.end(rawAnswer(status, reason, errorBody(undefined, 'MALFORMED_HTTP', 'the request is not valid HTTP/1.1')));
    }
  });
  return server;
}

export async function listen(app: Express, opts: ListenOptions): Promise<HttpServerHandle> {
  const server = createHttpServer(app, opts);
  const pending = new Set<ServerResponse>();
  const idleWaiters: (() => void)[] = [];
  server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
    pending.add(res);
    // Keep-alive clients would otherwise hold the server open after the drain.
    if (!opts.lifecycle.ready) res.setHeader('Connection', 'close');
    res.on('close', () => {
      pending.delete(res);
      if (pending.size === 0) for (const w of idleWaiters.splice(0)) w();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  if (opts.keysRequired === false && !LOOPBACK.test(address.address)) {
    opts.logger.warn(
      { host: address.address },
      'listening beyond loopback without API keys: anyone who reaches this port can run inference and batches; set server.apiKeys (PETSERVE_API_KEYS)',
    );
  }

  const idle = (): Promise<void> => (pending.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => idleWaiters.push(resolve)));
  const sleep = (ms: number): Promise<'timeout'> => new Promise((resolve) => setTimeout(() => resolve('timeout'), ms));

  /** Answer every request still waiting with 503 SHUTTING_DOWN; returns how many. */
  const answerWaiting = (): number => {
    const failure = toHttpFailure(new ShuttingDownError());
    let answered = 0;
    for (const res of pending) {
      if (res.headersSent) {
        // A response already streaming (batch results) cannot change its status: end it cut, as a cut.
        res.destroy();
        continue;
      }
      res.writeHead(failure.status, { ...failure.headers, 'Content-Type': 'application/json; charset=utf-8', Connection: 'close' });
      res.end(errorBody(res.req.url, failure.code, 'the server shut down before this request was answered; retry on another instance'));
      answered += 1;
    }
    return answered;
  };

  let closing: Promise<number> | null = null;
  return {
    server,
    url,
    port: address.port,
    inFlight: () => pending.size,
    close: (timeoutMs) =>
      (closing ??= (async () => {
        opts.lifecycle.beginDrain();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const outcome = await Promise.race([idle().then(() => 'idle' as const), sleep(timeoutMs)]);
        let answered = 0;
        if (outcome === 'timeout') {
          answered = answerWaiting();
          if (answered > 0) opts.logger.warn({ answered, timeoutMs }, 'shutdown timeout: answered the requests still waiting with 503 SHUTTING_DOWN');
          await Promise.race([idle(), sleep(SHUTDOWN_ANSWER_GRACE_MS)]);
        }
        server.closeAllConnections();
        await closed;
        return answered;
      })()),
  };
}
