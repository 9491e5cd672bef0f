// Float64 reference of a task = base BERT + one PET + the task's own head, built by
// MERGING the PET into the base weights wherever the PET is mergeable (and, for
// bottleneck adapters, which are not, by the forward's adapters hook). It reads
// PET directories with its own parser (docs/pet-format.md), shares no code with
// src/, and is what the engine's unmerged, batched PET kernels are checked against.
//
// Merged-model equivalents (docs/pet-format.md, "Semantics"):
//   lora    W ← W + s·B·A, s = alpha/r (alpha/√r with rsLoRA)
//   adapter module inserted after attention.output.dense and output.dense
//   diff    W ← W + ΔW (flat index row·in + col), b ← b + Δb
//   mask    W[removed] ← 0
//   bitfit  biases / LayerNorm gains and biases replaced
//   ia3     output mode W ← diag(l)·W, b ← l⊙b; input mode W ← W·diag(l)
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadRefBert } from './bert-f64.js';
import type { RefAdapter, RefBert, RefBertConfig } from './bert-f64.js';
import { readSafetensorsF64Typed } from './safetensors-f64.js';
import type { RefTypedTensor } from './safetensors-f64.js';

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16']);
const INDEX_DTYPES = new Set(['I32', 'I64']);
/** Diff and mask PETs denser than this should be merged models (docs/pet-format.md, "Bounds"). */
const MAX_SPARSE_DENSITY = 0.5;

type Json = Record<string, unknown>;

interface Site {
  kind: 'linear' | 'layernorm';
  /** Rows of the weight (linear) or the LayerNorm width. */
  out: number;
  /** Columns of the weight (linear); equal to out for a LayerNorm. */
  in: number;
}

interface Head {
  weight: RefTypedTensor;
  bias: RefTypedTensor;
  id2label: string[] | null;
}

class PetReader {
  constructor(
    readonly source: string,
    readonly config: RefBertConfig,
  ) {}

  fail(message: string): never {
    throw new Error(`refPet ${this.source}: ${message}`);
  }

  /** Every site of the Sites table for this model, by module path (no 'bert.' prefix). */
  sites(): Map<string, Site> {
    const H = this.config.hiddenSize;
    const I = this.config.intermediateSize;
    const sites = new Map<string, Site>();
    const linear = (module: string, out: number, inDim: number): void => {
      sites.set(module, { kind: 'linear', out, in: inDim });
    };
    const layerNorm = (module: string): void => {
      sites.set(module, { kind: 'layernorm', out: H, in: H });
    };
    layerNorm('embeddings.LayerNorm');
    for (let i = 0; i < this.config.numHiddenLayers; i++) {
      const p = `encoder.layer.${i}.`;
      for (const proj of ['query', 'key', 'value']) linear(`${p}attention.self.${proj}`, H, H);
      linear(`${p}attention.output.dense`, H, H);
      layerNorm(`${p}attention.output.LayerNorm`);
      linear(`${p}intermediate.dense`, I, H);
      linear(`${p}output.dense`, H, I);
      layerNorm(`${p}output.LayerNorm`);
    }
    linear('pooler.dense', H, H);
    return sites;
  }

  site(module: string, kind: Site['kind'], what: string): Site {
    const site = this.sites().get(module);
    if (site === undefined || site.kind !== kind) {
      this.fail(
        `${what}: ${JSON.stringify(module)} is not a ${kind === 'linear' ? 'linear' : 'LayerNorm'} site of this model`,
      );
    }
    return site;
  }

  expectShape(name: string, tensor: RefTypedTensor, shape: number[]): void {
    if (JSON.stringify(tensor.shape) !== JSON.stringify(shape)) {
      this.fail(`${name} has shape ${JSON.stringify(tensor.shape)}, expected ${JSON.stringify(shape)}`);
    }
  }

  /** A float tensor (F32/F16/BF16) whose values are all finite. */
  floats(name: string, tensor: RefTypedTensor | undefined, shape?: number[]): RefTypedTensor {
    if (tensor === undefined) this.fail(`missing tensor ${name}`);
    if (!FLOAT_DTYPES.has(tensor.dtype))
      this.fail(`${name} has dtype ${tensor.dtype}; floats must be F32, F16 or BF16`);
    if (shape !== undefined) this.expectShape(name, tensor, shape);
    const bad = tensor.data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) this.fail(`${name} holds a non-finite value (${tensor.data[bad]}) at element ${bad}`);
    return tensor;
  }

  /** Flat indices into a [out, in] weight: I32/I64, 1-D, strictly increasing, in range, density ≤ 0.5. */
  indices(name: string, tensor: RefTypedTensor | undefined, site: Site): Float64Array {
    if (tensor === undefined) this.fail(`missing tensor ${name}`);
    if (!INDEX_DTYPES.has(tensor.dtype)) this.fail(`${name} has dtype ${tensor.dtype}; indices must be I32 or I64`);
    if (tensor.shape.length !== 1) this.fail(`${name} must be 1-D, got shape ${JSON.stringify(tensor.shape)}`);
    const size = site.out * site.in;
    const data = tensor.data;
    for (let k = 0; k < data.length; k++) {
      const index = data[k]!;
      if (!Number.isSafeInteger(index) || index < 0 || index >= size) {
        this.fail(`${name}[${k}] = ${index} is outside [0, ${size})`);
      }
      if (k > 0 && !(index > data[k - 1]!)) this.fail(`${name} is not strictly increasing at element ${k}`);
    }
    if (data.length > MAX_SPARSE_DENSITY * size) {
      this.fail(`${name} has ${data.length} of ${size} entries, above density ${MAX_SPARSE_DENSITY}`);
    }
    return data;
  }
}

