import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { initDecoderModel } from '../../src/model/init-decoder.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { writeRandomPeftLora } from '../../src/pet/formats/peft-writer.js';
import { InvalidInputError } from '../../src/util/errors.js';
import { Rng } from '../../src/util/random.js';

let root: string;
const model = (name: string): string => join(root, name);

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-peft-writer-'));
  for (const preset of ['llama-tiny', 'qwen2-tiny', 'gpt2-tiny', 'bloom-tiny'] as const) {
    await initDecoderModel({ preset, outDir: model(preset) });
  }
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function readAdapter(dir: string): Promise<{ config: Record<string, unknown>; file: SafetensorsFile; shapes: Map<string, number[]> }> {
  const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  const file = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  return { config, file, shapes: new Map(file.names().map((n) => [n, file.info(n)!.shape])) };
}

/** rms of scale * B (A x) for x ~ N(0, 1), as PEFT's forward adds it to the base output. */
function deltaRms(file: SafetensorsFile, module: string, rank: number, inDim: number, scale: number): number {
  const a = file.readFloat32(`base_model.model.${module}.lora_A.weight`);
  const b = file.readFloat32(`base_model.model.${module}.lora_B.weight`);
  const outDim = b.length / rank;
  const x = new Rng(99).fillNormal(new Float32Array(inDim));
  const ax = Array.from({ length: rank }, (_, k) => x.reduce((s, v, i) => s + a[k * inDim + i]! * v, 0));
  let squares = 0;
  for (let o = 0; o < outDim; o++) {
    const y = scale * ax.reduce((s, v, k) => s + b[o * rank + k]! * v, 0);
    squares += y * y;
  }
  return Math.sqrt(squares / outDim);
}

