import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StatusSnapshot } from '../../src/metrics/status.js';
import { PET_KINDS } from '../../src/pet/types.js';
import { mulberry32, predict, startLiveServer, type LiveServer, type LiveTask } from '../status/live-server.js';
import { promtool } from './promtool.js';
import { gauge, labelSets, value } from './values.js';

/**
 * The real server on the real engine (bert-tiny on lavapipe): a burst of
 * predict requests over tasks of every PET kind, then /metrics must be valid
 * exposition and its counters must have moved by exactly what was sent.
 */
let live: LiveServer;
// Two tasks per kind, one an embedding task; larger LoRAs and adapters so the tasks outgrow the pool.
const TASKS: LiveTask[] = PET_KINDS.flatMap((kind) =>
  [0, 1].map((i) => ({
    id: `${kind}-${i}`,
    kind,
    numLabels: kind === 'bitfit' && i === 1 ? 0 : 2,
    ...(kind === 'lora' ? { rank: 24 } : kind === 'adapter' ? { bottleneck: 64 } : {}),
  })),
);
const CLIENTS = 3;

beforeAll(async () => {
  // The pool holds the 3 largest tasks (3 clients: a batch never carries more
  // distinct tasks), not all 12: the burst must page PETs in and evict others.
  live = await startLiveServer(TASKS, { tightPoolFor: CLIENTS, perTaskTopK: 3 });
}, 600_000);

afterAll(async () => {
  await live?.close();
});