// ---------------------------------------------------------------------------
// Merging into a RefBert. loadRefBert hands out fresh arrays, so these edit the
// model's tensors in place.

function weightOf(model: RefBert, name: string): Float64Array {
  const tensor = model.tensors.get(name);
  if (tensor === undefined) throw new Error(`refPet: base model lacks ${name}`);
  return tensor.data;
}

/**
 * W ← W + s·B·A with A [r, in], B [out, r]. `transposed` reads A as [in, r] and
 * B as [r, out] (fan_in_fan_out storage).
 */
function mergeLora(
  model: RefBert,
  module: string,
  site: Site,
  a: Float64Array,
  b: Float64Array,
  rank: number,
  scale: number,
  transposed: boolean,
): void {
  const w = weightOf(model, `${module}.weight`);
  const aAt = (k: number, i: number): number => (transposed ? a[i * rank + k]! : a[k * site.in + i]!);
  const bAt = (o: number, k: number): number => (transposed ? b[k * site.out + o]! : b[o * rank + k]!);
  for (let o = 0; o < site.out; o++) {
    for (let i = 0; i < site.in; i++) {
      let delta = 0;
      for (let k = 0; k < rank; k++) delta += bAt(o, k) * aAt(k, i);
      w[o * site.in + i] = w[o * site.in + i]! + scale * delta;
    }
  }
}

/** PEFT IA³ on a non-feedforward module: Y ← Y ⊙ l, i.e. W ← diag(l)·W, b ← l⊙b. */
function scaleOutput(model: RefBert, module: string, site: Site, l: Float64Array): void {
  const w = weightOf(model, `${module}.weight`);
  const bias = weightOf(model, `${module}.bias`);
  for (let o = 0; o < site.out; o++) {
    for (let i = 0; i < site.in; i++) w[o * site.in + i] = w[o * site.in + i]! * l[o]!;
    bias[o] = bias[o]! * l[o]!;
  }
}

/** PEFT IA³ on a feedforward module: X ← X ⊙ l, i.e. W ← W·diag(l) (bias untouched). */
function scaleInput(model: RefBert, module: string, site: Site, l: Float64Array): void {
  const w = weightOf(model, `${module}.weight`);
  for (let o = 0; o < site.out; o++) {
    for (let i = 0; i < site.in; i++) w[o * site.in + i] = w[o * site.in + i]! * l[i]!;
  }
}

function applyHead(model: RefBert, head: Head | null): void {
  model.tensors.delete('classifier.weight');
  model.tensors.delete('classifier.bias');
  delete model.id2label;
  if (head === null) {
    // A task without its own head is an embedding task, whatever the base carried.
    model.numLabels = 0;
    return;
  }
  const rows = head.weight.shape[0]!;
  model.tensors.set('classifier.weight', { shape: [...head.weight.shape], data: head.weight.data });
  model.tensors.set('classifier.bias', { shape: [...head.bias.shape], data: head.bias.data });
  model.numLabels = rows;
  model.id2label = head.id2label ?? Array.from({ length: rows }, (_, i) => `LABEL_${i}`);
}

function checkHead(
  reader: PetReader,
  weight: RefTypedTensor | undefined,
  bias: RefTypedTensor | undefined,
  names: [string, string],
): Head | null {
  if (weight === undefined && bias === undefined) return null;
  const w = reader.floats(names[0], weight);
  const rows = w.shape[0];
  if (w.shape.length !== 2 || rows === undefined || rows < 1)
    reader.fail(`${names[0]} has shape ${JSON.stringify(w.shape)}`);
  reader.expectShape(names[0], w, [rows, reader.config.hiddenSize]);
  const b = reader.floats(names[1], bias, [rows]);
  return { weight: w, bias: b, id2label: null };
}

// ---------------------------------------------------------------------------
// JSON helpers

