import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f32Config } from '../../helpers/config.js';
import { kvBlockBytes } from '../../../src/engine/generation/kv-cache-gpu.js';
import type { GenerateInput } from '../../../src/gateway/generation.js';
import { loadDecoderCheckpoint } from '../../../src/model/decoder-checkpoint.js';
import { startGenerationRuntime, type GenerationRuntime } from '../../../src/runtime/generation-runtime.js';
import { PetServeError } from '../../../src/util/errors.js';
import { decoderFixture, type AdapterSpec } from '../../helpers/decoder-fixtures.js';
import { createTestGpu, type TestGpu } from '../../helpers/gpu.js';
import { loadRefDecoder } from '../../reference/decoder-f64.js';

// Many adapters in one continuous batch give, token for token, what the
// float64 reference gives for each sequence ALONE with its LoRA merged into the
// weights: in any arrival order, with prefill chunked at several sizes, and
// with preemption forced by a tiny KV cache.

const ADAPTERS: AdapterSpec[] = [
  { name: 'qv-r4', targetModules: ['q_proj', 'v_proj'], rank: 4 },
  { name: 'kod-r8-rslora', targetModules: ['k_proj', 'o_proj', 'down_proj'], rank: 8, useRslora: true },
  { name: 'mlp-r16', targetModules: ['gate_proj', 'up_proj'], rank: 16, alpha: 32 },
  { name: 'all-r6-patterns', targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], rank: 6, rankPattern: { o_proj: 3 }, alphaPattern: { down_proj: 2 } },
  { name: 'head-lora-r5', targetModules: ['q_proj', 'lm_head'], rank: 5 },
  { name: 'saved-head-r2', targetModules: ['v_proj'], rank: 2, modulesToSave: ['lm_head'] },
  { name: 'qkv-r32', targetModules: ['q_proj', 'k_proj', 'v_proj'], rank: 32 },
  { name: 'down-r1', targetModules: ['down_proj'], rank: 1 },
];
const NEW_TOKENS = 64;

const gpu: TestGpu = await createTestGpu();
let fx: Awaited<ReturnType<typeof decoderFixture>>;
let requests: { task: string | null; prompt: number[] }[];
let expected: number[][];
let blockBytes: number;

beforeAll(async () => {
  fx = await decoderFixture('llama-tiny', ADAPTERS);
  const ckpt = await loadDecoderCheckpoint(fx.dir);
  blockBytes = kvBlockBytes(ckpt.config, 16, 'f32');
  const V = ckpt.config.vocabSize;
  requests = [null, ...ADAPTERS.map((a) => a.name)].map((task, i) => ({
    task,
    prompt: Array.from({ length: 3 + ((i * 7) % 19) }, (_, j) => (i * 31 + j * 17 + 1) % (V - 10)),
  }));
  expected = requests.map((r) => loadRefDecoder(fx.dir, r.task ? fx.tasks.get(r.task)! : null).greedy(r.prompt, NEW_TOKENS));
}, 120_000);
afterAll(() => {
  fx?.cleanup();
  gpu.destroy();
});

async function runtime(overrides: Record<string, unknown>): Promise<GenerationRuntime> {
  const config = f32Config({ overrides });
  return startGenerationRuntime(gpu.ctx, config, { modelDir: fx.dir, tasks: fx.tasks });
}

const greedy = (r: { task: string | null; prompt: number[] }, extra: Partial<GenerateInput> = {}): GenerateInput => ({
  task: r.task,
  promptIds: r.prompt,
  maxTokens: NEW_TOKENS,
  sampling: { temperature: 0 },
  ignoreEos: true,
  ...extra,
});

describe('continuous batching with many adapters', () => {
  const cases = [
    { name: 'all at once, default step budget', step: 512, kvBlocks: 256, order: 'forward' },
    { name: 'reversed arrivals, prefill chunked at 7 tokens', step: 7, kvBlocks: 256, order: 'reverse' },
    { name: 'staggered arrivals, prefill chunked at 3 tokens', step: 3, kvBlocks: 256, order: 'staggered' },
    { name: 'a KV cache of 12 blocks forces preemption', step: 64, kvBlocks: 12, order: 'forward' },
  ] as const;
  for (const c of cases) {
    it(`${c.name}: every sequence equals its solo float64 greedy decode`, async () => {
      const rt = await runtime({ 'generation.maxStepTokens': c.step, 'generation.kvCacheBytes': c.kvBlocks * blockBytes });
      try {
        const idx = requests.map((_, i) => i);
        if (c.order === 'reverse') idx.reverse();
        const outs: Promise<{ i: number; ids: number[]; preemptions: number }>[] = [];
        for (const i of idx) {
          outs.push(rt.gateway.generate(greedy(requests[i]!)).then((o) => ({ i, ids: o.tokenIds, preemptions: o.preemptions })));
          if (c.order === 'staggered') await new Promise((r) => setTimeout(r, 40));
        }
        const done = await Promise.all(outs);
        for (const d of done) expect(d.ids, `request ${d.i} (${requests[d.i]!.task ?? 'base'})`).toEqual(expected[d.i]);
        if (c.kvBlocks < 50) expect(done.reduce((n, d) => n + d.preemptions, 0)).toBeGreaterThan(0);
        expect(rt.blocks.stats().usedBlocks).toBe(0);
        rt.blocks.checkInvariants();
      } finally {
        await rt.close();
      }
    }, 300_000);
  }
});

