// Refusals of the generation routes that a healthy tiny decoder cannot be made
// to produce on demand: overload (429 + Retry-After), shutting down (503), and
// a failure after the stream began. A fake decoder gateway answers; the
// routes, error mapping and SSE framing are the real ones.
import OpenAI, { APIError, RateLimitError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CompletionsGateway } from '../../src/gateway/completions.js';
import type { GenerateInput, GenerateOutput, GenerationGateway } from '../../src/gateway/generation.js';
import { ServerLifecycle } from '../../src/server/lifecycle.js';
import { ChatTemplate } from '../../src/tokenizer/chat-template.js';
import { PetServeError } from '../../src/util/errors.js';
import { call, serveStack, startTestStack, type Listening, type TestStack } from './helpers.js';

let stack: TestStack;
let server: Listening;
let client: OpenAI;
const lifecycle = new ServerLifecycle();
let behaviour: (input: GenerateInput) => Promise<GenerateOutput> = () => Promise.reject(new Error('unset'));

beforeAll(async () => {
  stack = await startTestStack([]);
  const completions = new CompletionsGateway({
    generation: { generate: (input: GenerateInput) => behaviour(input) } as unknown as GenerationGateway,
    tokenizer: null,
    chatTemplate: ChatTemplate.fromTokenizerConfig({}),
    baseModelId: 'fake-decoder',
    vocabSize: 100,
    maxContext: 64,
    defaultMaxTokens: 8,
    hasTask: () => false,
    tasks: () => [],
  });
  server = await serveStack(stack, { completions, lifecycle });
  client = new OpenAI({ apiKey: 'unused-key-0000000000', baseURL: `${server.url}/v1`, maxRetries: 0 });
});

afterAll(async () => {
  await server?.close();
  await stack?.close();
});

const body = { model: 'fake-decoder', prompt: [1, 2, 3], max_tokens: 4 };

describe('generation refusals', () => {
  it('overload is a 429 with Retry-After (RateLimitError in the SDK)', async () => {
    behaviour = () => Promise.reject(new PetServeError('OVERLOADED', '4096 generation requests are waiting; retry later'));
    const err = await client.completions.create(body).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitError);
    expect((err as RateLimitError).headers?.get('retry-after')).toBe('1');
    // Streaming too: the refusal comes before any chunk, so it is an ordinary error response.
    const streamed = await client.completions.create({ ...body, stream: true }).catch((e: unknown) => e);
    expect(streamed).toBeInstanceOf(RateLimitError);
  });

  it('a failure after the first chunk ends the stream with an error event the SDK raises', async () => {
    behaviour = async (input) => {
      input.onText?.('partial', { token: 5, logprob: -1, top: [] });
      throw new PetServeError('DEVICE_LOST', 'the GPU device was lost');
    };
    const chunks: string[] = [];
    const err = await (async () => {
      for await (const c of await client.completions.create({ ...body, stream: true })) chunks.push(c.choices[0]?.text ?? '');
    })().catch((e: unknown) => e);
    expect(chunks).toEqual(['partial']);
    expect(err).toBeInstanceOf(APIError);
    expect(String((err as Error).message)).toContain('device was lost');
  });

  it('while shutting down: 503 in OpenAI shape', async () => {
    lifecycle.beginDrain();
    const r = await call(`${server.url}/v1/chat/completions`, { json: { model: 'fake-decoder', messages: [{ role: 'user', content: 'x' }] } });
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('5');
    expect(r.body.error).toMatchObject({ type: 'service_unavailable_error', code: 'SHUTTING_DOWN' });
  });
});
