// Pieces shared by the PET importers and writers: where each site sits in the
// base model, the canonical (bundle) tensor names, a safetensors reader that
// checks dtype, shape and finiteness with the stored name in every message,
// and label resolution for task heads.

import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { BertConfig } from '../../model/bert-config.js';
import type { BertCheckpoint, LayerNormWeights, LinearWeights } from '../../model/checkpoint.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../model/safetensors.js';
import { PetFormatError, PetServeError } from '../../util/errors.js';
import { LINEAR_SITES, siteModule } from '../types.js';
import type { LayerNormSite, LinearSite, TaskHead } from '../types.js';

export const LAYER_NORM_SITES: readonly LayerNormSite[] = ['attention_layernorm', 'output_layernorm'];
export const EMBEDDINGS_LAYER_NORM_MODULE = 'embeddings.LayerNorm';
export const POOLER_MODULE = 'pooler.dense';
export const CLASSIFIER_WEIGHT = 'classifier.weight';
export const CLASSIFIER_BIAS = 'classifier.bias';

/** torch.nn.Linear layout of a site: weight [outDim, inDim]. */
export interface SiteDims {
  outDim: number;
  inDim: number;
}

export function linearSiteDims(config: BertConfig, site: LinearSite): SiteDims {
  switch (site) {
    case 'intermediate':
      return { outDim: config.intermediateSize, inDim: config.hiddenSize };
    case 'output':
      return { outDim: config.hiddenSize, inDim: config.intermediateSize };
    default:
      return { outDim: config.hiddenSize, inDim: config.hiddenSize };
  }
}

/** Position of a site in LINEAR_SITES, for a stable (layer, site) order. */
export function compareSites(a: { layer: number; site: string }, b: { layer: number; site: string }): number {
  const order = (s: string): number => {
    const i = (LINEAR_SITES as readonly string[]).indexOf(s);
    return i >= 0 ? i : LINEAR_SITES.length + (LAYER_NORM_SITES as readonly string[]).indexOf(s);
  };
  return a.layer - b.layer || order(a.site) - order(b.site);
}

export interface LinearSiteRef {
  layer: number;
  site: LinearSite;
  /** Module path without `bert.`, e.g. encoder.layer.0.attention.self.query */
  module: string;
}

/** Every linear site of the base, in (layer, LINEAR_SITES) order. */
export function allLinearSites(config: BertConfig): LinearSiteRef[] {
  const sites: LinearSiteRef[] = [];
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    for (const site of LINEAR_SITES) sites.push({ layer, site, module: siteModule(layer, site) });
  }
  return sites;
}

export function baseLinear(base: BertCheckpoint, layer: number, site: LinearSite): LinearWeights {
  const w = base.weights.layers[layer]!;
  switch (site) {
    case 'query':
      return w.query;
    case 'key':
      return w.key;
    case 'value':
      return w.value;
    case 'attention_output':
      return w.attentionOutput;
    case 'intermediate':
      return w.intermediate;
    case 'output':
      return w.output;
  }
}

export function baseLayerNorm(base: BertCheckpoint, layer: number, site: LayerNormSite): LayerNormWeights {
  const w = base.weights.layers[layer]!;
  return site === 'attention_layernorm' ? w.attentionLayerNorm : w.outputLayerNorm;
}

// ------------------------------------------------------------------ bundle tensor names

export const bundleNames = {
  loraA: (module: string): string => `${module}.lora_A.weight`,
  loraB: (module: string): string => `${module}.lora_B.weight`,
  adapter: (layer: number, site: 'attention_output' | 'output', part: 'down' | 'up', param: 'weight' | 'bias'): string =>
    `encoder.layer.${layer}.${site === 'attention_output' ? 'attention.output' : 'output'}.adapter.${part}.${param}`,
  diffIndices: (module: string): string => `${module}.weight.diff_indices`,
  diffValues: (module: string): string => `${module}.weight.diff_values`,
  biasDiff: (module: string): string => `${module}.bias.diff`,
  maskRemoved: (module: string): string => `${module}.weight.mask_removed`,
  bias: (module: string): string => `${module}.bias`,
  layerNormGamma: (module: string): string => `${module}.weight`,
  layerNormBeta: (module: string): string => `${module}.bias`,
  ia3: (module: string): string => `${module}.ia3_l`,
} as const;

