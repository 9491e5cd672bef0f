import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPeftDirectory } from '../../src/pet/formats/peft.js';
import { loadPetDirectory } from '../../src/pet/formats/load.js';
import { generatePet } from '../../src/pet/init-pet.js';
import type { Ia3Site, LinearSite, LoraSite, PetBundle, TaskHead } from '../../src/pet/types.js';
import { PetFormatError } from '../../src/util/errors.js';
import { makeTinyBase, rejection, writePeftFixture } from './formats-helpers.js';
import type { FixtureTensor, TinyBase } from './formats-helpers.js';

/** Hugging Face module paths inside encoder.layer.N, written out here as PEFT names them (not taken from src/). */
const SITE_MODULE: Record<LinearSite, string> = {
  query: 'attention.self.query',
  key: 'attention.self.key',
  value: 'attention.self.value',
  attention_output: 'attention.output.dense',
  intermediate: 'intermediate.dense',
  output: 'output.dense',
};

const H = 128;
const I = 512;
const ALL_TARGETS = ['query', 'key', 'value', 'attention.output.dense', 'intermediate.dense', 'output.dense'];

let t: TinyBase;
let loraSites: LoraSite[];
let head: TaskHead;
let ia3Sites: Ia3Site[];
let counter = 0;

beforeAll(async () => {
  t = await makeTinyBase('pet-peft');
  const lora = generatePet({ model: t.base, kind: 'lora', rank: 4, seed: 1 });
  if (lora.pet.kind !== 'lora') throw new Error('kind');
  loraSites = lora.pet.sites;
  head = lora.head!;
  const ia3 = generatePet({ model: t.base, kind: 'ia3', seed: 2 });
  if (ia3.pet.kind !== 'ia3') throw new Error('kind');
  ia3Sites = ia3.pet.sites;
});
afterAll(async () => t.cleanup());

const dims = (site: LinearSite): { outDim: number; inDim: number } => ({
  outDim: site === 'intermediate' ? I : H,
  inDim: site === 'output' ? I : H,
});

function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
  return out;
}

interface TensorOptions {
  prefix?: string;
  fanInFanOut?: boolean;
  /** classifier tensor name stem after base_model.model., or null for no head */
  headStem?: string | null;
  /** '' or '.default' between lora_X and .weight */
  adapterInfix?: string;
}

function loraTensors(sites: readonly LoraSite[], o: TensorOptions = {}): Record<string, FixtureTensor> {
  const prefix = o.prefix ?? 'bert.';
  const infix = o.adapterInfix ?? '';
  const out: Record<string, FixtureTensor> = {};
  for (const s of sites) {
    const { outDim, inDim } = dims(s.site);
    const name = `base_model.model.${prefix}encoder.layer.${s.layer}.${SITE_MODULE[s.site]}`;
    out[`${name}.lora_A${infix}.weight`] = o.fanInFanOut
      ? { shape: [inDim, s.rank], data: transpose(s.a, s.rank, inDim) }
      : { shape: [s.rank, inDim], data: s.a };
    out[`${name}.lora_B${infix}.weight`] = o.fanInFanOut
      ? { shape: [s.rank, outDim], data: transpose(s.b, outDim, s.rank) }
      : { shape: [outDim, s.rank], data: s.b };
  }
  Object.assign(out, headTensors(o.headStem === undefined ? 'classifier.' : o.headStem));
  return out;
}

function headTensors(stem: string | null): Record<string, FixtureTensor> {
  if (stem === null) return {};
  return {
    [`base_model.model.${stem}weight`]: { shape: [2, H], data: head.weight },
    [`base_model.model.${stem}bias`]: { shape: [2], data: head.bias },
  };
}

function ia3Tensors(sites: readonly Ia3Site[], prefix = 'bert.'): Record<string, FixtureTensor> {
  const out: Record<string, FixtureTensor> = {};
  for (const s of sites) {
    const name = `base_model.model.${prefix}encoder.layer.${s.layer}.${SITE_MODULE[s.site]}.ia3_l`;
    out[name] = { shape: s.mode === 'input' ? [1, s.scale.length] : [s.scale.length, 1], data: s.scale };
  }
  return { ...out, ...headTensors('classifier.') };
}

