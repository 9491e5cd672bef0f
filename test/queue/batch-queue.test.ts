import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { QueueStatsSource } from '../../src/metrics/metrics.js';
import { BatchFinishedError, IdempotencyConflictError, RedisUnavailableError } from '../../src/queue/errors.js';
import { parseJsonItems, parseJsonlItems } from '../../src/queue/items.js';
import { BatchService } from '../../src/queue/producer.js';
import type { BatchQueueSettings } from '../../src/queue/settings.js';
import type { BatchView, ResultLine } from '../../src/queue/types.js';
import { BatchWorker, type BatchWorkerOptions } from '../../src/queue/worker.js';
import { predictOutput } from '../../src/gateway/predict-output.js';
import { silentLogger } from '../../src/util/logger.js';
import {
  deletePrefix,
  DeviceLostError,
  FakeService,
  fakeResult,
  itemEngine,
  killClientsOf,
  OverloadError,
  REDIS_URL,
  testPrefix,
  testSettings,
  tinyModel,
  waitFor,
  type TinyModel,
} from './helpers.js';

let admin: Redis;
let model: TinyModel;

beforeAll(async () => {
  admin = new Redis(REDIS_URL, { lazyConnect: false });
  model = await tinyModel([
    { id: 'sentiment', numLabels: 3 },
    { id: 'embed', numLabels: 0 },
  ]);
});
afterAll(async () => {
  admin.disconnect();
  await model.dispose();
});

/** What one test opened, closed and wiped after it. */
const opened: { services: BatchService[]; workers: BatchWorker[]; prefixes: string[] } = { services: [], workers: [], prefixes: [] };
afterEach(async () => {
  await Promise.all(opened.workers.splice(0).map((w) => w.close()));
  await Promise.all(opened.services.splice(0).map((s) => s.close()));
  for (const p of opened.prefixes.splice(0)) await deletePrefix(admin, p);
});

async function setup(name: string, over: Partial<BatchQueueSettings> = {}): Promise<{ settings: BatchQueueSettings; service: BatchService }> {
  const prefix = testPrefix(name);
  opened.prefixes.push(prefix);
  const settings = testSettings(prefix, over);
  const service = BatchService.open(settings, silentLogger);
  opened.services.push(service);
  await service.waitReady(5000);
  return { settings, service };
}

function startWorker(settings: BatchQueueSettings, fake: FakeService, over: Partial<BatchWorkerOptions> = {}): BatchWorker {
  const w = BatchWorker.start({ settings, engine: itemEngine(model, fake), concurrency: 2, logger: silentLogger, ...over });
  opened.workers.push(w);
  return w;
}

async function finished(service: BatchService, id: string, timeoutMs = 30_000): Promise<BatchView> {
  return waitFor(`batch ${id} to finish`, async () => {
    const b = await service.get(id);
    return b.finished_at !== null ? b : null;
  }, timeoutMs);
}

async function allLines(service: BatchService, id: string, offset?: number, limit?: number): Promise<ResultLine[]> {
  const { pages } = await service.results(id, offset, limit);
  const out: ResultLine[] = [];
  for await (const page of pages) for (const l of page) out.push(JSON.parse(l) as ResultLine);
  return out;
}

const ids = (...xs: number[]): number[] => [101, ...xs, 102];

