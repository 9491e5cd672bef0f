import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import type { BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { SafetensorsFile, writeSafetensors } from '../../src/model/safetensors.js';
import type { TensorToWrite } from '../../src/model/safetensors.js';
import { convertMergedToPet } from '../../src/pet/convert.js';
import { loadPetBundle, writePetBundle } from '../../src/pet/formats/bundle.js';
import { InvalidInputError, PetFormatError } from '../../src/util/errors.js';
import { expectSameBundle, makeTinyBase } from './formats-helpers.js';
import type { TinyBase } from './formats-helpers.js';

let t: TinyBase;
let baseTensors: Map<string, Float32Array>;

beforeAll(async () => {
  t = await makeTinyBase('pet-convert');
  const file = await SafetensorsFile.open(join(t.modelDir, 'model.safetensors'));
  baseTensors = new Map(file.names().map((n) => [n, file.readFloat32(n)]));
});
afterAll(async () => t.cleanup());

/** A "fine-tuned" checkpoint: the base tensors, changed by `mutate`, written as Hugging Face would. */
async function finetuned(name: string, mutate: (tensors: Map<string, Float32Array>) => void, labels?: string[]): Promise<BertCheckpoint> {
  const tensors = new Map([...baseTensors].map(([n, d]) => [n, d.slice()]));
  mutate(tensors);
  const dir = join(t.root, name);
  await mkdir(dir, { recursive: true });
  const file = await SafetensorsFile.open(join(t.modelDir, 'model.safetensors'));
  const out: Record<string, TensorToWrite> = {};
  for (const [n, data] of tensors) out[n] = { dtype: 'F32', shape: file.info(n)!.shape, data };
  await writeSafetensors(join(dir, 'model.safetensors'), out, { format: 'pt' });
  const config = JSON.parse(await readFile(join(t.modelDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  if (labels) config['id2label'] = Object.fromEntries(labels.map((l, i) => [String(i), l]));
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  return loadCheckpoint(dir);
}

const QUERY0 = 'bert.encoder.layer.0.attention.self.query.weight';
// 30 scattered entries with distinct |Δ| = 1e-3·(k+1), alternating sign.
const QUERY_POSITIONS = Array.from({ length: 30 }, (_, k) => (k * 517 + 3) % (128 * 128));
const queryDelta = (k: number): number => (k + 1) * 1e-3 * (k % 2 === 0 ? 1 : -1);

function perturbDiffStyle(m: Map<string, Float32Array>): void {
  const q = m.get(QUERY0)!;
  QUERY_POSITIONS.forEach((p, k) => (q[p] = q[p]! + queryDelta(k)));
  const bias = m.get('bert.encoder.layer.1.intermediate.dense.bias')!;
  for (let i = 0; i < bias.length; i++) bias[i] = bias[i]! + 0.01;
  const out = m.get('bert.encoder.layer.1.output.dense.weight')!;
  out[5] = out[5]! + 0.5;
  m.get('bert.encoder.layer.0.attention.output.LayerNorm.weight')![0]! += 0.1;
  m.get('bert.embeddings.word_embeddings.weight')![10]! += 0.1;
  const cls = m.get('classifier.weight')!;
  for (let i = 0; i < cls.length; i++) cls[i] = cls[i]! * 2;
}

const f32diff = (a: Float32Array, b: Float32Array, i: number): number => Math.fround(a[i]! - b[i]!);

describe('convertMergedToPet: diff', () => {
  let ft: BertCheckpoint;
  beforeAll(async () => {
    ft = await finetuned('ft-diff', perturbDiffStyle, ['neg', 'pos']);
  });

  it('recovers ΔW and Δb exactly at the changed sites only, the classifier becomes the head', () => {
    const { bundle, notes } = convertMergedToPet({ base: t.base, finetuned: ft, kind: 'diff' });
    if (bundle.pet.kind !== 'diff') throw new Error('kind');
    const sites = bundle.pet.sites;
    expect(sites.map((s) => [s.layer, s.site])).toEqual([
      [0, 'query'],
      [1, 'intermediate'],
      [1, 'output'],
    ]);
    const baseQ = t.base.weights.layers[0]!.query.weight;
    const ftQ = ft.weights.layers[0]!.query.weight;
    const sorted = [...QUERY_POSITIONS].sort((a, b) => a - b);
    expect([...sites[0]!.indices]).toEqual(sorted);
    expect([...sites[0]!.values]).toEqual(sorted.map((p) => f32diff(ftQ, baseQ, p)));
    for (const [k, p] of QUERY_POSITIONS.entries()) expect(sites[0]!.values[sorted.indexOf(p)]).toBeCloseTo(queryDelta(k), 6);
    expect(sites[0]!.biasDelta).toBeNull();

    const baseB = t.base.weights.layers[1]!.intermediate.bias;
    const ftB = ft.weights.layers[1]!.intermediate.bias;
    expect(sites[1]!.indices.length).toBe(0);
    expect([...sites[1]!.biasDelta!]).toEqual([...baseB].map((_, i) => f32diff(ftB, baseB, i)));
    expect([...sites[2]!.indices]).toEqual([5]);

    expect(bundle.head?.weight).toEqual(ft.weights.classifier!.weight);
    expect(bundle.head?.id2label).toEqual(['neg', 'pos']);
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatch(/ignored differences a diff PET cannot carry/);
    expect(notes[0]).toMatch(/embeddings\.word_embeddings\.weight \(1 entries, max \|Δ\| 1\.000e-1\)/);
    expect(notes[0]).toMatch(/encoder\.layer\.0\.attention\.output\.LayerNorm\.weight \(1 entries/);
  });

  it('with a density, keeps the largest |ΔW| per site and reports what was dropped', () => {
    const { bundle, notes } = convertMergedToPet({ base: t.base, finetuned: ft, kind: 'diff', density: 10 / (128 * 128) });
    if (bundle.pet.kind !== 'diff') throw new Error('kind');
    const largest = QUERY_POSITIONS.slice(20).sort((a, b) => a - b);
    expect([...bundle.pet.sites[0]!.indices]).toEqual(largest);
    expect(notes[0]).toMatch(/kept the 11 largest of 31 changed weights \(density 0\.0006103515625\); the largest dropped \|ΔW\| is 2\.000e-2/);
  });

  it('round-trips through writePetBundle / loadPetBundle', async () => {
    const { bundle } = convertMergedToPet({ base: t.base, finetuned: ft, kind: 'diff' });
    const dir = join(t.root, 'converted-diff');
    await writePetBundle(dir, bundle, t.base.config);
    expectSameBundle(await loadPetBundle(dir, t.base), bundle);
  });

  it('refuses a diff denser than 0.5 unless a density is given, and densities above 0.5', async () => {
    const dense = await finetuned('ft-dense', (m) => {
      const q = m.get(QUERY0)!;
      for (let i = 0; i < q.length; i++) q[i] = q[i]! + 1e-3;
    });
    expect(() => convertMergedToPet({ base: t.base, finetuned: dense, kind: 'diff' })).toThrow(
      /encoder\.layer\.0\.attention\.self\.query\.weight differs in 16384 of 16384 entries \(density 1\.000\), above the 0\.5 limit/,
    );
    const kept = convertMergedToPet({ base: t.base, finetuned: dense, kind: 'diff', density: 0.1 });
    expect(kept.bundle.pet.kind === 'diff' && kept.bundle.pet.sites[0]!.indices.length).toBe(1638);
    expect(() => convertMergedToPet({ base: t.base, finetuned: dense, kind: 'diff', density: 0.6 })).toThrow(InvalidInputError);
    expect(() => convertMergedToPet({ base: t.base, finetuned: dense, kind: 'bitfit', density: 0.1 })).toThrow(/density applies to kind diff only/);
  });
});

describe('convertMergedToPet: bitfit', () => {
  it('keeps every bias and LayerNorm that differs, as full values', async () => {
    const ft = await finetuned('ft-bitfit', (m) => {
      m.get('bert.encoder.layer.0.attention.self.key.bias')![1]! += 0.02;
      m.get('bert.encoder.layer.1.output.LayerNorm.bias')![2]! += 0.03;
      m.get('bert.embeddings.LayerNorm.weight')![0]! += 0.01;
      m.get('bert.pooler.dense.bias')![4]! += 0.01;
    });
    const { bundle, notes } = convertMergedToPet({ base: t.base, finetuned: ft, kind: 'bitfit' });
    if (bundle.pet.kind !== 'bitfit') throw new Error('kind');
    const p = bundle.pet.params;
    expect(p.biases.map((b) => [b.layer, b.site])).toEqual([[0, 'key']]);
    expect(p.biases[0]!.bias).toEqual(ft.weights.layers[0]!.key.bias);
    expect(p.layerNorms.map((l) => [l.layer, l.site])).toEqual([[1, 'output_layernorm']]);
    expect(p.layerNorms[0]!.gamma).toEqual(t.base.weights.layers[1]!.outputLayerNorm.gamma);
    expect(p.layerNorms[0]!.beta).toEqual(ft.weights.layers[1]!.outputLayerNorm.beta);
    expect(p.embeddingsLayerNorm?.gamma).toEqual(ft.weights.embeddingLayerNorm.gamma);
    expect(p.poolerBias).toEqual(ft.weights.pooler.bias);
    expect(notes).toEqual([]);
    const dir = join(t.root, 'converted-bitfit');
    await writePetBundle(dir, bundle, t.base.config);
    expectSameBundle(await loadPetBundle(dir, t.base), bundle);
  });

  it('refuses when a weight matrix differs, naming it', async () => {
    const ft = await finetuned('ft-not-bitfit', perturbDiffStyle);
    expect(() => convertMergedToPet({ base: t.base, finetuned: ft, kind: 'bitfit' })).toThrow(PetFormatError);
    expect(() => convertMergedToPet({ base: t.base, finetuned: ft, kind: 'bitfit' })).toThrow(
      /not a BitFit fine-tune: weight matrices differ from the base \('encoder\.layer\.0\.attention\.self\.query\.weight', 'encoder\.layer\.1\.output\.dense\.weight', 'embeddings\.word_embeddings\.weight'\); use kind diff/,
    );
  });
});

describe('convertMergedToPet: checkpoints that do not fit', () => {
  it('refuses another architecture; a checkpoint without classifier gives an embedding task', async () => {
    const otherDir = join(t.root, 'other-vocab');
    await initModel({ preset: 'bert-tiny', vocabSize: 400, maxPositions: 64, outDir: otherDir, numLabels: 2 });
    const other = await loadCheckpoint(otherDir);
    expect(() => convertMergedToPet({ base: t.base, finetuned: other, kind: 'diff' })).toThrow(/vocabSize is 400 but the base .* has 300/);

    const bareDir = join(t.root, 'bare');
    await initModel({ preset: 'bert-tiny', vocabSize: 300, maxPositions: 64, outDir: bareDir, numLabels: 0 });
    const { bundle, notes } = convertMergedToPet({ base: t.base, finetuned: await loadCheckpoint(bareDir), kind: 'diff' });
    expect(bundle.head).toBeNull();
    expect(bundle.pet.kind === 'diff' && bundle.pet.sites).toEqual([]);
    expect(notes).toEqual(['the fine-tuned checkpoint has no classifier: the task is an embedding task (pooled output)']);
  });
});
