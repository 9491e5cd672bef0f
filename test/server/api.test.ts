// The HTTP API against the real engine (bert-tiny on lavapipe): answers match
// the engine run directly, and every documented failure has its status and body.

import { Counter, Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScheduler } from '../../src/scheduler/create-scheduler.js';
import { silentLogger } from '../../src/util/logger.js';
import { call, MAX_POSITIONS, maxAbsDiff, serveStack, startTestStack, type JsonResponse, type Listening, type TestStack } from './helpers.js';

let stack: TestStack;
let api: Listening;
const extra: Listening[] = [];
const metricsRegistry = new Registry();
const probe = new Counter({ name: 'petserve_test_probe_total', help: 'set by the test', registers: [metricsRegistry] });

beforeAll(async () => {
  stack = await startTestStack(
    [
      { id: 'cls-lora', kind: 'lora' },
      { id: 'cls-adapter', kind: 'adapter', numLabels: 3 },
      { id: 'emb-bitfit', kind: 'bitfit', numLabels: 0 },
    ],
    { 'server.maxBodyBytes': 64 * 1024, 'server.maxInputsPerRequest': 8 },
  );
  api = await serveStack(stack, { metricsRegistry });
});

afterAll(async () => {
  for (const l of extra) await l.close();
  await api?.close();
  await stack?.close();
});

const predict = (task: string, json: unknown, headers: Record<string, string> = {}) =>
  call(`${api.url}/v1/tasks/${task}/predict`, { json, headers });

/** The engine's own answer for one row, bypassing HTTP and the scheduler. */
async function engineRow(task: string, inputIds: number[], tokenTypeIds?: number[]) {
  const r = await stack.runtime.runner.runTasks([{ task, inputIds, tokenTypeIds }], { logits: true, pooled: true });
  return r.rows[0]!;
}