function loraConfig(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: 'SEQ_CLS',
    base_model_name_or_path: 'bert-tiny',
    r: 4,
    lora_alpha: 8,
    target_modules: ALL_TARGETS,
    modules_to_save: ['classifier'],
    bias: 'none',
    use_dora: false,
    use_rslora: false,
    fan_in_fan_out: false,
    ...over,
  };
}

function ia3Config(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    peft_type: 'IA3',
    task_type: 'SEQ_CLS',
    target_modules: ['key', 'value', 'output.dense'],
    feedforward_modules: ['output.dense'],
    modules_to_save: ['classifier'],
    fan_in_fan_out: false,
    ...over,
  };
}

async function load(config: Record<string, unknown>, tensors: Record<string, FixtureTensor>): Promise<PetBundle> {
  const dir = await writePeftFixture(join(t.root, `peft-${counter++}`), config, tensors);
  return loadPeftDirectory(dir, t.base);
}

async function refusal(config: Record<string, unknown>, tensors: Record<string, FixtureTensor>): Promise<string> {
  const err = await rejection(() => load(config, tensors));
  expect(err).toBeInstanceOf(PetFormatError);
  return err.message;
}

function loraOf(b: PetBundle): LoraSite[] {
  if (b.pet.kind !== 'lora') throw new Error(`expected lora, got ${b.pet.kind}`);
  return b.pet.sites;
}

const only = (sites: readonly LoraSite[], pred: (s: LoraSite) => boolean): LoraSite[] => sites.filter(pred);

