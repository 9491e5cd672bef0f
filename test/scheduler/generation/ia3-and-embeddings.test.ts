import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { f32Config } from '../../helpers/config.js';
import type { DecoderPresetName } from '../../../src/model/decoder-presets.js';
import { startGenerationRuntime } from '../../../src/runtime/generation-runtime.js';
import { decoderFixture, writeRandomIa3, type AdapterSpec } from '../../helpers/decoder-fixtures.js';
import { createTestGpu, type TestGpu } from '../../helpers/gpu.js';
import { loadRefDecoder } from '../../reference/decoder-f64.js';

// IA³ (output scaling of q/k/v or fc, input scaling of down/c_proj) and per-task
// embedding tables (modules_to_save embed_tokens, on untied and tied heads) in one
// continuous batch with LoRA adapters and base rows, against the float64 reference
// with each adapter merged.

const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

const CASES: { preset: DecoderPresetName; lora: AdapterSpec[]; ia3: { targetModules: string[]; feedforwardModules: string[] }[] }[] = [
  {
    preset: 'llama-tiny',
    lora: [
      { name: 'embed-untied', targetModules: ['q_proj'], rank: 3, modulesToSave: ['embed_tokens'] },
      { name: 'lora', targetModules: ['v_proj', 'up_proj'], rank: 5 },
    ],
    ia3: [
      { targetModules: ['k_proj', 'v_proj', 'down_proj'], feedforwardModules: ['down_proj'] },
      { targetModules: ['q_proj', 'gate_proj', 'o_proj'], feedforwardModules: ['o_proj'] },
    ],
  },
  {
    preset: 'gpt2-tiny',
    lora: [{ name: 'embed-tied', targetModules: ['c_attn'], rank: 4, modulesToSave: ['wte'] }],
    ia3: [{ targetModules: ['c_attn', 'mlp.c_proj', 'c_fc'], feedforwardModules: ['mlp.c_proj'] }],
  },
  {
    preset: 'bloom-tiny',
    lora: [{ name: 'embed-tied', targetModules: ['dense'], rank: 2, modulesToSave: ['word_embeddings'] }],
    ia3: [{ targetModules: ['query_key_value', 'dense_4h_to_h'], feedforwardModules: ['dense_4h_to_h'] }],
  },
];

describe('IA³ and per-task embeddings with LoRA and base rows in one batch', () => {
  for (const c of CASES) {
    it(`${c.preset}: every sequence equals its solo merged-reference greedy decode`, async () => {
      const fx = await decoderFixture(c.preset, c.lora);
      try {
        const tasks = new Map(fx.tasks);
        for (const [i, spec] of c.ia3.entries()) {
          const dir = join(fx.dir, '..', `ia3-${i}`);
          await writeRandomIa3(dir, fx.dir, { ...spec, seed: 50 + i });
          tasks.set(`ia3-${i}`, dir);
        }
        const rt = await startGenerationRuntime(gpu.ctx, f32Config({ overrides: { 'generation.maxStepTokens': 6 } }), { modelDir: fx.dir, tasks });
        try {
          expect(rt.registry.list().filter((t) => t.kind === 'ia3')).toHaveLength(c.ia3.length);
          await Promise.all(
            [null, ...tasks.keys()].map(async (task, i) => {
              const prompt = Array.from({ length: 5 + 2 * i }, (_, j) => (j * 23 + i * 7 + 3) % 300);
              const got = await rt.gateway.generate({ task, promptIds: prompt, maxTokens: 16, sampling: { temperature: 0 }, ignoreEos: true });
              expect(got.tokenIds, task ?? 'base').toEqual(loadRefDecoder(fx.dir, task ? tasks.get(task)! : null).greedy(prompt, 16));
            }),
          );
        } finally {
          await rt.close();
        }
      } finally {
        fx.cleanup();
      }
    }, 180_000);
  }

  it('IA³ output scaling on a residual-fused module is refused naming the module and the way out', async () => {
    const fx = await decoderFixture('llama-tiny');
    try {
      const dir = join(fx.dir, '..', 'ia3-o');
      await writeRandomIa3(dir, fx.dir, { targetModules: ['o_proj'], feedforwardModules: [], seed: 1 });
      const rt = await startGenerationRuntime(gpu.ctx, f32Config({}), { modelDir: fx.dir });
      try {
        await expect(rt.registry.register('x', dir)).rejects.toThrow(/IA³ output scaling of 'model\.layers\.0\.self_attn\.o_proj' is not supported.*feedforward_modules/);
      } finally {
        await rt.close();
      }
    } finally {
      fx.cleanup();
    }
  }, 60_000);
});
