// Offline generation through the Redis batch queue, end to end: a spawned
// `petserve serve` (bert-tiny encoder with an embedding task, plus a random
// llama-tiny decoder with two LoRA adapters in generation.tasksDir) takes
// OpenAI Batch input files; spawned `petserve worker` processes with the same
// config answer them. Results come back in OpenAI's batch output shape.
import { spawn, type ChildProcess } from 'node:child_process';
import { hostname } from 'node:os';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initDecoderModel } from '../../src/model/init-decoder.js';
import { writeRandomPeftLora } from '../../src/pet/formats/peft-writer.js';
import { batchLineSeed } from '../../src/queue/answer.js';
import type { BatchView, OpenAiBatchOutputLine } from '../../src/queue/types.js';
import { freePort } from '../helpers/net.js';
import { makeTinyModel, testConfig, writeTasks } from '../server/helpers.js';
import { deletePrefix, REDIS_URL, spawnWorkerProcess, testPrefix, waitFor, type WorkerProcess } from './helpers.js';

const DECODER = 'llama-batch';
const ADAPTERS = ['qv-r4', 'mlp-r2'];
const EMBEDDER = 'vec';
// A killed worker's chunk is taken over within ~10 s (see batch-e2e.test.ts on why not shorter).
const WORKER_FLAGS = ['--lock-duration-ms', '8000', '--stalled-interval-ms', '1000', '--concurrency', '1'];

interface BatchLine {
  custom_id: string;
  method: string;
  url: string;
  body: Record<string, unknown>;
}

let root: string;
let configFile: string;
let prefix: string;
let admin: Redis;
let server: ChildProcess | null = null;
let url = '';
const workers: WorkerProcess[] = [];
const workerMetricsUrls: string[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-gen-batch-'));
  const base = await makeTinyModel(join(root, 'model'));
  await writeTasks(base, join(root, 'tasks'), [{ id: EMBEDDER, kind: 'bitfit', numLabels: 0 }]);
  const decoderDir = join(root, 'decoders', DECODER);
  await initDecoderModel({ preset: 'llama-tiny', outDir: decoderDir, seed: 5 });
  const targets = [['q_proj', 'v_proj'], ['gate_proj', 'up_proj', 'down_proj']];
  for (const [i, id] of ADAPTERS.entries()) {
    await writeRandomPeftLora(join(root, 'decoder-tasks', id), { modelDir: decoderDir, targetModules: targets[i]!, rank: [4, 2][i]!, seed: 40 + i });
  }
  prefix = testPrefix('genbatch');
  const config = testConfig(root, {
    'server.port': 0,
    'log.level': 'info',
    'redis.url': REDIS_URL,
    'batches.prefix': prefix,
    'batches.chunkSize': 3,
    'batches.attempts': 5,
    'generation.modelDir': decoderDir,
    'generation.tasksDir': join(root, 'decoder-tasks'),
    // Three processes hold a KV cache each: keep it small.
    'generation.kvCacheBytes': 8 * 1024 * 1024,
  });
  configFile = join(root, 'config.yaml');
  await writeFile(configFile, stringify(config));
  admin = new Redis(REDIS_URL);
  const c = spawn(process.execPath, ['--import', 'tsx', 'test/server/fixtures/petserve-cli.ts', 'serve', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  server = c;
  // Each worker serves its own /metrics (workers have no API).
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    workerMetricsUrls.push(`http://127.0.0.1:${port}/metrics`);
    workers.push(spawnWorkerProcess(configFile, [...WORKER_FLAGS, '--metrics-port', String(port)]));
  }
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
  await Promise.all(workers.map((w) => w.ready));
}, 300_000);

afterAll(async () => {
  for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
  await Promise.all(workers.map((w) => w.exited));
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((r) => server!.on('exit', r));
  }
  if (admin) {
    await deletePrefix(admin, prefix);
    admin.disconnect();
  }
  if (root) await rm(root, { recursive: true, force: true });
}, 120_000);

const jsonl = (lines: readonly unknown[]): string => lines.map((l) => JSON.stringify(l)).join('\n') + '\n';

async function submit(lines: readonly unknown[], idempotencyKey?: string): Promise<Response> {
  return fetch(`${url}/v1/batches`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-ndjson', ...(idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : {}) },
    body: jsonl(lines),
  });
}

async function get(id: string): Promise<BatchView> {
  return (await (await fetch(`${url}/v1/batches/${id}`)).json()) as BatchView;
}

async function finished(id: string): Promise<BatchView> {
  return waitFor(`batch ${id} to finish`, async () => {
    const b = await get(id);
    return b.finished_at !== null ? b : null;
  }, 240_000, 200);
}

async function results(id: string): Promise<OpenAiBatchOutputLine[]> {
  const text = await (await fetch(`${url}/v1/batches/${id}/results`)).text();
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as OpenAiBatchOutputLine);
}