describe('prefix cache', () => {
  it('a second request of the same task reuses full prompt blocks and answers the same; another task reuses nothing', async () => {
    const rt = await runtime({ 'generation.blockTokens': 4 });
    try {
      const prompt = Array.from({ length: 22 }, (_, j) => (j * 13 + 3) % 400);
      const a1 = await rt.gateway.generate(greedy({ task: 'qv-r4', prompt }, { maxTokens: 8 }));
      const a2 = await rt.gateway.generate(greedy({ task: 'qv-r4', prompt }, { maxTokens: 8 }));
      const b = await rt.gateway.generate(greedy({ task: 'kod-r8-rslora', prompt }, { maxTokens: 8 }));
      expect(a1.cachedPromptTokens).toBe(0);
      expect(a2.cachedPromptTokens).toBe(20);
      expect(a2.tokenIds).toEqual(a1.tokenIds);
      expect(b.cachedPromptTokens).toBe(0);
      expect(a1.tokenIds).toEqual(loadRefDecoder(fx.dir, fx.tasks.get('qv-r4')!).greedy(prompt, 8));
    } finally {
      await rt.close();
    }
  }, 120_000);
});

describe('seeded sampling', () => {
  it('gives the same tokens alone and in a batch with other sequences', async () => {
    const rt = await runtime({});
    try {
      const r = { task: 'mlp-r16', prompt: requests[3]!.prompt };
      const sampled = { temperature: 0.9, topP: 0.95, topK: 50, seed: 1234 };
      const alone = await rt.gateway.generate(greedy(r, { sampling: sampled, maxTokens: 24 }));
      const [inBatch] = await Promise.all([
        rt.gateway.generate(greedy(r, { sampling: sampled, maxTokens: 24 })),
        ...requests.slice(0, 5).map((q) => rt.gateway.generate(greedy(q, { sampling: { temperature: 1, seed: 7 }, maxTokens: 20 }))),
      ]);
      expect(inBatch!.tokenIds).toEqual(alone.tokenIds);
      const other = await rt.gateway.generate(greedy(r, { sampling: { ...sampled, seed: 99 }, maxTokens: 24 }));
      expect(other.tokenIds).not.toEqual(alone.tokenIds);
    } finally {
      await rt.close();
    }
  }, 120_000);
});

describe('refusals and cancellation', () => {
  it('cancelling a running sequence frees its blocks; the others finish', async () => {
    const rt = await runtime({});
    try {
      const ac = new AbortController();
      let seen = 0;
      const cancelled = rt.gateway.generate(
        greedy(requests[1]!, {
          signal: ac.signal,
          onText: () => {
            if (++seen === 2) ac.abort();
          },
        }),
      );
      const other = rt.gateway.generate(greedy(requests[2]!));
      await expect(cancelled).rejects.toMatchObject({ code: 'CLIENT_ABORTED' });
      expect((await other).tokenIds).toEqual(expected[2]);
      expect(rt.blocks.stats().usedBlocks).toBe(0);
    } finally {
      await rt.close();
    }
  }, 120_000);

  it('a prompt over the context, and a request the whole KV cache cannot hold, are refused at once naming the limit', async () => {
    const rt = await runtime({ 'generation.kvCacheBytes': 3 * blockBytes });
    try {
      const long = Array.from({ length: 600 }, () => 5);
      await expect(rt.gateway.generate(greedy({ task: null, prompt: long }))).rejects.toThrow(/exceeds the model's context of 512 tokens/);
      const err = await rt.gateway.generate(greedy({ task: null, prompt: [1, 2, 3] })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PetServeError);
      expect(String(err)).toMatch(/needs 5 KV blocks but the KV cache holds 3/);
      await expect(rt.gateway.generate(greedy({ task: 'nope', prompt: [1] }))).rejects.toMatchObject({ code: 'TASK_NOT_FOUND' });
      await expect(rt.gateway.generate({ task: null, promptIds: [1, 99999], maxTokens: 2 })).rejects.toThrow(/prompt_ids\[1\] must be a token id/);
    } finally {
      await rt.close();
    }
  }, 60_000);

  it('an adapter whose rank disagrees with its tensors, or made for another base, is refused naming the module', async () => {
    const rt = await runtime({});
    try {
      const dir = fx.tasks.get('qv-r4')!;
      const cfgPath = join(dir, 'adapter_config.json');
      const original = readFileSync(cfgPath, 'utf8');
      writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(original), r: 5 }));
      try {
        await expect(rt.registry.register('bad-rank', dir)).rejects.toThrow(/model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight' has shape \[4, 72\], expected \[5, 72\]/);
      } finally {
        writeFileSync(cfgPath, original);
      }
      const gpt2 = await decoderFixture('gpt2-tiny', [{ name: 'gpt2-adapter', targetModules: ['c_attn'], rank: 4 }]);
      try {
        await expect(rt.registry.register('other-base', gpt2.tasks.get('gpt2-adapter')!)).rejects.toThrow(/transformer\.h\.0\.attn\.c_attn.*another base model/);
      } finally {
        gpt2.cleanup();
      }
    } finally {
      await rt.close();
    }
  }, 60_000);
});
