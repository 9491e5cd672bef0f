// Turns a full fine-tuned checkpoint of the shared base into a PET
// (docs/pet-format.md, "Converting a merged fine-tuned checkpoint"):
//   diff   ΔW = W_ft − W_base per linear site, the largest-|ΔW| fraction kept;
//          Δb = b_ft − b_base. Other differences are reported, not kept.
//   bitfit every bias and LayerNorm that differs; refused when a weight matrix differs.
// The fine-tuned classifier becomes the task head.

import type { BertConfig } from '../model/bert-config.js';
import type { BertCheckpoint, LinearWeights } from '../model/checkpoint.js';
import { InvalidInputError, PetFormatError } from '../util/errors.js';
import { listNames } from './formats/common.js';
import { resolveId2label } from './head.js';
import {
  EMBEDDINGS_LAYER_NORM_MODULE,
  LAYER_NORM_SITES,
  POOLER_MODULE,
  allLinearSites,
  baseLayerNorm,
  baseLinear,
  siteModule,
} from './sites.js';
import { MAX_SPARSE_DENSITY, validatePet } from './validate.js';
import type { BitfitParams, DiffSite, PetBundle, TaskHead } from './types.js';

export interface ConvertOptions {
  base: BertCheckpoint;
  finetuned: BertCheckpoint;
  kind: 'diff' | 'bitfit';
  /** diff only: fraction of each site's weights to keep (largest |ΔW|); default every non-zero entry. */
  density?: number;
}

export interface ConvertResult {
  bundle: PetBundle;
  /** Differences the PET does not carry, and what was dropped; one sentence each. */
  notes: string[];
}

const ARCHITECTURE_KEYS: readonly (keyof BertConfig)[] = [
  'hiddenSize',
  'numHiddenLayers',
  'numAttentionHeads',
  'intermediateSize',
  'vocabSize',
  'maxPositionEmbeddings',
  'typeVocabSize',
  'layerNormEps',
];

export function convertMergedToPet(opts: ConvertOptions): ConvertResult {
  const { base, finetuned, kind } = opts;
  if (kind !== 'diff' && kind !== 'bitfit') {
    throw new InvalidInputError(`convert-pet: kind must be diff or bitfit, got ${JSON.stringify(kind)}`);
  }
  if (opts.density !== undefined) {
    if (kind !== 'diff') throw new InvalidInputError('convert-pet: density applies to kind diff only');
    if (!(opts.density > 0 && opts.density <= MAX_SPARSE_DENSITY)) {
      throw new InvalidInputError(`convert-pet: density must be in (0, ${MAX_SPARSE_DENSITY}], got ${opts.density}`);
    }
  }
  for (const key of ARCHITECTURE_KEYS) {
    if (base.config[key] !== finetuned.config[key]) {
      throw new PetFormatError(
        `${finetuned.dir}: ${key} is ${String(finetuned.config[key])} but the base ${base.dir} has ` +
          `${String(base.config[key])}: not a fine-tune of this base`,
      );
    }
  }
  const notes: string[] = [];
  const source = finetuned.dir;
  const bundle: PetBundle =
    kind === 'diff'
      ? { pet: { kind, sites: diffSites(base, finetuned, opts.density, notes) }, head: null, source, format: 'bundle' }
      : { pet: { kind, params: bitfitParams(base, finetuned, notes) }, head: null, source, format: 'bundle' };
  bundle.head = headOf(finetuned, notes);
  validatePet(bundle, base);
  return { bundle, notes };
}

