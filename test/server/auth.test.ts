// Data-plane API keys: every route of /openapi.json is either guarded or on
// the explicit public list (a new route without a decision fails here), a
// batch belongs to the key that created it, and the status detail and
// metrics are protected as configured.

import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PetServeConfig } from '../../src/config/config.js';
import { createMetrics } from '../../src/metrics/metrics.js';
import { BatchService } from '../../src/queue/producer.js';
import { deletePrefix } from '../../src/queue/redis.js';
import { createApp, PUBLIC_ROUTES } from '../../src/server/app.js';
import { batchOpenApiPaths, createBatchRouter } from '../../src/server/routes/batches.js';
import { createStatusRouter, statusOpenApiPaths } from '../../src/server/routes/status.js';
import { silentLogger } from '../../src/util/logger.js';
import { testPrefix, testSettings } from '../queue/helpers.js';
import { admin, call, listenOn, startTestStack, type Listening, type TestStack } from './helpers.js';

const KEY_A = 'key-a-0123456789abcdef';
const KEY_B = 'key-b-0123456789abcdef';
const asA = { Authorization: `Bearer ${KEY_A}` };
const asB = { Authorization: `Bearer ${KEY_B}` };

let stack: TestStack;
let batches: BatchService;
const prefix = testPrefix('auth');
const servers: Listening[] = [];

beforeAll(async () => {
  stack = await startTestStack([{ id: 'cls', kind: 'lora' }]);
  batches = BatchService.open(testSettings(prefix), silentLogger);
  await batches.waitReady(10_000);
});

afterAll(async () => {
  for (const s of servers) await s.close();
  await batches?.close();
  const redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: 1 });
  await deletePrefix(redis, prefix);
  await redis.quit();
  await stack?.close();
});

/** The app as `petserve serve` wires it (batch and status routers and their OpenAPI paths), with these server settings. */
async function serveWith(server: Partial<PetServeConfig['server']>): Promise<string> {
  const config: PetServeConfig = { ...stack.config, server: { ...stack.config.server, ...server } };
  const registry = new Registry();
  const metrics = createMetrics(registry);
  const status = createStatusRouter({ metrics, memory: stack.runtime.runner, scheduler: stack.runtime.scheduler });
  const app = createApp({
    runtime: stack.runtime,
    config,
    logger: silentLogger,
    metricsRegistry: registry,
    routers: [status, createBatchRouter({ batches, maxUploadBytes: config.server.maxUploadBytes })],
    openApiPaths: { ...batchOpenApiPaths(), ...statusOpenApiPaths() },
  });
  const l = await listenOn(app);
  servers.push(l);
  return l.url;
}

const EXAMPLE_PARAMS: Record<string, string> = { task: 'cls', id: 'batch_0000', file: 'status.js' };