describe('PEFT LoRA directories', () => {
  it('loads with the bert. prefix (BertForSequenceClassification) and without it (BertModel), same sites', async () => {
    const withBert = await load(loraConfig(), loraTensors(loraSites));
    const bare = await load(loraConfig({ task_type: 'FEATURE_EXTRACTION' }), loraTensors(loraSites, { prefix: '' }));
    for (const b of [withBert, bare]) {
      expect(b.format).toBe('peft');
      expect(loraOf(b)).toEqual(loraSites);
      expect(b.head).toEqual({ weight: head.weight, bias: head.bias, id2label: ['LABEL_0', 'LABEL_1'] });
    }
  });

  it('fan_in_fan_out: weights stored [in, r] / [r, out] are transposed back to [r, in] / [out, r]', async () => {
    const b = await load(loraConfig({ fan_in_fan_out: true }), loraTensors(loraSites, { fanInFanOut: true }));
    expect(loraOf(b)).toEqual(loraSites);
  });

  it('rank_pattern / alpha_pattern: keys match module-name suffixes as regexes, per-module rank and scale', async () => {
    const sites = only(loraSites, (s) => s.site === 'query' || s.site === 'value').map((s) =>
      s.site === 'value' ? { ...s, rank: 2, a: s.a.slice(0, 2 * H), b: new Float32Array(H * 2).fill(0.01) } : s,
    );
    const b = await load(
      loraConfig({
        target_modules: ['query', 'value'],
        rank_pattern: { value: 2 },
        alpha_pattern: { 'layer.1.attention.self.query': 16, 'encoder\\.layer\\.\\d\\.attention\\.self\\.value': 1 },
      }),
      loraTensors(sites),
    );
    expect(loraOf(b).map((s) => [s.layer, s.site, s.rank, s.scale])).toEqual([
      [0, 'query', 4, 2],
      [0, 'value', 2, 0.5],
      [1, 'query', 4, 4],
      [1, 'value', 2, 0.5],
    ]);
  });

  it('rank_pattern: the first key that matches wins, as in PEFT', async () => {
    const sites = only(loraSites, (s) => s.site === 'query').map((s) => ({ ...s, rank: 3, a: s.a.slice(0, 3 * H), b: new Float32Array(H * 3) }));
    const b = await load(
      loraConfig({ target_modules: ['query'], rank_pattern: { query: 3, 'layer.0.attention.self.query': 5 } }),
      loraTensors(sites),
    );
    expect(loraOf(b).map((s) => s.rank)).toEqual([3, 3]);
  });

  it('use_rslora: scale = alpha / √r', async () => {
    const b = await load(loraConfig({ use_rslora: true }), loraTensors(loraSites));
    expect(loraOf(b).every((s) => s.scale === 8 / Math.sqrt(4))).toBe(true);
  });

  it('target_modules as a regex string selects the modules it fully matches', async () => {
    const sites = only(loraSites, (s) => s.layer === 1 && (s.site === 'query' || s.site === 'value'));
    const b = await load(loraConfig({ target_modules: '.*encoder\\.layer\\.1\\.attention\\.self\\.(query|value)' }), loraTensors(sites));
    expect(loraOf(b)).toEqual(sites);
  });

  it('layers_to_transform (int or list) restricts list targets to those layers; exclude_modules removes modules', async () => {
    const layer1 = only(loraSites, (s) => s.layer === 1 && (s.site === 'query' || s.site === 'value'));
    for (const layers of [1, [1]]) {
      const b = await load(loraConfig({ target_modules: ['query', 'value'], layers_to_transform: layers }), loraTensors(layer1));
      expect(loraOf(b)).toEqual(layer1);
    }
    const noValue = only(loraSites, (s) => s.site !== 'value');
    const b = await load(loraConfig({ exclude_modules: ['value'] }), loraTensors(noValue));
    expect(loraOf(b)).toEqual(noValue);
  });

  it('missing target_modules takes PEFT\'s default for BERT (query, value)', async () => {
    const qv = only(loraSites, (s) => s.site === 'query' || s.site === 'value');
    const b = await load(loraConfig({ target_modules: null }), loraTensors(qv));
    expect(loraOf(b)).toEqual(qv);
  });

  it('reads the classifier in all three PEFT spellings and tolerates the adapter name in tensor names', async () => {
    for (const stem of ['classifier.', 'classifier.modules_to_save.', 'classifier.modules_to_save.default.']) {
      const b = await load(loraConfig(), loraTensors(loraSites, { headStem: stem, adapterInfix: '.default' }));
      expect(b.head?.weight).toEqual(head.weight);
      expect(b.head?.bias).toEqual(head.bias);
      expect(loraOf(b)).toEqual(loraSites);
    }
    const none = await load(loraConfig({ modules_to_save: null, task_type: 'FEATURE_EXTRACTION' }), loraTensors(loraSites, { headStem: null }));
    expect(none.head).toBeNull();
  });

  it('labels: id2label / label2id from adapter_config when given, else the base config when the sizes match, else LABEL_i', async () => {
    const named = await load(loraConfig({ id2label: { '0': 'neg', '1': 'pos' } }), loraTensors(loraSites));
    expect(named.head?.id2label).toEqual(['neg', 'pos']);
    const inverse = await load(loraConfig({ label2id: { pos: 1, neg: 0 } }), loraTensors(loraSites));
    expect(inverse.head?.id2label).toEqual(['neg', 'pos']);
    const three = loraTensors(loraSites, { headStem: null });
    three['base_model.model.classifier.weight'] = { shape: [3, H], data: new Float32Array(3 * H) };
    three['base_model.model.classifier.bias'] = { shape: [3], data: new Float32Array(3) };
    expect((await load(loraConfig(), three)).head?.id2label).toEqual(['LABEL_0', 'LABEL_1', 'LABEL_2']);
    expect(await refusal(loraConfig({ id2label: ['a', 'b', 'c'] }), loraTensors(loraSites))).toMatch(
      /id2label has 3 labels but the classifier has 2 rows/,
    );
  });

  it('loadPetDirectory detects a PEFT directory', async () => {
    const dir = await writePeftFixture(join(t.root, 'detect'), loraConfig(), loraTensors(loraSites));
    expect((await loadPetDirectory(dir, t.base)).format).toBe('peft');
  });
});

