// listen() and its close(): the HTTP side of shutdown in isolation (no GPU):
// requests still waiting at the bound are answered 503 SHUTTING_DOWN with
// Retry-After in their route's error shape, and binding beyond loopback
// without API keys is warned about.

import express from 'express';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { listen, ServerLifecycle } from '../../src/server/lifecycle.js';

interface LogLine {
  level: number;
  msg: string;
}

function capture(): { logger: pino.Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  return { lines, logger: pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as LogLine) }) };
}

/** An app whose routes never answer: what a request queued behind a long batch looks like to the HTTP layer. */
function stuckApp(): express.Express {
  const app = express();
  app.post('/v1/tasks/:task/predict', () => undefined);
  app.post('/v2/models/:task/infer', () => undefined);
  return app;
}

describe('shutdown of the HTTP server', () => {
  it('answers every request still waiting at the bound with 503 SHUTTING_DOWN + Retry-After, in the route’s error shape', async () => {
    const { logger, lines } = capture();
    const lifecycle = new ServerLifecycle();
    const http = await listen(stuckApp(), { host: '127.0.0.1', port: 0, lifecycle, logger });
    const post = (path: string) => fetch(`${http.url}${path}`, { method: 'POST' }).then(async (r) => ({ status: r.status, retryAfter: r.headers.get('retry-after'), body: (await r.json()) as unknown }));
    const waiting = [post('/v1/tasks/a/predict'), post('/v1/tasks/b/predict'), post('/v2/models/a/infer')];
    while (http.inFlight() < 3) await new Promise((r) => setTimeout(r, 10));
    const answered = await http.close(200);
    expect(answered).toBe(3);
    expect(lifecycle.ready).toBe(false);
    const [v1a, v1b, v2] = await Promise.all(waiting);
    for (const a of [v1a!, v1b!]) {
      expect(a.status).toBe(503);
      expect(Number(a.retryAfter)).toBeGreaterThan(0);
      expect(a.body).toMatchObject({ error: { code: 'SHUTTING_DOWN' } });
    }
    expect(v2!.status).toBe(503);
    expect(typeof (v2!.body as { error: unknown }).error).toBe('string');
    expect(lines.some((l) => l.msg.startsWith('shutdown timeout: answered the requests still waiting'))).toBe(true);
  });

  it('with nothing in flight, closes at once and answers nobody', async () => {
    const http = await listen(stuckApp(), { host: '127.0.0.1', port: 0, lifecycle: new ServerLifecycle(), logger: capture().logger });
    expect(await http.close(60_000)).toBe(0);
  });
});

describe('binding', () => {
  it('warns when listening beyond loopback without API keys, and not with keys or on loopback', async () => {
    const cases = [
      { host: '0.0.0.0', keysRequired: false, warns: true },
      { host: '0.0.0.0', keysRequired: true, warns: false },
      { host: '127.0.0.1', keysRequired: false, warns: false },
    ];
    for (const c of cases) {
      const { logger, lines } = capture();
      const http = await listen(express(), { host: c.host, port: 0, lifecycle: new ServerLifecycle(), logger, keysRequired: c.keysRequired });
      await http.close(100);
      expect(lines.some((l) => l.level === 40 && l.msg.startsWith('listening beyond loopback without API keys')), JSON.stringify(c)).toBe(c.warns);
    }
  });
});
