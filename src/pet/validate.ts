// The checks every PET passes before it becomes a task (docs/pet-format.md):
// sizes against the base config, finite values, sparse index sets, rank,
// bottleneck and density bounds, layer ranges, no site twice, head labels.
// Importers call validatePet before returning, so a bundle that loads is
// valid; code that builds bundles in memory (the converter, tests) calls it too.
// Tensors are named as a PetServe bundle names them (pet.safetensors).

import type { BertConfig } from '../model/bert-config.js';
import type { BertCheckpoint } from '../model/checkpoint.js';
import { PetFormatError } from '../util/errors.js';
import {
  CLASSIFIER_BIAS,
  CLASSIFIER_WEIGHT,
  EMBEDDINGS_LAYER_NORM_MODULE,
  LAYER_NORM_SITES,
  POOLER_MODULE,
  bundleNames,
  firstNonFinite,
  formatShape,
  linearSiteDims,
} from './formats/common.js';
import { LINEAR_SITES, siteModule } from './types.js';
import type { LayerNormSite, LinearSite, PetBundle, TaskHead } from './types.js';

/** Diff / mask sites may touch at most this fraction of a weight; denser deltas should be merged models. */
export const MAX_SPARSE_DENSITY = 0.5;

/** IA³ input scaling the engine can fold into an existing kernel (docs/pet-format.md). */
export const IA3_INPUT_SITES: readonly LinearSite[] = ['attention_output', 'output'];

export function validatePet(bundle: PetBundle, base: BertCheckpoint): void {
  validatePetForConfig(bundle, base.config);
}

/** The same checks with only the base config (what a bundle writer has). */
export function validatePetForConfig(bundle: PetBundle, config: BertConfig): void {
  const v = new Validator(bundle.source, config);
  const pet = bundle.pet;
  switch (pet.kind) {
    case 'lora':
      for (const s of pet.sites) {
        const module = v.linearSite('lora', s.layer, s.site);
        const { outDim, inDim } = linearSiteDims(config, s.site);
        const maxRank = Math.min(inDim, outDim);
        if (!Number.isInteger(s.rank) || s.rank < 1 || s.rank > maxRank) {
          v.fail(`LoRA rank ${s.rank} of ${module} is outside 1..${maxRank} (min(in, out) of a [${outDim}, ${inDim}] weight)`);
        }
        if (!Number.isFinite(s.scale)) v.fail(`LoRA scale ${s.scale} of ${module} is not finite`);
        v.floats(bundleNames.loraA(module), s.a, [s.rank, inDim]);
        v.floats(bundleNames.loraB(module), s.b, [outDim, s.rank]);
      }
      break;
    case 'adapter': {
      const H = config.hiddenSize;
      for (const s of pet.sites) {
        v.layer('adapter', s.layer);
        if (s.site !== 'attention_output' && s.site !== 'output') {
          v.fail(`adapter site '${String(s.site)}' is not supported (adapters sit after attention_output and output)`);
        }
        v.once(`adapter at encoder.layer.${s.layer} ${s.site}`);
        const where = `encoder.layer.${s.layer}.${s.site === 'attention_output' ? 'attention.output' : 'output'}.adapter`;
        if (!Number.isInteger(s.bottleneck) || s.bottleneck < 1 || s.bottleneck > H) {
          v.fail(`adapter bottleneck ${s.bottleneck} of ${where} is outside 1..${H} (the hidden size)`);
        }
        if (s.activation !== 'relu' && s.activation !== 'gelu') {
          v.fail(`adapter activation '${String(s.activation)}' of ${where} is not supported (relu or gelu)`);
        }
        v.floats(bundleNames.adapter(s.layer, s.site, 'down', 'weight'), s.downWeight, [s.bottleneck, H]);
        v.floats(bundleNames.adapter(s.layer, s.site, 'down', 'bias'), s.downBias, [s.bottleneck]);
        v.floats(bundleNames.adapter(s.layer, s.site, 'up', 'weight'), s.upWeight, [H, s.bottleneck]);
        v.floats(bundleNames.adapter(s.layer, s.site, 'up', 'bias'), s.upBias, [H]);
      }
      // The engine inserts adapters at both sites of every layer (PetS placement).
      for (let layer = 0; layer < config.numHiddenLayers; layer++) {
        for (const site of ['attention_output', 'output'] as const) {
          if (!pet.sites.some((s) => s.layer === layer && s.site === site)) {
            v.fail(`adapter is missing at encoder.layer.${layer} ${site}: adapters must sit at both sites of every layer`);
          }
        }
      }
      break;
    }
    case 'diff':
      for (const s of pet.sites) {
        const module = v.linearSite('diff', s.layer, s.site);
        const { outDim, inDim } = linearSiteDims(config, s.site);
        if (s.values.length !== s.indices.length) {
          v.fail(
            `tensor '${bundleNames.diffValues(module)}' has ${s.values.length} values but ` +
              `'${bundleNames.diffIndices(module)}' has ${s.indices.length} indices`,
          );
        }
        v.sparseIndices(bundleNames.diffIndices(module), s.indices, outDim * inDim, `[${outDim}, ${inDim}]`);
        v.floats(bundleNames.diffValues(module), s.values, [s.indices.length]);
        if (s.biasDelta !== null) v.floats(bundleNames.biasDiff(module), s.biasDelta, [outDim]);
      }
      break;
    case 'mask':
      for (const s of pet.sites) {
        const module = v.linearSite('mask', s.layer, s.site);
        const { outDim, inDim } = linearSiteDims(config, s.site);
        v.sparseIndices(bundleNames.maskRemoved(module), s.removed, outDim * inDim, `[${outDim}, ${inDim}]`);
      }
      break;
    case 'bitfit': {
      const H = config.hiddenSize;
      const p = pet.params;
      for (const s of p.biases) {
        const module = v.linearSite('bitfit bias', s.layer, s.site);
        v.floats(bundleNames.bias(module), s.bias, [linearSiteDims(config, s.site).outDim]);
      }
      for (const s of p.layerNorms) {
        const module = v.layerNormSite(s.layer, s.site);
        v.floats(bundleNames.layerNormGamma(module), s.gamma, [H]);
        v.floats(bundleNames.layerNormBeta(module), s.beta, [H]);
      }
      if (p.embeddingsLayerNorm) {
        v.floats(bundleNames.layerNormGamma(EMBEDDINGS_LAYER_NORM_MODULE), p.embeddingsLayerNorm.gamma, [H]);
        v.floats(bundleNames.layerNormBeta(EMBEDDINGS_LAYER_NORM_MODULE), p.embeddingsLayerNorm.beta, [H]);
      }
      if (p.poolerBias) v.floats(bundleNames.bias(POOLER_MODULE), p.poolerBias, [H]);
      break;
    }
    case 'ia3':
      for (const s of pet.sites) {
        const module = v.linearSite('ia3', s.layer, s.site);
        const { outDim, inDim } = linearSiteDims(config, s.site);
        if (s.mode === 'input') {
          if (!IA3_INPUT_SITES.includes(s.site)) {
            v.fail(
              `IA³ input scaling of ${module} is not supported: only the inputs of ` +
                `${IA3_INPUT_SITES.join(' and ')} can be scaled (the others share their input with other sites)`,
            );
          }
          v.floats(bundleNames.ia3(module), s.scale, [1, inDim]);
        } else if (s.mode === 'output') {
          v.floats(bundleNames.ia3(module), s.scale, [outDim, 1]);
        } else {
          v.fail(`IA³ mode '${String(s.mode)}' of ${module} is not 'input' or 'output'`);
        }
      }
      break;
    default:
      v.fail(`unknown PET kind '${String((pet as { kind: unknown }).kind)}'`);
  }
  if (bundle.head) validateHead(v, bundle.head, config);
}

