import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f32Config } from '../helpers/config.js';
import { BatchService } from '../../src/queue/producer.js';
import type { BatchQueueSettings } from '../../src/queue/settings.js';
import type { BatchView, ResultLine } from '../../src/queue/types.js';
import { BatchWorker } from '../../src/queue/worker.js';
import { createApp } from '../../src/server/app.js';
import { listen, ServerLifecycle, type HttpServerHandle } from '../../src/server/lifecycle.js';
import { createBatchRouter } from '../../src/server/routes/batches.js';
import { silentLogger } from '../../src/util/logger.js';
import { runCli } from '../helpers/cli.js';
import { deletePrefix, FakeService, itemEngine, REDIS_URL, testPrefix, testSettings, tinyModel, type TinyModel } from './helpers.js';

let admin: Redis;
let model: TinyModel;
let settings: BatchQueueSettings;
let service: BatchService;
let worker: BatchWorker;
let http: HttpServerHandle;
let dir: string;

beforeAll(async () => {
  admin = new Redis(REDIS_URL);
  model = await tinyModel([{ id: 'sentiment', numLabels: 2 }]);
  settings = testSettings(testPrefix('cli'));
  service = BatchService.open(settings, silentLogger);
  await service.waitReady(5000);
  const fake = new FakeService(model.registry);
  worker = BatchWorker.start({ settings, engine: itemEngine(model, fake), concurrency: 2, logger: silentLogger });
  const lifecycle = new ServerLifecycle();
  const app = createApp({
    runtime: { checkpoint: model.checkpoint, registry: model.registry, runner: { taskMemory: () => [] }, scheduler: fake, tokenizer: model.tokenizer },
    config: f32Config({}),
    logger: silentLogger,
    metricsRegistry: new Registry(),
    routers: [createBatchRouter({ batches: service, maxUploadBytes: 1 << 20 })],
    lifecycle,
  });
  http = await listen(app, { host: '127.0.0.1', port: 0, lifecycle, logger: silentLogger });
  dir = await mkdtemp(join(tmpdir(), 'petserve-batch-cli-'));
});
afterAll(async () => {
  await http.close(1000);
  await worker.close();
  await service.close();
  await deletePrefix(admin, settings.prefix);
  admin.disconnect();
  await model.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('petserve batch', () => {
  it('submit --wait, status and results --out talk to the HTTP API', async () => {
    const file = join(dir, 'items.jsonl');
    await writeFile(file, ['{"task":"sentiment","input_ids":[101,7,102],"custom_id":"a"}', 'oops', '{"task":"sentiment","inputs":"hi there"}'].join('\n'));
    const sub = await runCli('batch', '--url', http.url, 'submit', file, '--wait', '--poll-ms', '100', '--idempotency-key', 'cli-1');
    expect(sub.code, sub.stderr).toBe(0);
    const batch = JSON.parse(sub.stdout) as BatchView;
    expect(batch).toMatchObject({ status: 'completed', counts: { total: 3, done: 2, failed: 1 }, idempotency_key: 'cli-1' });

    const again = await runCli('batch', '--url', http.url, 'submit', file, '--idempotency-key', 'cli-1');
    expect((JSON.parse(again.stdout) as BatchView).id).toBe(batch.id);

    const st = await runCli('batch', '--url', http.url, 'status', batch.id);
    expect(st.code).toBe(0);
    expect(JSON.parse(st.stdout)).toMatchObject({ id: batch.id, status: 'completed' });

    const out = join(dir, 'results.jsonl');
    const res = await runCli('batch', '--url', http.url, 'results', batch.id, '--out', out);
    expect(res.code, res.stderr).toBe(0);
    const lines = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as ResultLine);
    expect(lines.map((l) => [l.index, l.custom_id, l.error?.code ?? 'ok'])).toEqual([
      [0, 'a', 'ok'],
      [1, undefined, 'INVALID_INPUT'],
      [2, undefined, 'ok'],
    ]);
    const toStdout = await runCli('batch', '--url', http.url, 'results', batch.id);
    expect(toStdout.stdout.trim().split('\n')).toHaveLength(3);

    const list = await runCli('batch', '--url', http.url, 'list', '--limit', '5');
    expect((JSON.parse(list.stdout) as { data: BatchView[] }).data.map((b) => b.id)).toContain(batch.id);
  });

  it('fails with a clear message and a non-zero exit code', async () => {
    const missing = await runCli('batch', '--url', http.url, 'submit', join(dir, 'nope.jsonl'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/cannot read .*nope\.jsonl/);

    const unknown = await runCli('batch', '--url', http.url, 'status', 'batch_missing');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/BatchApiError: batch 'batch_missing' does not exist.*HTTP 404/);

    const empty = join(dir, 'empty.jsonl');
    await writeFile(empty, '\n\n');
    const bad = await runCli('batch', '--url', http.url, 'submit', empty);
    expect(bad.code).toBe(2); // INVALID_INPUT from the server
    expect(bad.stderr).toMatch(/no items/);

    const down = await runCli('batch', '--url', 'http://127.0.0.1:1', 'status', 'batch_x');
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/ServerUnreachableError: no PetServe server answers at http:\/\/127.0.0.1:1/);
  });

  it('sends --api-key (or $PETSERVE_API_KEY) to a server with server.apiKeys; without it the API answers 401', async () => {
    const key = 'cli-key-0123456789abcdef';
    const lifecycle = new ServerLifecycle();
    const config = f32Config({ overrides: { 'server.apiKeys': [key] } });
    const app = createApp({
      runtime: { checkpoint: model.checkpoint, registry: model.registry, runner: { taskMemory: () => [] }, scheduler: new FakeService(model.registry), tokenizer: model.tokenizer },
      config,
      logger: silentLogger,
      metricsRegistry: new Registry(),
      routers: [createBatchRouter({ batches: service, maxUploadBytes: 1 << 20 })],
      lifecycle,
    });
    const keyed = await listen(app, { host: '127.0.0.1', port: 0, lifecycle, logger: silentLogger });
    try {
      const refused = await runCli('batch', '--url', keyed.url, 'list');
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/UNAUTHORIZED|API key.*HTTP 401/);
      const listed = await runCli('batch', '--url', keyed.url, '--api-key', key, 'list');
      expect(listed.code, listed.stderr).toBe(0);
      expect(JSON.parse(listed.stdout)).toMatchObject({ object: 'list', total: 0 });
      process.env['PETSERVE_API_KEY'] = key;
      const fromEnv = await runCli('batch', '--url', keyed.url, 'list');
      expect(fromEnv.code, fromEnv.stderr).toBe(0);
    } finally {
      delete process.env['PETSERVE_API_KEY'];
      await keyed.close(1000);
    }
  });
});