/** Reference probabilities, written out here so the server's own softmax is what gets tested. */
function referenceSoftmax(logits: ArrayLike<number>): number[] {
  const xs = Array.from(logits, Number);
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

const randomIds = (n: number): number[] => [101, ...Array.from({ length: n - 2 }, () => 1000 + Math.floor(Math.random() * 20000)), 102];

describe('POST /v1/tasks/:task/predict', () => {
  it('classifies texts with the task head: softmax of the engine logits, argmax as the label', async () => {
    const texts = ['this movie was great', 'a terrible, boring story'];
    const res = await predict('cls-adapter', { inputs: texts });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ task: 'cls-adapter', kind: 'adapter' });
    expect(res.body.outputs).toHaveLength(2);
    for (const [i, text] of texts.entries()) {
      const out = res.body.outputs[i];
      expect(Object.keys(out.scores)).toEqual(['LABEL_0', 'LABEL_1', 'LABEL_2']);
      const ids = stack.runtime.tokenizer!.encode(text).inputIds;
      const expected = referenceSoftmax((await engineRow('cls-adapter', ids)).logits!);
      expect(maxAbsDiff(Object.values(out.scores), expected)).toBeLessThan(1e-5);
      const best = expected.indexOf(Math.max(...expected));
      expect(out.label).toBe(`LABEL_${best}`);
      expect(out.score).toBeCloseTo(expected[best]!, 6);
      expect(out.logits).toBeUndefined();
    }
  });

  it('takes ragged token ids and returns the raw logits when asked', async () => {
    const rows = [randomIds(5), randomIds(17)];
    const res = await predict('cls-lora', { input_ids: rows, options: { return_logits: true } });
    expect(res.status).toBe(200);
    for (const [i, ids] of rows.entries()) {
      const logits = Array.from((await engineRow('cls-lora', ids)).logits!);
      expect(maxAbsDiff(res.body.outputs[i].logits, logits)).toBeLessThan(1e-4);
    }
  });

  it('passes token_type_ids through (segment B changes the answer)', async () => {
    const ids = randomIds(8);
    const types = ids.map((_, j) => (j >= 4 ? 1 : 0));
    const [withTypes, without] = await Promise.all([
      predict('cls-lora', { input_ids: [ids], token_type_ids: [types], options: { return_logits: true } }),
      predict('cls-lora', { input_ids: [ids], options: { return_logits: true } }),
    ]);
    const engine = Array.from((await engineRow('cls-lora', ids, types)).logits!);
    expect(maxAbsDiff(withTypes.body.outputs[0].logits, engine)).toBeLessThan(1e-4);
    expect(maxAbsDiff(withTypes.body.outputs[0].logits, without.body.outputs[0].logits)).toBeGreaterThan(1e-4);
  });

  it('answers an embedding task (no labels) with the pooled output', async () => {
    const res = await predict('emb-bitfit', { inputs: 'embed me' });
    expect(res.status).toBe(200);
    expect(res.body.outputs).toHaveLength(1);
    const embedding = res.body.outputs[0].embedding as number[];
    expect(embedding).toHaveLength(stack.base.config.hiddenSize);
    const ids = stack.runtime.tokenizer!.encode('embed me').inputIds;
    expect(maxAbsDiff(embedding, Array.from((await engineRow('emb-bitfit', ids)).pooled!))).toBeLessThan(1e-4);
  });

  it('truncates on request: text keeps [CLS] … [SEP], ids are cut at the end', async () => {
    const long = Array.from({ length: 3 * MAX_POSITIONS }, (_, i) => ['good', 'movie', 'story', 'bad'][i % 4]).join(' ');
    const refused = await predict('cls-lora', { inputs: long });
    expect(refused.status).toBe(413);
    expect(refused.body.error.code).toBe('SEQUENCE_TOO_LONG');
    expect(refused.body.error.message).toMatch(/inputs\[0\]/);

    const cut = await predict('cls-lora', { inputs: long, options: { truncate: true, return_logits: true } });
    expect(cut.status).toBe(200);
    const ids = stack.runtime.tokenizer!.encode(long).inputIds;
    const kept = [...ids.slice(0, MAX_POSITIONS - 1), ids[ids.length - 1]!];
    expect(kept[0]).toBe(101);
    expect(kept[kept.length - 1]).toBe(102);
    expect(maxAbsDiff(cut.body.outputs[0].logits, Array.from((await engineRow('cls-lora', kept)).logits!))).toBeLessThan(1e-4);

    const longIds = randomIds(MAX_POSITIONS + 10);
    expect((await predict('cls-lora', { input_ids: [longIds] })).status).toBe(413);
    const cutIds = await predict('cls-lora', { input_ids: [longIds], options: { truncate: true, return_logits: true } });
    const engine = Array.from((await engineRow('cls-lora', longIds.slice(0, MAX_POSITIONS))).logits!);
    expect(maxAbsDiff(cutIds.body.outputs[0].logits, engine)).toBeLessThan(1e-4);
  });
});