function diffSites(base: BertCheckpoint, ft: BertCheckpoint, density: number | undefined, notes: string[]): DiffSite[] {
  const sites: DiffSite[] = [];
  let kept = 0;
  let nonZero = 0;
  let largestDropped = 0;
  for (const { layer, site, module } of allLinearSites(base.config)) {
    const b = baseLinear(base, layer, site);
    const f = baseLinear(ft, layer, site);
    const delta = difference(f.weight, b.weight);
    const size = delta.length;
    const changed = countNonZero(delta);
    nonZero += changed;
    let keep = changed;
    if (density === undefined) {
      if (changed / size > MAX_SPARSE_DENSITY) {
        throw new PetFormatError(
          `${ft.dir}: ${module}.weight differs in ${changed} of ${size} entries (density ${(changed / size).toFixed(3)}), ` +
            `above the ${MAX_SPARSE_DENSITY} limit of a diff PET: give a density to keep the largest changes, or serve it as a model`,
        );
      }
    } else {
      keep = Math.min(changed, Math.round(density * size));
    }
    const { indices, dropped } = largestEntries(delta, changed, keep);
    largestDropped = Math.max(largestDropped, dropped);
    kept += indices.length;
    const values = new Float32Array(indices.length);
    for (let i = 0; i < indices.length; i++) values[i] = delta[indices[i]!]!;
    const biasDelta = difference(f.bias, b.bias);
    const hasBias = countNonZero(biasDelta) > 0;
    if (indices.length === 0 && !hasBias) continue;
    sites.push({ layer, site, indices, values, biasDelta: hasBias ? biasDelta : null });
  }
  if (kept < nonZero) {
    notes.push(
      `kept the ${kept} largest of ${nonZero} changed weights (density ${density}); ` +
        `the largest dropped |ΔW| is ${largestDropped.toExponential(3)}`,
    );
  }
  // A diff PET carries linear sites only; anything else that moved is reported.
  const ignored: string[] = [];
  const report = (name: string, ftValues: Float32Array, baseValues: Float32Array): void => {
    const d = difference(ftValues, baseValues);
    const n = countNonZero(d);
    if (n > 0) ignored.push(`${name} (${n} entries, max |Δ| ${maxAbs(d).toExponential(3)})`);
  };
  reportNonLinear(base, ft, report);
  if (ignored.length > 0) {
    notes.push(
      `ignored differences a diff PET cannot carry (only encoder linear sites; LayerNorms fit a bitfit PET): ${ignored.join('; ')}`,
    );
  }
  return sites;
}

function bitfitParams(base: BertCheckpoint, ft: BertCheckpoint, notes: string[]): BitfitParams {
  const config = base.config;
  const changedWeights: string[] = [];
  const weightDiffers = (name: string, a: Float32Array, b: Float32Array): void => {
    if (countNonZero(difference(a, b)) > 0) changedWeights.push(name);
  };
  for (const { layer, site, module } of allLinearSites(config)) {
    weightDiffers(`${module}.weight`, baseLinear(ft, layer, site).weight, baseLinear(base, layer, site).weight);
  }
  weightDiffers(`${POOLER_MODULE}.weight`, ft.weights.pooler.weight, base.weights.pooler.weight);
  weightDiffers('embeddings.word_embeddings.weight', ft.weights.wordEmbeddings, base.weights.wordEmbeddings);
  weightDiffers('embeddings.position_embeddings.weight', ft.weights.positionEmbeddings, base.weights.positionEmbeddings);
  weightDiffers('embeddings.token_type_embeddings.weight', ft.weights.tokenTypeEmbeddings, base.weights.tokenTypeEmbeddings);
  if (changedWeights.length > 0) {
    throw new PetFormatError(
      `${ft.dir}: not a BitFit fine-tune: weight matrices differ from the base (${listNames(changedWeights)}); use kind diff`,
    );
  }

  const differs = (a: Float32Array, b: Float32Array): boolean => countNonZero(difference(a, b)) > 0;
  const params: BitfitParams = { biases: [], layerNorms: [], embeddingsLayerNorm: null, poolerBias: null };
  for (const { layer, site } of allLinearSites(config)) {
    const bias = baseLinear(ft, layer, site).bias;
    if (differs(bias, baseLinear(base, layer, site).bias)) params.biases.push({ layer, site, bias: bias.slice() });
  }
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    for (const site of LAYER_NORM_SITES) {
      const f = baseLayerNorm(ft, layer, site);
      const b = baseLayerNorm(base, layer, site);
      if (differs(f.gamma, b.gamma) || differs(f.beta, b.beta)) {
        params.layerNorms.push({ layer, site, gamma: f.gamma.slice(), beta: f.beta.slice() });
      }
    }
  }
  const fe = ft.weights.embeddingLayerNorm;
  const be = base.weights.embeddingLayerNorm;
  if (differs(fe.gamma, be.gamma) || differs(fe.beta, be.beta)) {
    params.embeddingsLayerNorm = { gamma: fe.gamma.slice(), beta: fe.beta.slice() };
  }
  if (differs(ft.weights.pooler.bias, base.weights.pooler.bias)) params.poolerBias = ft.weights.pooler.bias.slice();
  const count = params.biases.length + params.layerNorms.length + (params.embeddingsLayerNorm ? 1 : 0) + (params.poolerBias ? 1 : 0);
  if (count === 0) notes.push('no bias or LayerNorm differs from the base: the task differs by its head only');
  return params;
}

