// OpenAI-compatible generation in a spawned `petserve serve` (encoder as usual,
// plus a random llama-tiny decoder with three LoRA adapters via
// --generation-model / generation.tasksDir), driven by the official `openai`
// client as users' scripts would drive it.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import OpenAI, { APIError, BadRequestError, NotFoundError } from 'openai';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHATML_TEMPLATE, initDecoderModel } from '../../src/model/init-decoder.js';
import { writeRandomPeftLora } from '../../src/pet/formats/peft-writer.js';
import { promtool } from '../metrics/promtool.js';
import { admin, call, makeTinyModel, testConfig } from './helpers.js';
import { dirEntries, tarBuffer } from './tar-fixture.js';

const API_KEY = 'sk-test-generation-key-0123456789';
const BASE = 'llama-chat';
const TASKS = ['qv-r4', 'mlp-r8', 'all-r2'];
const MODELS = [BASE, ...TASKS];
// Thirteen more adapters for the load test's 16: ranks 1..32 over varied targets.
const LOAD_TASKS = Array.from({ length: 13 }, (_, i) => `load-${String(i + 1).padStart(2, '0')}`);
const ADAPTERS = [...TASKS, ...LOAD_TASKS];
// A template that raises like Llama-2's does on a conversation it does not take.
const RAISING_TEMPLATE =
  "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('Conversations must start with a system or user message') }}{% endif %}" + CHATML_TEMPLATE;

let root: string;
let child: ChildProcess | null = null;
let url = '';
let client: OpenAI;
const auth = { Authorization: `Bearer ${API_KEY}` };

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-generation-'));
  await makeTinyModel(join(root, 'model'));
  await mkdir(join(root, 'tasks'), { recursive: true });
  const decoderDir = join(root, 'decoders', BASE);
  await initDecoderModel({ preset: 'llama-tiny', outDir: decoderDir, seed: 7 });
  const tokenizerConfigPath = join(decoderDir, 'tokenizer_config.json');
  const tokenizerConfig = JSON.parse(await readFile(tokenizerConfigPath, 'utf8')) as Record<string, unknown>;
  await writeFile(tokenizerConfigPath, JSON.stringify({ ...tokenizerConfig, chat_template: RAISING_TEMPLATE }));
  const targets = [['q_proj', 'v_proj'], ['gate_proj', 'up_proj', 'down_proj'], ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']];
  for (const [i, id] of TASKS.entries()) {
    await writeRandomPeftLora(join(root, 'decoder-tasks', id), { modelDir: decoderDir, targetModules: targets[i]!, rank: [4, 8, 2][i]!, seed: 100 + i });
  }
  for (const [i, id] of LOAD_TASKS.entries()) {
    const rank = [1, 2, 4, 8, 16, 32][i % 6]!;
    await writeRandomPeftLora(join(root, 'decoder-tasks', id), { modelDir: decoderDir, targetModules: targets[i % 3]!, rank, seed: 200 + i });
  }
  const config = testConfig(root, {
    'server.port': 0,
    'log.level': 'info',
    'server.apiKeys': [API_KEY],
    'generation.tasksDir': join(root, 'decoder-tasks'),
    'redis.url': 'redis://127.0.0.1:1',
  });
  const file = join(root, 'serve.yaml');
  await writeFile(file, stringify(config));
  const c = spawn(process.execPath, ['--import', 'tsx', 'test/server/fixtures/petserve-cli.ts', 'serve', '--config', file, '--generation-model', decoderDir], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child = c;
  url = await new Promise<string>((resolve, reject) => {
    const lines: string[] = [];
    createInterface({ input: c.stderr! }).on('line', (line) => {
      lines.push(line);
      try {
        const l = JSON.parse(line) as { msg?: string; url?: string };
        if (l.msg === 'listening') resolve(String(l.url));
      } catch {
        // not a log line
      }
    });
    c.on('exit', (code) => reject(new Error(`serve exited ${code}: ${lines.slice(-5).join('\n')}`)));
  });
  client = new OpenAI({ apiKey: API_KEY, baseURL: `${url}/v1`, maxRetries: 0, timeout: 120_000 });
}, 300_000);