// ------------------------------------------------------------------ tensor reading

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16']);
const INDEX_DTYPES = new Set(['I32', 'I64']);

export function formatShape(shape: readonly (number | string)[]): string {
  return `[${shape.join(', ')}]`;
}

/** Names of things in a refusal message: the first few quoted, then a count. */
export function listNames(names: readonly string[], max = 5): string {
  const shown = names.slice(0, max).map((n) => `'${n}'`).join(', ');
  return names.length > max ? `${shown} (and ${names.length - max} more)` : shown;
}

/** First NaN/±Inf of an array, as an index and a word for the message; null when all finite. */
export function firstNonFinite(data: Float32Array): { index: number; value: string } | null {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (!Number.isFinite(v)) return { index: i, value: Number.isNaN(v) ? 'NaN' : v > 0 ? '+Inf' : '-Inf' };
  }
  return null;
}

/**
 * A PET's safetensors file. Every read checks dtype, shape and finiteness and
 * names the stored tensor on failure; `unread()` lists the tensors no reader
 * asked for, which importers refuse as not understood.
 */
export class PetTensorFile {
  private readonly read = new Set<string>();

  private constructor(
    private readonly file: SafetensorsFile,
    readonly path: string,
  ) {}

  static async open(path: string): Promise<PetTensorFile> {
    try {
      return new PetTensorFile(await SafetensorsFile.open(path), path);
    } catch (err) {
      if (err instanceof PetServeError) throw new PetFormatError(err.message, { cause: err });
      throw new PetFormatError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  names(): string[] {
    return this.file.names();
  }

  has(name: string): boolean {
    return this.file.has(name);
  }

  shape(name: string): number[] {
    const info = this.file.info(name);
    if (info === undefined) throw new PetFormatError(`${this.path}: missing tensor '${name}'`);
    return info.shape;
  }

  /** Mark a tensor as understood without reading it. */
  accept(name: string): void {
    this.read.add(name);
  }

  unread(): string[] {
    return this.names().filter((n) => !this.read.has(n));
  }

  /**
   * A float tensor as f32. `expected` may hold `null` for a dimension that is
   * free (a LoRA rank); `context` explains the expectation in the message.
   */
  readFloat(name: string, expected: readonly (number | null)[], context = ''): Float32Array {
    const info = this.checkShape(name, expected, context);
    if (!FLOAT_DTYPES.has(info.dtype)) {
      throw new PetFormatError(`${this.path}: tensor '${name}' has dtype ${info.dtype}, expected F32, F16 or BF16`);
    }
    const data = this.wrap(() => this.file.readFloat32(name));
    const bad = firstNonFinite(data);
    if (bad) throw new PetFormatError(`${this.path}: tensor '${name}' has a non-finite value (${bad.value}) at index ${bad.index}`);
    this.read.add(name);
    return data;
  }

  /** A 1-D index tensor (I32 or I64) as int32. */
  readIndices(name: string, context = ''): Int32Array {
    const info = this.checkShape(name, [null], context);
    if (!INDEX_DTYPES.has(info.dtype)) {
      throw new PetFormatError(`${this.path}: tensor '${name}' has dtype ${info.dtype}, expected I32 or I64`);
    }
    const data = this.wrap(() => this.file.readInt(name));
    this.read.add(name);
    return data;
  }

  private checkShape(name: string, expected: readonly (number | null)[], context: string): { dtype: string; shape: number[] } {
    const info = this.file.info(name);
    if (info === undefined) throw new PetFormatError(`${this.path}: missing tensor '${name}'${context ? ` (${context})` : ''}`);
    const fits = info.shape.length === expected.length && expected.every((d, i) => d === null || d === info.shape[i]);
    if (!fits) {
      throw new PetFormatError(
        `${this.path}: tensor '${name}' has shape ${formatShape(info.shape)}, expected ` +
          `${formatShape(expected.map((d) => d ?? '*'))}${context ? ` (${context})` : ''}`,
      );
    }
    return info;
  }

  private wrap<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof PetServeError) throw new PetFormatError(err.message, { cause: err });
      throw err;
    }
  }
}

