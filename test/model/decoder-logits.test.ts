import { afterAll, describe, expect, it } from 'vitest';
import { DecoderRunner } from '../../src/engine/generation/decoder-runner.js';
import { KvBlockManager } from '../../src/engine/generation/kv-blocks.js';
import type { Dtype, KernelChoices } from '../../src/kernels/types.js';
import { loadDecoderCheckpoint } from '../../src/model/decoder-checkpoint.js';
import type { DecoderPresetName } from '../../src/model/decoder-presets.js';
import { decoderFixture, relativeError } from '../helpers/decoder-fixtures.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';
import { loadRefDecoder } from '../reference/decoder-f64.js';

// Each family's prefill logits and every decode step's logits against the
// independent float64 reference (test/reference/decoder-f64.ts). Presets have
// odd sizes on purpose: head dims 12, 10, 14, 11 and 10, hidden sizes 72, 80,
// 56, 66 and 60, GQA ratios 2 (llama), 4 (llama-gqa4), 1 (qwen2, gpt2, bloom).

// Created at collection time: tests skip (it.skipIf) on what the adapter lacks.
const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

const TOL: Record<Dtype, number> = { f32: 1e-4, f16: 2e-2 };
const PRESETS: DecoderPresetName[] = ['llama-tiny', 'llama-tiny-gqa4', 'qwen2-tiny', 'mistral-tiny', 'gpt2-tiny', 'bloom-tiny'];

const ALTERNATE_KERNELS = (subgroups: boolean): KernelChoices => ({
  gemm: { variant: 'tiled', bk: 8 },
  smallGemm: subgroups ? { variant: 'subgroup', rowsPerWorkgroup: 4 } : { variant: 'rb', rowsPerInvocation: 1, colsPerInvocation: 4 },
  attention: { form: 'online', workgroupSize: 32 },
  rowWorkgroupSize: 128,
});

describe('decoder logits match the float64 reference', () => {
  for (const preset of PRESETS) {
    for (const dtype of ['f32', 'f16'] as const) {
      it.skipIf(dtype === 'f16' && !gpu.ctx.capabilities.shaderF16)(`${preset} ${dtype}: prefill, then 6 decode steps`, async () => {
        const fx = await decoderFixture(preset);
        try {
          const ckpt = await loadDecoderCheckpoint(fx.dir);
          const ref = loadRefDecoder(fx.dir);
          const V = ckpt.config.vocabSize;
          const prompt = Array.from({ length: 11 }, (_, i) => (i * 37 + 5) % (V - 8));
          const decodes = [3, 91, 200, 17, 64, 150];
          const all = [...prompt, ...decodes];
          const refLogits = ref.forward(all);
          const runner = new DecoderRunner(gpu.ctx, ckpt, { dtype, numBlocks: 8, blockTokens: 4, poolBytes: 4096 });
          // Half the presets record with kernels other than the defaults, as the self-tuner may pick
          // (decode rows take the small-GEMM choice, the prefill the large one).
          if (PRESETS.indexOf(preset) % 2 === 1) runner.kernels = ALTERNATE_KERNELS(gpu.ctx.capabilities.subgroups);
          const blocks = new KvBlockManager({ numBlocks: 8, blockTokens: 4, prefixCaching: false });
          try {
            blocks.allocate(1, '', all, 0);
            const step = async (from: number, to: number): Promise<Float32Array> => {
              const slots = [];
              for (let i = from; i < to; i++) slots.push(blocks.slot(1, i));
              const out = await runner.runStep([
                { adapter: null, tokens: all.slice(from, to), startPos: from, slots, blockTable: blocks.blockTable(1), wantLogits: true },
              ]);
              return out.logits[0]!;
            };
            const prefill = await step(0, prompt.length);
            expect(relativeError(prefill, refLogits, (prompt.length - 1) * V, V)).toBeLessThan(TOL[dtype]);
            for (let i = prompt.length; i < all.length; i++) {
              const got = await step(i, i + 1);
              expect(relativeError(got, refLogits, i * V, V), `decode step at position ${i}`).toBeLessThan(TOL[dtype]);
            }
          } finally {
            runner.destroy();
          }
        } finally {
          fx.cleanup();
        }
      });
    }
  }
});
