import { afterAll, describe, expect, it } from 'vitest';
import { f32Config } from '../../helpers/config.js';
import type { DecoderPresetName } from '../../../src/model/decoder-presets.js';
import { startGenerationRuntime } from '../../../src/runtime/generation-runtime.js';
import { decoderFixture, type AdapterSpec } from '../../helpers/decoder-fixtures.js';
import { createTestGpu, type TestGpu } from '../../helpers/gpu.js';
import { loadRefDecoder } from '../../reference/decoder-f64.js';

// The fused-module quirks under LoRA: GPT-2's Conv1D c_attn/c_fc (fan_in_fan_out, an
// activation after c_fc), BLOOM's per-head query_key_value (B's rows reordered), Qwen2's
// biases with a tied head, in one batch with base rows, against the merged reference.

const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

const CASES: Record<string, { preset: DecoderPresetName; adapters: AdapterSpec[] }> = {
  gpt2: {
    preset: 'gpt2-tiny',
    adapters: [
      { name: 'attn', targetModules: ['c_attn'], rank: 4 },
      { name: 'mlp', targetModules: ['c_fc', 'mlp.c_proj'], rank: 7, useRslora: true },
      { name: 'everything', targetModules: ['c_attn', 'c_proj', 'c_fc', 'lm_head'], rank: 3 },
    ],
  },
  bloom: {
    preset: 'bloom-tiny',
    adapters: [
      { name: 'qkv', targetModules: ['query_key_value'], rank: 5 },
      { name: 'mlp', targetModules: ['dense_h_to_4h', 'dense_4h_to_h'], rank: 9 },
      { name: 'head', targetModules: ['dense'], rank: 2, modulesToSave: ['lm_head'] },
    ],
  },
  qwen2: {
    preset: 'qwen2-tiny',
    adapters: [
      { name: 'qkv', targetModules: ['q_proj', 'k_proj', 'v_proj'], rank: 6 },
      { name: 'o-down', targetModules: ['o_proj', 'down_proj'], rank: 4 },
    ],
  },
};

describe('LoRA on every family in one continuous batch', () => {
  for (const [name, c] of Object.entries(CASES)) {
    it(`${name}: base rows and ${c.adapters.length} adapters equal their solo merged-reference greedy decodes`, async () => {
      const fx = await decoderFixture(c.preset, c.adapters);
      const rt = await startGenerationRuntime(gpu.ctx, f32Config({ overrides: { 'generation.maxStepTokens': 5 } }), { modelDir: fx.dir, tasks: fx.tasks });
      try {
        const jobs = [null, ...c.adapters.map((a) => a.name)].map(async (task, i) => {
          const prompt = Array.from({ length: 4 + 3 * i }, (_, j) => (j * 29 + i * 11 + 2) % 300);
          const got = await rt.gateway.generate({ task, promptIds: prompt, maxTokens: 20, sampling: { temperature: 0 }, ignoreEos: true });
          const ref = loadRefDecoder(fx.dir, task ? fx.tasks.get(task)! : null).greedy(prompt, 20);
          expect(got.tokenIds, task ?? 'base').toEqual(ref);
        });
        await Promise.all(jobs);
        expect(rt.blocks.stats().usedBlocks).toBe(0);
      } finally {
        await rt.close();
        fx.cleanup();
      }
    }, 180_000);
  }
});
