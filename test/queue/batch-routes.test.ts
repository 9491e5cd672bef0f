import type { Express } from 'express';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f32Config } from '../helpers/config.js';
import { BatchService } from '../../src/queue/producer.js';
import type { BatchQueueSettings } from '../../src/queue/settings.js';
import type { BatchView, ResultLine } from '../../src/queue/types.js';
import { BatchWorker } from '../../src/queue/worker.js';
import { createApp } from '../../src/server/app.js';
import { batchOpenApiPaths, createBatchRouter } from '../../src/server/routes/batches.js';
import { silentLogger } from '../../src/util/logger.js';
import { deletePrefix, FakeService, itemEngine, REDIS_URL, testPrefix, testSettings, tinyModel, waitFor, type TinyModel } from './helpers.js';

let admin: Redis;
let model: TinyModel;
let settings: BatchQueueSettings;
let service: BatchService;
let worker: BatchWorker;
let fake: FakeService;
let app: Express;

/** The server's app with the batch router mounted the way `petserve serve` does it. */
function appWith(batches: BatchService, maxUploadBytes = 1 << 20): Express {
  return createApp({
    runtime: { checkpoint: model.checkpoint, registry: model.registry, runner: { taskMemory: () => [] }, scheduler: fake, tokenizer: model.tokenizer },
    config: f32Config({}),
    logger: silentLogger,
    metricsRegistry: new Registry(),
    routers: [createBatchRouter({ batches, maxUploadBytes })],
    openApiPaths: batchOpenApiPaths(),
  });
}

beforeAll(async () => {
  admin = new Redis(REDIS_URL);
  model = await tinyModel([
    { id: 'sentiment', numLabels: 2 },
    { id: 'embed', numLabels: 0 },
  ]);
  settings = testSettings(testPrefix('routes'));
  service = BatchService.open(settings, silentLogger);
  await service.waitReady(5000);
  fake = new FakeService(model.registry);
  worker = BatchWorker.start({ settings, engine: itemEngine(model, fake), concurrency: 2, logger: silentLogger });
  app = appWith(service);
});
afterAll(async () => {
  await worker.close();
  await service.close();
  await deletePrefix(admin, settings.prefix);
  admin.disconnect();
  await model.dispose();
});

async function finishedOverHttp(id: string): Promise<BatchView> {
  return waitFor(`batch ${id}`, async () => {
    const res = await request(app).get(`/v1/batches/${id}`).expect(200);
    const b = res.body as BatchView;
    return b.finished_at !== null ? b : null;
  });
}

const jsonl = (text: string): ResultLine[] =>
  text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as ResultLine);

