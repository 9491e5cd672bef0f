import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelRunner } from '../../src/engine/model-runner.js';
import type { KernelChoices } from '../../src/kernels/types.js';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { TaskRegistry } from '../../src/pet/registry.js';
import { ConfigError, InvalidInputError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';
import { loadRefBert, refBertForward, type RefBert } from '../reference/bert-f64.js';
import { expectClose, flattenNested } from '../reference/compare.js';

// Created at collection time: the f16 test skips (it.skipIf) on adapters without shader-f16.
const gpu: TestGpu = await createTestGpu();
let dir: string;
let ref: RefBert;
let runner: ModelRunner;
let runner16: ModelRunner | null = null;
const VOCAB = 600;
const MAX_POS = 96;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'petserve-model-'));
  // A bert-mini-shaped model (4 layers, H=256, 4 heads) with a small vocabulary
  // so the float64 reference stays fast; 3 labels for the classifier head.
  await initModel({ preset: 'bert-mini', outDir: dir, numLabels: 3, seed: 7, vocabSize: VOCAB, maxPositions: MAX_POS });
  ref = loadRefBert(dir);
  const ckpt = await loadCheckpoint(dir);
  runner = await ModelRunner.create(gpu.ctx, ckpt, { dtype: 'f32', logger: silentLogger });
  if (gpu.ctx.capabilities.shaderF16) {
    runner16 = await ModelRunner.create(gpu.ctx, ckpt, { dtype: 'f16', logger: silentLogger });
  }
});
afterAll(async () => {
  await runner?.dispose();
  await runner16?.dispose();
  gpu.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function randomSequences(count: number, maxLen: number): number[][] {
  return Array.from({ length: count }, () => {
    const len = 1 + Math.floor(Math.random() * maxLen);
    return Array.from({ length: len }, () => Math.floor(Math.random() * VOCAB));
  });
}

async function checkAgainstReference(r: ModelRunner, seqs: number[][], tol: number, types?: number[][]): Promise<void> {
  const got = await r.run({ inputIds: seqs, tokenTypeIds: types }, { lastHiddenState: true, pooled: true, logits: true });
  const want = refBertForward(ref, seqs, types);
  seqs.forEach((_, i) => {
    expectClose(got.lastHiddenState![i]!, flattenNested(want.lastHiddenState[i]!), tol, `row ${i} last_hidden_state`);
  });
  expectClose(got.pooled!, flattenNested(want.poolerOutput), tol, 'pooler_output');
  expectClose(got.logits!, flattenNested(want.logits!), tol, 'logits');
}

describe('BERT on WebGPU matches the float64 reference row by row', () => {
  it('f32: ragged batches of 1..16 sequences, lengths 1..max', async () => {
    await checkAgainstReference(runner, [[5]], 1e-4);
    await checkAgainstReference(runner, [Array.from({ length: MAX_POS }, (_, i) => (i * 7) % VOCAB)], 1e-4);
    for (const count of [3, 16]) await checkAgainstReference(runner, randomSequences(count, 40), 1e-4);
  });

  it('f32: with kernel choices other than the defaults (as the self-tuner may pick) it still matches the reference', async () => {
    const start = runner.kernels;
    const picks: KernelChoices[] = [
      { gemm: { variant: 'tiled', bk: 8 }, smallGemm: { variant: 'rb', rowsPerInvocation: 1, colsPerInvocation: 4 }, attention: { form: 'online', workgroupSize: 32 }, rowWorkgroupSize: 256 },
      { gemm: { variant: 'rb', rowsPerInvocation: 2, colsPerInvocation: 4 }, smallGemm: { variant: 'rb', rowsPerInvocation: 2, colsPerInvocation: 8 }, attention: { form: 'resident', workgroupSize: 128 }, rowWorkgroupSize: 32 },
    ];
    try {
      for (const pick of picks) {
        runner.kernels = pick;
        await checkAgainstReference(runner, randomSequences(5, 40), 1e-4);
      }
    } finally {
      runner.kernels = start;
    }
  });

  it('f32: token type ids are honoured', async () => {
    const seqs = randomSequences(4, 20);
    const types = seqs.map((s) => s.map((_, i) => (i >= s.length / 2 ? 1 : 0)));
    await checkAgainstReference(runner, seqs, 1e-4, types);
  });

  it.skipIf(!gpu.ctx.capabilities.shaderF16)('f16 storage with f32 accumulation stays within 2e-2', async () => {
    await checkAgainstReference(runner16!, randomSequences(6, 40), 2e-2);
  });

  it("a row's result does not depend on what else is in its batch", async () => {
    const probe = [101, 7, 42, 9, 102];
    const alone = await runner.run({ inputIds: [probe] }, { lastHiddenState: true, logits: true });
    const others = randomSequences(9, 60);
    const mixed = await runner.run({ inputIds: [...others.slice(0, 4), probe, ...others.slice(4)] }, { lastHiddenState: true, logits: true });
    expectClose(mixed.lastHiddenState![4]!, alone.lastHiddenState![0]!, 1e-6, 'probe hidden in a mixed batch');
    const L = runner.numLabels;
    expectClose(mixed.logits!.subarray(4 * L, 5 * L), alone.logits!, 1e-6, 'probe logits in a mixed batch');
  });

  it('rejects bad input before touching the GPU', async () => {
    await expect(runner.run({ inputIds: [] }, { logits: true })).rejects.toBeInstanceOf(InvalidInputError);
    await expect(runner.run({ inputIds: [[]] }, { logits: true })).rejects.toThrow(/non-empty/);
    await expect(runner.run({ inputIds: [[VOCAB]] }, { logits: true })).rejects.toThrow(/not a token id/);
    await expect(runner.run({ inputIds: [[-1]] }, { logits: true })).rejects.toThrow(/not a token id/);
    await expect(runner.run({ inputIds: [[1.5]] }, { logits: true })).rejects.toThrow(/not a token id/);
    await expect(runner.run({ inputIds: [new Array<number>(MAX_POS + 1).fill(1)] }, { logits: true })).rejects.toThrow(
      /max_position_embeddings/,
    );
    await expect(runner.run({ inputIds: [[1, 2]], tokenTypeIds: [[0, 2]] }, { logits: true })).rejects.toThrow(
      /token_type_ids/,
    );
  });

  it('a runner with tasks needs its pool budget from the config (no default of its own)', async () => {
    const registry = new TaskRegistry(runner.checkpoint, { logger: silentLogger });
    await expect(ModelRunner.create(gpu.ctx, runner.checkpoint, { dtype: 'f32', logger: silentLogger, registry })).rejects.toThrow(
      ConfigError,
    );
  });

  it('recovers from a device loss: rebuilds, re-uploads and retries the batch', async () => {
    const seqs = randomSequences(3, 20);
    const before = await runner.run({ inputIds: seqs }, { logits: true });
    const generation = gpu.ctx.generation;
    const pending = runner.run({ inputIds: seqs }, { logits: true });
    gpu.ctx.simulateDeviceLoss();
    const after = await pending;
    expect(gpu.ctx.generation).toBeGreaterThan(generation);
    expectClose(after.logits!, before.logits!, 1e-6, 'logits after device rebuild');
    // The next batch runs on the new device without another rebuild.
    const g2 = gpu.ctx.generation;
    await runner.run({ inputIds: seqs }, { logits: true });
    expect(gpu.ctx.generation).toBe(g2);
  });
});