// ------------------------------------------------------------------ misc

export async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new PetFormatError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new PetFormatError(`${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new PetFormatError(`${path}: expected a JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * Label names of a head with `rows` outputs: the PET's own list when it has
 * one (its length must match), else the base config's when its length
 * matches, else LABEL_i as transformers names them.
 */
export function resolveId2label(own: string[] | null, rows: number, baseConfig: BertConfig, source: string): string[] {
  if (own !== null) {
    if (own.length !== rows) {
      throw new PetFormatError(`${source}: id2label has ${own.length} labels but the classifier has ${rows} rows`);
    }
    return own;
  }
  if (baseConfig.id2label && baseConfig.id2label.length === rows) return [...baseConfig.id2label];
  return Array.from({ length: rows }, (_, i) => `LABEL_${i}`);
}

/** zod issues as one line: "path: message; path: message". */
export function formatIssues(issues: readonly { path: readonly PropertyKey[]; message: string }[]): string {
  return issues.map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`).join('; ');
}

/**
 * The task head from a classifier weight [L, H] and bias [L], or null when
 * the file holds neither (an embedding task). Half a head is refused.
 */
export function readHead(
  file: PetTensorFile,
  weightName: string,
  biasName: string,
  ownId2label: string[] | null,
  config: BertConfig,
  source: string,
): TaskHead | null {
  const hasWeight = file.has(weightName);
  const hasBias = file.has(biasName);
  if (!hasWeight && !hasBias) {
    if (ownId2label !== null) {
      throw new PetFormatError(`${source}: id2label is given but there is no classifier ('${weightName}', '${biasName}')`);
    }
    return null;
  }
  if (!hasWeight || !hasBias) {
    const [present, missing] = hasWeight ? [weightName, biasName] : [biasName, weightName];
    throw new PetFormatError(`${file.path}: classifier is incomplete: '${present}' is present but '${missing}' is missing`);
  }
  const weight = file.readFloat(weightName, [null, config.hiddenSize], 'classifier weight is [num_labels, hidden_size]');
  const rows = file.shape(weightName)[0]!;
  if (rows < 1) throw new PetFormatError(`${file.path}: tensor '${weightName}' has 0 rows; a classifier needs at least one label`);
  const bias = file.readFloat(biasName, [rows], `one bias per row of '${weightName}'`);
  return { weight, bias, id2label: resolveId2label(ownId2label, rows, config, source) };
}

/** Whether `path` exists (any kind of entry). */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** What a PET writer put on disk. */
export interface WrittenPet {
  dir: string;
  files: string[];
  tensorCount: number;
  /** Stored values (floats and indices), the classifier included. */
  parameterCount: number;
}

/** Write a PET directory: one JSON file (2-space indent) + one safetensors file. */
export async function writePetFiles(
  dir: string,
  json: { name: string; json: unknown },
  tensorsFile: string,
  tensors: Record<string, TensorToWrite>,
): Promise<WrittenPet> {
  await mkdir(dir, { recursive: true });
  const jsonPath = join(dir, json.name);
  const tensorsPath = join(dir, tensorsFile);
  await writeSafetensors(tensorsPath, tensors, { format: 'pt' });
  await writeFile(jsonPath, JSON.stringify(json.json, null, 2) + '\n');
  const values = Object.values(tensors);
  return {
    dir,
    files: [jsonPath, tensorsPath],
    tensorCount: values.length,
    parameterCount: values.reduce((n, t) => n + t.data.length, 0),
  };
}