describe('offline batches on Redis (fake engine)', () => {
  it('answers every item exactly once, in input order, with what the online formatter gives, at offline priority', async () => {
    const { settings, service } = await setup('order');
    const fake = new FakeService(model.registry);
    fake.delayMs = 5;
    const items = [
      ...Array.from({ length: 9 }, (_, k) => ({ task: 'sentiment', input_ids: ids(k + 5, k + 9), custom_id: `c${k}` })),
      { task: 'embed', input_ids: ids(7, 8) },
      { task: 'sentiment', inputs: 'hello world', options: { return_logits: true } },
    ];
    const { batch, created } = await service.submit(await parseJsonItems(items));
    expect(created).toBe(true);
    expect(batch).toMatchObject({ status: 'queued', counts: { total: 11, done: 0, failed: 0, cancelled: 0, pending: 11 }, chunks: 3 });
    startWorker(settings, fake);
    startWorker(settings, fake);
    const done = await finished(service, batch.id);
    expect(done).toMatchObject({ status: 'completed', counts: { total: 11, done: 11, failed: 0, cancelled: 0, pending: 0 } });
    expect(done.started_at).not.toBeNull();

    const lines = await allLines(service, batch.id);
    expect(lines.map((l) => l.index)).toEqual([...Array(11).keys()]);
    expect(fake.requests).toHaveLength(11);
    expect(fake.requests.every((r) => r.priority === 'offline' && r.dropExpired === false)).toBe(true);
    for (const line of lines.slice(0, 9)) {
      const req = { task: 'sentiment', inputIds: items[line.index]!.input_ids! };
      expect(line).toEqual({
        index: line.index,
        custom_id: `c${line.index}`,
        task: 'sentiment',
        response: predictOutput(model.registry.get('sentiment')!, fakeResult(req, 3), false),
      });
    }
    expect(lines[9]!.response).toEqual({ embedding: Array.from(fakeResult({ task: 'embed', inputIds: ids(7, 8), pooled: true }, 0).pooled!) });
    const textIds = model.tokenizer.encode('hello world').inputIds;
    expect(lines[10]!.response).toEqual(predictOutput(model.registry.get('sentiment')!, fakeResult({ task: 'sentiment', inputIds: textIds }, 3), true));

    // Results expire with the batch's TTL.
    const ttl = await admin.ttl(`${settings.prefix}:batch:${batch.id}:results`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(settings.resultsTtlSeconds);
    // Paged reads cover item indices [offset, offset + limit).
    expect((await allLines(service, batch.id, 4, 3)).map((l) => l.index)).toEqual([4, 5, 6]);
    expect((await service.list(0, 10)).batches.map((b) => b.id)).toEqual([batch.id]);
  });

  it('a poisoned item (unknown task, bad ids, too long) fails alone with a clear error; the rest is answered', async () => {
    const { settings, service } = await setup('poison');
    const fake = new FakeService(model.registry);
    const long = Array.from({ length: 40 }, () => 7);
    const items = [
      { task: 'sentiment', input_ids: ids(5) },
      { task: 'deleted-task', input_ids: ids(5), custom_id: 'gone' },
      { task: 'sentiment', input_ids: ids(99999) },
      { task: 'sentiment', input_ids: long },
      { task: 'sentiment', input_ids: long, options: { truncate: true } },
      { task: 'embed', inputs: 'fine' },
    ];
    const { batch } = await service.submit(await parseJsonItems(items));
    startWorker(settings, fake);
    const done = await finished(service, batch.id);
    expect(done).toMatchObject({ status: 'completed', counts: { done: 3, failed: 3 } });
    const lines = await allLines(service, batch.id);
    expect(lines.map((l) => l.error?.code ?? 'ok')).toEqual(['ok', 'TASK_NOT_FOUND', 'INVALID_INPUT', 'SEQUENCE_TOO_LONG', 'ok', 'ok']);
    expect(lines[1]).toMatchObject({ custom_id: 'gone', task: 'deleted-task', error: { message: expect.stringContaining("'deleted-task'") } });
    expect(lines[2]!.error!.message).toMatch(/input_ids\[0\]\[\d+\] is not a token id/);
    expect(lines[2]!.error!.message).not.toContain('99999');
    // The truncated item ran with the model's 32 positions.
    expect(fake.requests.find((r) => r.inputIds.length === 32)).toBeDefined();
  });

  it('bad JSONL lines become per-line error results and the rest runs', async () => {
    const { settings, service } = await setup('jsonl');
    const fake = new FakeService(model.registry);
    const text = [
      JSON.stringify({ task: 'sentiment', input_ids: ids(1), custom_id: 'a' }),
      '{"task": "sentiment", "input_ids": [101, 2',
      '',
      JSON.stringify({ task: 'sentiment', custom_id: 'b' }),
      JSON.stringify({ task: 'sentiment', inputs: 'x', input_ids: [1], custom_id: 'c' }),
      JSON.stringify({ task: 'sentiment', input_ids: ids(2), extra: 1 }),
      JSON.stringify({ task: 'sentiment', input_ids: ids(3), custom_id: 'd' }),
      '',
    ].join('\r\n');
    const parsed = await parseJsonlItems(text);
    expect(parsed).toHaveLength(6); // blank lines are not items
    const { batch } = await service.submit(parsed);
    startWorker(settings, fake);
    const done = await finished(service, batch.id);
    expect(done).toMatchObject({ status: 'completed', counts: { total: 6, done: 2, failed: 4 } });
    const lines = await allLines(service, batch.id);
    expect(lines.map((l) => [l.index, l.custom_id, l.error?.code ?? 'ok'])).toEqual([
      [0, 'a', 'ok'],
      [1, undefined, 'INVALID_INPUT'],
      [2, 'b', 'INVALID_INPUT'],
      [3, 'c', 'INVALID_INPUT'],
      [4, undefined, 'INVALID_INPUT'],
      [5, 'd', 'ok'],
    ]);
    expect(lines[1]!.error!.message).toMatch(/^line 2: not valid JSON/);
    expect(lines[2]!.error!.message).toMatch(/^line 4: .*exactly one of "inputs"/);
    expect(lines[4]!.error!.message).toMatch(/^line 6: 1 unknown field/);
    expect(fake.requests).toHaveLength(2);
  });

  it('a reused idempotency key returns the same batch and runs nothing twice; other items under it are refused', async () => {
    const { settings, service } = await setup('idem');
    const fake = new FakeService(model.registry);
    const items = await parseJsonItems([1, 2, 3, 4, 5].map((k) => ({ task: 'sentiment', input_ids: ids(k) })));
    const [a, b] = await Promise.all([service.submit(items, 'key-1'), service.submit(items, 'key-1')]);
    expect(b.batch.id).toBe(a.batch.id);
    expect([a.created, b.created].sort()).toEqual([false, true]);
    startWorker(settings, fake);
    await finished(service, a.batch.id);
    const again = await service.submit(items, 'key-1');
    expect(again).toMatchObject({ created: false, batch: { id: a.batch.id, status: 'completed', idempotency_key: 'key-1' } });
    await expect(service.submit(items.slice(1), 'key-1')).rejects.toBeInstanceOf(IdempotencyConflictError);
    await new Promise((r) => setTimeout(r, 200));
    expect(fake.requests).toHaveLength(5);
    expect((await service.list(0, 10)).total).toBe(1);
    // Once the batch's records expired, the key starts a new batch.
    await admin.del(`${settings.prefix}:batch:${a.batch.id}`, `${settings.prefix}:batch:${a.batch.id}:results`);
    const fresh = await service.submit(items, 'key-1');
    expect(fresh.created).toBe(true);
    expect(fresh.batch.id).not.toBe(a.batch.id);
    await finished(service, fresh.batch.id);
    expect((await service.submit(items, 'key-1')).batch.id).toBe(fresh.batch.id);
  });

  it('cancel stops the chunks that have not run; the running one finishes', async () => {
    const { settings, service } = await setup('cancel');
    const fake = new FakeService(model.registry);
    fake.hold();
    const { batch } = await service.submit(await parseJsonItems(Array.from({ length: 12 }, (_, k) => ({ task: 'sentiment', input_ids: ids(k) }))));
    startWorker(settings, fake, { concurrency: 1 });
    await waitFor('the first chunk to reach the engine', async () => fake.requests.length === 4);
    const cancelled = await service.cancel(batch.id);
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.cancelled_at).not.toBeNull();
    fake.release();
    const done = await finished(service, batch.id);
    expect(done).toMatchObject({ status: 'cancelled', counts: { total: 12, done: 4, failed: 0, cancelled: 8, pending: 0 } });
    await new Promise((r) => setTimeout(r, 300));
    expect(fake.requests).toHaveLength(4);
    const lines = await allLines(service, batch.id);
    expect(lines.filter((l) => l.error?.code === 'CANCELLED').map((l) => l.index)).toEqual([4, 5, 6, 7, 8, 9, 10, 11]);
    // Cancelling again answers the same status; a finished batch cannot be cancelled.
    expect((await service.cancel(batch.id)).status).toBe('cancelled');
    const { batch: other } = await service.submit(await parseJsonItems([{ task: 'sentiment', input_ids: ids(1) }]));
    await finished(service, other.id);
    await expect(service.cancel(other.id)).rejects.toBeInstanceOf(BatchFinishedError);
  });

  it('a transient fault retries the chunk with backoff and runs only its unanswered items again', async () => {
    const { settings, service } = await setup('retry');
    const fake = new FakeService(model.registry);
    let failed = 0;
    fake.fault = (req) => (req.inputIds[1] === 3 && failed++ === 0 ? new DeviceLostError('device lost (test)') : null);
    const { batch } = await service.submit(await parseJsonItems([1, 2, 3, 4, 5, 6].map((k) => ({ task: 'sentiment', input_ids: ids(k) }))));
    startWorker(settings, fake);
    const done = await finished(service, batch.id);
    expect(done).toMatchObject({ status: 'completed', counts: { done: 6, failed: 0 } });
    // 6 items + the one that met the fault, run again; its chunk mates were not.
    expect(fake.requests).toHaveLength(7);
    expect((await allLines(service, batch.id)).map((l) => l.index)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('a chunk that keeps meeting faults gives up after its attempts: error lines, batch failed', async () => {
    const { settings, service } = await setup('giveup', { attempts: 2 });
    const fake = new FakeService(model.registry);
    fake.fault = (req) => (req.inputIds[1] === 3 ? new DeviceLostError('device lost (test)') : null);
    const { batch } = await service.submit(await parseJsonItems([1, 2, 3, 4, 5, 6].map((k) => ({ task: 'sentiment', input_ids: ids(k) }))));
    startWorker(settings, fake);
    const done = await finished(service, batch.id);
    expect(done).toMatchObject({ status: 'failed', counts: { total: 6, done: 5, failed: 1 } });
    const lines = await allLines(service, batch.id);
    expect(lines[2]).toMatchObject({ index: 2, error: { code: 'DEVICE_LOST' } });
    expect(fake.requests.filter((r) => r.inputIds[1] === 3)).toHaveLength(2);
  });

  it('engine overload makes an item wait (Retry-After), not fail', async () => {
    const { settings, service } = await setup('overload');
    const fake = new FakeService(model.registry);
    fake.fault = (_req, call) => (call < 3 ? new OverloadError('queue full (test)', 0.05) : null);
    const { batch } = await service.submit(await parseJsonItems([1, 2].map((k) => ({ task: 'sentiment', input_ids: ids(k) }))));
    startWorker(settings, fake);
    expect(await finished(service, batch.id)).toMatchObject({ status: 'completed', counts: { done: 2, failed: 0 } });
  });

  it('a chunk taken over from a worker that stopped renewing its lock is neither lost nor duplicated when both finish', async () => {
    const { settings, service } = await setup('takeover');
    const stuck = new FakeService(model.registry);
    stuck.hold();
    const a = startWorker(settings, stuck, { lockDurationMs: 1000, stalledIntervalMs: 500 });
    const { batch } = await service.submit(await parseJsonItems([1, 2, 3, 4].map((k) => ({ task: 'sentiment', input_ids: ids(k) }))));
    await waitFor('worker A to hold the chunk', async () => stuck.requests.length === 4);
    // Stop A without letting it finish: its lock is no longer renewed, its processor stays pending.
    await a.worker.close(true);
    const healthy = new FakeService(model.registry);
    startWorker(settings, healthy, { lockDurationMs: 1000, stalledIntervalMs: 500 });
    const done = await finished(service, batch.id, 20_000);
    expect(done).toMatchObject({ status: 'completed', counts: { done: 4 } });
    expect(healthy.requests).toHaveLength(4);
    // A now finishes too and writes the same indices: nothing changes.
    stuck.release();
    await new Promise((r) => setTimeout(r, 300));
    expect(await service.get(batch.id)).toMatchObject({ counts: { done: 4, failed: 0, pending: 0 } });
    expect(await admin.hlen(`${settings.prefix}:batch:${batch.id}:results`)).toBe(4);
  });

  it('Redis dropping every connection mid-batch: workers reconnect and the batch completes, nothing lost or duplicated', async () => {
    const { settings, service } = await setup('drop', { chunkSize: 4 });
    const fake = new FakeService(model.registry);
    fake.delayMs = 200;
    const total = 64;
    const { batch } = await service.submit(await parseJsonItems(Array.from({ length: total }, (_, k) => ({ task: 'sentiment', input_ids: ids(k % 50, k) }))));
    startWorker(settings, fake);
    startWorker(settings, fake);
    await waitFor('some results', async () => (await service.get(batch.id)).counts.done >= 8);
    const before = await service.get(batch.id);
    expect(before.counts.pending).toBeGreaterThan(total / 2); // truly mid-batch
    // api client + per worker: its client and BullMQ's blocking duplicate.
    expect(await killClientsOf(admin, settings.prefix)).toBeGreaterThanOrEqual(5);
    await waitFor('a reconnect', async () => service.ready());
    await waitFor('more results', async () => (await service.get(batch.id)).counts.done >= before.counts.done + 8);
    // Again, while some connections may still be coming back.
    expect(await killClientsOf(admin, settings.prefix)).toBeGreaterThanOrEqual(1);
    // Well within BullMQ's default 15 s pause after a connection error (we retry after 2 s).
    const done = await waitFor(
      'the batch to complete after the drop',
      async () => {
        if (!service.ready()) return null;
        const b = await service.get(batch.id);
        return b.finished_at !== null ? b : null;
      },
      12_000,
    );
    expect(done).toMatchObject({ status: 'completed', counts: { total, done: total, failed: 0 } });
    const lines = await allLines(service, batch.id);
    expect(lines.map((l) => l.index)).toEqual([...Array(total).keys()]);
  });
  it('a read issued the moment Redis drops the producer connection waits for the reconnect instead of failing', async () => {
    const { settings, service } = await setup('blip');
    const { batch } = await service.submit(await parseJsonItems([{ task: 'sentiment', input_ids: ids(1) }]));
    for (let round = 0; round < 5; round++) {
      expect(await killClientsOf(admin, settings.prefix)).toBeGreaterThanOrEqual(1);
      // No waiting here: the client may still report 'ready' while Redis has already closed its socket.
      expect((await service.get(batch.id)).id).toBe(batch.id);
      expect((await service.list(0, 10)).total).toBe(1);
    }
  });
  it('reports job counts and connected workers to the metrics (QueueStatsSource)', async () => {
    const { settings, service } = await setup('stats');
    const source: QueueStatsSource = service;
    const fake = new FakeService(model.registry);
    fake.hold();
    const workers = [startWorker(settings, fake, { concurrency: 1 }), startWorker(settings, fake, { concurrency: 1 })];
    await Promise.all(workers.map((w) => w.waitUntilReady()));
    await waitFor('both workers to be seen', async () => (await source.workers()) === 2);
    await service.submit(await parseJsonItems(Array.from({ length: 16 }, (_, k) => ({ task: 'sentiment', input_ids: ids(k) }))));
    const counts = await waitFor('two chunks to be active', async () => {
      const c = await source.jobCounts();
      return c['active'] === 2 ? c : null;
    });
    expect(counts).toMatchObject({ active: 2, waiting: 2, failed: 0 });
    fake.release();
  });
});

describe('offline batches without Redis', () => {
  it('reports not ready and refuses with an error naming REDIS_URL', async () => {
    const service = BatchService.open(testSettings('pstest-none', { redisUrl: 'redis://127.0.0.1:1' }), silentLogger);
    try {
      expect(service.ready()).toBe(false);
      expect(service.health()).toMatchObject({ ready: false, url: 'redis://127.0.0.1:1' });
      const err = await service.submit(await parseJsonItems([{ task: 'sentiment', input_ids: [1] }])).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RedisUnavailableError);
      expect((err as Error).message).toMatch(/REDIS_URL/);
      await expect(service.get('batch_x')).rejects.toBeInstanceOf(RedisUnavailableError);
    } finally {
      await service.close();
    }
  });
});
