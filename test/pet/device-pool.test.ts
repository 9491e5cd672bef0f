import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f32Config } from '../helpers/config.js';
import { ModelRunner } from '../../src/engine/model-runner.js';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { loadDecoderCheckpoint } from '../../src/model/decoder-checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { DecoderTaskRegistry } from '../../src/pet/decoder-registry.js';
import { DevicePetPool } from '../../src/pet/device-pool.js';
import { POOL_PAGE_BYTES, PoolExhaustedError, poolFootprint } from '../../src/pet/gpu-pool.js';
import { initPet } from '../../src/pet/init-pet.js';
import { TaskRegistry } from '../../src/pet/registry.js';
import { startGenerationRuntime, type GenerationRuntime } from '../../src/runtime/generation-runtime.js';
import { silentLogger } from '../../src/util/logger.js';
import { decoderFixture } from '../helpers/decoder-fixtures.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';
import { refBertForward } from '../reference/bert-f64.js';
import { expectClose, flattenNested } from '../reference/compare.js';
import { loadRefDecoder } from '../reference/decoder-f64.js';
import { loadRefTask } from '../reference/pet-merge-f64.js';

// One PET pool per device: an encoder task and a decoder adapter page through
// the same budget and LRU (each evicts the other's idle copy), pins of either
// side hold, and after a device loss both page in again on the new device.

const ENC = 'enc-lora';
const DEC = 'dec-lora';
const VOCAB = 300;
const encRows = [
  { task: ENC, inputIds: [5, 17, 42, 99, 3, 250, 8] },
  { task: ENC, inputIds: [1, 2, 3] },
];
const prompt = Array.from({ length: 11 }, (_, i) => (i * 23 + 7) % 400);
const DEC_TOKENS = 10;

const gpu: TestGpu = await createTestGpu();
let root: string;
let base: BertCheckpoint;
let registry: TaskRegistry;
let fx: Awaited<ReturnType<typeof decoderFixture>>;
let refEncLogits: Float64Array[];
let refDecTokens: number[];
/** Pool bytes (whole pages) the encoder task and the decoder adapter take when resident. */
let pages: { enc: number; dec: number };
/** A budget that holds either of them, never both. */
let tight: number;

/** An encoder runner and a decoder runtime on the test device, sharing one pool of `budgetBytes`. */
interface Served {
  pool: DevicePetPool;
  encoder: ModelRunner;
  decoder: GenerationRuntime;
  close(): Promise<void>;
}

async function serveBoth(budgetBytes: number): Promise<Served> {
  const pool = new DevicePetPool(gpu.ctx, 'f32', budgetBytes);
  const encoder = await ModelRunner.create(gpu.ctx, base, { dtype: 'f32', logger: silentLogger, registry, pool });
  const config = f32Config({ overrides: { 'generation.blockTokens': 4, 'generation.kvCacheBytes': 4 << 20 } });
  const decoder = await startGenerationRuntime(gpu.ctx, config, { modelDir: fx.dir, tasks: fx.tasks, pool });
  return {
    pool,
    encoder,
    decoder,
    async close() {
      await decoder.close();
      await encoder.dispose();
      pool.destroy();
    },
  };
}

const encode = (s: Served) => s.encoder.runTasks(encRows, { logits: true });
/** A greedy decode with the adapter; `onToken` runs as each token is sampled (mid-sequence). */
const generate = (s: Served, onToken?: () => void) =>
  s.decoder.gateway.generate({ task: DEC, promptIds: prompt, maxTokens: DEC_TOKENS, sampling: { temperature: 0 }, ignoreEos: true, ...(onToken ? { onToken } : {}) });

function expectEncoderAnswer(rows: { logits: Float32Array | null }[], label: string): void {
  rows.forEach((r, i) => expectClose(r.logits!, refEncLogits[i]!, 1e-4, `${label}: row ${i} logits`));
}


beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-device-pool-'));
  await initModel({ preset: 'bert-tiny', outDir: join(root, 'base'), numLabels: 2, seed: 5, vocabSize: VOCAB, maxPositions: 32 });
  base = await loadCheckpoint(join(root, 'base'));
  await initPet({ model: base, kind: 'lora', outDir: join(root, ENC), seed: 3, rank: 8 });
  registry = new TaskRegistry(base, { logger: silentLogger });
  await registry.register(ENC, join(root, ENC));
  fx = await decoderFixture('llama-tiny', [{ name: DEC, targetModules: ['q_proj', 'v_proj', 'down_proj'], rank: 8 }]);

  const refEnc = loadRefTask(join(root, 'base'), join(root, ENC));
  refEncLogits = encRows.map((r) => flattenNested(refBertForward(refEnc, [r.inputIds]).logits![0]!));
  refDecTokens = loadRefDecoder(fx.dir, fx.tasks.get(DEC)!).greedy(prompt, DEC_TOKENS);

  const whole = (bytes: number): number => Math.ceil(bytes / POOL_PAGE_BYTES) * POOL_PAGE_BYTES;
  const t = registry.get(ENC)!;
  const decoders = new DecoderTaskRegistry(await loadDecoderCheckpoint(fx.dir));
  await decoders.register(DEC, fx.tasks.get(DEC)!);
  pages = {
    enc: whole(poolFootprint('f32', { floats: { length: t.packedFloats }, words: { length: t.packedWords } })),
    dec: whole(poolFootprint('f32', decoders.resolve(DEC).adapter)),
  };
  tight = Math.max(pages.enc, pages.dec);
}, 120_000);

afterAll(async () => {
  fx?.cleanup();
  if (root) await rm(root, { recursive: true, force: true });
  gpu.destroy();
});