describe('batch routes', () => {
  it('POST JSON → 202 with an id; results equal what the online predict route answers', async () => {
    const items = [
      { task: 'sentiment', inputs: 'good movie', custom_id: 'x' },
      { task: 'sentiment', input_ids: [101, 12, 13, 102], options: { return_logits: true } },
      { task: 'embed', inputs: 'an embedding' },
    ];
    const res = await request(app).post('/v1/batches').send({ items }).expect(202);
    const batch = res.body as BatchView;
    expect(batch).toMatchObject({ object: 'batch', status: 'queued', counts: { total: 3 } });
    expect(res.headers['location']).toBe(`/v1/batches/${batch.id}`);
    expect(await finishedOverHttp(batch.id)).toMatchObject({ status: 'completed', counts: { done: 3 } });

    const out = await request(app).get(`/v1/batches/${batch.id}/results`).expect(200);
    expect(out.headers['content-type']).toMatch(/application\/x-ndjson/);
    expect(out.headers['x-batch-status']).toBe('completed');
    const lines = jsonl(out.text);
    expect(lines.map((l) => l.index)).toEqual([0, 1, 2]);
    const online = await Promise.all([
      request(app).post('/v1/tasks/sentiment/predict').send({ inputs: 'good movie' }),
      request(app).post('/v1/tasks/sentiment/predict').send({ input_ids: [[101, 12, 13, 102]], options: { return_logits: true } }),
      request(app).post('/v1/tasks/embed/predict').send({ inputs: 'an embedding' }),
    ]);
    online.forEach((r, i) => {
      expect(r.status).toBe(200);
      expect(lines[i]!.response).toEqual((r.body as { outputs: unknown[] }).outputs[0]);
    });
    expect(lines[0]!.custom_id).toBe('x');
  });

  it('accepts a JSONL body and a multipart JSONL upload (idempotency key as a form field)', async () => {
    const text = `${JSON.stringify({ task: 'sentiment', input_ids: [101, 5, 102] })}\nnot json\n`;
    const raw = await request(app).post('/v1/batches').set('Content-Type', 'application/x-ndjson').send(text).expect(202);
    expect((raw.body as BatchView).counts.total).toBe(2);

    const up1 = await request(app).post('/v1/batches').field('idempotency_key', 'upload-1').attach('file', Buffer.from(text), 'items.jsonl').expect(202);
    const up2 = await request(app).post('/v1/batches').field('idempotency_key', 'upload-1').attach('file', Buffer.from(text), 'items.jsonl').expect(202);
    expect((up2.body as BatchView).id).toBe((up1.body as BatchView).id);
    expect(up2.headers['idempotent-replayed']).toBe('true');
    const hdr = await request(app).post('/v1/batches').set('Idempotency-Key', 'upload-1').attach('file', Buffer.from('{"task":"sentiment","input_ids":[1]}\n'), 'other.jsonl');
    expect(hdr.status).toBe(409);
    expect(hdr.body).toMatchObject({ error: { code: 'IDEMPOTENCY_CONFLICT' } });

    const b = await finishedOverHttp((raw.body as BatchView).id);
    expect(b.counts).toMatchObject({ done: 1, failed: 1 });
    const lines = jsonl((await request(app).get(`/v1/batches/${b.id}/results`)).text);
    expect(lines[1]).toMatchObject({ index: 1, error: { code: 'INVALID_INPUT', message: expect.stringMatching(/^line 2: not valid JSON/) } });
  });

  it('pages results by item index and says where the next page starts', async () => {
    const items = Array.from({ length: 10 }, (_, k) => ({ task: 'sentiment', input_ids: [101, k + 1, 102] }));
    const { body } = await request(app).post('/v1/batches').send({ items }).expect(202);
    const id = (body as BatchView).id;
    await finishedOverHttp(id);
    const p1 = await request(app).get(`/v1/batches/${id}/results?offset=0&limit=4`).expect(200);
    expect(jsonl(p1.text).map((l) => l.index)).toEqual([0, 1, 2, 3]);
    expect(p1.headers['x-next-offset']).toBe('4');
    const p3 = await request(app).get(`/v1/batches/${id}/results?offset=8&limit=4`).expect(200);
    expect(jsonl(p3.text).map((l) => l.index)).toEqual([8, 9]);
    expect(p3.headers['x-next-offset']).toBeUndefined();
    await request(app).get(`/v1/batches/${id}/results?limit=0`).expect(400);
  });

  it('lists newest first and cancels; unknown ids are 404, bad bodies 400/415, all as {"error": {code, message}}', async () => {
    fake.hold();
    try {
      const items = Array.from({ length: 12 }, (_, k) => ({ task: 'sentiment', input_ids: [101, k + 1, 102] }));
      const { body } = await request(app).post('/v1/batches').send({ items }).expect(202);
      const id = (body as BatchView).id;
      const list = await request(app).get('/v1/batches?limit=2').expect(200);
      expect(list.body).toMatchObject({ object: 'list', limit: 2, offset: 0 });
      expect((list.body as { data: BatchView[] }).data[0]!.id).toBe(id);
      const del = await request(app).delete(`/v1/batches/${id}`).expect(200);
      expect(del.body).toMatchObject({ id, status: 'cancelled' });
      fake.release();
      const b = await finishedOverHttp(id);
      expect(b.status).toBe('cancelled');
      expect(b.counts.cancelled).toBeGreaterThanOrEqual(4);
      expect(b.counts.done + b.counts.cancelled).toBe(12);
      const again = await request(app).delete(`/v1/batches/${id}`).expect(200);
      expect(again.body).toMatchObject({ status: 'cancelled' });
    } finally {
      fake.release();
    }
    for (const path of ['/v1/batches/batch_nope', '/v1/batches/batch_nope/results']) {
      const r = await request(app).get(path).expect(404);
      expect(r.body).toMatchObject({ error: { code: 'BATCH_NOT_FOUND', message: expect.stringContaining('batch_nope') } });
    }
    await request(app).delete('/v1/batches/batch_nope').expect(404);
    expect((await request(app).post('/v1/batches').send({ items: [] }).expect(422)).body.error.code).toBe('INVALID_INPUT');
    expect((await request(app).post('/v1/batches').send({ rows: [] }).expect(400)).body.error.code).toBe('INVALID_REQUEST');
    expect((await request(app).post('/v1/batches').set('Content-Type', 'application/xml').send('<a/>').expect(415)).body.error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    expect((await request(app).post('/v1/batches').set('Content-Type', 'application/json').send('{"items": [').expect(400)).body.error.code).toBe('MALFORMED_JSON');
  });

  it('refuses a batch larger than the upload limit with 413', async () => {
    const small = appWith(service, 200);
    const items = Array.from({ length: 20 }, () => ({ task: 'sentiment', input_ids: [101, 1, 102] }));
    const json = await request(small).post('/v1/batches').send({ items }).expect(413);
    expect(json.body.error.message).toMatch(/batch body is larger than server.maxUploadBytes/);
    const file = items.map((i) => JSON.stringify(i)).join('\n');
    const up = await request(small).post('/v1/batches').attach('file', Buffer.from(file), 'items.jsonl').expect(413);
    expect(up.body.error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('documents the batch routes in /openapi.json', async () => {
    const doc = (await request(app).get('/openapi.json').expect(200)).body as { paths: Record<string, Record<string, unknown>> };
    expect(Object.keys(doc.paths['/v1/batches']!).sort()).toEqual(['get', 'post']);
    expect(Object.keys(doc.paths['/v1/batches/{id}']!).sort()).toEqual(['delete', 'get']);
    expect(JSON.stringify(doc.paths['/v1/batches']!['post'])).toContain('custom_id');
  });

  it('answers 503 naming REDIS_URL when Redis is unreachable, while online predict keeps working', async () => {
    const down = BatchService.open(testSettings('pstest-down', { redisUrl: 'redis://127.0.0.1:1' }), silentLogger);
    try {
      const a = appWith(down);
      const r = await request(a).post('/v1/batches').send({ items: [{ task: 'sentiment', input_ids: [101, 102] }] }).expect(503);
      expect(r.body).toMatchObject({ error: { code: 'REDIS_UNAVAILABLE', message: expect.stringMatching(/REDIS_URL/) } });
      await request(a).get('/v1/batches/batch_x').expect(503);
      await request(a).post('/v1/tasks/sentiment/predict').send({ inputs: 'still online' }).expect(200);
    } finally {
      await down.close();
    }
  });
});
