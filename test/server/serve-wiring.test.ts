// `petserve serve` as shipped: one process with metrics, the status page, the
// batch routes on Redis and readiness of its parts — not just the app factory.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deletePrefix } from '../../src/queue/redis.js';
import { admin, makeTinyModel, testConfig, writeTasks } from './helpers.js';

let root: string;
let child: ChildProcess | null = null;
let url = '';
const logs: { msg?: string; removed?: string[] }[] = [];
const prefix = `petserve-test-wiring-${process.pid}`;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-wiring-'));
  const base = await makeTinyModel(join(root, 'model'));
  await writeTasks(base, join(root, 'tasks'), [
    { id: 'sst', kind: 'lora' },
    { id: 'nli', kind: 'bitfit' },
  ]);
  const config = testConfig(root, { 'server.port': 0, 'log.level': 'info', 'batches.prefix': prefix, 'redis.url': 'redis://127.0.0.1:6379' });
  // What a crash mid-upload leaves behind: a received archive and a half-unpacked staging directory.
  await mkdir(join(config.server.uploadDir, '.incoming'), { recursive: true });
  await writeFile(join(config.server.uploadDir, '.incoming', 'orphan.upload'), 'partial');
  await mkdir(join(config.server.uploadDir, '.staging-abc123', 'x'), { recursive: true });
  const file = join(root, 'serve.yaml');
  await writeFile(file, stringify(config));
  const c = spawn(process.execPath, ['--import', 'tsx', 'test/server/fixtures/petserve-cli.ts', 'serve', '--config', file], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child = c;
  url = await new Promise<string>((resolve, reject) => {
    const lines: string[] = [];
    createInterface({ input: c.stderr! }).on('line', (line) => {
      lines.push(line);
      try {
        const l = JSON.parse(line) as { msg?: string; url?: string; removed?: string[] };
        logs.push(l);
        if (l.msg === 'listening') resolve(String(l.url));
      } catch {
        // not a log line
      }
    });
    c.on('exit', (code) => reject(new Error(`serve exited ${code}: ${lines.slice(-5).join('\n')}`)));
  });
});

afterAll(async () => {
  if (child && child.exitCode === null) {
    child.kill('SIGTERM');
    await new Promise((r) => child!.on('exit', r));
  }
  const redis = new Redis('redis://127.0.0.1:6379', { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  await deletePrefix(redis, prefix);
  await redis.quit();
  await rm(root, { recursive: true, force: true });
});

/** Sum of a counter over every series matching `labels` (other labels, e.g. kind, vary). */
const metricValue = (text: string, name: string, labels: Record<string, string>): number =>
  text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);

describe('petserve serve wiring', () => {
  it('counts predict requests and batches in /metrics', async () => {
    const before = await (await fetch(`${url}/metrics`)).text();
    const labels = { route: '/v1/tasks/:task/predict', status_code: '200' };
    const n0 = metricValue(before, 'petserve_http_requests_total', labels);
    const answers = await Promise.all(
      ['sst', 'nli', 'sst'].map((task) =>
        fetch(`${url}/v1/tasks/${task}/predict`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ input_ids: [[101, 2000, 102]] }) }),
      ),
    );
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
    const after = await (await fetch(`${url}/metrics`)).text();
    expect(metricValue(after, 'petserve_http_requests_total', labels) - n0).toBe(3);
    expect(after).toMatch(/^petserve_batch_requests_count \d+/m);
    expect(Number(/^petserve_batch_requests_count (\d+)/m.exec(after)![1])).toBeGreaterThan(0);
    expect(metricValue(after, 'petserve_tasks_registered', {})).toBe(2);
  });

  it('serves the status page and its JSON; per-task rows only with the admin token (server.publicStatus is off)', async () => {
    const page = await fetch(`${url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    type Status = { tasks: { registered: number; list: { id: string }[]; listHidden?: boolean } };
    const anonymous = (await (await fetch(`${url}/v1/status`)).json()) as Status;
    expect(anonymous.tasks).toMatchObject({ registered: 2, list: [], listHidden: true });
    const status = (await (await fetch(`${url}/v1/status`, { headers: admin })).json()) as Status;
    expect(status.tasks.list.map((t) => t.id).sort()).toEqual(['nli', 'sst']);
    const openapi = (await (await fetch(`${url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(openapi.paths)).toEqual(expect.arrayContaining(['/v1/status', '/', '/status/assets/{file}', '/v1/batches']));
  });

  it('removed the uploads an earlier run left in uploadDir at start-up, and logged them', async () => {
    const removed = logs.find((l) => l.msg === 'removed uploads left by an earlier run')?.removed;
    expect(removed?.sort()).toEqual(['.incoming/orphan.upload', '.staging-abc123']);
    const uploadDir = join(root, 'uploads');
    expect(await readdir(join(uploadDir, '.incoming'))).toEqual([]);
    expect((await readdir(uploadDir)).filter((n) => n.startsWith('.staging-'))).toEqual([]);
  });

  it('reports the batch queue in readiness and accepts a batch on Redis', async () => {
    const ready = (await (await fetch(`${url}/v2/health/ready`)).json()) as { ready: boolean; parts: { batches: { ready: boolean } } };
    expect(ready.ready).toBe(true);
    expect(ready.parts.batches.ready).toBe(true);
    const r = await fetch(`${url}/v1/batches`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ items: [{ task: 'sst', input_ids: [101, 7, 102] }, { task: 'nli', input_ids: [101, 8, 102] }] }),
    });
    expect(r.status).toBe(202);
    const { id } = (await r.json()) as { id: string };
    const got = (await (await fetch(`${url}/v1/batches/${id}`)).json()) as { status: string; counts: { total: number; failed: number } };
    expect(got.counts).toMatchObject({ total: 2, failed: 0 });
    // No worker runs here: the batch waits, and cancelling it stops it.
    expect(got.status).toBe('queued');
    const cancelled = await fetch(`${url}/v1/batches/${id}`, { method: 'DELETE' });
    expect(cancelled.status).toBe(200);
    expect(((await cancelled.json()) as { status: string }).status).toBe('cancelled');
  });
});
