import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceGateway } from '../../src/gateway/gateway.js';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { BatchService } from '../../src/queue/producer.js';
import { batchQueueSettings } from '../../src/queue/settings.js';
import type { BatchView } from '../../src/queue/types.js';
import { BatchWorker } from '../../src/queue/worker.js';
import { startRuntime, type Runtime } from '../../src/runtime/runtime.js';
import { createApp } from '../../src/server/app.js';
import { createBatchRouter } from '../../src/server/routes/batches.js';
import { silentLogger } from '../../src/util/logger.js';
import { runCli } from '../helpers/cli.js';
import { deletePrefix, REDIS_URL, testPrefix, waitFor } from '../queue/helpers.js';
import { admin, call, listenOn, MAX_POSITIONS, maxAbsDiff, serveStack, testConfig, writeTasks, type Listening, type TestStack } from './helpers.js';

/**
 * The base model is a model too: a fine-tuned classifier served as --model
 * answers under its id (model.id, default its directory name) on predict, V2,
 * the OpenAI routes and batches, with its own classifier head, and its logits
 * are those `petserve predict --model DIR` prints for the same ids. A bare
 * encoder (no classifier) answers with its pooled output.
 */

/** The checkpoint's directory name: the id it answers under without model.id. */
const BASE = 'acme-sentiment';
const NUM_LABELS = 3;
const IDS = [
  [2, 17, 40, 9, 3],
  [2, 61, 3],
];
// Ids run through the scheduler in batches of other shapes than the CLI's; rows are independent, so
// only float reassociation across tile shapes may differ.
const TOLERANCE = 1e-5;

interface CliOutput {
  logits: number[][];
  pooler_output: number[][];
}

async function cliPredict(modelDir: string): Promise<CliOutput> {
  const r = await runCli('predict', '--model', modelDir, '--input-ids', JSON.stringify(IDS));
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as CliOutput;
}

