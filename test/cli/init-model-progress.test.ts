import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initModel } from '../../src/model/init-model.js';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-init-progress-'));
});
afterAll(async () => rm(root, { recursive: true, force: true }));

describe('initModel progress (what petserve init-model shows for large presets)', () => {
  it('reports every tensor generated, then every tensor written, in order', async () => {
    const calls: string[] = [];
    await initModel({
      preset: 'bert-tiny',
      outDir: join(root, 'm'),
      numLabels: 2,
      vocabSize: 200,
      onProgress: (phase, done, total) => calls.push(`${phase} ${done}/${total}`),
    });
    // bert-tiny with a head: 5 embedding + 2 × 16 per layer + 2 pooler + 2 classifier tensors.
    const n = 5 + 2 * 16 + 2 + 2;
    expect(calls).toEqual([
      ...Array.from({ length: n }, (_, i) => `generate ${i + 1}/${n}`),
      ...Array.from({ length: n }, (_, i) => `write ${i + 1}/${n}`),
    ]);
  });
});