function validateHead(v: Validator, head: TaskHead, config: BertConfig): void {
  const rows = head.bias.length;
  if (rows < 1) v.fail(`classifier has ${rows} rows; a head needs at least one label`);
  v.floats(CLASSIFIER_BIAS, head.bias, [rows]);
  v.floats(CLASSIFIER_WEIGHT, head.weight, [rows, config.hiddenSize]);
  if (head.id2label.length !== rows) {
    v.fail(`id2label has ${head.id2label.length} labels but the classifier has ${rows} rows`);
  }
}

class Validator {
  private readonly seen = new Set<string>();

  constructor(
    private readonly source: string,
    private readonly config: BertConfig,
  ) {}

  fail(message: string): never {
    throw new PetFormatError(`${this.source}: ${message}`);
  }

  layer(what: string, layer: number): void {
    const n = this.config.numHiddenLayers;
    if (!Number.isInteger(layer) || layer < 0 || layer >= n) {
      this.fail(`${what} site in layer ${layer}, but the base model has layers 0..${n - 1}`);
    }
  }

  once(key: string): void {
    if (this.seen.has(key)) this.fail(`${key} is given twice`);
    this.seen.add(key);
  }

  linearSite(what: string, layer: number, site: LinearSite): string {
    this.layer(what, layer);
    if (!LINEAR_SITES.includes(site)) {
      this.fail(`${what} site '${String(site)}' is not a linear site (${LINEAR_SITES.join(', ')})`);
    }
    const module = siteModule(layer, site);
    this.once(`${what} site ${module}`);
    return module;
  }

  layerNormSite(layer: number, site: LayerNormSite): string {
    this.layer('LayerNorm', layer);
    if (!LAYER_NORM_SITES.includes(site)) {
      this.fail(`LayerNorm site '${String(site)}' is not one of ${LAYER_NORM_SITES.join(', ')}`);
    }
    const module = siteModule(layer, site);
    this.once(`LayerNorm ${module}`);
    return module;
  }

  floats(name: string, data: Float32Array, shape: readonly number[]): void {
    const count = shape.reduce((a, b) => a * b, 1);
    if (data.length !== count) {
      this.fail(`tensor '${name}' holds ${data.length} values, expected shape ${formatShape(shape)} (${count} values)`);
    }
    const bad = firstNonFinite(data);
    if (bad) this.fail(`tensor '${name}' has a non-finite value (${bad.value}) at index ${bad.index}`);
  }

  /** Flat indices into a [out, in] weight: in range, strictly increasing (so no duplicates), density bound. */
  sparseIndices(name: string, indices: Int32Array, size: number, shape: string): void {
    for (let i = 0; i < indices.length; i++) {
      const index = indices[i]!;
      if (index < 0 || index >= size) {
        this.fail(`tensor '${name}' has index ${index} at position ${i}, outside 0..${size - 1} of a ${shape} weight`);
      }
      if (i > 0) {
        const previous = indices[i - 1]!;
        if (index === previous) this.fail(`tensor '${name}' has duplicate index ${index} at positions ${i - 1} and ${i}`);
        if (index < previous) {
          this.fail(`tensor '${name}' is not strictly increasing: index ${index} at position ${i} follows ${previous}`);
        }
      }
    }
    const density = indices.length / size;
    if (density > MAX_SPARSE_DENSITY) {
      this.fail(
        `tensor '${name}' has ${indices.length} of ${size} entries (density ${density.toFixed(3)}), above the ` +
          `${MAX_SPARSE_DENSITY} limit: merge such a dense delta into a model instead`,
      );
    }
  }
}
