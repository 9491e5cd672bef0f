import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DecoderRunner } from '../../src/engine/generation/decoder-runner.js';
import { loadDecoderCheckpoint } from '../../src/model/decoder-checkpoint.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/model/safetensors.js';
import { decoderFixture, relativeError } from '../helpers/decoder-fixtures.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';
import { loadRefDecoder } from '../reference/decoder-f64.js';

// Checkpoint forms a hub model comes in: bf16 storage (converted on load) and
// sharded safetensors with model.safetensors.index.json.

const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

async function prefillError(dir: string): Promise<number> {
  const ckpt = await loadDecoderCheckpoint(dir);
  const ref = loadRefDecoder(dir);
  const prompt = [3, 50, 7, 120, 9];
  const runner = new DecoderRunner(gpu.ctx, ckpt, { dtype: 'f32', numBlocks: 2, blockTokens: 16, poolBytes: 4096 });
  try {
    const out = await runner.runStep([{ adapter: null, tokens: prompt, startPos: 0, slots: prompt.map((_, i) => i), blockTable: [0], wantLogits: true }]);
    const V = ckpt.config.vocabSize;
    return relativeError(out.logits[0]!, ref.forward(prompt), (prompt.length - 1) * V, V);
  } finally {
    runner.destroy();
  }
}

describe('decoder checkpoint forms', () => {
  it('bf16 weights are converted on load and give the reference logits', async () => {
    const fx = await decoderFixture('llama-tiny', [], { dtype: 'bf16' });
    try {
      expect((await SafetensorsFile.open(join(fx.dir, 'model.safetensors'))).info('lm_head.weight')?.dtype).toBe('BF16');
      expect(await prefillError(fx.dir)).toBeLessThan(1e-4);
    } finally {
      fx.cleanup();
    }
  }, 60_000);

  it('a sharded checkpoint (index + 2 shards) loads tensor by tensor through weight_map', async () => {
    const fx = await decoderFixture('gpt2-tiny');
    try {
      const single = await SafetensorsFile.open(join(fx.dir, 'model.safetensors'));
      const names = single.names();
      const shards: Record<string, TensorToWrite>[] = [{}, {}];
      const weightMap: Record<string, string> = {};
      names.forEach((n, i) => {
        const info = single.info(n)!;
        shards[i % 2]![n] = { dtype: 'F32', shape: info.shape, data: single.readFloat32(n) };
        weightMap[n] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
      });
      for (const [i, s] of shards.entries()) await writeSafetensors(join(fx.dir, `model-0000${i + 1}-of-00002.safetensors`), s);
      writeFileSync(join(fx.dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
      rmSync(join(fx.dir, 'model.safetensors'));
      expect(await prefillError(fx.dir)).toBeLessThan(1e-4);

      writeFileSync(join(fx.dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...weightMap, 'wte.weight': '../elsewhere.safetensors' } }));
      await expect(loadDecoderCheckpoint(fx.dir)).rejects.toThrow(/weight_map\['wte\.weight'\] must be a file name in the model directory/);
    } finally {
      fx.cleanup();
    }
  }, 60_000);

  it('a missing tensor and an unknown architecture are refused naming them', async () => {
    const fx = await decoderFixture('qwen2-tiny');
    try {
      const single = await SafetensorsFile.open(join(fx.dir, 'model.safetensors'));
      const kept: Record<string, TensorToWrite> = {};
      for (const n of single.names()) if (n !== 'model.layers.1.mlp.up_proj.weight') kept[n] = { dtype: 'F32', shape: single.info(n)!.shape, data: single.readFloat32(n) };
      await writeSafetensors(join(fx.dir, 'model.safetensors'), kept);
      await expect(loadDecoderCheckpoint(fx.dir)).rejects.toThrow(/missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight' \(expected shape \[96, 56\]\)/);
      writeFileSync(join(fx.dir, 'config.json'), JSON.stringify({ model_type: 'falcon', architectures: ['FalconForCausalLM'] }));
      await expect(loadDecoderCheckpoint(fx.dir)).rejects.toThrow(/model_type 'falcon' is not supported; supported: bert .*; llama .*; gpt2 .*; bloom/);
    } finally {
      fx.cleanup();
    }
  }, 60_000);
});