/** Model + tasks on disk under a fresh root, the runtime over them (model.dir = root/<dirName>). */
async function stackWithBase(dirName: string, numLabels: number, overrides: Record<string, unknown> = {}): Promise<TestStack & { modelDir: string }> {
  const root = await mkdtemp(join(tmpdir(), 'petserve-base-'));
  const modelDir = join(root, dirName);
  await initModel({ preset: 'bert-tiny', outDir: modelDir, numLabels, seed: 21, maxPositions: MAX_POSITIONS });
  const base = await loadCheckpoint(modelDir);
  await writeTasks(base, join(root, 'tasks'), [{ id: 'topic', kind: 'lora', numLabels: 2 }]);
  const config = testConfig(root, { 'model.dir': modelDir, 'server.registerRoot': join(root, 'tasks'), ...overrides });
  const runtime = await startRuntime(config, silentLogger);
  return {
    root,
    base,
    config,
    runtime,
    modelDir,
    close: async () => {
      await runtime.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

describe('a fine-tuned classifier served as --model', () => {
  let stack: TestStack & { modelDir: string };
  let server: Listening;
  let reference: CliOutput;
  let batches: BatchService;
  let worker: BatchWorker;
  let prefix: string;

  beforeAll(async () => {
    process.env['PETSERVE_LOG_LEVEL'] = 'warn'; // the CLI's device-ready logs stay out of the test output
    prefix = testPrefix('base-model');
    stack = await stackWithBase(BASE, NUM_LABELS, { 'redis.url': REDIS_URL, 'batches.prefix': prefix, 'batches.chunkSize': 2 });
    reference = await cliPredict(stack.modelDir);
    const runtime: Runtime = stack.runtime;
    const settings = batchQueueSettings(stack.config);
    batches = BatchService.open(settings, silentLogger);
    await batches.waitReady(5000);
    worker = BatchWorker.start({ settings, engine: { gateway: InferenceGateway.forRuntime(runtime, 64) }, concurrency: 1, logger: silentLogger });
    const batchRouter = createBatchRouter({
      batches,
      maxUploadBytes: stack.config.server.maxUploadBytes,
      models: { isDecoderModel: () => false, isEncoderModel: (id) => runtime.registry.answersTo(id) },
    });
    server = await serveStack(stack, { routers: [batchRouter] });
  }, 300_000);

  afterAll(async () => {
    await server?.close();
    await worker?.close();
    await batches?.close();
    await stack?.close();
    const redis = new Redis(REDIS_URL);
    await deletePrefix(redis, prefix);
    redis.disconnect();
  }, 60_000);

  it('answers POST /v1/tasks/{id}/predict under its directory name with the logits of `petserve predict --model DIR`', async () => {
    expect(reference.logits.map((r) => r.length)).toEqual([NUM_LABELS, NUM_LABELS]);
    const r = await call(`${server.url}/v1/tasks/${BASE}/predict`, { json: { input_ids: IDS, options: { return_logits: true } } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ task: BASE, kind: 'base' });
    r.body.outputs.forEach((o: { logits: number[]; label: string; scores: Record<string, number> }, i: number) => {
      expect(maxAbsDiff(o.logits, reference.logits[i]!)).toBeLessThan(TOLERANCE);
      const best = reference.logits[i]!.indexOf(Math.max(...reference.logits[i]!));
      // initModel writes id2label (LABEL_k); the answer names labels from config.json.
      expect(o.label).toBe(`LABEL_${best}`);
      expect(Object.keys(o.scores)).toHaveLength(NUM_LABELS);
    });
    // Text goes through the checkpoint's tokenizer as for any task.
    const text = await call(`${server.url}/v1/tasks/${BASE}/predict`, { json: { inputs: 'a fine film' } });
    expect(text.status).toBe(200);
    expect(text.body.outputs[0].label).toMatch(/^LABEL_[0-2]$/);
  });

  it('is a V2 model: metadata, readiness and infer with the same logits', async () => {
    const meta = await call(`${server.url}/v2/models/${BASE}`);
    expect(meta.status).toBe(200);
    expect(meta.body).toMatchObject({ name: BASE, platform: 'petserve_base' });
    expect(meta.body.outputs).toEqual([
      { name: 'logits', datatype: 'FP32', shape: [-1, NUM_LABELS] },
      { name: 'probabilities', datatype: 'FP32', shape: [-1, NUM_LABELS] },
    ]);
    expect((await call(`${server.url}/v2/models/${BASE}/ready`)).body).toEqual({ name: BASE, ready: true });

    const L = Math.max(...IDS.map((r) => r.length));
    const padded = IDS.flatMap((r) => [...r, ...Array.from({ length: L - r.length }, () => 0)]);
    const mask = IDS.flatMap((r) => Array.from({ length: L }, (_, j) => (j < r.length ? 1 : 0)));
    const infer = await call(`${server.url}/v2/models/${BASE}/infer`, {
      json: {
        inputs: [
          { name: 'input_ids', datatype: 'INT64', shape: [IDS.length, L], data: padded },
          { name: 'attention_mask', datatype: 'INT64', shape: [IDS.length, L], data: mask },
        ],
        outputs: [{ name: 'logits' }],
      },
    });
    expect(infer.status, JSON.stringify(infer.body)).toBe(200);
    expect(infer.body.model_name).toBe(BASE);
    const logits = infer.body.outputs[0];
    expect(logits).toMatchObject({ name: 'logits', shape: [IDS.length, NUM_LABELS] });
    expect(maxAbsDiff(logits.data, reference.logits.flat())).toBeLessThan(TOLERANCE);
  });

  it('is listed in /v1/models with kind base, parent of the tasks, and embeds with its pooled output', async () => {
    const models = await call(`${server.url}/v1/models`);
    expect(models.body.data[0]).toMatchObject({ id: BASE, object: 'model', owned_by: 'petserve', kind: 'base' });
    expect(models.body.data.find((m: { id: string }) => m.id === 'topic')).toMatchObject({ parent: BASE, kind: 'lora' });
    expect((await call(`${server.url}/v1/models/${BASE}`)).body).toMatchObject({ id: BASE, kind: 'base' });

    const emb = await call(`${server.url}/v1/embeddings`, { json: { model: BASE, input: IDS } });
    expect(emb.status, JSON.stringify(emb.body)).toBe(200);
    expect(emb.body.model).toBe(BASE);
    emb.body.data.forEach((d: { embedding: number[] }, i: number) => expect(maxAbsDiff(d.embedding, reference.pooler_output[i]!)).toBeLessThan(TOLERANCE));
  });

  it('answers batch items and OpenAI embeddings lines naming it, through the queue worker', async () => {
    const items = IDS.map((ids, k) => ({ task: BASE, input_ids: ids, custom_id: `row-${k}`, options: { return_logits: true } }));
    const created = await call<BatchView>(`${server.url}/v1/batches`, { json: { items } });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const jsonl = IDS.map((ids, k) => JSON.stringify({ custom_id: `emb-${k}`, method: 'POST', url: '/v1/embeddings', body: { model: BASE, input: ids } })).join('\n');
    const openAi = await call<BatchView>(`${server.url}/v1/batches`, { body: jsonl, headers: { 'Content-Type': 'application/jsonl' } });
    expect(openAi.status, JSON.stringify(openAi.body)).toBe(202);

    const results = async (id: string): Promise<Record<string, unknown>[]> => {
      await waitFor(`batch ${id}`, async () => (await batches.get(id)).finished_at !== null, 120_000, 100);
      const res = await fetch(`${server.url}/v1/batches/${id}/results`);
      return (await res.text()).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
    };
    const predictLines = await results(created.body.id);
    predictLines.forEach((line, k) => {
      expect(line, JSON.stringify(line)).toMatchObject({ index: k, task: BASE });
      expect(maxAbsDiff((line['response'] as { logits: number[] }).logits, reference.logits[k]!)).toBeLessThan(TOLERANCE);
    });
    const embeddingLines = await results(openAi.body.id);
    embeddingLines.forEach((line, k) => {
      const body = (line['response'] as { status_code: number; body: { model: string; data: { embedding: number[] }[] } }).body;
      expect(body.model).toBe(BASE);
      expect(maxAbsDiff(body.data[0]!.embedding, reference.pooler_output[k]!)).toBeLessThan(TOLERANCE);
    });
  });

  it('refuses a task registered under its id (409 TASK_EXISTS) and deleting it (409 BASE_MODEL)', async () => {
    const register = await call(`${server.url}/v1/tasks`, { json: { id: BASE, path: 'topic' }, headers: admin });
    expect(register.status).toBe(409);
    expect(register.body.error.code).toBe('TASK_EXISTS');
    expect(register.body.error.message).toContain("base model's id");

    const del = await call(`${server.url}/v1/tasks/${BASE}`, { method: 'DELETE', headers: admin });
    expect(del.status).toBe(409);
    expect(del.body.error.code).toBe('BASE_MODEL');
    // Still served.
    expect((await call(`${server.url}/v1/tasks/${BASE}/predict`, { json: { input_ids: [IDS[1]] } })).status).toBe(200);
  });
});

describe('the base model id', () => {
  it('refuses to start when model.id is also a task directory (ConfigError)', async () => {
    const root = await mkdtemp(join(tmpdir(), 'petserve-base-clash-'));
    try {
      const modelDir = join(root, 'model');
      await initModel({ preset: 'bert-tiny', outDir: modelDir, numLabels: 2, seed: 3, maxPositions: MAX_POSITIONS });
      await writeTasks(await loadCheckpoint(modelDir), join(root, 'tasks'), [{ id: 'topic', kind: 'bitfit' }]);
      const config = testConfig(root, { 'model.id': 'topic' });
      await expect(startRuntime(config, silentLogger)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining("model id 'topic'") });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('an encoder without a classifier answers under model.id with its pooled output: predict, V2 and /v1/embeddings agree with the CLI', async () => {
    const stack = await stackWithBase('bare-encoder', 0, { 'model.id': 'my-encoder' });
    const server = await serveStack(stack);
    try {
      const reference = await cliPredict(stack.modelDir);
      const predict = await call(`${server.url}/v1/tasks/my-encoder/predict`, { json: { input_ids: IDS } });
      expect(predict.status, JSON.stringify(predict.body)).toBe(200);
      expect(predict.body).toMatchObject({ task: 'my-encoder', kind: 'base' });
      predict.body.outputs.forEach((o: { embedding: number[] }, i: number) => expect(maxAbsDiff(o.embedding, reference.pooler_output[i]!)).toBeLessThan(TOLERANCE));

      const emb = await call(`${server.url}/v1/embeddings`, { json: { model: 'my-encoder', input: IDS } });
      expect(emb.status, JSON.stringify(emb.body)).toBe(200);
      emb.body.data.forEach((d: { embedding: number[] }, i: number) => expect(maxAbsDiff(d.embedding, reference.pooler_output[i]!)).toBeLessThan(TOLERANCE));

      const meta = await call(`${server.url}/v2/models/my-encoder`);
      expect(meta.body.outputs).toEqual([{ name: 'pooler_output', datatype: 'FP32', shape: [-1, stack.base.config.hiddenSize] }]);
      // The directory name is no id once model.id is set.
      expect((await call(`${server.url}/v1/tasks/bare-encoder/predict`, { json: { input_ids: IDS } })).status).toBe(404);
    } finally {
      await server.close();
      await stack.close();
    }
  }, 300_000);

  it("the demo's base model is listed as demo-base", async () => {
    const root = await mkdtemp(join(tmpdir(), 'petserve-base-demo-'));
    const config = testConfig(root, { 'model.dir': null, 'server.tasksDir': null });
    const runtime = await startRuntime(config, silentLogger);
    const server = await listenOn(createApp({ runtime, config, logger: silentLogger, metricsRegistry: new Registry() }));
    try {
      const models = await call(`${server.url}/v1/models`);
      expect(models.body.data[0]).toMatchObject({ id: 'demo-base', kind: 'base', owned_by: 'petserve' });
      expect(models.body.data.find((m: { id: string }) => m.id === 'demo-lora')).toMatchObject({ parent: 'demo-base' });
      const predict = await call(`${server.url}/v1/tasks/demo-base/predict`, { json: { inputs: 'hello' } });
      expect(predict.status).toBe(200);
      expect(predict.body.kind).toBe('base');
    } finally {
      await server.close();
      await runtime.close();
      await rm(root, { recursive: true, force: true });
    }
  }, 600_000);
});