describe('with server.apiKeys set', () => {
  let url: string;
  beforeAll(async () => {
    url = await serveWith({ apiKeys: [KEY_A, KEY_B] });
  });

  it('every route in /openapi.json is guarded (401 without credentials) or on the explicit public list', async () => {
    const doc = (await call(`${url}/openapi.json`)).body as { paths: Record<string, Record<string, { security?: unknown[] }>> };
    const routes = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((method) => ({ method: method.toUpperCase(), path, op: ops[method]! })));
    expect(routes.length).toBeGreaterThan(15);
    const seen: string[] = [];
    for (const { method, path, op } of routes) {
      const name = `${method} ${path}`;
      seen.push(name);
      const concrete = path.replace(/\{(\w+)\}/g, (_, p: string) => EXAMPLE_PARAMS[p] ?? 'x');
      const json = method === 'POST' ? {} : undefined;
      const anonymous = await call(`${url}${concrete}`, { method, json });
      if (PUBLIC_ROUTES.includes(name)) {
        expect(anonymous.status, `${name} is public`).not.toBe(401);
        expect(op.security, `${name} is public: the document must not ask for credentials`).toBeUndefined();
        continue;
      }
      expect(anonymous.status, `${name} is neither guarded nor in PUBLIC_ROUTES (src/server/app.ts)`).toBe(401);
      expect(anonymous.headers.get('www-authenticate')).toMatch(/^Bearer realm=/);
      expect(op.security, `${name} must declare its security in the document`).toBeDefined();
      const adminOnly = JSON.stringify(op.security) === JSON.stringify([{ adminToken: [] }]);
      const withKey = await call(`${url}${concrete}`, { method, json, headers: asA });
      if (adminOnly) expect(withKey.status, `${name}: an API key is not the admin token`).toBe(401);
      else expect(withKey.status, `${name} accepts an API key`).not.toBe(401);
      const wrong = await call(`${url}${concrete}`, { method, json, headers: { Authorization: 'Bearer not-a-key-of-this-server' } });
      expect(wrong.status, `${name} refuses a wrong key`).toBe(401);
    }
    // The public list names only routes that exist: a stale entry would hide a decision.
    for (const p of PUBLIC_ROUTES) expect(seen, p).toContain(p);
  });

  it('a batch belongs to the key that created it: another key gets 404 and never sees it listed', async () => {
    const submit = (headers: Record<string, string>, key?: string) =>
      call(`${url}/v1/batches`, { json: { items: [{ task: 'cls', input_ids: [101, 7, 102] }], ...(key ? { idempotency_key: key } : {}) }, headers });
    const a = await submit(asA, 'same-key');
    expect(a.status).toBe(202);
    const id = a.body.id as string;
    expect((await call(`${url}/v1/batches/${id}`, { headers: asA })).status).toBe(200);
    for (const [method, path] of [
      ['GET', `/v1/batches/${id}`],
      ['GET', `/v1/batches/${id}/results`],
      ['DELETE', `/v1/batches/${id}`],
    ] as const) {
      const r = await call(`${url}${path}`, { method, headers: asB });
      expect(r.status, `${method} ${path} as B`).toBe(404);
      expect(r.body.error.code).toBe('BATCH_NOT_FOUND');
    }
    const listA = await call(`${url}/v1/batches`, { headers: asA });
    const listB = await call(`${url}/v1/batches`, { headers: asB });
    expect(listA.body.data.map((b: { id: string }) => b.id)).toContain(id);
    expect(listB.body.data.map((b: { id: string }) => b.id)).not.toContain(id);
    expect(listB.body.total).toBe(0);
    // The same idempotency key under another API key is another batch, not a replay of A's.
    const b = await submit(asB, 'same-key');
    expect(b.status).toBe(202);
    expect(b.headers.get('idempotent-replayed')).toBeNull();
    expect(b.body.id).not.toBe(id);
    // A still cancels its own.
    expect((await call(`${url}/v1/batches/${id}`, { method: 'DELETE', headers: asA })).body.status).toBe('cancelled');
  });

  it('GET /v1/status needs a key or the admin token, and then shows the task rows', async () => {
    expect((await call(`${url}/v1/status`)).status).toBe(401);
    const withKey = await call(`${url}/v1/status`, { headers: asB });
    expect(withKey.status).toBe(200);
    expect(withKey.body.tasks.list.map((t: { id: string }) => t.id)).toEqual(['cls']);
    expect((await call(`${url}/v1/status`, { headers: admin })).body.tasks.list).toHaveLength(1);
  });

  it('metrics stay public unless server.publicMetrics is false', async () => {
    expect((await call(`${url}/metrics`)).status).toBe(200);
    const closed = await serveWith({ apiKeys: [KEY_A], publicMetrics: false });
    expect((await call(`${closed}/metrics`)).status).toBe(401);
    expect((await call(`${closed}/metrics`, { headers: asA })).status).toBe(200);
  });
});

describe('without keys', () => {
  it('everything but the admin routes is open, and status rows need the admin token unless server.publicStatus', async () => {
    const url = await serveWith({});
    expect((await call(`${url}/v1/tasks/cls/predict`, { json: { input_ids: [[101, 7, 102]] } })).status).toBe(200);
    const anonymous = await call(`${url}/v1/status`);
    expect(anonymous.status).toBe(200);
    expect(anonymous.body.tasks).toMatchObject({ registered: 1, list: [], listHidden: true });
    expect((await call(`${url}/v1/status`, { headers: admin })).body.tasks.list).toHaveLength(1);
    const open = await serveWith({ publicStatus: true });
    expect((await call(`${open}/v1/status`)).body.tasks.list).toHaveLength(1);
  });
});
