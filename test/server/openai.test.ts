import OpenAI, { AuthenticationError, BadRequestError, NotFoundError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, MAX_POSITIONS, maxAbsDiff, serveStack, startTestStack, type Listening, type TestStack } from './helpers.js';

/**
 * The OpenAI-compatible encoder routes (/v1/embeddings, /v1/models) driven by
 * the official `openai` client, as users' scripts would. Embeddings are checked
 * against PetServe's own predict route (same pooled output of the same task),
 * whose numerics are tested against the float64 reference elsewhere.
 */
const API_KEY = 'sk-test-data-plane-key-0123456789';
let stack: TestStack;
let server: Listening;
let client: OpenAI;

beforeAll(async () => {
  stack = await startTestStack(
    [
      { id: 'embed-lora', kind: 'lora', numLabels: 0 },
      { id: 'sentiment', kind: 'adapter', numLabels: 2 },
    ],
    { 'server.apiKeys': [API_KEY] },
  );
  server = await serveStack(stack);
  client = new OpenAI({ apiKey: API_KEY, baseURL: `${server.url}/v1`, maxRetries: 0 });
});

afterAll(async () => {
  await server?.close();
  await stack?.close();
});

const auth = { Authorization: `Bearer ${API_KEY}` };

describe('OpenAI-compatible encoder routes', () => {
  it('embeds texts and token arrays with a task, equal to the predict route\'s pooled output', async () => {
    const res = await client.embeddings.create({ model: 'embed-lora', input: ['a great film', 'a boring plot'] });
    expect(res.object).toBe('list');
    expect(res.model).toBe('embed-lora');
    expect(res.data.map((d) => d.index)).toEqual([0, 1]);
    const hidden = stack.runtime.checkpoint.config.hiddenSize;
    for (const d of res.data) expect(d.embedding).toHaveLength(hidden);
    expect(res.usage.prompt_tokens).toBeGreaterThan(4);
    expect(res.usage.total_tokens).toBe(res.usage.prompt_tokens);

    const predict = await call(`${server.url}/v1/tasks/embed-lora/predict`, { json: { inputs: ['a great film'] }, headers: auth });
    expect(predict.status).toBe(200);
    expect(maxAbsDiff(res.data[0]!.embedding, predict.body.outputs[0].embedding)).toBe(0);

    const ids = await client.embeddings.create({ model: 'embed-lora', input: [[2, 5, 9, 3]], encoding_format: 'float' });
    const single = await client.embeddings.create({ model: 'embed-lora', input: [2, 5, 9, 3] });
    expect(ids.data[0]!.embedding).toEqual(single.data[0]!.embedding);
    expect(ids.usage.prompt_tokens).toBe(4);
  });

  it('answers base64 as little-endian float32 (the SDK decodes it to the same numbers)', async () => {
    const float = await client.embeddings.create({ model: 'sentiment', input: 'same words', encoding_format: 'float' });
    const raw = await call(`${server.url}/v1/embeddings`, { json: { model: 'sentiment', input: 'same words', encoding_format: 'base64' }, headers: auth });
    expect(raw.status).toBe(200);
    const bytes = Buffer.from(raw.body.data[0].embedding as string, 'base64');
    const decoded = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
    expect(decoded).toEqual(float.data[0]!.embedding);
    // The SDK asks for base64 by default and decodes it itself.
    const viaSdkDefault = await client.embeddings.create({ model: 'sentiment', input: 'same words' });
    expect(viaSdkDefault.data[0]!.embedding).toEqual(float.data[0]!.embedding);
  });

  it('lists the base model and every task with its parent and kind', async () => {
    const base = stack.runtime.checkpoint.dir.split('/').pop()!;
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toEqual([base, 'embed-lora', 'sentiment']);
    const task = (await client.models.retrieve('sentiment')) as unknown as { parent: string; kind: string; object: string };
    expect(task).toMatchObject({ object: 'model', parent: base, kind: 'adapter' });
    expect((await client.models.retrieve(base)).id).toBe(base);
  });

  it('raises the SDK errors: unknown model 404, bad fields 400 naming the param, wrong key 401', async () => {
    await expect(client.embeddings.create({ model: 'no-such-task', input: 'x' })).rejects.toBeInstanceOf(NotFoundError);
    await expect(client.models.retrieve('no-such-task')).rejects.toBeInstanceOf(NotFoundError);

    const dims = await client.embeddings.create({ model: 'embed-lora', input: 'x', dimensions: 7 }).catch((e: unknown) => e);
    expect(dims).toBeInstanceOf(BadRequestError);
    expect((dims as BadRequestError).param).toBe('dimensions');

    const tooLong = await client.embeddings.create({ model: 'embed-lora', input: [Array.from({ length: MAX_POSITIONS + 1 }, () => 5)] }).catch((e: unknown) => e);
    expect((tooLong as { status: number }).status).toBe(413);

    const badId = await client.embeddings.create({ model: 'embed-lora', input: [[1, 2, 1_000_000]] }).catch((e: unknown) => e);
    expect(badId).toBeInstanceOf(BadRequestError);
    expect((badId as BadRequestError).message).not.toContain('1000000');

    const wrongKey = new OpenAI({ apiKey: 'sk-wrong-key-000000000000', baseURL: `${server.url}/v1`, maxRetries: 0 });
    await expect(wrongKey.models.list()).rejects.toBeInstanceOf(AuthenticationError);
  });

  it('refuses malformed bodies with OpenAI-shaped 400s that echo no input', async () => {
    const cases: unknown[] = [
      { model: 'embed-lora' },
      { model: 'embed-lora', input: [] },
      { model: 'embed-lora', input: 42 },
      { model: 'embed-lora', input: 'x', encoding_format: 'int8' },
      { model: 'embed-lora', input: 'x', temperature: 0.5 },
      { model: 7, input: 'x' },
    ];
    for (const body of cases) {
      const r = await call(`${server.url}/v1/embeddings`, { json: body, headers: auth });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error).toMatchObject({ type: 'invalid_request_error', code: 'INVALID_REQUEST' });
      expect(typeof r.body.error.param).toBe('string');
      expect(r.body.error.message).not.toContain('int8');
      expect(r.body.error.message).not.toContain('temperature');
    }
    const r = await call(`${server.url}/v1/embeddings`, { json: { model: 'embed-lora', input: 'x' } });
    expect(r.status).toBe(401);
    expect(r.body.error.type).toBe('authentication_error');
  });
});
