import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPetBundle } from '../../src/pet/formats/bundle.js';
import { loadPetDirectory } from '../../src/pet/formats/load.js';
import { PetFormatError } from '../../src/util/errors.js';
import { makeTinyBase, rejection, writeBundleFixture, writePeftFixture } from './formats-helpers.js';
import type { FixtureTensor, TinyBase } from './formats-helpers.js';

const H = 128;
let t: TinyBase;
let counter = 0;

beforeAll(async () => {
  t = await makeTinyBase('pet-bundle');
});
afterAll(async () => t.cleanup());

const manifest = (kind: string, over: Record<string, unknown> = {}): Record<string, unknown> => ({
  format: 'petserve-pet',
  version: 1,
  kind,
  base_model: { hidden_size: 128, num_hidden_layers: 2, intermediate_size: 512 },
  ...over,
});

const zeros = (...shape: number[]): FixtureTensor => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
const filled = (value: number, ...shape: number[]): FixtureTensor => ({
  shape,
  data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(value),
});
const indices = (...values: number[]): FixtureTensor => ({ shape: [values.length], data: Int32Array.from(values) });

async function load(m: Record<string, unknown>, tensors: Record<string, FixtureTensor>): ReturnType<typeof loadPetBundle> {
  const dir = await writeBundleFixture(join(t.root, `b-${counter++}`), m, tensors);
  return loadPetBundle(dir, t.base);
}

async function refusal(m: Record<string, unknown>, tensors: Record<string, FixtureTensor>): Promise<string> {
  const err = await rejection(() => load(m, tensors));
  expect(err).toBeInstanceOf(PetFormatError);
  return err.message;
}

const Q = 'encoder.layer.0.attention.self.query';