async function scrape(): Promise<string> {
  const res = await fetch(`${live.url}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

describe('metrics of a running server', () => {
  it('count a burst of requests exactly, batch them, page PETs, and stay valid exposition', async () => {
    const reg = live.registry;
    const before = {
      ok: await value(reg, 'petserve_requests_total', { outcome: 'ok' }),
      latency: await value(reg, 'petserve_request_latency_seconds_count'),
      rows: await value(reg, 'petserve_batch_requests_sum'),
      batches: await value(reg, 'petserve_batch_requests_count'),
      http: await value(reg, 'petserve_http_requests_total', { route: '/v1/tasks/:task/predict', status_code: 200 }),
    };

    // 48 requests from 3 concurrent clients, cycling over all 12 tasks.
    const rand = mulberry32(7);
    const N = 48;
    const statuses = await Promise.all(
      Array.from({ length: CLIENTS }, async (_, client) => {
        const out: number[] = [];
        for (let i = 0; i < N / CLIENTS; i++) out.push(await predict(live.url, TASKS[(client * 4 + i) % TASKS.length]!.id, 3 + Math.floor(rand() * 20), rand));
        return out;
      }),
    );
    expect(statuses.flat()).toEqual(Array(N).fill(200));
    // Requests the server refuses are counted under their route pattern too.
    expect(await predict(live.url, 'no-such-task', 3, rand)).toBe(404);
    const bad = await fetch(`${live.url}/v1/tasks/lora-0/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"nope":1}' });
    expect(bad.status).toBe(400);
    await new Promise((r) => setTimeout(r, 50));

    const text = await scrape();
    const check = promtool(['check', 'metrics'], text);
    expect(check.output).toBe('');
    expect(check.status).toBe(0);

    // Each predict call carried one input: one scheduler request each.
    expect((await value(reg, 'petserve_requests_total', { outcome: 'ok' })) - before.ok).toBe(N);
    expect((await value(reg, 'petserve_request_latency_seconds_count')) - before.latency).toBe(N);
    expect((await value(reg, 'petserve_batch_requests_sum')) - before.rows).toBe(N);
    const batches = (await value(reg, 'petserve_batch_requests_count')) - before.batches;
    // Concurrent arrivals share batches.
    expect(batches).toBeGreaterThan(0);
    expect(batches).toBeLessThan(N);
    expect((await value(reg, 'petserve_http_requests_total', { route: '/v1/tasks/:task/predict', status_code: 200 })) - before.http).toBe(N);
    expect(await value(reg, 'petserve_http_requests_total', { route: '/v1/tasks/:task/predict', status_code: 404 })).toBe(1);
    expect(await value(reg, 'petserve_http_requests_total', { route: '/v1/tasks/:task/predict', status_code: 400 })).toBe(1);
    for (const kind of PET_KINDS) {
      expect(await value(reg, 'petserve_requests_total', { kind, outcome: 'ok' }), kind).toBeGreaterThan(0);
      expect(await value(reg, 'petserve_http_requests_total', { route: '/v1/tasks/:task/predict', kind }), kind).toBeGreaterThan(0);
    }
    // perTaskTopK = 3: exactly three task series. Every task got 4 answered
    // requests (48 over 12); lora-0 also the refused one, so it leads with 5.
    const perTask = await labelSets(reg, 'petserve_task_requests_total');
    expect(perTask.length).toBe(3);
    expect(perTask[0]).toEqual({ task: 'lora-0' });
    expect(await value(reg, 'petserve_task_requests_total', { task: 'lora-0' })).toBe(N / TASKS.length + 1);
    for (const l of perTask.slice(1)) expect(await value(reg, 'petserve_task_requests_total', l)).toBe(N / TASKS.length);

    // Every other batch is profiled: the device split and the overhead ratio are live.
    expect(await value(reg, 'petserve_batch_device_seconds_count', { part: 'shared' })).toBeGreaterThan(0);
    expect(await value(reg, 'petserve_batch_device_seconds_sum', { part: 'shared' })).toBeGreaterThan(0);
    expect(Number.isFinite(await gauge(reg, 'petserve_pet_overhead_ratio'))).toBe(true);

    // Memory: 12 tasks registered, a pool for 3 of them, so PETs were paged in and evicted.
    expect(await value(reg, 'petserve_tasks_registered')).toBe(TASKS.length);
    const resident = await value(reg, 'petserve_tasks_resident');
    expect(resident).toBeGreaterThan(0);
    expect(resident).toBeLessThan(TASKS.length);
    expect(await value(reg, 'petserve_pet_page_ins_total')).toBeGreaterThanOrEqual(TASKS.length);
    expect(await value(reg, 'petserve_pet_evictions_total')).toBeGreaterThan(0);
    expect(await gauge(reg, 'petserve_base_model_bytes')).toBe(live.runtime.runner.memory().baseModelBytes);
    expect(await gauge(reg, 'petserve_base_model_bytes')).toBeGreaterThan(1_000_000);
    expect(await gauge(reg, 'petserve_pet_pool_used_bytes')).toBeLessThanOrEqual(await gauge(reg, 'petserve_pet_pool_budget_bytes'));
    expect(await value(reg, 'petserve_scheduler_queue_depth')).toBe(0);
    expect(text).toMatch(/^petserve_process_cpu_seconds_total \d/m);
  });

  it('serves the status JSON from the same sources', async () => {
    const res = await fetch(`${live.url}/v1/status`);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const s = (await res.json()) as StatusSnapshot;
    expect(s.tasks.registered).toBe(TASKS.length);
    expect(s.tasks.list.map((t) => t.id).sort()).toEqual(TASKS.map((t) => t.id).sort());
    expect(s.tasks.resident).toBe(await value(live.registry, 'petserve_tasks_resident'));
    expect(s.traffic.requests).toBeGreaterThanOrEqual(48);
    expect(s.traffic.p50Ms).toBeGreaterThan(0);
    expect(s.traffic.p99Ms!).toBeGreaterThanOrEqual(s.traffic.p50Ms!);
    expect(s.memory!.baseModelBytes).toBeGreaterThan(0);
    expect(s.scheduler!.policy).toBe('slo');
    expect(s.petOverhead).not.toBeNull();
    expect(s.info['adapter']).toBe(live.runtime.ctx.capabilities.adapterName);
  });

  it('serves the status page and its local assets, and nothing else under the assets path', async () => {
    const page = await fetch(`${live.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    const html = await page.text();
    expect(html).toContain('status/assets/uPlot.iife.min.js');
    expect(html).not.toMatch(/https?:\/\//);
    for (const [file, type] of [['uPlot.iife.min.js', 'javascript'], ['uPlot.min.css', 'css'], ['status.js', 'javascript'], ['status.css', 'css']]) {
      const r = await fetch(`${live.url}/status/assets/${file}`);
      expect(r.status, file).toBe(200);
      expect(r.headers.get('content-type'), file).toContain(type);
    }
    for (const file of ['__proto__', 'package.json', '..%2Fpackage.json', 'constructor']) {
      expect((await fetch(`${live.url}/status/assets/${file}`)).status, file).toBe(404);
    }
  });
});
