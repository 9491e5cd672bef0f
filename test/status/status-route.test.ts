import type { AddressInfo } from 'node:net';
import express from 'express';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GenerationMetrics } from '../../src/metrics/generation.js';
import { createMetrics } from '../../src/metrics/metrics.js';
import { createStatusRouter } from '../../src/server/routes/status.js';

let server: ReturnType<express.Express['listen']>;
let url = '';

beforeAll(async () => {
  const registry = new Registry();
  const gen = new GenerationMetrics(registry);
  gen.bind({
    scheduler: { stats: { running: 2, waiting: 1, preempted: 0 } },
    blocks: { stats: () => ({ totalBlocks: 64, usedBlocks: 8, cachedFreeBlocks: 2, prefixQueries: 10, prefixHits: 5 }) },
  });
  gen.observer.generated({ task: 'sql', ttftMs: 40, tpotMs: 5, e2eMs: 200, promptTokens: 9, completionTokens: 30 });
  const tasks = [{ id: 'sql', kind: 'lora' }];
  const status = createStatusRouter({ metrics: createMetrics(new Registry()), generation: { status: (s) => gen.status(tasks, s) } });
  const app = express();
  // What createApp does for a caller without a key (server.publicStatus off): no per-task rows.
  app.use('/hidden', (_req, res, next) => {
    res.locals['statusDetail'] = false;
    next();
  });
  app.use('/hidden', status);
  app.use('/', status);
  await new Promise<void>((resolve) => {
    server = app.listen(0, '127.0.0.1', () => resolve());
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('GET /v1/status with a decoder', () => {
  it('carries the generation section, with the decoder task rows when detail is allowed', async () => {
    const body = (await (await fetch(`${url}/v1/status`)).json()) as { generation: Record<string, unknown> };
    expect(body.generation).toMatchObject({ running: 2, waiting: 1, kvBlocksUsed: 8, kvBlocksCapacity: 64, prefixCacheHitRatio: 0.5, tasks: [{ id: 'sql', kind: 'lora', sequences: 1 }] });
    expect(body.generation['tasksHidden']).toBeUndefined();
  });

  it('withholds the decoder task rows but keeps the figures without detail', async () => {
    const body = (await (await fetch(`${url}/hidden/v1/status`)).json()) as { generation: Record<string, unknown>; tasks: { listHidden?: boolean } };
    expect(body.generation).toMatchObject({ running: 2, kvBlocksUsed: 8, tasks: [], tasksHidden: true });
    expect(body.tasks.listHidden).toBe(true);
  });
});