describe('PEFT IA³ directories', () => {
  it("loads PEFT's BERT defaults: key/value output scaling, 'output.dense' input scaling of both output denses", async () => {
    const b = await load(ia3Config(), ia3Tensors(ia3Sites));
    expect(b.pet).toEqual({ kind: 'ia3', sites: ia3Sites });
    expect(b.head?.id2label).toEqual(['LABEL_0', 'LABEL_1']);
  });

  it('feedforward_modules as a regex; modules outside it are output-scaled', async () => {
    const sites: Ia3Site[] = [
      { layer: 0, site: 'query', mode: 'output', scale: new Float32Array(H).fill(1.5) },
      { layer: 0, site: 'output', mode: 'input', scale: new Float32Array(I).fill(0.5) },
    ];
    const b = await load(
      ia3Config({ target_modules: '.*layer\\.0\\.(attention\\.self\\.query|output\\.dense)', feedforward_modules: '.*\\.0\\.output\\.dense' }),
      ia3Tensors(sites),
    );
    expect(b.pet).toEqual({ kind: 'ia3', sites });
  });

  it('refuses input scaling of query/key/value/intermediate, a feedforward list outside target_modules, and a wrong-mode shape', async () => {
    const inter: Ia3Site[] = [0, 1].map((layer) => ({ layer, site: 'intermediate', mode: 'input', scale: new Float32Array(H).fill(1) }));
    expect(
      await refusal(ia3Config({ target_modules: ['intermediate.dense'], feedforward_modules: ['intermediate.dense'] }), ia3Tensors(inter)),
    ).toMatch(/IA³ input scaling of 'bert\.encoder\.layer\.0\.intermediate\.dense' .* is not supported/);
    expect(await refusal(ia3Config({ feedforward_modules: ['intermediate.dense'] }), ia3Tensors(ia3Sites))).toMatch(
      /adapter_config\.json: feedforward_modules 'intermediate\.dense' are not in target_modules/,
    );
    // Output-scaling shapes where feedforward_modules asks for input scaling.
    const asOutput = ia3Sites.map((s) => ({ ...s, mode: 'output' as const, scale: new Float32Array(s.site === 'intermediate' ? I : H) }));
    expect(await refusal(ia3Config(), ia3Tensors(asOutput))).toMatch(
      /tensor 'base_model\.model\.bert\.encoder\.layer\.0\.attention\.output\.dense\.ia3_l' has shape \[128, 1\], expected \[1, 128\]/,
    );
  });
});