describe('one PET pool per device, shared by the encoder and the decoder', () => {
  it('an encoder task and a decoder adapter resident at once sit in the same pool: its resident bytes count both', async () => {
    const s = await serveBoth(8 << 20);
    try {
      expect(s.decoder.runner.pool).toBe(s.pool);
      expectEncoderAnswer((await encode(s)).rows, 'encoder');
      expect((await generate(s)).tokenIds).toEqual(refDecTokens);

      const decKey = s.decoder.registry.resolve(DEC).key;
      expect(decKey).toContain('@'); // no task id can spell it: the two key sets never meet
      expect(s.pool.isResident(ENC)).toBe(true);
      expect(s.pool.isResident(decKey)).toBe(true);
      const { enc, dec } = pages;
      expect(s.pool.residentBytes(ENC)).toBe(enc);
      expect(s.pool.residentBytes(decKey)).toBe(dec);
      const stats = s.pool.stats();
      expect(stats.residentTasks).toBe(2);
      expect(stats.usedBytes).toBe(enc + dec);
      // What /metrics and /status read (the encoder runner's memory report) is this one pool.
      expect(s.encoder.memory().pool).toEqual(stats);
    } finally {
      await s.close();
    }
  }, 120_000);

  it('with room for only one of them, each side evicts the other\'s idle copy and both still answer correctly', async () => {
    const s = await serveBoth(tight);
    try {
      expect(s.pool.budgetBytes).toBeLessThan(pages.enc + pages.dec);
      const decKey = s.decoder.registry.resolve(DEC).key;
      for (let round = 0; round < 2; round++) {
        expect((await generate(s)).tokenIds).toEqual(refDecTokens);
        expect(s.pool.isResident(decKey)).toBe(true);
        expect(s.pool.isResident(ENC)).toBe(false);

        expectEncoderAnswer((await encode(s)).rows, `encoder, round ${round}`);
        expect(s.pool.isResident(ENC)).toBe(true);
        expect(s.pool.isResident(decKey)).toBe(false);
      }
      const stats = s.pool.stats();
      expect(stats.residentTasks).toBe(1);
      expect(stats.pageIns).toBe(4);
      expect(stats.evictions).toBe(3);
    } finally {
      await s.close();
    }
  }, 180_000);

  it("a decoder sequence's pinned adapter is never evicted: an encoder batch meanwhile is refused, the sequence's answer stays right", async () => {
    const s = await serveBoth(tight);
    try {
      const decKey = s.decoder.registry.resolve(DEC).key;
      const mid: { batch: Promise<unknown> | null } = { batch: null };
      const out = await generate(s, () => {
        mid.batch ??= encode(s).then(
          () => 'answered',
          (err: unknown) => err,
        );
      });
      expect(out.tokenIds).toEqual(refDecTokens);
      const refused = await mid.batch;
      expect(refused).toBeInstanceOf(PoolExhaustedError);
      expect((refused as PoolExhaustedError).shortage).toBe('pinned');
      expect(s.pool.isResident(decKey)).toBe(true);
      // The sequence is done, its pin gone: now the encoder's page-in evicts the adapter.
      expectEncoderAnswer((await encode(s)).rows, 'encoder after the sequence');
      expect(s.pool.isResident(decKey)).toBe(false);
    } finally {
      await s.close();
    }
  }, 180_000);

  it('a pin held by an encoder batch is never evicted: the decoder waits for its unpin, then pages in and answers', async () => {
    const s = await serveBoth(tight);
    try {
      // Hold the encoder task's pin as a batch in flight does (task-leases.ts: pinned from plan to readback).
      const lease = registry.acquire(ENC);
      const packed = await lease.packed();
      lease.release();
      const pool = s.pool.current();
      pool.pin(ENC, () => packed);
      let done = false;
      const answer = generate(s).finally(() => (done = true));
      await new Promise((r) => setTimeout(r, 200));
      expect(done).toBe(false);
      expect(s.pool.isResident(ENC)).toBe(true);
      pool.unpin(ENC);
      expect((await answer).tokenIds).toEqual(refDecTokens);
      expect(s.pool.isResident(ENC)).toBe(false);
    } finally {
      await s.close();
    }
  }, 180_000);

  // Last: it replaces the test device (a new generation) under everything above.
  it('after a device loss, mid-sequence and between requests, the decoder still answers and both sides page in again', async () => {
    const s = await serveBoth(8 << 20);
    try {
      expect((await generate(s)).tokenIds).toEqual(refDecTokens);
      expectEncoderAnswer((await encode(s)).rows, 'encoder before the loss');
      const generation = gpu.ctx.generation;

      let tokens = 0;
      const out = await generate(s, () => {
        if (++tokens === 3) gpu.ctx.simulateDeviceLoss();
      });
      expect(gpu.ctx.generation).toBeGreaterThan(generation);
      expect(out.tokenIds).toEqual(refDecTokens);
      // The pool of the new generation holds only what was paged in since: the adapter.
      const decKey = s.decoder.registry.resolve(DEC).key;
      expect(s.pool.isResident(decKey)).toBe(true);
      expect(s.pool.isResident(ENC)).toBe(false);
      expectEncoderAnswer((await encode(s)).rows, 'encoder after the loss');
      expect(s.pool.stats().residentTasks).toBe(2);

      const before = gpu.ctx.generation;
      gpu.ctx.simulateDeviceLoss();
      expect((await generate(s)).tokenIds).toEqual(refDecTokens);
      expect(gpu.ctx.generation).toBeGreaterThan(before);
      expectEncoderAnswer((await encode(s)).rows, 'encoder after the second loss');
    } finally {
      await s.close();
    }
  }, 180_000);
});