/** What the online route answers for the same body. */
async function online(line: BatchLine, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const res = await fetch(`${url}${line.url}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ ...line.body, ...extra }) });
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

/** The parts of an answer that do not vary per call (ids and timestamps do). */
function stable(body: Record<string, unknown>): unknown {
  const { id: _id, created: _created, ...rest } = body;
  return rest;
}

function expectExactlyOnceInOrder(got: OpenAiBatchOutputLine[], lines: readonly BatchLine[]): void {
  expect(got.map((l) => l.custom_id)).toEqual(lines.map((l) => l.custom_id));
  expect(new Set(got.map((l) => l.id)).size).toBe(lines.length);
  for (const l of got) {
    expect(l.error, `${l.custom_id}: ${JSON.stringify(l.error)}`).toBeNull();
    expect(l.id).toMatch(/^batch_req_/);
    expect(l.response).toMatchObject({ status_code: 200, request_id: expect.stringMatching(/^req_/) });
  }
}

const chat = (custom_id: string, model: string, text: string, extra: Record<string, unknown> = {}): BatchLine => ({
  custom_id,
  method: 'POST',
  url: '/v1/chat/completions',
  body: { model, messages: [{ role: 'user', content: text }], max_tokens: 6, temperature: 0, ...extra },
});
const completion = (custom_id: string, model: string, prompt: unknown, extra: Record<string, unknown> = {}): BatchLine => ({
  custom_id,
  method: 'POST',
  url: '/v1/completions',
  body: { model, prompt, max_tokens: 6, temperature: 0, ...extra },
});
const embedding = (custom_id: string, input: unknown): BatchLine => ({ custom_id, method: 'POST', url: '/v1/embeddings', body: { model: EMBEDDER, input } });

describe('OpenAI-format batches of generation and embeddings', () => {
  it('chat, completions and embeddings lines mixed: answered in input order in OpenAI\'s shape, greedy answers equal to the HTTP routes\'', async () => {
    const lines: BatchLine[] = [
      chat('c-base', DECODER, 'hello there'),
      embedding('e-text', 'an offline sentence'),
      completion('p-qv', ADAPTERS[0]!, 'once upon a time'),
      chat('c-mlp', ADAPTERS[1]!, 'what is a batch?', { n: 2, max_completion_tokens: 5 }),
      completion('p-ids', DECODER, [5, 17, 33, 2]),
      embedding('e-many', ['one', 'two words']),
      chat('c-qv', ADAPTERS[0]!, 'stop early', { stop: ['\n'] }),
    ];
    const res = await submit(lines);
    expect(res.status).toBe(202);
    const id = ((await res.json()) as BatchView).id;
    expect(await finished(id)).toMatchObject({ status: 'completed', counts: { total: lines.length, done: lines.length, failed: 0 } });
    const got = await results(id);
    expectExactlyOnceInOrder(got, lines);
    for (const [k, line] of lines.entries()) {
      const body = got[k]!.response!.body as Record<string, unknown>;
      const expected = await online(line);
      expect(body.object).toBe(expected.object);
      expect(stable(body), line.custom_id).toEqual(stable(expected));
    }
  });

  it('workers export the generation metrics of the sequences they ran; their KV blocks are free again', async () => {
    const sample = async (name: string): Promise<number> => {
      let sum = 0;
      for (const metricsUrl of workerMetricsUrls) {
        const text = await (await fetch(metricsUrl)).text();
        const line = text.split('\n').find((l) => l.startsWith(`${name} `));
        if (!line) throw new Error(`${name} not in a worker's /metrics`);
        sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
      return sum;
    };
    // The previous test ran chat and completions lines through the workers.
    expect(await sample('petserve_generation_generated_tokens_total')).toBeGreaterThan(0);
    expect(await sample('petserve_generation_prompt_tokens_total')).toBeGreaterThan(0);
    expect(await sample('petserve_generation_ttft_seconds_count')).toBeGreaterThan(0);
    expect(await sample('petserve_generation_kv_blocks_used')).toBe(0);
    expect(await sample('petserve_generation_kv_blocks_capacity')).toBeGreaterThan(0);
  });

  it('a bad line refuses the whole batch with a 400 naming the line and the field; nothing is queued', async () => {
    const before = ((await (await fetch(`${url}/v1/batches?limit=1`)).json()) as { total: number }).total;
    const good = [chat('a', DECODER, 'hi'), embedding('b', 'text')];
    const cases: { lines: unknown[]; where: RegExp }[] = [
      { lines: [...good, { ...chat('c', DECODER, 'x'), url: '/v1/predict' }], where: /line 3: url/ },
      { lines: [good[0], { ...good[1]!, custom_id: 'a' }], where: /line 2: custom_id/ },
      { lines: [...good, chat('c', 'no-such-model', 'x')], where: /line 3: body\.model/ },
      { lines: [...good, embedding('c', 'x'), { ...embedding('d', 'x'), body: { model: DECODER, input: 'x' } }], where: /line 4: body\.model/ },
      { lines: [good[0], chat('b', DECODER, 'x', { temperature: 'hot' })], where: /line 2: body\.temperature/ },
      { lines: [good[0], chat('b', DECODER, 'x', { top_p: 7 })], where: /line 2: body\.top_p/ },
      { lines: [good[0], { ...chat('b', DECODER, 'x'), method: 'GET' }], where: /line 2: method/ },
      { lines: [good[0], chat('b', DECODER, 'x', { stream: true })], where: /line 2: body\.stream/ },
      { lines: [good[0], completion('b', DECODER, 'x', { echo: true })], where: /line 2: body\.echo/ },
      { lines: [good[0], { ...chat('', DECODER, 'x') }], where: /line 2: custom_id/ },
    ];
    for (const c of cases) {
      const res = await submit(c.lines);
      const text = await res.text();
      expect(res.status, text).toBe(400);
      expect((JSON.parse(text) as { error: { message: string } }).error.message).toMatch(c.where);
    }
    // Line numbers count blank lines too (they are the file's lines).
    const res = await fetch(`${url}/v1/batches`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-ndjson' },
      body: `${JSON.stringify(good[0])}\n\n{not json\n`,
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/line 3: not valid JSON/);
    expect(((await (await fetch(`${url}/v1/batches?limit=1`)).json()) as { total: number }).total).toBe(before);
  });

  it('an idempotency key resubmission returns the same batch', async () => {
    const lines = [completion('k1', DECODER, 'same again'), embedding('k2', 'again')];
    const first = await submit(lines, 'gen-batch-key-1');
    expect(first.status).toBe(202);
    const second = await submit(lines, 'gen-batch-key-1');
    expect(second.status).toBe(202);
    expect(second.headers.get('Idempotent-Replayed')).toBe('true');
    const a = (await first.json()) as BatchView;
    const b = (await second.json()) as BatchView;
    expect(b.id).toBe(a.id);
    const changed = await submit([completion('k1', DECODER, 'something else')], 'gen-batch-key-1');
    expect(changed.status).toBe(409);
    await finished(a.id);
  });

  it('a worker SIGKILLed mid-batch: the other finishes every line once; sampled lines without a seed answer as their derived seed does', async () => {
    const [victim, survivor] = workers;
    const lines: BatchLine[] = Array.from({ length: 15 }, (_, k) => {
      const model = [DECODER, ...ADAPTERS][k % 3]!;
      // Every third line samples without a seed: its seed comes from (batch id, custom_id).
      const sampled = k % 3 === 1 ? { temperature: 0.9, top_p: 0.95 } : {};
      return k % 2 === 0
        ? chat(`s-${k}`, model, `line ${k} of the long batch`, { max_tokens: 16, ...sampled })
        : completion(`s-${k}`, model, `prompt number ${k}`, { max_tokens: 16, ...sampled });
    });
    const res = await submit(lines);
    expect(res.status).toBe(202);
    const id = ((await res.json()) as BatchView).id;
    const victimName = `${hostname()}:${victim!.pid}`;
    await waitFor('the victim to be inside a chunk while lines are still pending', async () => {
      const b = await get(id);
      return b.counts.pending > 3 && (await activeHolders()).includes(victimName);
    }, 120_000, 20);
    victim!.child.kill('SIGKILL');
    expect(await victim!.exited).toBeNull();
    expect(await finished(id)).toMatchObject({ status: 'completed', counts: { total: 15, done: 15, failed: 0, pending: 0 } });
    const got = await results(id);
    expectExactlyOnceInOrder(got, lines);
    expect(await admin.hlen(`${prefix}:batch:${id}:results`)).toBe(15);
    expect(survivor!.log()).toMatch(/took over a stalled chunk/);
    // Whoever generated a line (the victim before it died, or the survivor), its answer is the one its seed gives.
    for (const k of [1, 4, 7]) {
      const line = lines[k]!;
      const expected = await online(line, { seed: batchLineSeed(id, line.custom_id) });
      expect(stable(got[k]!.response!.body as Record<string, unknown>), line.custom_id).toEqual(stable(expected));
    }
  });
});

/** Which worker processes hold an active chunk of the queue right now (BullMQ's processedBy). */
async function activeHolders(): Promise<string[]> {
  const active = await admin.lrange(`${prefix}:batches:active`, 0, -1);
  const names = await Promise.all(active.map((jobId) => admin.hget(`${prefix}:batches:${jobId}`, 'pb')));
  return names.filter((n): n is string => n !== null);
}