afterAll(async () => {
  if (child && child.exitCode === null) {
    child.kill('SIGTERM');
    await new Promise((r) => child!.on('exit', r));
  }
  if (root) await rm(root, { recursive: true, force: true });
});

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`${name} not in /metrics`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function kvBlocksDrainTo0(): Promise<void> {
  const until = Date.now() + 10_000;
  while ((await metric('petserve_generation_kv_blocks_used')) !== 0) {
    if (Date.now() > until) throw new Error('KV blocks still in use 10 s after the last request');
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stillUp(): Promise<void> {
  expect((await client.models.retrieve(BASE)).id).toBe(BASE);
}

const chatOf = (prompt: string) => [
  { role: 'system' as const, content: 'You are terse.' },
  { role: 'user' as const, content: prompt },
];

async function streamChat(body: OpenAI.ChatCompletionCreateParamsStreaming): Promise<{ text: string[]; chunks: OpenAI.ChatCompletionChunk[] }> {
  const chunks: OpenAI.ChatCompletionChunk[] = [];
  const text: string[] = [];
  for await (const c of await client.chat.completions.create(body)) {
    chunks.push(c);
    for (const ch of c.choices) text[ch.index] = (text[ch.index] ?? '') + (ch.delta.content ?? '');
  }
  return { text, chunks };
}

describe('OpenAI-compatible generation (chat, completions)', () => {
  it('lists the decoder base and its tasks with parent beside the encoder', async () => {
    const ids: string[] = [];
    const models: Record<string, unknown>[] = [];
    for await (const m of client.models.list()) {
      ids.push(m.id);
      models.push(m as unknown as Record<string, unknown>);
    }
    expect(ids).toEqual(expect.arrayContaining(['model', ...MODELS]));
    expect(models.find((m) => m['id'] === BASE)).toMatchObject({ object: 'model', owned_by: 'petserve' });
    expect(models.find((m) => m['id'] === BASE)!['parent']).toBeUndefined();
    for (const t of TASKS) expect(models.find((m) => m['id'] === t)).toMatchObject({ parent: BASE, kind: 'lora' });
    expect(await client.models.retrieve('mlp-r8')).toMatchObject({ id: 'mlp-r8', parent: BASE });
  });

  it('chat: the streamed text equals the non-streamed greedy answer, for the base and an adapter', async () => {
    for (const model of [BASE, 'qv-r4']) {
      const body = { model, messages: chatOf('Tell me about cats.'), temperature: 0, max_tokens: 24 };
      const whole = await client.chat.completions.create(body);
      expect(whole.object).toBe('chat.completion');
      expect(whole.model).toBe(model);
      const answer = whole.choices[0]!;
      expect(answer.message.role).toBe('assistant');
      expect(['stop', 'length']).toContain(answer.finish_reason);
      expect(whole.usage!.prompt_tokens).toBeGreaterThan(5);
      expect(whole.usage!.total_tokens).toBe(whole.usage!.prompt_tokens + whole.usage!.completion_tokens);

      const { text, chunks } = await streamChat({ ...body, stream: true, stream_options: { include_usage: true } });
      expect(text[0]).toBe(answer.message.content);
      expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
      expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0]!.id)).toBe(true);
      const finish = chunks.flatMap((c) => c.choices).filter((c) => c.finish_reason !== null);
      expect(finish.map((c) => c.finish_reason)).toEqual([answer.finish_reason]);
      const last = chunks[chunks.length - 1]!;
      expect(last.choices).toEqual([]);
      expect(last.usage).toEqual(whole.usage);
    }
  });

  it('chat: adapters answer differently from the base (the model field picks the adapter)', async () => {
    const answers = await Promise.all(
      MODELS.map((model) => client.chat.completions.create({ model, messages: chatOf('Hello'), temperature: 0, max_tokens: 16 })),
    );
    expect(new Set(answers.map((a) => JSON.stringify(a.choices[0]!.message.content))).size).toBeGreaterThan(1);
  });

  it('admin: an adapter uploaded with model = the decoder answers as the same adapter from generation.tasksDir, is listed under it, and goes with DELETE', async () => {
    // The files of 'qv-r4', uploaded again as 'qv-r4-copy': same weights, so the same greedy answer.
    const archive = tarBuffer(await dirEntries(join(root, 'decoder-tasks', 'qv-r4')), { gzip: true });
    const upload = (query: string) =>
      fetch(`${url}/v1/tasks?${query}`, { method: 'POST', headers: { ...admin, 'Content-Type': 'application/gzip' }, body: archive });
    // A base that is not served here, and ids another model of the server holds: refused, nothing registered.
    expect((await upload('id=stray&model=no-such-base')).status).toBe(400);
    for (const taken of ['model', BASE, 'mlp-r8']) expect((await upload(`id=${taken}&model=${BASE}`)).status, taken).toBe(409);
    expect((await upload(`id=${BASE}`)).status).toBe(409); // an encoder task may not take the decoder's id either

    const res = await upload(`id=qv-r4-copy&model=${BASE}`);
    expect(res.status, await res.clone().text()).toBe(201);
    expect(await res.json()).toMatchObject({ id: 'qv-r4-copy', model: BASE, kind: 'lora', format: 'peft', type: 'generation' });
    const listed = (await (await fetch(`${url}/v1/tasks`, { headers: admin })).json()) as { tasks: { id: string; model: string }[] };
    expect(listed.tasks.find((t) => t.id === 'qv-r4-copy')).toMatchObject({ model: BASE });
    expect(await client.models.retrieve('qv-r4-copy')).toMatchObject({ parent: BASE });
    const ask = (model: string) => client.chat.completions.create({ model, messages: chatOf('Hello there'), temperature: 0, max_tokens: 16 });
    expect((await ask('qv-r4-copy')).choices[0]!.message.content).toBe((await ask('qv-r4')).choices[0]!.message.content);

    const del = await fetch(`${url}/v1/tasks/qv-r4-copy`, { method: 'DELETE', headers: admin });
    expect(del.status).toBe(200);
    await expect(ask('qv-r4-copy')).rejects.toBeInstanceOf(NotFoundError);
    expect((await fetch(`${url}/v1/tasks/qv-r4-copy`, { headers: admin })).status).toBe(404);
    expect((await fetch(`${url}/v1/tasks/${BASE}`, { method: 'DELETE', headers: admin })).status).toBe(409);
    await stillUp();
  });

  it('completions: string, several strings and token arrays; streamed equals non-streamed', async () => {
    const body = { model: 'mlp-r8', prompt: 'Once upon a time', temperature: 0, max_tokens: 20 };
    const whole = await client.completions.create(body);
    expect(whole.object).toBe('text_completion');
    const text = whole.choices[0]!.text;
    let streamed = '';
    let sawDone = false;
    for await (const c of await client.completions.create({ ...body, stream: true })) {
      streamed += c.choices[0]?.text ?? '';
      if (c.choices[0]?.finish_reason) sawDone = true;
    }
    expect(sawDone).toBe(true);
    expect(streamed).toBe(text);

    const two = await client.completions.create({ ...body, prompt: ['Once upon a time', 'The weather'] });
    expect(two.choices.map((c) => c.index)).toEqual([0, 1]);
    expect(two.choices[0]!.text).toBe(text);
    const alone = await client.completions.create({ ...body, prompt: 'The weather' });
    expect(two.choices[1]!.text).toBe(alone.choices[0]!.text);
    expect(two.usage!.prompt_tokens).toBe(whole.usage!.prompt_tokens + alone.usage!.prompt_tokens);

    const ids = await client.completions.create({ ...body, prompt: [1, 50, 60, 70] });
    const idsNested = await client.completions.create({ ...body, prompt: [[1, 50, 60, 70]] });
    expect(ids.usage!.prompt_tokens).toBe(4);
    expect(idsNested.choices[0]!.text).toBe(ids.choices[0]!.text);
  });

  it('seeded sampling is reproducible; n = 2 runs seeds seed and seed + 1', async () => {
    const body = { model: 'all-r2', messages: chatOf('Sing'), temperature: 1, top_p: 0.95, top_k: 50, max_tokens: 16 };
    const a = await client.chat.completions.create({ ...body, seed: 42, n: 2 });
    const b = await client.chat.completions.create({ ...body, seed: 42, n: 2 });
    expect(a.choices.map((c) => c.index)).toEqual([0, 1]);
    expect(b.choices.map((c) => c.message.content)).toEqual(a.choices.map((c) => c.message.content));
    const s42 = await client.chat.completions.create({ ...body, seed: 42 });
    const s43 = await client.chat.completions.create({ ...body, seed: 43 });
    expect(s42.choices[0]!.message.content).toBe(a.choices[0]!.message.content);
    expect(s43.choices[0]!.message.content).toBe(a.choices[1]!.message.content);
    const { text } = await streamChat({ ...body, seed: 42, n: 2, stream: true });
    expect(text).toEqual(a.choices.map((c) => c.message.content));
  });

  it('logprobs: chat content[] with top_logprobs, completions legacy logprobs; greedy picks the top token', async () => {
    const chat = await client.chat.completions.create({ model: BASE, messages: chatOf('Hi'), temperature: 0, max_tokens: 8, logprobs: true, top_logprobs: 3 });
    const content = chat.choices[0]!.logprobs!.content!;
    expect(content).toHaveLength(chat.usage!.completion_tokens);
    for (const t of content) {
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(t.top_logprobs).toHaveLength(3);
      expect(t.top_logprobs[0]!.token).toBe(t.token);
      expect(t.top_logprobs[0]!.logprob).toBeCloseTo(t.logprob, 10);
      expect(t.bytes).toEqual([...Buffer.from(t.token, 'utf8')]);
    }
    const streamed = await streamChat({ model: BASE, messages: chatOf('Hi'), temperature: 0, max_tokens: 8, logprobs: true, top_logprobs: 3, stream: true });
    const streamedTokens = streamed.chunks.flatMap((c) => c.choices.flatMap((ch) => ch.logprobs?.content ?? []));
    expect(streamedTokens).toEqual(content);

    const plain = await client.chat.completions.create({ model: BASE, messages: chatOf('Hi'), temperature: 0, max_tokens: 8 });
    expect(plain.choices[0]!.logprobs).toBeNull();

    const legacy = await client.completions.create({ model: 'qv-r4', prompt: 'abc', temperature: 0, max_tokens: 6, logprobs: 2 });
    const lp = legacy.choices[0]!.logprobs!;
    expect(lp.tokens).toHaveLength(legacy.usage!.completion_tokens);
    expect(lp.token_logprobs).toHaveLength(lp.tokens!.length);
    expect(Object.keys(lp.top_logprobs![0]!).length).toBeGreaterThanOrEqual(1);
    expect(lp.text_offset![0]).toBe(0);
  });

  it('bad input gets OpenAI-shaped 4xx as the SDK raises them, naming the param without echoing values; the server stays up', async () => {
    const messages = chatOf('x');
    const bad = async (p: Promise<unknown>, cls: abstract new (...args: never[]) => APIError, status: number, param?: string): Promise<APIError> => {
      const err = await p.then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(cls);
      const e = err as APIError;
      expect(e.status).toBe(status);
      if (param !== undefined) expect(e.param).toBe(param);
      await stillUp();
      return e;
    };
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const loose = (b: Record<string, unknown>): any => b;
    await bad(client.chat.completions.create({ model: BASE, messages, max_tokens: -3 }), BadRequestError, 400, 'max_tokens');
    await bad(client.chat.completions.create({ model: BASE, messages, n: 0 }), BadRequestError, 400, 'n');
    await bad(client.chat.completions.create(loose({ model: BASE, messages, temperature: 'hot' })), BadRequestError, 400, 'temperature');
    const range = await bad(client.chat.completions.create({ model: BASE, messages, temperature: 7.25 }), BadRequestError, 400, 'temperature');
    expect(range.message).not.toContain('7.25');
    await bad(client.chat.completions.create({ model: BASE, messages, top_p: 0 }), BadRequestError, 400, 'top_p');
    await bad(client.chat.completions.create(loose({ model: BASE, messages, min_p: 3 })), BadRequestError, 400, 'min_p');
    await bad(client.chat.completions.create(loose({ model: BASE, messages: [{ role: 'user' }] })), BadRequestError, 400);
    await bad(client.chat.completions.create(loose({ model: BASE, messages: [{ role: 'wizard', content: 'x' }] })), BadRequestError, 400);
    await bad(client.chat.completions.create(loose({ model: BASE, messages: 'hello' })), BadRequestError, 400, 'messages');
    await bad(client.chat.completions.create(loose({ model: BASE, messages, frobnicate: true })), BadRequestError, 400);
    await bad(client.chat.completions.create({ model: 'no-such-model', messages }), NotFoundError, 404, 'model');
    const encoder = await bad(client.chat.completions.create({ model: 'model', messages }), BadRequestError, 400, 'model');
    expect(encoder.message).toMatch(/encoder/);
    await bad(client.completions.create({ model: BASE, prompt: 'x', echo: true }), BadRequestError, 400, 'echo');
    await bad(client.completions.create({ model: BASE, prompt: 'x', suffix: 'y' }), BadRequestError, 400, 'suffix');
    await bad(client.completions.create({ model: BASE, prompt: [1, 2, 100000] }), BadRequestError, 400, 'prompt');
    // Over-long: prompt + max_tokens beyond the 512-token context.
    await bad(client.completions.create({ model: BASE, prompt: Array.from({ length: 600 }, () => 40) }), BadRequestError, 400, 'prompt');
    await bad(client.completions.create({ model: BASE, prompt: Array.from({ length: 500 }, () => 40), max_tokens: 20 }), BadRequestError, 400, 'prompt');
    await bad(client.chat.completions.create({ model: BASE, messages: chatOf('word '.repeat(600)) }), BadRequestError, 400, 'messages');
    // A body over server.maxBodyBytes (4 MiB).
    await bad(client.chat.completions.create({ model: BASE, messages: chatOf('y'.repeat(5 * 1024 * 1024)) }), APIError, 413);
    // The model's template raises on a conversation that opens with the assistant.
    const secret = 'confidential-words';
    const tmpl = await bad(client.chat.completions.create({ model: 'qv-r4', messages: [{ role: 'assistant', content: secret }] }), BadRequestError, 400, 'messages');
    expect(tmpl.code).toBe('CHAT_TEMPLATE_FAILED');
    expect(tmpl.message).toContain('must start with a system or user message');
    expect(tmpl.message).not.toContain(secret);

    const raw = await call(`${url}/v1/chat/completions`, { json: { model: BASE, messages }, headers: {} });
    expect(raw.status).toBe(401);
    expect(raw.body.error.type).toBe('authentication_error');
    await kvBlocksDrainTo0();
  });

  it('a client that disconnects mid-stream cancels its sequence: KV blocks go back to 0', async () => {
    const generatedBefore = await metric('petserve_generation_generated_tokens_total');
    const abort = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'qv-r4', messages: chatOf('Write a long story.'), temperature: 1, seed: 5, max_tokens: 400, stream: true },
      { signal: abort.signal },
    );
    let chunks = 0;
    let finished = false;
    let usedWhileStreaming = 0;
    // The SDK ends the iteration quietly when its request is aborted.
    for await (const c of stream) {
      if (c.choices[0]?.finish_reason) finished = true;
      if (++chunks === 4) {
        usedWhileStreaming = await metric('petserve_generation_kv_blocks_used');
        abort.abort();
        break;
      }
    }
    expect(finished).toBe(false);
    expect(usedWhileStreaming).toBeGreaterThan(0);
    await kvBlocksDrainTo0();
    expect(await metric('petserve_generation_running_sequences')).toBe(0);
    // Cancelled, not finished: a sequence that ran to its end would have counted its tokens.
    expect(await metric('petserve_generation_generated_tokens_total')).toBe(generatedBefore);
    await stillUp();
  });

  it('load: 64 concurrent streaming clients over 16 adapters; no 5xx, every stream ends with [DONE] and equals its solo greedy answer', async () => {
    const CLIENTS = 64;
    const prompts = ['alpha', 'bravo charlie', 'delta echo foxtrot'];
    const cases = [BASE, ...ADAPTERS].flatMap((model, m) => [prompts[m % 3]!, prompts[(m + 1) % 3]!].map((prompt) => ({ model, prompt })));
    const body = (c: { model: string; prompt: string }) => ({ model: c.model, messages: chatOf(c.prompt), temperature: 0, max_tokens: 12 });
    const solo = new Map<string, string>();
    for (const c of cases) solo.set(`${c.model}|${c.prompt}`, (await client.chat.completions.create(body(c))).choices[0]!.message.content!);

    const deadline = Date.now() + 25_000;
    let streams = 0;
    const failures: string[] = [];
    const clientLoop = async (k: number): Promise<void> => {
      for (let i = k; Date.now() < deadline; i += CLIENTS) {
        const c = cases[i % cases.length]!;
        // Raw SSE, to see [DONE] and the status of every response.
        const res = await fetch(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: { ...auth, 'Content-Type': 'application/json' },
          body: JSON.stringify({ ...body(c), stream: true }),
        });
        if (res.status !== 200) {
          failures.push(`${c.model}: HTTP ${res.status} ${await res.text()}`);
          continue;
        }
        const events = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
        if (events[events.length - 1] !== '[DONE]') failures.push(`${c.model}: stream did not end with [DONE]`);
        const text = events
          .slice(0, -1)
          .map((e) => JSON.parse(e) as OpenAI.ChatCompletionChunk)
          .map((chunk) => chunk.choices[0]?.delta.content ?? '')
          .join('');
        if (text !== solo.get(`${c.model}|${c.prompt}`)) failures.push(`${c.model}|${c.prompt}: streamed text differs from its solo greedy answer`);
        streams++;
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, k) => clientLoop(k)));
    expect(failures).toEqual([]);
    expect(streams).toBeGreaterThanOrEqual(CLIENTS);
    await kvBlocksDrainTo0();
    expect(await metric('petserve_generation_waiting_sequences')).toBe(0);
  }, 240_000);

  it('exports the generation metrics and documents the routes in /openapi.json', async () => {
    const text = await (await fetch(`${url}/metrics`)).text();
    for (const name of [
      'petserve_generation_ttft_seconds_bucket',
      'petserve_generation_inter_token_seconds_bucket',
      'petserve_generation_e2e_seconds_bucket',
      'petserve_generation_prompt_tokens_total',
      'petserve_generation_generated_tokens_total',
      'petserve_generation_running_sequences',
      'petserve_generation_waiting_sequences',
      'petserve_generation_preempted_total',
      'petserve_generation_kv_blocks_used',
      'petserve_generation_kv_blocks_capacity',
      'petserve_generation_prefix_cache_hit_ratio',
    ]) {
      expect(text).toContain(name);
    }
    expect(await metric('petserve_generation_kv_blocks_capacity')).toBeGreaterThan(0);
    expect(promtool(['check', 'metrics'], text)).toEqual({ status: 0, output: '' });
    expect(await metric('petserve_generation_prompt_tokens_total')).toBeGreaterThan(0);
    const doc = (await call(`${url}/openapi.json`)).body as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/chat/completions', '/v1/completions']));
  });
});
