import { hostname } from 'node:os';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Express } from 'express';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import request from 'supertest';
import { stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f32Config } from '../helpers/config.js';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { initPet } from '../../src/pet/init-pet.js';
import { BatchService } from '../../src/queue/producer.js';
import { batchQueueSettings } from '../../src/queue/settings.js';
import type { BatchItemInput, BatchView, ResultLine } from '../../src/queue/types.js';
import { startRuntime, type Runtime } from '../../src/runtime/runtime.js';
import { createApp } from '../../src/server/app.js';
import { createBatchRouter } from '../../src/server/routes/batches.js';
import { silentLogger } from '../../src/util/logger.js';
import { deletePrefix, killClientsOf, REDIS_URL, spawnWorkerProcess, testPrefix, waitFor, type WorkerProcess } from './helpers.js';

/**
 * The real engine end to end: bert-tiny on the WebGPU adapter, tasks of
 * different PET kinds in a tasks directory, the server (in this process:
 * online answers and the batch routes) and `petserve worker` processes
 * started from source, all on the real Redis.
 */

const TASKS = [
  { id: 'sst', kind: 'lora' as const, numLabels: 2 },
  { id: 'topic', kind: 'adapter' as const, numLabels: 3 },
  { id: 'vec', kind: 'bitfit' as const, numLabels: 0 },
];
// Short locks so a killed worker's chunk is taken over within seconds (production default: 30 s / 15 s).
// Not shorter than 8 s: a worker renews its locks every half lock, from an event loop that
// a batch on a loaded 2-core lavapipe machine can hold for seconds; at 4 s the survivor
// was seen losing its own locks (issue 16's load runs).
const WORKER_FLAGS = ['--lock-duration-ms', '8000', '--stalled-interval-ms', '1000', '--concurrency', '2'];

let root: string;
let configFile: string;
let prefix: string;
let admin: Redis;
let runtime: Runtime;
let batches: BatchService;
let app: Express;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-batch-e2e-'));
  const modelDir = join(root, 'model');
  await initModel({ preset: 'bert-tiny', outDir: modelDir, numLabels: 2, vocabSize: 1000, maxPositions: 64, seed: 7 });
  const base = await loadCheckpoint(modelDir);
  for (const [i, t] of TASKS.entries()) await initPet({ model: base, kind: t.kind, outDir: join(root, 'tasks', t.id), seed: 10 + i, numLabels: t.numLabels });
  prefix = testPrefix('e2e');
  configFile = join(root, 'config.yaml');
  await writeFile(
    configFile,
    toYaml({
      // f32 in every process: the workers' answers are compared with the online ones ('auto' may pick f16).
      model: { dir: modelDir, dtype: 'f32' },
      kernels: { autotune: false },
      server: { tasksDir: join(root, 'tasks'), uploadDir: join(root, 'uploads') },
      redis: { url: REDIS_URL },
      batches: { prefix, chunkSize: 6, attempts: 5 },
      // The online answers compared with the batch's are not latency tests: no 2 s objective on a loaded machine.
      scheduler: { defaultSloMs: 600_000 },
      log: { level: 'info' },
    }),
  );
  admin = new Redis(REDIS_URL);
  const config = f32Config({ file: configFile, env: { PETSERVE_GPU_ADAPTER: process.env['PETSERVE_GPU_ADAPTER'] } });
  // In-process first: on a first run it profiles the cost model into the shared cache the workers then read.
  runtime = await startRuntime(config, silentLogger);
  batches = BatchService.open(batchQueueSettings(config), silentLogger);
  await batches.waitReady(5000);
  app = createApp({
    runtime,
    config,
    logger: silentLogger,
    metricsRegistry: new Registry(),
    routers: [createBatchRouter({ batches, maxUploadBytes: config.server.maxUploadBytes })],
  });
  workers.push(spawnWorkerProcess(configFile, WORKER_FLAGS), spawnWorkerProcess(configFile, WORKER_FLAGS));
  await Promise.all(workers.map((w) => w.ready));
}, 600_000);

afterAll(async () => {
  for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
  await Promise.all(workers.map((w) => w.exited));
  await batches?.close();
  await runtime?.close();
  if (admin) {
    await deletePrefix(admin, prefix);
    admin.disconnect();
  }
  await rm(root, { recursive: true, force: true });
}, 120_000);

function items(n: number, seed: number): BatchItemInput[] {
  return Array.from({ length: n }, (_, k) => {
    const task = TASKS[(k + seed) % TASKS.length]!.id;
    const len = 3 + ((k * 7 + seed) % 9);
    return k % 4 === 3
      ? { task, inputs: `offline item ${k} of batch ${seed}`, custom_id: `s${seed}-${k}` }
      : { task, input_ids: [101, ...Array.from({ length: len }, (_, j) => 200 + ((k * 31 + j * 17 + seed) % 700)), 102], custom_id: `s${seed}-${k}` };
  });
}

async function submit(list: BatchItemInput[]): Promise<string> {
  const res = await request(app).post('/v1/batches').send({ items: list }).expect(202);
  return (res.body as BatchView).id;
}