describe('PetServe bundles: reading', () => {
  it('lora: rank from the tensor shapes, scale from alpha (alpha_pattern per module, rsLoRA), F16 / BF16 accepted', async () => {
    const b = await load(manifest('lora', { lora: { alpha: 8, alpha_pattern: { 'layer.1.attention.self.query': 2 } } }), {
      [`${Q}.lora_A.weight`]: { ...filled(0.5, 4, H), dtype: 'F16' },
      [`${Q}.lora_B.weight`]: { ...filled(0.25, H, 4), dtype: 'BF16' },
      'encoder.layer.1.attention.self.query.lora_A.weight': zeros(2, H),
      'encoder.layer.1.attention.self.query.lora_B.weight': zeros(H, 2),
    });
    if (b.pet.kind !== 'lora') throw new Error('kind');
    expect(b.pet.sites.map((s) => [s.layer, s.site, s.rank, s.scale])).toEqual([
      [0, 'query', 4, 2],
      [1, 'query', 2, 1],
    ]);
    expect(b.pet.sites[0]!.a.every((v) => v === 0.5) && b.pet.sites[0]!.b.every((v) => v === 0.25)).toBe(true);
    expect(b.head).toBeNull();
    const rs = await load(manifest('lora', { lora: { alpha: 8, use_rslora: true } }), {
      [`${Q}.lora_A.weight`]: zeros(4, H),
      [`${Q}.lora_B.weight`]: zeros(H, 4),
    });
    expect(rs.pet.kind === 'lora' && rs.pet.sites[0]!.scale).toBe(4);
  });

  it('diff: I64 indices, optional bias delta, a site with a bias delta only', async () => {
    const b = await load(manifest('diff'), {
      [`${Q}.weight.diff_indices`]: { ...indices(3, 200, 5000), dtype: 'I64' },
      [`${Q}.weight.diff_values`]: filled(0.1, 3),
      'encoder.layer.1.output.dense.bias.diff': filled(0.2, H),
    });
    if (b.pet.kind !== 'diff') throw new Error('kind');
    expect(b.pet.sites.map((s) => [s.layer, s.site, [...s.indices], s.values.length, s.biasDelta?.length ?? null])).toEqual([
      [0, 'query', [3, 200, 5000], 3, null],
      [1, 'output', [], 0, H],
    ]);
  });

  it('bitfit: a LayerNorm given by its bias only keeps the base gain; pooler bias and embeddings LayerNorm', async () => {
    const b = await load(manifest('bitfit'), {
      'encoder.layer.1.output.LayerNorm.bias': filled(0.3, H),
      'embeddings.LayerNorm.weight': filled(1.1, H),
      'embeddings.LayerNorm.bias': filled(0.1, H),
      'pooler.dense.bias': filled(0.2, H),
      'encoder.layer.0.intermediate.dense.bias': filled(0.4, 512),
    });
    if (b.pet.kind !== 'bitfit') throw new Error('kind');
    const ln = b.pet.params.layerNorms;
    expect(ln.map((l) => [l.layer, l.site])).toEqual([[1, 'output_layernorm']]);
    expect(ln[0]!.gamma).toEqual(t.base.weights.layers[1]!.outputLayerNorm.gamma);
    expect(ln[0]!.beta.every((v) => v === Math.fround(0.3))).toBe(true);
    expect(b.pet.params.embeddingsLayerNorm?.gamma[0]).toBeCloseTo(1.1, 6);
    expect(b.pet.params.poolerBias?.length).toBe(H);
    expect(b.pet.params.biases.map((s) => [s.layer, s.site])).toEqual([[0, 'intermediate']]);
  });

  it('head: id2label from pet.json, or the base config labels', async () => {
    const head = { 'classifier.weight': zeros(2, H), 'classifier.bias': zeros(2) };
    const tensors = { [`${Q}.weight.mask_removed`]: indices(1, 2, 3), ...head };
    expect((await load(manifest('mask', { head: { id2label: ['no', 'yes'] } }), tensors)).head?.id2label).toEqual(['no', 'yes']);
    expect((await load(manifest('mask'), tensors)).head?.id2label).toEqual(['LABEL_0', 'LABEL_1']);
    expect(await refusal(manifest('mask', { head: { id2label: ['a', 'b', 'c'] } }), tensors)).toMatch(
      /id2label has 3 labels but the classifier has 2 rows/,
    );
  });
});