/** LayerNorms, embeddings and the pooler: what a diff PET leaves out. */
function reportNonLinear(
  base: BertCheckpoint,
  ft: BertCheckpoint,
  report: (name: string, ftValues: Float32Array, baseValues: Float32Array) => void,
): void {
  const w = ft.weights;
  const b = base.weights;
  report('embeddings.word_embeddings.weight', w.wordEmbeddings, b.wordEmbeddings);
  report('embeddings.position_embeddings.weight', w.positionEmbeddings, b.positionEmbeddings);
  report('embeddings.token_type_embeddings.weight', w.tokenTypeEmbeddings, b.tokenTypeEmbeddings);
  report(`${EMBEDDINGS_LAYER_NORM_MODULE}.weight`, w.embeddingLayerNorm.gamma, b.embeddingLayerNorm.gamma);
  report(`${EMBEDDINGS_LAYER_NORM_MODULE}.bias`, w.embeddingLayerNorm.beta, b.embeddingLayerNorm.beta);
  for (let layer = 0; layer < base.config.numHiddenLayers; layer++) {
    for (const site of LAYER_NORM_SITES) {
      const module = siteModule(base.config, layer, site);
      report(`${module}.weight`, baseLayerNorm(ft, layer, site).gamma, baseLayerNorm(base, layer, site).gamma);
      report(`${module}.bias`, baseLayerNorm(ft, layer, site).beta, baseLayerNorm(base, layer, site).beta);
    }
  }
  report(`${POOLER_MODULE}.weight`, w.pooler.weight, b.pooler.weight);
  report(`${POOLER_MODULE}.bias`, w.pooler.bias, b.pooler.bias);
}

function headOf(ft: BertCheckpoint, notes: string[]): TaskHead | null {
  const classifier: LinearWeights | null = ft.weights.classifier;
  if (classifier === null) {
    notes.push('the fine-tuned checkpoint has no classifier: the task is an embedding task (pooled output)');
    return null;
  }
  return {
    weight: classifier.weight.slice(),
    bias: classifier.bias.slice(),
    id2label: resolveId2label(null, classifier.outDim, ft.config, ft.dir),
  };
}

/** a − b rounded to f32: the delta the engine adds to the f32 base weights. */
function difference(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! - b[i]!;
  return out;
}

function countNonZero(a: Float32Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== 0) n++;
  return n;
}

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/**
 * Indices (ascending) of the `keep` entries of largest |delta| among its
 * `nonZero` non-zero entries; ties at the threshold go to the lower index.
 * Also the largest |delta| left out.
 */
function largestEntries(delta: Float32Array, nonZero: number, keep: number): { indices: Int32Array; dropped: number } {
  if (keep === nonZero) {
    const indices = new Int32Array(nonZero);
    for (let i = 0, n = 0; i < delta.length; i++) if (delta[i] !== 0) indices[n++] = i;
    return { indices, dropped: 0 };
  }
  const magnitudes = new Float32Array(nonZero);
  for (let i = 0, n = 0; i < delta.length; i++) if (delta[i] !== 0) magnitudes[n++] = Math.abs(delta[i]!);
  magnitudes.sort();
  const threshold = keep > 0 ? magnitudes[nonZero - keep]! : Infinity;
  let above = 0;
  for (let i = 0; i < nonZero; i++) if (magnitudes[i]! > threshold) above++;
  let atThreshold = keep - above;
  const indices = new Int32Array(keep);
  let n = 0;
  let dropped = 0;
  for (let i = 0; i < delta.length; i++) {
    const m = Math.abs(delta[i]!);
    if (m === 0) continue;
    if (m > threshold || (m === threshold && atThreshold-- > 0)) indices[n++] = i;
    else dropped = Math.max(dropped, m);
  }
  return { indices, dropped };
}