describe('PEFT refusals name what is not supported', () => {
  it('use_dora, bias, lora_bias, layer_replication, trainable_token_indices', async () => {
    const tensors = loraTensors(loraSites);
    expect(await refusal(loraConfig({ use_dora: true }), tensors)).toMatch(/use_dora: true \(DoRA\) is not supported/);
    expect(await refusal(loraConfig({ bias: 'lora_only' }), tensors)).toMatch(/bias "lora_only" is not supported/);
    expect(await refusal(loraConfig({ lora_bias: true }), tensors)).toMatch(/lora_bias: true is not supported/);
    expect(await refusal(loraConfig({ layer_replication: [[0, 2]] }), tensors)).toMatch(/layer_replication is not supported/);
    expect(await refusal(loraConfig({ trainable_token_indices: [5] }), tensors)).toMatch(/trainable_token_indices is not supported/);
  });

  it('other peft_types, by name', async () => {
    expect(await refusal({ peft_type: 'PREFIX_TUNING', num_virtual_tokens: 20 }, {})).toMatch(/peft_type "PREFIX_TUNING" is not supported/);
    expect(await refusal({ r: 8 }, {})).toMatch(/peft_type undefined is not supported/);
  });

  it('target modules that are not supported sites, or match nothing', async () => {
    expect(await refusal(loraConfig({ target_modules: ['query', 'dense'] }), loraTensors(loraSites))).toMatch(
      /select 'bert\.pooler\.dense', not a supported LORA site/,
    );
    expect(await refusal(loraConfig({ target_modules: ['query', 'word_embeddings'] }), loraTensors(loraSites))).toMatch(
      /select 'bert\.embeddings\.word_embeddings', not a supported LORA site/,
    );
    expect(await refusal(loraConfig({ target_modules: '.*attention.*' }), loraTensors(loraSites))).toMatch(
      /select 'bert\.encoder\.layer\.0\.attention', 'bert\.encoder\.layer\.0\.attention\.self'/,
    );
    expect(await refusal(loraConfig({ target_modules: ['q_proj', 'v_proj'] }), {})).toMatch(/match no module of the base model/);
    expect(await refusal(loraConfig({ target_modules: 'query|(' }), {})).toMatch(
      /adapter_config\.json: target_modules: "query\|\(" is not a valid regular expression/,
    );
  });

  it('tensors that are not understood, by name', async () => {
    const tensors = loraTensors(loraSites);
    tensors['base_model.model.bert.encoder.layer.0.attention.self.query.lora_magnitude_vector'] = { shape: [H], data: new Float32Array(H) };
    expect(await refusal(loraConfig(), tensors)).toMatch(
      /tensors not understood for a LORA adapter: 'base_model\.model\.bert\.encoder\.layer\.0\.attention\.self\.query\.lora_magnitude_vector'/,
    );
    const stray = loraTensors(loraSites);
    stray['bert.encoder.layer.0.attention.self.query.lora_A.weight'] = { shape: [4, H], data: new Float32Array(4 * H) };
    expect(await refusal(loraConfig(), stray)).toMatch(/not understood.*'bert\.encoder\.layer\.0\.attention\.self\.query\.lora_A\.weight'/);
  });

  it('a lora_A without its lora_B, and tensors for modules the config does not select or the base does not have', async () => {
    const tensors = loraTensors(loraSites);
    delete tensors['base_model.model.bert.encoder.layer.1.intermediate.dense.lora_B.weight'];
    expect(await refusal(loraConfig(), tensors)).toMatch(
      /missing tensor 'base_model\.model\.bert\.encoder\.layer\.1\.intermediate\.dense\.lora_B\.weight' for target module .*lora_A\.weight' is present/,
    );
    expect(await refusal(loraConfig({ target_modules: ['query', 'value'] }), loraTensors(loraSites))).toMatch(
      /tensor 'base_model\.model\.bert\.encoder\.layer\.0\.attention\.self\.key\.lora_A\.weight' is for module 'bert\.encoder\.layer\.0\.attention\.self\.key', which target_modules does not select/,
    );
    const deep = loraTensors(loraSites);
    deep['base_model.model.bert.encoder.layer.5.attention.self.query.lora_A.weight'] = { shape: [4, H], data: new Float32Array(4 * H) };
    expect(await refusal(loraConfig(), deep)).toMatch(
      /module 'bert\.encoder\.layer\.5\.attention\.self\.query', which the base model does not have \(2 layers\)/,
    );
  });

  it('a rank that disagrees with r / rank_pattern names the tensor and both shapes', async () => {
    expect(await refusal(loraConfig({ r: 8 }), loraTensors(loraSites))).toMatch(
      /tensor 'base_model\.model\.bert\.encoder\.layer\.0\.attention\.self\.query\.lora_A\.weight' has shape \[4, 128\], expected \[8, 128\] \(lora_A is \[r, in\], r = 8\)/,
    );
  });

  it('a NaN in a LoRA weight names the tensor and the index', async () => {
    const sites = loraSites.map((s) => ({ ...s, a: s.a.slice() }));
    sites[3]!.a[7] = Number.NaN;
    expect(await refusal(loraConfig(), loraTensors(sites))).toMatch(
      /tensor 'base_model\.model\.bert\.encoder\.layer\.0\.attention\.output\.dense\.lora_A\.weight' has a non-finite value \(NaN\) at index 7/,
    );
  });

  it('modules_to_save other than the classifier, a classifier saved twice or half, mixed prefixes', async () => {
    expect(await refusal(loraConfig({ modules_to_save: ['classifier', 'pooler'] }), loraTensors(loraSites))).toMatch(
      /modules_to_save entry 'pooler' \(module 'bert\.pooler'\) is not supported/,
    );
    const twice = { ...loraTensors(loraSites), ...headTensors('classifier.modules_to_save.') };
    expect(await refusal(loraConfig(), twice)).toMatch(/the classifier is saved twice/);
    const half = loraTensors(loraSites);
    delete half['base_model.model.classifier.bias'];
    expect(await refusal(loraConfig(), half)).toMatch(
      /classifier is incomplete: 'base_model\.model\.classifier\.weight' is present but 'base_model\.model\.classifier\.bias' is missing/,
    );
    const mixed = { ...loraTensors(loraSites.slice(0, 2)), ...loraTensors(loraSites.slice(2), { prefix: '' }) };
    expect(await refusal(loraConfig(), mixed)).toMatch(/mix names with and without the "bert\." prefix/);
  });

  it('a directory with adapter_model.bin only', async () => {
    const dir = await writePeftFixture(join(t.root, 'bin-only'), loraConfig(), {});
    await rm(join(dir, 'adapter_model.safetensors'));
    await writeFile(join(dir, 'adapter_model.bin'), 'pickle');
    const err = await rejection(() => loadPeftDirectory(dir, t.base));
    expect(err.message).toMatch(/adapter_model\.safetensors not found \(adapter_model\.bin is there: only safetensors is read/);
  });
});