function readJson(reader: PetReader, path: string): Json {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf-8'));
  } catch (error) {
    reader.fail(`cannot read ${path}: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    reader.fail(`${path} is not a JSON object`);
  return parsed as Json;
}

function onlyKeys(reader: PetReader, obj: Json, allowed: string[], where: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) reader.fail(`${where}: unknown key ${JSON.stringify(key)}`);
  }
}

function sectionOf(reader: PetReader, obj: Json, key: string, required: boolean): Json | null {
  const value = obj[key];
  if (value === undefined || (value === null && !required)) {
    if (required) reader.fail(`pet.json lacks the ${JSON.stringify(key)} section`);
    return null;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    reader.fail(`pet.json ${key} must be an object`);
  return value as Json;
}

function finiteNumber(reader: PetReader, value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value))
    reader.fail(`${what} must be a finite number, got ${JSON.stringify(value)}`);
  return value;
}

function numberMap(reader: PetReader, value: unknown, what: string): Map<string, number> {
  const map = new Map<string, number>();
  if (value === undefined || value === null) return map;
  if (typeof value !== 'object' || Array.isArray(value)) reader.fail(`${what} must be an object`);
  for (const [key, v] of Object.entries(value as Json))
    map.set(key, finiteNumber(reader, v, `${what}[${JSON.stringify(key)}]`));
  return map;
}

function stringList(reader: PetReader, value: unknown, what: string): string[] {
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string'))
    reader.fail(`${what} must be a list of strings`);
  return value as string[];
}

/** Python re.fullmatch(pattern, text), for the regex subset that JS shares. */
function fullMatch(reader: PetReader, pattern: string, text: string): boolean {
  let regex: RegExp;
  try {
    regex = new RegExp(`^(?:${pattern})$`);
  } catch {
    reader.fail(`regex ${JSON.stringify(pattern)} is not understood`);
  }
  return regex.test(text);
}

/**
 * PEFT's get_pattern_key: an exact key wins, else the first pattern key K (in file
 * order) with re.match(r"(.*\.)?(K)$", moduleKey).
 */
function patternValue(reader: PetReader, pattern: Map<string, number>, moduleKey: string): number | undefined {
  const exact = pattern.get(moduleKey);
  if (exact !== undefined) return exact;
  for (const [key, value] of pattern) {
    let regex: RegExp;
    try {
      regex = new RegExp(`^(?:.*\\.)?(?:${key})$`);
    } catch {
      reader.fail(`pattern key ${JSON.stringify(key)} is not a regex this reference understands`);
    }
    if (regex.test(moduleKey)) return value;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// PetServe bundles: pet.json + pet.safetensors

const BASE_MODEL_KEYS: Record<string, keyof RefBertConfig> = {
  hidden_size: 'hiddenSize',
  num_hidden_layers: 'numHiddenLayers',
  intermediate_size: 'intermediateSize',
  num_attention_heads: 'numAttentionHeads',
  vocab_size: 'vocabSize',
  max_position_embeddings: 'maxPositionEmbeddings',
  type_vocab_size: 'typeVocabSize',
};

const BUNDLE_KINDS = ['lora', 'adapter', 'diff', 'mask', 'bitfit', 'ia3'] as const;
type BundleKind = (typeof BUNDLE_KINDS)[number];
const KIND_SECTIONS: Record<BundleKind, { key: string; required: boolean } | null> = {
  lora: { key: 'lora', required: true },
  adapter: { key: 'adapter', required: true },
  ia3: { key: 'ia3', required: false },
  diff: null,
  mask: null,
  bitfit: null,
};

/** Consumes tensor names as each kind's merge understands them; whatever is left is refused. */
class TensorSet {
  private readonly left: Set<string>;
  constructor(
    readonly reader: PetReader,
    readonly tensors: Map<string, RefTypedTensor>,
  ) {
    this.left = new Set(tensors.keys());
  }

  take(name: string): RefTypedTensor | undefined {
    this.left.delete(name);
    return this.tensors.get(name);
  }

  /** Module paths of the remaining names that end with `suffix`. */
  modulesWithSuffix(suffix: string): string[] {
    return [...this.left].filter((n) => n.endsWith(suffix)).map((n) => n.slice(0, -suffix.length));
  }

  remaining(): string[] {
    return [...this.left];
  }

  refuseLeftovers(kind: string): void {
    const left = this.remaining();
    if (left.length > 0) this.reader.fail(`tensor ${JSON.stringify(left[0])} is not understood for kind ${kind}`);
  }
}

function mergeBundleLora(model: RefBert, set: TensorSet, section: Json): void {
  const reader: PetReader = set.reader;
  onlyKeys(reader, section, ['alpha', 'use_rslora', 'alpha_pattern'], 'pet.json lora');
  const alpha = finiteNumber(reader, section['alpha'], 'pet.json lora.alpha');
  const rsLora = section['use_rslora'] ?? false;
  if (typeof rsLora !== 'boolean') reader.fail('pet.json lora.use_rslora must be a boolean');
  const alphaPattern = numberMap(reader, section['alpha_pattern'], 'pet.json lora.alpha_pattern');
  for (const module of set.modulesWithSuffix('.lora_A.weight')) {
    const site = reader.site(module, 'linear', 'lora');
    const aName = `${module}.lora_A.weight`;
    const bName = `${module}.lora_B.weight`;
    const a = reader.floats(aName, set.take(aName));
    const rank = a.shape[0]!;
    if (a.shape.length !== 2 || rank < 1 || rank > Math.min(site.in, site.out)) {
      reader.fail(`${aName} has shape ${JSON.stringify(a.shape)}; rank must be 1..${Math.min(site.in, site.out)}`);
    }
    reader.expectShape(aName, a, [rank, site.in]);
    const b = reader.floats(bName, set.take(bName), [site.out, rank]);
    const moduleAlpha = patternValue(reader, alphaPattern, module) ?? alpha;
    const scale = rsLora ? moduleAlpha / Math.sqrt(rank) : moduleAlpha / rank;
    mergeLora(model, module, site, a.data, b.data, rank, scale, false);
  }
}

function adapterFromTensors(
  set: TensorSet,
  prefix: string,
  bottleneck: number,
  activation: RefAdapter['activation'],
): RefAdapter {
  const reader: PetReader = set.reader;
  const H = reader.config.hiddenSize;
  const get = (suffix: string, shape: number[]): Float64Array =>
    reader.floats(`${prefix}${suffix}`, set.take(`${prefix}${suffix}`), shape).data;
  return {
    bottleneck,
    activation,
    downWeight: get('down.weight', [bottleneck, H]),
    downBias: get('down.bias', [bottleneck]),
    upWeight: get('up.weight', [H, bottleneck]),
    upBias: get('up.bias', [H]),
  };
}

function mergeBundleAdapter(model: RefBert, set: TensorSet, section: Json): void {
  const reader: PetReader = set.reader;
  onlyKeys(reader, section, ['bottleneck', 'activation'], 'pet.json adapter');
  const bottleneck = section['bottleneck'];
  const H = reader.config.hiddenSize;
  if (typeof bottleneck !== 'number' || !Number.isInteger(bottleneck) || bottleneck < 1 || bottleneck > H) {
    reader.fail(`pet.json adapter.bottleneck must be an integer in 1..${H}, got ${JSON.stringify(bottleneck)}`);
  }
  const activation = section['activation'];
  if (activation !== 'relu' && activation !== 'gelu') {
    reader.fail(`pet.json adapter.activation must be "relu" or "gelu", got ${JSON.stringify(activation)}`);
  }
  const adapters = new Map<string, RefAdapter>();
  for (let i = 0; i < reader.config.numHiddenLayers; i++) {
    for (const module of [`encoder.layer.${i}.attention.output`, `encoder.layer.${i}.output`]) {
      adapters.set(module, adapterFromTensors(set, `${module}.adapter.`, bottleneck, activation));
    }
  }
  model.adapters = adapters;
}

function mergeBundleDiff(model: RefBert, set: TensorSet): void {
  const reader: PetReader = set.reader;
  const modules = new Set([
    ...set.modulesWithSuffix('.weight.diff_indices'),
    ...set.modulesWithSuffix('.weight.diff_values'),
    ...set.modulesWithSuffix('.bias.diff'),
  ]);
  for (const module of modules) {
    const site = reader.site(module, 'linear', 'diff');
    const indicesName = `${module}.weight.diff_indices`;
    const valuesName = `${module}.weight.diff_values`;
    const indicesTensor = set.take(indicesName);
    const valuesTensor = set.take(valuesName);
    if (indicesTensor !== undefined || valuesTensor !== undefined) {
      const indices = reader.indices(indicesName, indicesTensor, site);
      const values = reader.floats(valuesName, valuesTensor, [indices.length]).data;
      const w = weightOf(model, `${module}.weight`);
      indices.forEach((index, k) => (w[index] = w[index]! + values[k]!));
    }
    const biasName = `${module}.bias.diff`;
    const biasTensor = set.take(biasName);
    if (biasTensor !== undefined) {
      const delta = reader.floats(biasName, biasTensor, [site.out]).data;
      const bias = weightOf(model, `${module}.bias`);
      delta.forEach((d, o) => (bias[o] = bias[o]! + d));
    }
  }
}

function mergeBundleMask(model: RefBert, set: TensorSet): void {
  const reader: PetReader = set.reader;
  for (const module of set.modulesWithSuffix('.weight.mask_removed')) {
    const site = reader.site(module, 'linear', 'mask');
    const name = `${module}.weight.mask_removed`;
    const removed = reader.indices(name, set.take(name), site);
    const w = weightOf(model, `${module}.weight`);
    removed.forEach((index) => (w[index] = 0));
  }
}

function mergeBundleBitfit(model: RefBert, set: TensorSet): void {
  const reader: PetReader = set.reader;
  const sites = reader.sites();
  for (const name of set.remaining()) {
    const dot = name.lastIndexOf('.');
    const module = name.slice(0, dot);
    const param = name.slice(dot + 1);
    const site = sites.get(module);
    const understood = site !== undefined && (param === 'bias' || (param === 'weight' && site.kind === 'layernorm'));
    if (!understood) continue; // left over, refused below
    const values = reader.floats(name, set.take(name), [site.out]).data;
    model.tensors.set(name, { shape: [site.out], data: Float64Array.from(values) });
  }
}

function mergeBundleIa3(model: RefBert, set: TensorSet, section: Json | null): void {
  const reader: PetReader = set.reader;
  const feedforward = new Set<string>();
  if (section !== null) {
    onlyKeys(reader, section, ['feedforward_modules'], 'pet.json ia3');
    for (const module of stringList(reader, section['feedforward_modules'] ?? [], 'pet.json ia3.feedforward_modules')) {
      reader.site(module, 'linear', 'ia3.feedforward_modules');
      feedforward.add(module);
    }
  }
  for (const module of set.modulesWithSuffix('.ia3_l')) {
    const site = reader.site(module, 'linear', 'ia3');
    const name = `${module}.ia3_l`;
    const isInput = feedforward.has(module);
    const l = reader.floats(name, set.take(name), isInput ? [1, site.in] : [site.out, 1]).data;
    if (isInput) scaleInput(model, module, site, l);
    else scaleOutput(model, module, site, l);
  }
}

function checkBaseModel(reader: PetReader, section: Json | null): void {
  if (section === null) return;
  for (const [key, value] of Object.entries(section)) {
    const field = BASE_MODEL_KEYS[key];
    if (field === undefined) reader.fail(`pet.json base_model: unknown key ${JSON.stringify(key)}`);
    if (value !== reader.config[field]) {
      reader.fail(
        `pet.json base_model.${key} = ${JSON.stringify(value)} but the base model has ${reader.config[field]}`,
      );
    }
  }
}

function mergeBundle(model: RefBert, petDir: string): void {
  const reader: PetReader = new PetReader(petDir, model.config);
  const manifest = readJson(reader, join(petDir, 'pet.json'));
  if (manifest['format'] !== 'petserve-pet')
    reader.fail(`pet.json format ${JSON.stringify(manifest['format'])} is not "petserve-pet"`);
  if (manifest['version'] !== 1) reader.fail(`pet.json version ${JSON.stringify(manifest['version'])} is not 1`);
  const kind = manifest['kind'];
  if (!BUNDLE_KINDS.includes(kind as BundleKind))
    reader.fail(`pet.json kind ${JSON.stringify(kind)} is not understood`);
  const bundleKind = kind as BundleKind;
  const kindSection = KIND_SECTIONS[bundleKind];
  onlyKeys(
    reader,
    manifest,
    ['format', 'version', 'kind', 'base_model', 'head', ...(kindSection ? [kindSection.key] : [])],
    'pet.json',
  );
  checkBaseModel(reader, sectionOf(reader, manifest, 'base_model', false));
  const section = kindSection === null ? null : sectionOf(reader, manifest, kindSection.key, kindSection.required);

  const set = new TensorSet(reader, readSafetensorsF64Typed(join(petDir, 'pet.safetensors')));
  const head = checkHead(reader, set.take('classifier.weight'), set.take('classifier.bias'), [
    'classifier.weight',
    'classifier.bias',
  ]);
  const headSection = sectionOf(reader, manifest, 'head', false);
  if (headSection !== null) {
    onlyKeys(reader, headSection, ['id2label'], 'pet.json head');
    if (headSection['id2label'] !== undefined) {
      const id2label = stringList(reader, headSection['id2label'], 'pet.json head.id2label');
      if (head === null) reader.fail('pet.json head.id2label is given but pet.safetensors has no classifier');
      if (id2label.length !== head.weight.shape[0]) {
        reader.fail(
          `pet.json head.id2label has ${id2label.length} labels but the classifier has ${head.weight.shape[0]} rows`,
        );
      }
      head.id2label = id2label;
    }
  }

  switch (bundleKind) {
    case 'lora':
      mergeBundleLora(model, set, section!);
      break;
    case 'adapter':
      mergeBundleAdapter(model, set, section!);
      break;
    case 'diff':
      mergeBundleDiff(model, set);
      break;
    case 'mask':
      mergeBundleMask(model, set);
      break;
    case 'bitfit':
      mergeBundleBitfit(model, set);
      break;
    case 'ia3':
      mergeBundleIa3(model, set, section);
      break;
  }
  set.refuseLeftovers(bundleKind);
  applyHead(model, head);
}

// ---------------------------------------------------------------------------
// Hugging Face PEFT directories: adapter_config.json + adapter_model.safetensors

/** Every module name of BertModel (prefix '') or BertForSequenceClassification (prefix 'bert.'), as named_modules() lists them. */
function namedModules(config: RefBertConfig, prefix: string): string[] {
  const names: string[] = [];
  const add = (...list: string[]): void => {
    names.push(...list.map((n) => `${prefix}${n}`));
  };
  if (prefix !== '') names.push(prefix.slice(0, -1), 'dropout', 'classifier');
  add('embeddings', 'embeddings.word_embeddings', 'embeddings.position_embeddings', 'embeddings.token_type_embeddings');
  add('embeddings.LayerNorm', 'embeddings.dropout', 'encoder', 'encoder.layer');
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const p = `encoder.layer.${i}`;
    add(p, `${p}.attention`, `${p}.attention.self`, `${p}.attention.self.query`, `${p}.attention.self.key`);
    add(`${p}.attention.self.value`, `${p}.attention.self.dropout`, `${p}.attention.output`);
    add(`${p}.attention.output.dense`, `${p}.attention.output.LayerNorm`, `${p}.attention.output.dropout`);
    add(`${p}.intermediate`, `${p}.intermediate.dense`, `${p}.intermediate.intermediate_act_fn`);
    add(`${p}.output`, `${p}.output.dense`, `${p}.output.LayerNorm`, `${p}.output.dropout`);
  }
  add('pooler', 'pooler.dense', 'pooler.activation');
  return names;
}

/** The linear layer names PEFT's "all-linear" expands to for BERT (the classifier, the output layer, excluded). */
const ALL_LINEAR_BERT = ['query', 'key', 'value', 'dense'];

interface PeftTargeting {
  targetModules: string | string[];
  excludeModules: string | string[] | null;
  layersToTransform: number[] | null;
  layersPattern: string[] | null;
  modulesToSave: string[];
}

/** PEFT check_target_module_exists, including exclude_modules and layers_to_transform. */
function isTargeted(reader: PetReader, t: PeftTargeting, key: string): boolean {
  if (t.modulesToSave.some((m) => key.endsWith(m))) return false; // wrapped as modules_to_save, never tuned
  if (t.excludeModules !== null) {
    if (typeof t.excludeModules === 'string') {
      if (fullMatch(reader, t.excludeModules, key)) return false;
    } else if (t.excludeModules.some((e) => key === e || key.endsWith(`.${e}`))) {
      return false;
    }
  }
  if (typeof t.targetModules === 'string') return fullMatch(reader, t.targetModules, key);
  if (t.targetModules.includes(key)) return true;
  if (!t.targetModules.some((target) => key.endsWith(`.${target}`))) return false;
  if (t.layersToTransform === null) return true;
  const patterns = t.layersPattern === null ? [null] : t.layersPattern;
  let layer: number | null = null;
  for (const pattern of patterns) {
    const regex = pattern === null ? /^.*\.[^.]*\.(\d+)\./ : new RegExp(`^.*\\.(?:${pattern})\\.(\\d+)\\.`);
    const match = regex.exec(key);
    if (match !== null) {
      layer = Number(match[1]);
      break;
    }
  }
  return layer !== null && t.layersToTransform.includes(layer);
}

function optionalStringOrList(reader: PetReader, value: unknown, what: string): string | string[] | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  return stringList(reader, value, what);
}

function readTargeting(reader: PetReader, cfg: Json): PeftTargeting {
  const targets = optionalStringOrList(reader, cfg['target_modules'], 'adapter_config.json target_modules');
  if (targets === null) reader.fail('adapter_config.json has no target_modules');
  const layersRaw = cfg['layers_to_transform'];
  let layersToTransform: number[] | null = null;
  if (typeof layersRaw === 'number') layersToTransform = [layersRaw];
  else if (Array.isArray(layersRaw) && layersRaw.length > 0) {
    if (!layersRaw.every((v) => Number.isInteger(v)))
      reader.fail('adapter_config.json layers_to_transform must be integers');
    layersToTransform = layersRaw as number[];
  } else if (layersRaw !== undefined && layersRaw !== null && !Array.isArray(layersRaw)) {
    reader.fail('adapter_config.json layers_to_transform must be an integer or a list');
  }
  const patternRaw = optionalStringOrList(reader, cfg['layers_pattern'], 'adapter_config.json layers_pattern');
  const layersPattern =
    patternRaw === null
      ? null
      : typeof patternRaw === 'string'
        ? [patternRaw]
        : patternRaw.length > 0
          ? patternRaw
          : null;
  const modulesToSave =
    cfg['modules_to_save'] === undefined || cfg['modules_to_save'] === null
      ? []
      : stringList(reader, cfg['modules_to_save'], 'adapter_config.json modules_to_save');
  return {
    targetModules: targets === 'all-linear' ? ALL_LINEAR_BERT : targets,
    excludeModules: optionalStringOrList(reader, cfg['exclude_modules'], 'adapter_config.json exclude_modules'),
    layersToTransform,
    layersPattern,
    modulesToSave,
  };
}

interface PeftTensors {
  /** Module path without 'bert.' → its tensors by role ('lora_A', 'lora_B', 'ia3_l'). */
  modules: Map<string, Map<string, { name: string; tensor: RefTypedTensor }>>;
  /** 'bert.' when the base was BertForSequenceClassification, else ''. */
  prefix: string;
  head: Head | null;
}

const PEFT_SITE_TENSOR =
  /^base_model\.model\.(.+)\.(lora_A|lora_B)(?:\.default)?\.weight$|^base_model\.model\.(.+)\.(ia3_l)(?:\.default)?$/;
const PEFT_HEAD_TENSOR = /^base_model\.model\.classifier(?:\.modules_to_save)?(?:\.default)?\.(weight|bias)$/;

function sortPeftTensors(reader: PetReader, tensors: Map<string, RefTypedTensor>): PeftTensors {
  const modules: PeftTensors['modules'] = new Map();
  const headParts = new Map<string, { name: string; tensor: RefTypedTensor }>();
  const prefixes = new Set<string>();
  for (const [name, tensor] of tensors) {
    const head = PEFT_HEAD_TENSOR.exec(name);
    if (head !== null) {
      const part = head[1]!;
      const earlier = headParts.get(part);
      if (earlier !== undefined) reader.fail(`classifier ${part} given twice: ${earlier.name} and ${name}`);
      headParts.set(part, { name, tensor });
      continue;
    }
    const site = PEFT_SITE_TENSOR.exec(name);
    if (site === null) reader.fail(`tensor ${JSON.stringify(name)} is not understood`);
    let module = site[1] ?? site[3]!;
    const role = site[2] ?? site[4]!;
    const prefix = module.startsWith('bert.') ? 'bert.' : '';
    prefixes.add(prefix);
    module = module.slice(prefix.length);
    const roles = modules.get(module) ?? new Map<string, { name: string; tensor: RefTypedTensor }>();
    if (roles.has(role)) reader.fail(`${module} has two ${role} tensors`);
    roles.set(role, { name, tensor });
    modules.set(module, roles);
  }
  if (prefixes.size > 1) reader.fail("tensor names mix 'base_model.model.bert.' and 'base_model.model.' module paths");
  const weight = headParts.get('weight');
  const bias = headParts.get('bias');
  const head = checkHead(reader, weight?.tensor, bias?.tensor, [
    weight?.name ?? 'base_model.model.classifier.weight',
    bias?.name ?? 'base_model.model.classifier.bias',
  ]);
  // A classifier means the base was BertForSequenceClassification, whose modules sit under 'bert.'.
  const prefix = prefixes.size === 1 ? [...prefixes][0]! : head !== null ? 'bert.' : '';
  return { modules, prefix, head };
}

function checkNoFeatures(reader: PetReader, cfg: Json, keys: Record<string, (v: unknown) => boolean>): void {
  for (const [key, isOff] of Object.entries(keys)) {
    if (cfg[key] !== undefined && !isOff(cfg[key])) {
      reader.fail(`adapter_config.json ${key} = ${JSON.stringify(cfg[key])} is not supported`);
    }
  }
}

const isNullish = (v: unknown): boolean => v === null || v === undefined;
const isFalse = (v: unknown): boolean => v === false || v === null;
const isEmpty = (v: unknown): boolean => v === null || (Array.isArray(v) && v.length === 0);

function mergePeft(model: RefBert, petDir: string): void {
  const reader: PetReader = new PetReader(petDir, model.config);
  const cfg = readJson(reader, join(petDir, 'adapter_config.json'));
  const peftType = cfg['peft_type'];
  if (peftType !== 'LORA' && peftType !== 'IA3')
    reader.fail(`peft_type ${JSON.stringify(peftType)} is not supported (LORA and IA3 are)`);
  const peft = sortPeftTensors(reader, readSafetensorsF64Typed(join(petDir, 'adapter_model.safetensors')));
  const targeting = readTargeting(reader, cfg);
  const sites = reader.sites();
  const targeted: { key: string; module: string; site: Site }[] = [];
  for (const key of namedModules(model.config, peft.prefix)) {
    if (!isTargeted(reader, targeting, key)) continue;
    const module = key.slice(peft.prefix.length);
    const site = sites.get(module);
    if (site === undefined || site.kind !== 'linear')
      reader.fail(`target module ${JSON.stringify(key)} is outside the Sites table`);
    targeted.push({ key, module, site });
  }
  for (const module of peft.modules.keys()) {
    if (!targeted.some((t) => t.module === module)) {
      reader.fail(`tensors for ${JSON.stringify(module)}, which target_modules does not select`);
    }
  }
  const fanInFanOut = cfg['fan_in_fan_out'] ?? false;
  if (typeof fanInFanOut !== 'boolean') reader.fail('adapter_config.json fan_in_fan_out must be a boolean');

  if (peftType === 'LORA') {
    checkNoFeatures(reader, cfg, {
      use_dora: isFalse,
      bias: (v) => v === 'none',
      lora_bias: isFalse,
      use_qalora: isFalse,
      layer_replication: isEmpty,
      target_parameters: isEmpty,
      trainable_token_indices: isNullish,
      alora_invocation_tokens: isNullish,
    });
    const defaultRank = cfg['r'] ?? 8;
    const defaultAlpha = finiteNumber(reader, cfg['lora_alpha'] ?? 8, 'adapter_config.json lora_alpha');
    const rsLora = cfg['use_rslora'] ?? false;
    if (typeof rsLora !== 'boolean') reader.fail('adapter_config.json use_rslora must be a boolean');
    const rankPattern = numberMap(reader, cfg['rank_pattern'], 'adapter_config.json rank_pattern');
    const alphaPattern = numberMap(reader, cfg['alpha_pattern'], 'adapter_config.json alpha_pattern');
    for (const { key, module, site } of targeted) {
      const roles = peft.modules.get(module);
      const a = roles?.get('lora_A');
      const b = roles?.get('lora_B');
      if (a === undefined || b === undefined) reader.fail(`target module ${key} lacks its lora_A/lora_B tensors`);
      if (roles!.size !== 2) reader.fail(`${module} carries tensors of another PEFT kind`);
      const rank = patternValue(reader, rankPattern, key) ?? defaultRank;
      if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 1 || rank > Math.min(site.in, site.out)) {
        reader.fail(`${key}: rank ${JSON.stringify(rank)} must be an integer in 1..${Math.min(site.in, site.out)}`);
      }
      const alpha = patternValue(reader, alphaPattern, key) ?? defaultAlpha;
      const aTensor = reader.floats(a.name, a.tensor);
      const bTensor = reader.floats(b.name, b.tensor);
      const standard = sameShape(aTensor, [rank, site.in]) && sameShape(bTensor, [site.out, rank]);
      // PEFT resets fan_in_fan_out to False on torch.nn.Linear, so standard shapes read as
      // stored; the transposed layout the flag names is accepted only when the shapes say so.
      const transposed =
        !standard && fanInFanOut && sameShape(aTensor, [site.in, rank]) && sameShape(bTensor, [rank, site.out]);
      if (!standard && !transposed) {
        reader.fail(
          `${key}: lora_A ${JSON.stringify(aTensor.shape)} / lora_B ${JSON.stringify(bTensor.shape)} do not fit rank ${rank} ` +
            `of a [${site.out}, ${site.in}] weight`,
        );
      }
      const scale = rsLora ? alpha / Math.sqrt(rank) : alpha / rank;
      mergeLora(model, module, site, aTensor.data, bTensor.data, rank, scale, transposed);
    }
  } else {
    const feedforwardRaw = optionalStringOrList(
      reader,
      cfg['feedforward_modules'],
      'adapter_config.json feedforward_modules',
    );
    if (feedforwardRaw === null) reader.fail('adapter_config.json has no feedforward_modules');
    const targets = targeting.targetModules;
    if (Array.isArray(feedforwardRaw) && Array.isArray(targets) && !feedforwardRaw.every((f) => targets.includes(f))) {
      reader.fail('adapter_config.json feedforward_modules must be a subset of target_modules');
    }
    for (const { key, module, site } of targeted) {
      const l = peft.modules.get(module)?.get('ia3_l');
      if (l === undefined) reader.fail(`target module ${key} lacks its ia3_l tensor`);
      if (peft.modules.get(module)!.size !== 1) reader.fail(`${module} carries tensors of another PEFT kind`);
      // PEFT _check_target_module_feedforward: a plain endswith (no '.' boundary) for a list.
      const feedforward =
        typeof feedforwardRaw === 'string'
          ? fullMatch(reader, feedforwardRaw, key)
          : feedforwardRaw.some((f) => key.endsWith(f));
      const values = reader.floats(l.name, l.tensor, feedforward ? [1, site.in] : [site.out, 1]).data;
      if (feedforward) scaleInput(model, module, site, values);
      else scaleOutput(model, module, site, values);
    }
  }
  applyHead(model, peft.head);
}

function sameShape(tensor: RefTypedTensor, shape: number[]): boolean {
  return JSON.stringify(tensor.shape) === JSON.stringify(shape);
}

/**
 * Loads the base model from baseDir (config.json + model.safetensors) and merges
 * the PET in petDir into it, in float64: a PetServe bundle (pet.json +
 * pet.safetensors) or a Hugging Face PEFT directory (adapter_config.json +
 * adapter_model.safetensors). The result carries the task's head: the PET's
 * classifier if it has one, else none at all (an embedding task, logits null),
 * even when the base checkpoint had a classifier. Adapter PETs come back as
 * model.adapters, which refBertForward applies.
 */
export function loadRefTask(baseDir: string, petDir: string): RefBert {
  const model = loadRefBert(baseDir);
  const isBundle = existsSync(join(petDir, 'pet.json'));
  const isPeft = existsSync(join(petDir, 'adapter_config.json'));
  if (isBundle && isPeft) throw new Error(`refPet ${petDir}: holds both pet.json and adapter_config.json`);
  if (isBundle) mergeBundle(model, petDir);
  else if (isPeft) mergePeft(model, petDir);
  else throw new Error(`refPet ${petDir}: neither pet.json nor adapter_config.json found`);
  return model;
}