describe('predict errors', () => {
  const expectError = (res: JsonResponse, status: number, code: string, field?: RegExp): void => {
    expect(res.status).toBe(status);
    expect(res.body).toEqual({ error: { code, message: expect.any(String) } });
    if (field) expect(res.body.error.message).toMatch(field);
  };

  it('malformed JSON is 400 MALFORMED_JSON', async () => {
    const res = await call(`${api.url}/v1/tasks/cls-lora/predict`, { body: '{"inputs": ["a",', headers: { 'Content-Type': 'application/json' } });
    expectError(res, 400, 'MALFORMED_JSON');
  });

  it('schema violations are 400 naming the field', async () => {
    expectError(await predict('cls-lora', { inputs: 5 }), 400, 'INVALID_REQUEST', /inputs/);
    expectError(await predict('cls-lora', { inputs: [] }), 400, 'INVALID_REQUEST', /inputs/);
    expectError(await predict('cls-lora', { inputs: '' }), 400, 'INVALID_REQUEST', /inputs/);
    expectError(await predict('cls-lora', { input_ids: [[101, -3, 102]] }), 400, 'INVALID_REQUEST', /input_ids\[0\]\[1\]/);
    expectError(await predict('cls-lora', { input_ids: [[101, 1.5]] }), 400, 'INVALID_REQUEST', /input_ids\[0\]\[1\]/);
    expectError(await predict('cls-lora', { input_ids: [[]] }), 400, 'INVALID_REQUEST', /input_ids\[0\]/);
    expectError(await predict('cls-lora', { inputs: 'a', input_ids: [[101]] }), 400, 'INVALID_REQUEST', /exactly one/);
    expectError(await predict('cls-lora', {}), 400, 'INVALID_REQUEST', /exactly one/);
    expectError(await predict('cls-lora', { inputs: 'a', options: { truncat: true } }), 400, 'INVALID_REQUEST', /options/);
    expectError(await predict('cls-lora', { inputs: 'a', options: { deadline_ms: -1 } }), 400, 'INVALID_REQUEST', /options\.deadline_ms/);
    expectError(
      await predict('cls-lora', { input_ids: [[101, 102]], token_type_ids: [[0]] }),
      400,
      'INVALID_REQUEST',
      /token_type_ids/,
    );
  });

  it('ids the model does not have are 422 naming the field', async () => {
    const vocab = stack.base.config.vocabSize;
    expectError(await predict('cls-lora', { input_ids: [[101, 7], [101, vocab, 102]] }), 422, 'INVALID_INPUT', /input_ids\[1\]\[1\]/);
    expectError(await predict('cls-lora', { input_ids: [[101, 7]], token_type_ids: [[0, 2]] }), 422, 'INVALID_INPUT', /token_type_ids\[0\]\[1\]/);
  });

  it('an unknown task is 404 TASK_NOT_FOUND', async () => {
    expectError(await predict('no-such-task', { inputs: 'x' }), 404, 'TASK_NOT_FOUND', /no-such-task/);
  });

  it('too many inputs or a body over the limit is 413', async () => {
    expectError(await predict('cls-lora', { inputs: Array.from({ length: 9 }, () => 'x') }), 413, 'TOO_MANY_INPUTS', /inputs/);
    expectError(await predict('cls-lora', { inputs: 'word '.repeat(20_000) }), 413, 'PAYLOAD_TOO_LARGE');
  });

  it('a body that is not JSON is 415', async () => {
    const res = await call(`${api.url}/v1/tasks/cls-lora/predict`, { body: 'inputs=x', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    expectError(res, 415, 'UNSUPPORTED_MEDIA_TYPE');
  });

  it('a request that cannot make its deadline is refused: 429 DEADLINE_UNREACHABLE at once, or 504 once it passes while queued', async () => {
    // Keep the device busy with several batches, then ask for a 1 ms deadline behind them. The cost model
    // usually sees at submit that it cannot be met (429 + Retry-After); if it could not tell, the deadline
    // passes in the queue (504). Either way it is never run and never answered 200.
    const busy = predict('cls-lora', { input_ids: Array.from({ length: 8 }, () => randomIds(MAX_POSITIONS)), options: { deadline_ms: 600_000 } });
    await new Promise((r) => setTimeout(r, 30));
    const late = await predict('cls-lora', { inputs: 'late', options: { deadline_ms: 1 } });
    if (late.status === 429) {
      expectError(late, 429, 'DEADLINE_UNREACHABLE');
      expect(Number(late.headers.get('retry-after'))).toBeGreaterThan(0);
    } else expectError(late, 504, 'DEADLINE_EXCEEDED');
    expect((await busy).status).toBe(200);
  });

  it('a full queue is 429 with Retry-After', async () => {
    const cfg = { ...stack.config.scheduler, maxQueue: 1 };
    const tiny = await createScheduler(stack.runtime.ctx, stack.runtime.runner, cfg, { logger: silentLogger });
    const app = await serveStack(stack, { runtime: { ...stack.runtime, scheduler: tiny } });
    extra.push(app);
    const res = await call(`${app.url}/v1/tasks/cls-lora/predict`, { json: { inputs: ['a', 'b', 'c'] } });
    expectError(res, 429, 'OVERLOADED');
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    await tiny.drain(10_000);
  });

  it('a scheduler that is shutting down answers 503', async () => {
    const closing = await createScheduler(stack.runtime.ctx, stack.runtime.runner, stack.config.scheduler, { logger: silentLogger });
    await closing.drain(0);
    const app = await serveStack(stack, { runtime: { ...stack.runtime, scheduler: closing } });
    extra.push(app);
    expectError(await call(`${app.url}/v1/tasks/cls-lora/predict`, { json: { inputs: 'x' } }), 503, 'SHUTTING_DOWN');
  });

  it('unknown routes are JSON 404s', async () => {
    expectError(await call(`${api.url}/v1/nothing`), 404, 'NOT_FOUND', /GET \/v1\/nothing/);
  });
});

describe('cross-cutting HTTP behaviour', () => {
  it('echoes a sane X-Request-Id and generates one otherwise', async () => {
    const echoed = await call(`${api.url}/v2/health/live`, { headers: { 'X-Request-Id': 'client-id.42' } });
    expect(echoed.headers.get('x-request-id')).toBe('client-id.42');
    const generated = await call(`${api.url}/v2/health/live`, { headers: { 'X-Request-Id': 'bad id with spaces' } });
    expect(generated.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('sends security headers and no CORS headers unless origins are configured', async () => {
    const res = await call(`${api.url}/v2/health/live`, { headers: { Origin: 'https://evil.example' } });
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(res.headers.get('x-powered-by')).toBeNull();
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('allows exactly the configured CORS origins', async () => {
    const config = { ...stack.config, server: { ...stack.config.server, corsOrigins: ['https://ok.example'] } };
    const app = await serveStack(stack, { config });
    extra.push(app);
    const ok = await call(`${app.url}/v2/health/live`, { headers: { Origin: 'https://ok.example' } });
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://ok.example');
    const preflight = await fetch(`${app.url}/v1/tasks/cls-lora/predict`, {
      method: 'OPTIONS',
      headers: { Origin: 'https://ok.example', 'Access-Control-Request-Method': 'POST' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-headers')).toContain('Content-Type');
    const other = await call(`${app.url}/v2/health/live`, { headers: { Origin: 'https://evil.example' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('GET /metrics serves the registry it was given', async () => {
    probe.inc(3);
    const res = await fetch(`${api.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    expect(await res.text()).toMatch(/^petserve_test_probe_total 3$/m);
  });

  it('GET /openapi.json documents every route and every $ref resolves', async () => {
    const { status, body } = await call(`${api.url}/openapi.json`);
    expect(status).toBe(200);
    expect(body.openapi).toBe('3.1.0');
    const documented = Object.entries(body.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    for (const route of [
      'POST /v1/tasks/{task}/predict',
      'GET /v1/tasks',
      'POST /v1/tasks',
      'GET /v1/tasks/{task}',
      'DELETE /v1/tasks/{task}',
      'GET /v2',
      'GET /v2/health/live',
      'GET /v2/health/ready',
      'GET /v2/models/{task}',
      'GET /v2/models/{task}/ready',
      'POST /v2/models/{task}/infer',
      'GET /metrics',
      'GET /openapi.json',
    ]) {
      expect(documented).toContain(route);
    }
    const refs = [...JSON.stringify(body).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThan(5);
    for (const r of refs) expect(body.components.schemas[r], r).toBeDefined();
  });
});

describe('Open Inference Protocol (V2)', () => {
  const infer = (task: string, json: unknown) => call(`${api.url}/v2/models/${task}/infer`, { json });

  it('health, server metadata and model readiness', async () => {
    expect(await call(`${api.url}/v2/health/live`)).toMatchObject({ status: 200, body: { live: true } });
    expect(await call(`${api.url}/v2/health/ready`)).toMatchObject({ status: 200, body: { ready: true } });
    expect(await call(`${api.url}/v2`)).toMatchObject({ status: 200, body: { name: 'petserve', extensions: [] } });
    expect(await call(`${api.url}/v2/models/cls-lora/ready`)).toMatchObject({ status: 200, body: { name: 'cls-lora', ready: true } });
  });

  it('model metadata lists the tensors with their datatypes and shapes', async () => {
    const cls = await call(`${api.url}/v2/models/cls-adapter`);
    expect(cls.status).toBe(200);
    expect(cls.body.name).toBe('cls-adapter');
    expect(cls.body.inputs).toContainEqual({ name: 'input_ids', datatype: 'INT64', shape: [-1, -1] });
    expect(cls.body.inputs).toContainEqual({ name: 'text', datatype: 'BYTES', shape: [-1] });
    expect(cls.body.outputs).toEqual([
      { name: 'logits', datatype: 'FP32', shape: [-1, 3] },
      { name: 'probabilities', datatype: 'FP32', shape: [-1, 3] },
    ]);
    const emb = await call(`${api.url}/v2/models/emb-bitfit`);
    expect(emb.body.outputs).toEqual([{ name: 'pooler_output', datatype: 'FP32', shape: [-1, stack.base.config.hiddenSize] }]);
  });

  it('infer on padded input_ids with an attention mask equals the ragged rows run alone', async () => {
    const a = randomIds(6);
    const b = randomIds(3);
    const res = await infer('cls-adapter', {
      id: 'req-7',
      inputs: [
        { name: 'input_ids', datatype: 'INT64', shape: [2, 6], data: [...a, ...b, 0, 0, 0] },
        { name: 'attention_mask', datatype: 'INT64', shape: [2, 6], data: [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]] },
      ],
    });
    expect(res.status).toBe(200);
    expect(res.body.model_name).toBe('cls-adapter');
    expect(res.body.id).toBe('req-7');
    const logits = res.body.outputs.find((o: { name: string }) => o.name === 'logits');
    expect(logits).toMatchObject({ datatype: 'FP32', shape: [2, 3] });
    expect(logits.data).toHaveLength(6);
    const expected = [...(await engineRow('cls-adapter', a)).logits!, ...(await engineRow('cls-adapter', b)).logits!];
    expect(maxAbsDiff(logits.data, expected)).toBeLessThan(1e-4);
    const probs = res.body.outputs.find((o: { name: string }) => o.name === 'probabilities');
    expect(maxAbsDiff(probs.data.slice(3, 6), referenceSoftmax(logits.data.slice(3, 6)))).toBeLessThan(1e-6);
  });

  it('infer on text, with only the requested output', async () => {
    const res = await infer('emb-bitfit', {
      inputs: [{ name: 'text', datatype: 'BYTES', shape: [2], data: ['first text', 'second'] }],
      outputs: [{ name: 'pooler_output' }],
    });
    expect(res.status).toBe(200);
    expect(res.body.outputs).toHaveLength(1);
    expect(res.body.outputs[0]).toMatchObject({ name: 'pooler_output', datatype: 'FP32', shape: [2, stack.base.config.hiddenSize] });
    const ids = stack.runtime.tokenizer!.encode('second').inputIds;
    const second = res.body.outputs[0].data.slice(stack.base.config.hiddenSize);
    expect(maxAbsDiff(second, Array.from((await engineRow('emb-bitfit', ids)).pooled!))).toBeLessThan(1e-4);
  });

  it('errors use the protocol body {"error": "..."}', async () => {
    const expectV2 = (res: JsonResponse, status: number, text: RegExp): void => {
      expect(res.status).toBe(status);
      expect(Object.keys(res.body)).toEqual(['error']);
      expect(res.body.error).toMatch(text);
    };
    expectV2(await call(`${api.url}/v2/models/nope`), 404, /nope/);
    expectV2(await call(`${api.url}/v2/models/cls-lora/versions/1/infer`, { json: {} }), 404, /no route/);
    expectV2(await call(`${api.url}/v2/models/nope/ready`), 404, /nope/);
    expectV2(await infer('nope', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: ['x'] }] }), 404, /nope/);
    expectV2(await infer('cls-lora', { inputs: [{ name: 'input_ids', datatype: 'FP32', shape: [1, 2], data: [101, 102] }] }), 400, /integer type/);
    expectV2(await infer('cls-lora', { inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, 3], data: [101, 102] }] }), 400, /3 elements/);
    expectV2(await infer('cls-lora', { inputs: [{ name: 'pixels', datatype: 'INT64', shape: [1, 1], data: [1] }] }), 400, /inputs\[0\]\.name is not an input/);
    expectV2(
      await infer('cls-lora', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: ['x'] }], outputs: [{ name: 'pooler_output' }] }),
      400,
      /outputs\[0\]\.name is not an output/,
    );
    expectV2(
      await infer('cls-lora', { inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, 2], data: [101, stack.base.config.vocabSize] }] }),
      400,
      /input_ids\[0\]\[1\]/,
    );
    expectV2(
      await infer('cls-lora', {
        inputs: [
          { name: 'input_ids', datatype: 'INT64', shape: [1, 3], data: [101, 7, 102] },
          { name: 'attention_mask', datatype: 'INT64', shape: [1, 3], data: [1, 0, 1] },
        ],
      }),
      400,
      /right padding/,
    );
    const malformed = await call(`${api.url}/v2/models/cls-lora/infer`, { body: '{', headers: { 'Content-Type': 'application/json' } });
    expectV2(malformed, 400, /JSON/);
  });
});
