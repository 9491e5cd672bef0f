import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { loadPetBundle, writePetBundle } from '../../src/pet/formats/bundle.js';
import { loadPeftDirectory, writePeftDirectory } from '../../src/pet/formats/peft.js';
import { detectPetFormat, loadPetDirectory } from '../../src/pet/formats/load.js';
import { generatePet, initPet } from '../../src/pet/init-pet.js';
import { PET_KINDS, petHostBytes } from '../../src/pet/types.js';
import type { PetBundle, PetKind } from '../../src/pet/types.js';
import { InvalidInputError, PetFormatError } from '../../src/util/errors.js';
import { expectSameBundle, makeTinyBase, rejection } from './formats-helpers.js';
import type { TinyBase } from './formats-helpers.js';

let t: TinyBase;
const H = 128;
const I = 512;
const LAYERS = 2;

beforeAll(async () => {
  t = await makeTinyBase('pet-init');
});
afterAll(async () => t.cleanup());

function meanStd(a: Float32Array): { mean: number; std: number } {
  let s = 0;
  for (const v of a) s += v;
  const mean = s / a.length;
  let q = 0;
  for (const v of a) q += (v - mean) ** 2;
  return { mean, std: Math.sqrt(q / a.length) };
}

describe('initPet → loadPetDirectory round trip', () => {
  const loaded = new Map<PetKind, PetBundle>();

  it.each(PET_KINDS.map((k) => [k]))('%s: the loaded PET equals the generated one, in the expected format', async (kind) => {
    const out = join(t.root, `rt-${kind}`);
    const result = await initPet({ model: t.base, kind, outDir: out, seed: 3 });
    const expectedFormat = kind === 'lora' || kind === 'ia3' ? 'peft' : 'bundle';
    expect(result.format).toBe(expectedFormat);
    expect(await detectPetFormat(out)).toBe(expectedFormat);
    const bundle = await loadPetDirectory(out, t.base);
    expect(bundle.format).toBe(expectedFormat);
    expect(bundle.source).toBe(out);
    expectSameBundle(bundle, generatePet({ model: t.base, kind, seed: 3 }));
    expect(result.parameterCount * 4).toBe(petHostBytes(bundle));
    loaded.set(kind, bundle);
  });

  it('lora: rank 8 at all six sites of both layers, scale alpha/r = 2, B non-zero', () => {
    const pet = loaded.get('lora')!.pet;
    if (pet.kind !== 'lora') throw new Error('kind');
    expect(pet.sites.map((s) => `${s.layer}:${s.site}`)).toEqual(
      [0, 1].flatMap((l) => ['query', 'key', 'value', 'attention_output', 'intermediate', 'output'].map((s) => `${l}:${s}`)),
    );
    for (const s of pet.sites) {
      expect(s.rank).toBe(8);
      expect(s.scale).toBe(2);
      const inDim = s.site === 'output' ? I : H;
      const outDim = s.site === 'intermediate' ? I : H;
      expect(s.a.length).toBe(8 * inDim);
      expect(s.b.length).toBe(outDim * 8);
      expect(meanStd(s.a).std).toBeCloseTo(1 / Math.sqrt(inDim), 2);
      expect(meanStd(s.b).std).toBeGreaterThan(0);
    }
  });

  it('lora / ia3 are written as PEFT writes them: sorted adapter_config.json, base_model.model.bert.* tensors, classifier', async () => {
    const lora = JSON.parse(await readFile(join(t.root, 'rt-lora', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(Object.keys(lora)).toEqual(Object.keys(lora).sort());
    expect(lora).toMatchObject({
      peft_type: 'LORA',
      task_type: 'SEQ_CLS',
      base_model_name_or_path: t.modelDir,
      r: 8,
      lora_alpha: 16,
      target_modules: ['query', 'key', 'value', 'attention.output.dense', 'intermediate.dense', 'output.dense'],
      modules_to_save: ['classifier'],
      bias: 'none',
      use_dora: false,
      use_rslora: false,
      fan_in_fan_out: false,
    });
    const ia3 = JSON.parse(await readFile(join(t.root, 'rt-ia3', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(ia3).toMatchObject({
      peft_type: 'IA3',
      task_type: 'SEQ_CLS',
      target_modules: ['key', 'value', 'output.dense'],
      feedforward_modules: ['output.dense'],
      modules_to_save: ['classifier'],
    });
    const file = await SafetensorsFile.open(join(t.root, 'rt-lora', 'adapter_model.safetensors'));
    expect(file.info('base_model.model.bert.encoder.layer.1.output.dense.lora_A.weight')?.shape).toEqual([8, I]);
    expect(file.info('base_model.model.bert.encoder.layer.1.output.dense.lora_B.weight')?.shape).toEqual([H, 8]);
    expect(file.info('base_model.model.classifier.weight')?.shape).toEqual([2, H]);
    expect(file.names().every((n) => n.startsWith('base_model.model.'))).toBe(true);
  });

  it("ia3: PEFT's BERT placement — key/value outputs, attention.output.dense and output.dense inputs ('output.dense' is a suffix of both)", () => {
    const pet = loaded.get('ia3')!.pet;
    if (pet.kind !== 'ia3') throw new Error('kind');
    expect(pet.sites.filter((s) => s.layer === 0).map((s) => [s.site, s.mode, s.scale.length])).toEqual([
      ['key', 'output', H],
      ['value', 'output', H],
      ['attention_output', 'input', H],
      ['output', 'input', I],
    ]);
    const all = Float32Array.from(pet.sites.flatMap((s) => [...s.scale]));
    expect(meanStd(all).mean).toBeCloseTo(1, 1);
    expect(meanStd(all).std).toBeCloseTo(0.1, 1);
  });

  it('adapter: bottleneck 16, gelu, both sites of every layer', () => {
    const pet = loaded.get('adapter')!.pet;
    if (pet.kind !== 'adapter') throw new Error('kind');
    expect(pet.sites.map((s) => [s.layer, s.site, s.bottleneck, s.activation])).toEqual([
      [0, 'attention_output', 16, 'gelu'],
      [0, 'output', 16, 'gelu'],
      [1, 'attention_output', 16, 'gelu'],
      [1, 'output', 16, 'gelu'],
    ]);
    expect(meanStd(pet.sites[0]!.downWeight).std).toBeCloseTo(0.05, 2);
  });

  it('diff: density 0.01 of every linear site, sorted indices, bias deltas; mask: density 0.1 removed', () => {
    const diff = loaded.get('diff')!.pet;
    const mask = loaded.get('mask')!.pet;
    if (diff.kind !== 'diff' || mask.kind !== 'mask') throw new Error('kind');
    expect(diff.sites).toHaveLength(6 * LAYERS);
    for (const s of diff.sites) {
      const size = (s.site === 'intermediate' || s.site === 'output' ? I : H) * H;
      expect(s.indices.length).toBe(Math.round(0.01 * size));
      expect(s.values.length).toBe(s.indices.length);
      expect(s.biasDelta).not.toBeNull();
      for (let i = 1; i < s.indices.length; i++) expect(s.indices[i]!).toBeGreaterThan(s.indices[i - 1]!);
    }
    expect(mask.sites).toHaveLength(6 * LAYERS);
    for (const s of mask.sites) {
      const size = (s.site === 'intermediate' || s.site === 'output' ? I : H) * H;
      expect(s.removed.length).toBe(Math.round(0.1 * size));
    }
  });

  it('bitfit: every linear bias, every LayerNorm and the pooler bias = base + small noise', () => {
    const pet = loaded.get('bitfit')!.pet;
    if (pet.kind !== 'bitfit') throw new Error('kind');
    const p = pet.params;
    expect(p.biases).toHaveLength(6 * LAYERS);
    expect(p.layerNorms).toHaveLength(2 * LAYERS);
    expect(p.embeddingsLayerNorm).not.toBeNull();
    expect(p.poolerBias).not.toBeNull();
    const base = t.base.weights.layers[1]!.attentionLayerNorm.gamma;
    const ln = p.layerNorms.find((l) => l.layer === 1 && l.site === 'attention_layernorm')!;
    const delta = ln.gamma.map((g, i) => g - base[i]!);
    expect(meanStd(delta).std).toBeGreaterThan(0.02);
    expect(meanStd(delta).std).toBeLessThan(0.1);
  });

  it('every kind gets a classifier head with the base model labels', () => {
    for (const bundle of loaded.values()) {
      expect(bundle.head?.bias.length).toBe(2);
      expect(bundle.head?.weight.length).toBe(2 * H);
      expect(bundle.head?.id2label).toEqual(['LABEL_0', 'LABEL_1']);
    }
  });
});

describe('initPet options', () => {
  it('is deterministic by seed: same seed, same bytes; another seed, other values', async () => {
    const a = await initPet({ model: t.base, kind: 'lora', outDir: join(t.root, 'seed-a'), seed: 11 });
    const b = await initPet({ model: t.base, kind: 'lora', outDir: join(t.root, 'seed-b'), seed: 11 });
    const c = await initPet({ model: t.base, kind: 'lora', outDir: join(t.root, 'seed-c'), seed: 12 });
    const bytes = (dir: string): Promise<Buffer> => readFile(join(dir, 'adapter_model.safetensors'));
    expect((await bytes(a.dir)).equals(await bytes(b.dir))).toBe(true);
    expect((await bytes(a.dir)).equals(await bytes(c.dir))).toBe(false);
    for (const kind of ['diff', 'mask'] as const) {
      expect(generatePet({ model: t.base, kind, seed: 5 })).toEqual(generatePet({ model: t.base, kind, seed: 5 }));
    }
  });

  it('honours rank, density, bottleneck and numLabels', async () => {
    const lora = generatePet({ model: t.base, kind: 'lora', rank: 3 });
    expect(lora.pet.kind === 'lora' && lora.pet.sites.every((s) => s.rank === 3 && s.scale === 2)).toBe(true);
    const diff = generatePet({ model: t.base, kind: 'diff', density: 0.5 });
    expect(diff.pet.kind === 'diff' && diff.pet.sites[0]!.indices.length).toBe(H * H / 2);
    const adapter = generatePet({ model: t.base, kind: 'adapter', bottleneck: 4, numLabels: 5 });
    expect(adapter.pet.kind === 'adapter' && adapter.pet.sites[0]!.bottleneck).toBe(4);
    expect(adapter.head?.id2label).toEqual(['LABEL_0', 'LABEL_1', 'LABEL_2', 'LABEL_3', 'LABEL_4']);
  });

  it('numLabels 0 writes an embedding task; PEFT then targets a bare BertModel (no bert. prefix, FEATURE_EXTRACTION)', async () => {
    const out = join(t.root, 'embedding-lora');
    await initPet({ model: t.base, kind: 'lora', outDir: out, numLabels: 0 });
    const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(config['task_type']).toBe('FEATURE_EXTRACTION');
    expect(config['modules_to_save']).toBeNull();
    const file = await SafetensorsFile.open(join(out, 'adapter_model.safetensors'));
    expect(file.has('base_model.model.encoder.layer.0.attention.self.query.lora_A.weight')).toBe(true);
    const bundle = await loadPetDirectory(out, t.base);
    expect(bundle.head).toBeNull();
    expect(bundle.pet.kind === 'lora' && bundle.pet.sites.length).toBe(12);
  });

  it('refuses options that do not fit the kind or the base model', async () => {
    const cases: [Parameters<typeof generatePet>[0], RegExp][] = [
      [{ model: t.base, kind: 'diff', rank: 4 }, /rank applies to kind lora only, not diff/],
      [{ model: t.base, kind: 'lora', density: 0.1 }, /density applies to kind diff \/ mask only/],
      [{ model: t.base, kind: 'lora', bottleneck: 4 }, /bottleneck applies to kind adapter only/],
      [{ model: t.base, kind: 'lora', rank: 129 }, /rank must be an integer in 1\.\.128/],
      [{ model: t.base, kind: 'mask', density: 0.6 }, /density must be in \(0, 0\.5\]/],
      [{ model: t.base, kind: 'adapter', bottleneck: 0 }, /bottleneck must be an integer in 1\.\.128/],
      [{ model: t.base, kind: 'ia3', numLabels: -1 }, /numLabels must be a non-negative integer/],
      [{ model: t.base, kind: 'prefix' as PetKind }, /kind must be one of lora, adapter/],
    ];
    for (const [opts, message] of cases) {
      expect(() => generatePet(opts)).toThrow(InvalidInputError);
      expect(() => generatePet(opts)).toThrow(message);
    }
  });

  it('refuses to write a PEFT PET into a directory that holds a bundle (the format would be ambiguous)', async () => {
    const out = join(t.root, 'mixed');
    await initPet({ model: t.base, kind: 'diff', outDir: out });
    const err = await rejection(() => initPet({ model: t.base, kind: 'lora', outDir: out }));
    expect(err).toBeInstanceOf(InvalidInputError);
    expect(err.message).toMatch(/already holds pet\.json/);
    expect((await readdir(out)).sort()).toEqual(['pet.json', 'pet.safetensors']);
  });
});

describe('writePetBundle → loadPetBundle', () => {
  it.each(PET_KINDS.map((k) => [k]))('%s round-trips through a PetServe bundle', async (kind) => {
    const bundle = generatePet({ model: t.base, kind, seed: 21, numLabels: 3 });
    bundle.head!.id2label = ['neg', 'neutral', 'pos'];
    const dir = join(t.root, `bundle-${kind}`);
    await writePetBundle(dir, bundle, t.base.config);
    const loaded = await loadPetBundle(dir, t.base);
    expect(loaded.format).toBe('bundle');
    expectSameBundle(loaded, bundle);
    expect(loaded.head?.id2label).toEqual(['neg', 'neutral', 'pos']);
  });

  it('lora sites with different ranks and scales round-trip through alpha_pattern', async () => {
    const bundle = generatePet({ model: t.base, kind: 'lora', rank: 4 });
    if (bundle.pet.kind !== 'lora') throw new Error('kind');
    bundle.pet.sites = bundle.pet.sites.filter((s) => s.site !== 'intermediate');
    const first = bundle.pet.sites[0]!;
    bundle.pet.sites[1] = { ...bundle.pet.sites[1]!, rank: 2, scale: 0.75, a: first.a.slice(0, 2 * H), b: new Float32Array(H * 2).fill(0.01) };
    const dir = join(t.root, 'bundle-lora-patterns');
    await writePetBundle(dir, bundle, t.base.config);
    const manifest = JSON.parse(await readFile(join(dir, 'pet.json'), 'utf8')) as { lora: unknown };
    expect(manifest.lora).toEqual({ alpha: 8, use_rslora: false, alpha_pattern: { 'encoder.layer.0.attention.self.key': 1.5 } });
    expectSameBundle(await loadPetBundle(dir, t.base), bundle);
  });

  it('refuses to write an invalid bundle', async () => {
    const bundle = generatePet({ model: t.base, kind: 'diff' });
    if (bundle.pet.kind !== 'diff') throw new Error('kind');
    bundle.pet.sites[0]!.values[0] = Number.NaN;
    await expect(writePetBundle(join(t.root, 'bad'), bundle, t.base.config)).rejects.toThrow(PetFormatError);
  });
});

describe('writePeftDirectory', () => {
  it('writes PEFT suffixes when they select exactly the sites, else exact module names; both round-trip', async () => {
    const lora = generatePet({ model: t.base, kind: 'lora', rank: 2 });
    if (lora.pet.kind !== 'lora') throw new Error('kind');
    lora.pet.sites = lora.pet.sites.filter((s) => s.site === 'output' || s.site === 'query');
    const suffixDir = join(t.root, 'peft-suffix');
    await writePeftDirectory(suffixDir, lora, t.base.config, { baseModelNameOrPath: 'b' });
    const suffixConfig = JSON.parse(await readFile(join(suffixDir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    // 'output.dense' would also select attention.output.dense: exact names instead.
    expect(suffixConfig['target_modules']).toEqual([
      'bert.encoder.layer.0.attention.self.query',
      'bert.encoder.layer.0.output.dense',
      'bert.encoder.layer.1.attention.self.query',
      'bert.encoder.layer.1.output.dense',
    ]);
    expectSameBundle(await loadPeftDirectory(suffixDir, t.base), lora);

    lora.pet.sites = lora.pet.sites.filter((s) => s.site === 'query');
    const queryDir = join(t.root, 'peft-query');
    await writePeftDirectory(queryDir, lora, t.base.config, { baseModelNameOrPath: 'b' });
    const queryConfig = JSON.parse(await readFile(join(queryDir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(queryConfig['target_modules']).toEqual(['query']);
    expectSameBundle(await loadPeftDirectory(queryDir, t.base), lora);

    const ia3 = generatePet({ model: t.base, kind: 'ia3' });
    if (ia3.pet.kind !== 'ia3') throw new Error('kind');
    // attention.output.dense output-scaled next to output.dense input-scaled: no suffix list can say that.
    ia3.pet.sites = ia3.pet.sites.map((s) => (s.site === 'attention_output' ? { ...s, mode: 'output' as const } : s));
    const ia3Dir = join(t.root, 'peft-ia3-exact');
    await writePeftDirectory(ia3Dir, ia3, t.base.config, { baseModelNameOrPath: 'b' });
    const ia3Config = JSON.parse(await readFile(join(ia3Dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(ia3Config['feedforward_modules']).toEqual(['bert.encoder.layer.0.output.dense', 'bert.encoder.layer.1.output.dense']);
    expectSameBundle(await loadPeftDirectory(ia3Dir, t.base), ia3);
  });

  it('refuses kinds PEFT directories do not hold, and target lists that miss the sites', async () => {
    const diff = generatePet({ model: t.base, kind: 'diff' });
    await expect(writePeftDirectory(join(t.root, 'peft-diff'), diff, t.base.config, { baseModelNameOrPath: 'b' })).rejects.toThrow(
      /PEFT directories hold lora or ia3 PETs, not diff/,
    );
    const lora = generatePet({ model: t.base, kind: 'lora' });
    await expect(
      writePeftDirectory(join(t.root, 'peft-bad'), lora, t.base.config, { baseModelNameOrPath: 'b', targetModules: ['query'] }),
    ).rejects.toThrow(/target_modules \["query"\] do not select exactly the PET's sites/);
  });
});