describe('PetServe bundles: refusals', () => {
  const lora = { [`${Q}.lora_A.weight`]: zeros(4, H), [`${Q}.lora_B.weight`]: zeros(H, 4) };

  it('manifest identity, unknown keys, sections, base model', async () => {
    expect(await refusal(manifest('lora', { format: 'peft', lora: { alpha: 8 } }), lora)).toMatch(/format is "peft", expected "petserve-pet"/);
    expect(await refusal(manifest('lora', { version: 2, lora: { alpha: 8 } }), lora)).toMatch(/version 2 is not supported/);
    expect(await refusal(manifest('prefix_tuning'), lora)).toMatch(/kind "prefix_tuning" is not a PET kind/);
    expect(await refusal(manifest('lora', { lora: { alpha: 8 }, name: 'x' }), lora)).toMatch(/invalid manifest: .*name/);
    expect(await refusal(manifest('lora', { lora: { alpha: 8, dropout: 0.1 } }), lora)).toMatch(/invalid manifest: lora: .*dropout/);
    expect(await refusal(manifest('lora'), lora)).toMatch(/kind "lora" needs a "lora" section/);
    expect(await refusal(manifest('lora', { lora: { alpha: 8 }, adapter: { bottleneck: 4, activation: 'gelu' } }), lora)).toMatch(
      /section "adapter" does not apply to kind "lora"/,
    );
    expect(
      await refusal(manifest('lora', { lora: { alpha: 8 }, base_model: { hidden_size: 256, num_hidden_layers: 2, intermediate_size: 512 } }), lora),
    ).toMatch(/base_model\.hidden_size is 256 but the serving model has hidden_size 128/);
  });

  it('tensors not understood, by name (a bert. prefix included)', async () => {
    expect(
      await refusal(manifest('lora', { lora: { alpha: 8 } }), { ...lora, 'bert.encoder.layer.0.attention.self.key.lora_A.weight': zeros(4, H) }),
    ).toMatch(/tensors not understood for kind "lora": 'bert\.encoder\.layer\.0\.attention\.self\.key\.lora_A\.weight'/);
    expect(await refusal(manifest('diff'), { ...lora })).toMatch(/not understood for kind "diff": .*lora_A\.weight/);
  });

  it('shape mismatches name the tensor and both shapes', async () => {
    expect(await refusal(manifest('lora', { lora: { alpha: 8 } }), { [`${Q}.lora_A.weight`]: zeros(4, 64), [`${Q}.lora_B.weight`]: zeros(H, 4) })).toMatch(
      /tensor 'encoder\.layer\.0\.attention\.self\.query\.lora_A\.weight' has shape \[4, 64\], expected \[\*, 128\]/,
    );
    expect(await refusal(manifest('lora', { lora: { alpha: 8 } }), { [`${Q}.lora_A.weight`]: zeros(4, H), [`${Q}.lora_B.weight`]: zeros(H, 8) })).toMatch(
      /'encoder\.layer\.0\.attention\.self\.query\.lora_B\.weight' has shape \[128, 8\], expected \[128, 4\]/,
    );
    expect(await refusal(manifest('ia3'), { [`${Q}.ia3_l`]: zeros(1, H) })).toMatch(
      /'encoder\.layer\.0\.attention\.self\.query\.ia3_l' has shape \[1, 128\], expected \[128, 1\] \(output scaling/,
    );
    expect(await refusal(manifest('bitfit'), { 'encoder.layer.0.intermediate.dense.bias': zeros(H) })).toMatch(
      /'encoder\.layer\.0\.intermediate\.dense\.bias' has shape \[128\], expected \[512\]/,
    );
  });

  it('adapters: every tensor of both sites of every layer is required', async () => {
    const tensors: Record<string, FixtureTensor> = {};
    for (const layer of [0, 1]) {
      for (const where of ['attention.output', 'output']) {
        const p = `encoder.layer.${layer}.${where}.adapter`;
        tensors[`${p}.down.weight`] = zeros(8, H);
        tensors[`${p}.down.bias`] = zeros(8);
        tensors[`${p}.up.weight`] = zeros(H, 8);
        tensors[`${p}.up.bias`] = zeros(H);
      }
    }
    const m = manifest('adapter', { adapter: { bottleneck: 8, activation: 'relu' } });
    expect((await load(m, tensors)).pet.kind).toBe('adapter');
    const missing = { ...tensors };
    delete missing['encoder.layer.1.output.adapter.up.bias'];
    expect(await refusal(m, missing)).toMatch(/missing tensor 'encoder\.layer\.1\.output\.adapter\.up\.bias'/);
    expect(await refusal(manifest('adapter', { adapter: { bottleneck: 16, activation: 'relu' } }), tensors)).toMatch(
      /'encoder\.layer\.0\.attention\.output\.adapter\.down\.weight' has shape \[8, 128\], expected \[16, 128\]/,
    );
    expect(await refusal(manifest('adapter', { adapter: { bottleneck: 8, activation: 'swish' } }), tensors)).toMatch(/activation/);
  });

  it('diff / mask index tensors: pairs, dtypes, order, range, density; NaN values named with their index', async () => {
    expect(await refusal(manifest('diff'), { [`${Q}.weight.diff_indices`]: indices(1, 2) })).toMatch(
      /'encoder\.layer\.0\.attention\.self\.query\.weight\.diff_indices' is present but '.*diff_values' is missing/,
    );
    expect(await refusal(manifest('diff'), { [`${Q}.weight.diff_indices`]: indices(1, 2), [`${Q}.weight.diff_values`]: zeros(3) })).toMatch(
      /diff_values' has shape \[3\], expected \[2\] \(one value per index/,
    );
    expect(await refusal(manifest('diff'), { [`${Q}.weight.diff_indices`]: zeros(2), [`${Q}.weight.diff_values`]: zeros(2) })).toMatch(
      /diff_indices' has dtype F32, expected I32 or I64/,
    );
    expect(await refusal(manifest('mask'), { [`${Q}.weight.mask_removed`]: indices(5, 4) })).toMatch(
      /mask_removed' is not strictly increasing: index 4 at position 1 follows 5/,
    );
    expect(await refusal(manifest('mask'), { [`${Q}.weight.mask_removed`]: indices(0, H * H) })).toMatch(
      /mask_removed' has index 16384 at position 1, outside 0\.\.16383 of a \[128, 128\] weight/,
    );
    const dense = Int32Array.from({ length: H * H / 2 + 1 }, (_, i) => i);
    expect(await refusal(manifest('mask'), { [`${Q}.weight.mask_removed`]: { shape: [dense.length], data: dense } })).toMatch(
      /has 8193 of 16384 entries \(density 0\.500\), above the 0\.5 limit/,
    );
    const values = new Float32Array([0.1, Number.POSITIVE_INFINITY]);
    expect(await refusal(manifest('diff'), { [`${Q}.weight.diff_indices`]: indices(1, 2), [`${Q}.weight.diff_values`]: { shape: [2], data: values } })).toMatch(
      /'encoder\.layer\.0\.attention\.self\.query\.weight\.diff_values' has a non-finite value \(\+Inf\) at index 1/,
    );
  });

  it('ia3: a feedforward_modules entry that matches no tensor', async () => {
    expect(await refusal(manifest('ia3', { ia3: { feedforward_modules: ['encoder.layer.0.output.dense'] } }), { [`${Q}.ia3_l`]: zeros(H, 1) })).toMatch(
      /ia3\.feedforward_modules 'encoder\.layer\.0\.output\.dense' match no IA³ tensor's module/,
    );
  });

  it('a missing pet.safetensors, or an unreadable one', async () => {
    const dir = join(t.root, 'no-tensors');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'pet.json'), JSON.stringify(manifest('mask')));
    expect((await rejection(() => loadPetBundle(dir, t.base))).message).toMatch(/pet\.safetensors/);
    await writeFile(join(dir, 'pet.safetensors'), 'not safetensors');
    const err = await rejection(() => loadPetBundle(dir, t.base));
    expect(err).toBeInstanceOf(PetFormatError);
    expect(err.message).toMatch(/invalid safetensors file/);
  });
});

describe('loadPetDirectory: format detection', () => {
  it('refuses a missing path, a file, an empty directory and a directory with both manifests', async () => {
    const messages: string[] = [];
    const file = join(t.root, 'a-file');
    await writeFile(file, 'x');
    const empty = join(t.root, 'empty');
    await mkdir(empty, { recursive: true });
    const both = await writeBundleFixture(join(t.root, 'both'), manifest('mask'), { [`${Q}.weight.mask_removed`]: indices(1) });
    await writePeftFixture(both, { peft_type: 'LORA' }, {});
    for (const dir of [join(t.root, 'absent'), file, empty, both]) {
      const err = await rejection(() => loadPetDirectory(dir, t.base));
      expect(err).toBeInstanceOf(PetFormatError);
      messages.push(err.message);
    }
    expect(messages[0]).toMatch(/cannot read PET directory/);
    expect(messages[1]).toMatch(/not a directory/);
    expect(messages[2]).toMatch(/neither pet\.json \(PetServe bundle\) nor adapter_config\.json \(Hugging Face PEFT\) found/);
    expect(messages[3]).toMatch(/holds both pet\.json and adapter_config\.json/);
  });
});
