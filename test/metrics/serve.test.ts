import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics/metrics.js';
import { serveMetrics, type MetricsEndpoint } from '../../src/metrics/serve.js';
import { promtool } from './promtool.js';

let endpoint: MetricsEndpoint;
const reg = new Registry();

beforeAll(async () => {
  const m = createMetrics(reg);
  m.recordQueueItems(10, 2);
  endpoint = await serveMetrics(reg, { host: '127.0.0.1', port: 0 });
});

afterAll(async () => {
  await endpoint?.close();
});

describe('worker metrics endpoint', () => {
  it('serves the registry on /metrics in valid exposition format', async () => {
    const res = await fetch(`http://127.0.0.1:${endpoint.port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(reg.contentType);
    const text = await res.text();
    expect(text).toMatch(/^petserve_queue_items_total\{outcome="processed"\} 10$/m);
    const check = promtool(['check', 'metrics'], text);
    expect(check.output).toBe('');
    expect(check.status).toBe(0);
  });

  it('answers /healthz, 404 elsewhere and 405 for writes', async () => {
    const base = `http://127.0.0.1:${endpoint.port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/other`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(405);
  });
});
