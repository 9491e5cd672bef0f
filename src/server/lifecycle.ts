// Listening and graceful stop of the HTTP server. Shutdown order: stop
// accepting connections, answer what is in flight (bounded), then close
// whatever is left. Draining the scheduler and releasing the GPU belong to the
// caller (serve command), which runs them alongside.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';
import type { Logger } from '../util/logger.js';

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

export interface HttpServerHandle {
  server: Server;
  /** http://host:port as bound (port 0 resolved). */
  url: string;
  port: number;
  /** Requests whose response has not finished. */
  inFlight(): number;
  /**
   * Stop accepting, wait up to `timeoutMs` for in-flight responses, then cut
   * the remaining connections. Resolves with how many requests were cut.
   */
  close(timeoutMs: number): Promise<number>;
}

export async function listen(app: Express, opts: { host: string; port: number; lifecycle: ServerLifecycle; logger: Logger }): Promise<HttpServerHandle> {
  const server = createServer(app);
  let inFlight = 0;
  const idleWaiters: (() => void)[] = [];
  server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
    inFlight += 1;
    // Keep-alive clients would otherwise hold the server open after the drain.
    if (!opts.lifecycle.ready) res.setHeader('Connection', 'close');
    res.on('close', () => {
      inFlight -= 1;
      if (inFlight === 0) for (const w of idleWaiters.splice(0)) w();
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

  let closing: Promise<number> | null = null;
  return {
    server,
    url,
    port: address.port,
    inFlight: () => inFlight,
    close: (timeoutMs) =>
      (closing ??= (async () => {
        opts.lifecycle.beginDrain();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        let timer: NodeJS.Timeout | undefined;
        const idle = inFlight === 0 ? Promise.resolve('idle' as const) : new Promise<'idle'>((r) => idleWaiters.push(() => r('idle')));
        const outcome = await Promise.race([idle, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)))]);
        clearTimeout(timer);
        const cut = outcome === 'timeout' ? inFlight : 0;
        if (cut > 0) opts.logger.warn({ inFlight: cut, timeoutMs }, 'shutdown timeout: closing connections with requests still in flight');
        server.closeAllConnections();
        await closed;
        return cut;
      })()),
  };
}