describe('writeRandomPeftLora', () => {
  it('writes a Llama adapter with PEFT key names and shapes: lora_A [r, in], lora_B [out, r]', async () => {
    const out = join(root, 'llama-qv');
    const result = await writeRandomPeftLora(out, { modelDir: model('llama-tiny'), targetModules: ['q_proj', 'v_proj'], rank: 4, alpha: 16, seed: 1 });
    const { config, shapes, file } = await readAdapter(out);
    const expected = new Map<string, number[]>();
    for (let l = 0; l < 3; l++) {
      const p = `base_model.model.model.layers.${l}.self_attn.`;
      expected.set(`${p}q_proj.lora_A.weight`, [4, 72]);
      expected.set(`${p}q_proj.lora_B.weight`, [72, 4]);
      expected.set(`${p}v_proj.lora_A.weight`, [4, 72]);
      expected.set(`${p}v_proj.lora_B.weight`, [36, 4]);
    }
    expect(shapes).toEqual(expected);
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(result.loraModules).toEqual([0, 1, 2].flatMap((l) => [`model.layers.${l}.self_attn.q_proj`, `model.layers.${l}.self_attn.v_proj`]));
    expect(config).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: model('llama-tiny'),
      r: 4,
      lora_alpha: 16,
      target_modules: ['q_proj', 'v_proj'],
      use_rslora: false,
      rank_pattern: {},
      alpha_pattern: {},
      modules_to_save: null,
      fan_in_fan_out: false,
      bias: 'none',
      lora_dropout: 0,
      use_dora: false,
    });
    expect(Object.keys(config)).toEqual(Object.keys(config).sort());
  });

  it('draws a non-zero lora_B sized so the update is about as large as the input, for any alpha and rsLoRA', async () => {
    for (const [alpha, useRslora] of [
      [16, false],
      [1, false],
      [16, true],
    ] as const) {
      const out = join(root, `llama-scale-${alpha}-${useRslora}`);
      await writeRandomPeftLora(out, { modelDir: model('llama-tiny'), targetModules: ['o_proj'], rank: 8, alpha, useRslora, seed: 2 });
      const { file, config } = await readAdapter(out);
      expect(config['use_rslora']).toBe(useRslora);
      const scale = useRslora ? alpha / Math.sqrt(8) : alpha / 8;
      const rms = deltaRms(file, 'model.layers.0.self_attn.o_proj', 8, 72, scale);
      expect(rms, `alpha ${alpha} rslora ${useRslora}`).toBeGreaterThan(0.5);
      expect(rms).toBeLessThan(2);
    }
  });

  it('applies rank_pattern and alpha_pattern per module as PEFT matches them', async () => {
    const out = join(root, 'llama-patterns');
    await writeRandomPeftLora(out, {
      modelDir: model('llama-tiny'),
      targetModules: ['q_proj', 'down_proj'],
      rank: 4,
      rankPattern: { 'model.layers.1.self_attn.q_proj': 2, down_proj: 6 },
      alphaPattern: { down_proj: 3 },
      seed: 3,
    });
    const { config, shapes } = await readAdapter(out);
    expect(shapes.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')).toEqual([4, 72]);
    expect(shapes.get('base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight')).toEqual([2, 72]);
    expect(shapes.get('base_model.model.model.layers.2.mlp.down_proj.lora_A.weight')).toEqual([6, 100]);
    expect(shapes.get('base_model.model.model.layers.2.mlp.down_proj.lora_B.weight')).toEqual([72, 6]);
    expect(config['rank_pattern']).toEqual({ 'model.layers.1.self_attn.q_proj': 2, down_proj: 6 });
    expect(config['alpha_pattern']).toEqual({ down_proj: 3 });
  });

  it('saves modules_to_save under the module’s own parameter names, and LoRA on embeddings as lora_embedding_A/B', async () => {
    const out = join(root, 'llama-save');
    const result = await writeRandomPeftLora(out, {
      modelDir: model('llama-tiny'),
      targetModules: ['embed_tokens'],
      modulesToSave: ['lm_head'],
      rank: 3,
      seed: 4,
    });
    const { config, shapes } = await readAdapter(out);
    expect(shapes).toEqual(
      new Map([
        ['base_model.model.model.embed_tokens.lora_embedding_A', [3, 512]],
        ['base_model.model.model.embed_tokens.lora_embedding_B', [72, 3]],
        ['base_model.model.lm_head.weight', [512, 72]],
      ]),
    );
    expect(config['modules_to_save']).toEqual(['lm_head']);
    expect(result.savedModules).toEqual(['lm_head']);
  });

  it('writes GPT-2 Conv1D targets under transformer.* with fan_in_fan_out true', async () => {
    const out = join(root, 'gpt2');
    await writeRandomPeftLora(out, { modelDir: model('gpt2-tiny'), targetModules: ['c_attn', 'mlp.c_proj'], rank: 2, seed: 5 });
    const { config, shapes } = await readAdapter(out);
    expect(config['fan_in_fan_out']).toBe(true);
    expect(shapes.get('base_model.model.transformer.h.0.attn.c_attn.lora_A.weight')).toEqual([2, 66]);
    expect(shapes.get('base_model.model.transformer.h.0.attn.c_attn.lora_B.weight')).toEqual([198, 2]);
    expect(shapes.get('base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight')).toEqual([2, 264]);
    expect(shapes.get('base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight')).toEqual([66, 2]);
    expect(shapes.has('base_model.model.transformer.h.0.attn.c_proj.lora_A.weight')).toBe(false);
    expect(shapes.size).toBe(8);
  });

  it('defaults to PEFT’s target modules: query_key_value for BLOOM, q_proj/v_proj for Qwen2', async () => {
    const bloom = join(root, 'bloom');
    await writeRandomPeftLora(bloom, { modelDir: model('bloom-tiny'), rank: 4, seed: 6, modulesToSave: ['lm_head'] });
    const b = await readAdapter(bloom);
    expect(b.config['target_modules']).toEqual(['query_key_value']);
    expect(b.config['fan_in_fan_out']).toBe(false);
    expect(b.shapes.get('base_model.model.transformer.h.1.self_attention.query_key_value.lora_A.weight')).toEqual([4, 60]);
    expect(b.shapes.get('base_model.model.transformer.h.1.self_attention.query_key_value.lora_B.weight')).toEqual([180, 4]);
    expect(b.shapes.get('base_model.model.lm_head.weight')).toEqual([512, 60]);
    const qwen = join(root, 'qwen');
    await writeRandomPeftLora(qwen, { config: JSON.parse(await readFile(join(model('qwen2-tiny'), 'config.json'), 'utf8')) as Record<string, unknown>, rank: 4, seed: 6 });
    const q = await readAdapter(qwen);
    expect(q.config['target_modules']).toEqual(['q_proj', 'v_proj']);
    expect(q.config['base_model_name_or_path']).toBe('');
    expect(q.shapes.get('base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight')).toEqual([56, 4]);
  });

  it('is deterministic given the seed, and writes f16 when asked', async () => {
    const opts = { modelDir: model('llama-tiny'), rank: 2, seed: 9 };
    await writeRandomPeftLora(join(root, 'det-a'), opts);
    await writeRandomPeftLora(join(root, 'det-b'), opts);
    await writeRandomPeftLora(join(root, 'det-c'), { ...opts, seed: 10 });
    const bytes = (d: string): Promise<Buffer> => readFile(join(root, d, 'adapter_model.safetensors'));
    expect((await bytes('det-a')).equals(await bytes('det-b'))).toBe(true);
    expect((await bytes('det-a')).equals(await bytes('det-c'))).toBe(false);
    await writeRandomPeftLora(join(root, 'half'), { ...opts, dtype: 'f16' });
    const half = await readAdapter(join(root, 'half'));
    expect(half.file.names().every((n) => half.file.info(n)!.dtype === 'F16')).toBe(true);
  });

  it.each([
    [{ targetModules: ['c_attn'] }, /target module "c_attn" matches no module of this llama model \(its modules: embed_tokens, q_proj/],
    [{ rank: 0 }, /rank must be an integer >= 1, got 0/],
    [{ alpha: 0 }, /alpha must be a non-zero finite number/],
    [{ modulesToSave: ['q_proj'] }, /are both LoRA targets and modules_to_save/],
    [{ modulesToSave: ['classifier'] }, /modules_to_save entry "classifier" matches no module/],
    [{ rankPattern: { k_proj: 2 } }, /rank_pattern key "k_proj" matches none of the targeted modules/],
    [{ rankPattern: { q_proj: 1.5 } }, /rank_pattern\["q_proj"\] must be an integer >= 1/],
    [{ targetModules: [] }, /target modules must not be empty/],
  ])('refuses %j with InvalidInputError', async (bad, message) => {
    const attempt = writeRandomPeftLora(join(root, 'bad'), { modelDir: model('llama-tiny'), targetModules: ['q_proj'], rank: 2, seed: 0, ...bad });
    await expect(attempt).rejects.toThrow(InvalidInputError);
    await expect(attempt).rejects.toThrow(message);
  });

  it('refuses a base model that is not a supported causal LM', async () => {
    await expect(writeRandomPeftLora(join(root, 'bert'), { config: { model_type: 'bert' }, rank: 2, seed: 0 })).rejects.toThrow(
      /model_type "bert" is not a supported causal LM/,
    );
  });
});
