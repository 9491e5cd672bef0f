// Answers must not depend on batching: 200 requests in flight at once over 20
// tasks of every PET kind (classification and embedding) get, each, the answer
// the same request gets when sent alone.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PET_KINDS } from '../../src/pet/types.js';
import { call, maxAbsDiff, serveStack, startTestStack, type Listening, type TestStack, type TestTask } from './helpers.js';

const TASKS: TestTask[] = Array.from({ length: 20 }, (_, i) => ({
  id: `task-${i}`,
  kind: PET_KINDS[i % PET_KINDS.length]!,
  // Every fifth task is an embedding task; the others have 2 or 3 labels.
  numLabels: i % 5 === 4 ? 0 : 2 + (i % 2),
}));
const REQUESTS = 200;
const TOLERANCE = 1e-4;

let stack: TestStack;
let api: Listening;

beforeAll(async () => {
  // Correctness, not latency: a deadline no request can miss on a CPU adapter.
  stack = await startTestStack(TASKS, { 'scheduler.defaultSloMs': 600_000 });
  api = await serveStack(stack);
});
afterAll(async () => {
  await api?.close();
  await stack?.close();
});

const WORDS = ['good', 'bad', 'movie', 'story', 'the', 'was', 'great', 'terrible', 'plot', 'acting', 'music', 'boring'];

interface Req {
  task: string;
  body: Record<string, unknown>;
}

function randomRequest(i: number): Req {
  const task = TASKS[i % TASKS.length]!.id;
  const inputs = 1 + Math.floor(Math.random() * 3);
  if (Math.random() < 0.5) {
    const texts = Array.from({ length: inputs }, () =>
      Array.from({ length: 1 + Math.floor(Math.random() * 30) }, () => WORDS[Math.floor(Math.random() * WORDS.length)]).join(' '),
    );
    return { task, body: { inputs: texts, options: { return_logits: true } } };
  }
  const ids = Array.from({ length: inputs }, () => [101, ...Array.from({ length: 1 + Math.floor(Math.random() * 40) }, () => 1000 + Math.floor(Math.random() * 25000)), 102]);
  return { task, body: { input_ids: ids, options: { return_logits: true } } };
}

/** The numbers of one answer: logits (classification) or the embedding. */
function vectors(body: { outputs: { logits?: number[]; embedding?: number[] }[] }): number[][] {
  return body.outputs.map((o) => o.logits ?? o.embedding!);
}

describe('consistency under concurrency', () => {
  it(`${REQUESTS} concurrent requests over ${TASKS.length} tasks answer as each request alone`, async () => {
    const requests = Array.from({ length: REQUESTS }, (_, i) => randomRequest(i));
    const send = (r: Req) => call(`${api.url}/v1/tasks/${r.task}/predict`, { json: r.body });

    const batchesBefore = stack.runtime.scheduler.stats().batchesRun;
    const together = await Promise.all(requests.map(send));
    const batchesTogether = stack.runtime.scheduler.stats().batchesRun - batchesBefore;
    const sequences = requests.reduce((n, r) => n + ((r.body['inputs'] ?? r.body['input_ids']) as unknown[]).length, 0);
    // The point of the test: requests really were batched together. How many share a batch depends on how
    // fast they arrive (on a loaded 2-core machine they trickle in while the device is free, and an idle
    // scheduler runs what it has at once), so the check is that batches mixed rows, not how many.
    expect(batchesTogether).toBeLessThan(sequences);

    for (const [i, r] of requests.entries()) {
      const alone = await send(r);
      expect(together[i]!.status, JSON.stringify(together[i]!.body)).toBe(200);
      expect(alone.status).toBe(200);
      const a = vectors(together[i]!.body);
      const b = vectors(alone.body);
      expect(a.length).toBe(b.length);
      for (let k = 0; k < a.length; k++) {
        expect(maxAbsDiff(a[k]!, b[k]!), `request ${i} (${r.task}) input ${k}`).toBeLessThan(TOLERANCE);
      }
      const together0 = together[i]!.body.outputs[0];
      if (together0.scores) expect(Object.keys(together0.scores)).toHaveLength(TASKS[i % TASKS.length]!.numLabels!);
      else expect(together0.embedding).toHaveLength(stack.base.config.hiddenSize);
    }
  });
});