async function finished(id: string, timeoutMs = 300_000): Promise<BatchView> {
  return waitFor(`batch ${id} to finish`, async () => {
    if (!batches.ready()) return null;
    const b = await batches.get(id);
    return b.finished_at !== null ? b : null;
  }, timeoutMs, 200);
}

async function lines(id: string): Promise<ResultLine[]> {
  const res = await request(app).get(`/v1/batches/${id}/results`).expect(200);
  return res.text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as ResultLine);
}

function expectExactlyOnceInOrder(got: ResultLine[], list: BatchItemInput[]): void {
  expect(got.map((l) => l.index)).toEqual([...list.keys()]);
  expect(got.map((l) => l.custom_id)).toEqual(list.map((i) => i.custom_id));
  for (const l of got) expect(l.error, `item ${l.index}: ${JSON.stringify(l.error)}`).toBeUndefined();
}

/** Which worker process holds an active chunk of the queue right now (BullMQ's processedBy). */
async function activeHolders(): Promise<string[]> {
  const active = await admin.lrange(`${prefix}:batches:active`, 0, -1);
  const names = await Promise.all(active.map((jobId) => admin.hget(`${prefix}:batches:${jobId}`, 'pb')));
  return names.filter((n): n is string => n !== null);
}

describe('offline batches with the real engine and worker processes', () => {
  it('submit → worker processes → every item exactly once, in order, equal to the online predict answer', async () => {
    const list = items(36, 1);
    const id = await submit(list);
    const done = await finished(id);
    expect(done).toMatchObject({ status: 'completed', counts: { total: 36, done: 36, failed: 0 } });
    const got = await lines(id);
    expectExactlyOnceInOrder(got, list);
    const online = await Promise.all(
      list.map((it) =>
        request(app)
          .post(`/v1/tasks/${it.task}/predict`)
          .send(it.inputs !== undefined ? { inputs: it.inputs } : { input_ids: [it.input_ids] })
          .expect(200),
      ),
    );
    online.forEach((res, i) => {
      const answer = (res.body as { outputs: Record<string, unknown>[] }).outputs[0]!;
      const response = got[i]!.response as Record<string, unknown>;
      // Bit for bit: every kernel computes a row independently of its batch mates, so
      // another process batching the item with other items gives the same floats.
      expect(response).toEqual(answer);
    });
  });

  it('a worker process killed with SIGKILL in the middle of a chunk: another one takes the chunk over, nothing lost or duplicated', async () => {
    const [victim, survivor] = workers;
    const list = items(60, 2);
    const id = await submit(list);
    const victimName = `${hostname()}:${victim!.pid}`;
    await waitFor('the victim to be inside a chunk that has answered items', async () => {
      const b = await batches.get(id);
      return b.counts.done > 0 && b.counts.pending > 12 && (await activeHolders()).includes(victimName);
    }, 300_000, 20);
    victim!.child.kill('SIGKILL');
    expect(await victim!.exited).toBeNull(); // killed by the signal, no exit code
    const done = await finished(id);
    expect(done).toMatchObject({ status: 'completed', counts: { total: 60, done: 60, failed: 0, pending: 0 } });
    expectExactlyOnceInOrder(await lines(id), list);
    expect(await admin.hlen(`${prefix}:batch:${id}:results`)).toBe(60);
    expect(survivor!.log()).toMatch(/took over a stalled chunk/);
  });

  it('Redis drops every connection of the workers and the server mid-batch: they reconnect and the batch completes', async () => {
    // Replace the killed worker so two processes share the work again.
    const fresh = spawnWorkerProcess(configFile, WORKER_FLAGS);
    workers.push(fresh);
    await fresh.ready;
    const list = items(48, 3);
    const id = await submit(list);
    await waitFor('the batch to be running', async () => {
      const b = await batches.get(id);
      return b.counts.done > 0 && b.counts.pending > 12;
    }, 300_000, 20);
    expect(await killClientsOf(admin, prefix)).toBeGreaterThanOrEqual(5);
    const done = await finished(id);
    expect(done).toMatchObject({ status: 'completed', counts: { total: 48, done: 48, failed: 0 } });
    expectExactlyOnceInOrder(await lines(id), list);
  });

  it('a worker started while Redis is unreachable waits without crashing and still stops cleanly on SIGTERM', async () => {
    const lonely = spawnWorkerProcess(configFile, [...WORKER_FLAGS, '--redis-url', 'redis://127.0.0.1:1']);
    workers.push(lonely);
    await waitFor('its engine to start and Redis to be refused', async () => lonely.log().includes('redis connection error'), 300_000, 100);
    await new Promise((r) => setTimeout(r, 3000));
    expect(lonely.child.exitCode).toBeNull();
    expect(lonely.log()).not.toContain('batch worker started');
    // BullMQ reports every reconnect attempt; the worker logs the fault once.
    expect(lonely.log().match(/batch worker: queue error/g)?.length ?? 0).toBeLessThanOrEqual(2);
    lonely.child.kill('SIGTERM');
    expect(await lonely.exited).toBe(0);
    expect(lonely.log()).toContain('batch worker stopped');
  });
});
