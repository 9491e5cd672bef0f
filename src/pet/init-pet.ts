// Random but realistic PETs for a given base model, written the way they come
// in practice: LoRA and IA³ as Hugging Face PEFT directories, the other kinds
// as PetServe bundles. Every delta is large enough to move the logits visibly
// (a PET that computes nothing would pass any engine test). Deterministic by seed.

import { join } from 'node:path';

import type { BertCheckpoint } from '../model/checkpoint.js';
import { InvalidInputError } from '../util/errors.js';
import { Rng } from '../util/random.js';
import { PET_MANIFEST_FILE, writePetBundle } from './formats/bundle.js';
import type { WrittenPet } from './formats/bundle.js';
import {
  LAYER_NORM_SITES,
  allLinearSites,
  baseLayerNorm,
  baseLinear,
  linearSiteDims,
  resolveId2label,
  pathExists,
} from './formats/common.js';
import { PEFT_CONFIG_FILE, writePeftDirectory } from './formats/peft.js';
import { MAX_SPARSE_DENSITY } from './validate.js';
import { PET_KINDS } from './types.js';
import type { AdapterSite, BitfitParams, DiffSite, Ia3Site, LoraSite, MaskSite, PetBundle, PetKind, PetSpec, TaskHead } from './types.js';

export interface InitPetOptions {
  model: BertCheckpoint;
  kind: PetKind;
  outDir: string;
  /** LoRA rank (default 8). */
  rank?: number;
  /** diff: fraction of each weight changed (default 0.01); mask: fraction removed (default 0.1). */
  density?: number;
  seed?: number;
  /** Classifier labels; 0 = embedding task. Default: the base model's label count, or 2 when it has none. */
  numLabels?: number;
  /** Adapter bottleneck (default 16). */
  bottleneck?: number;
}

export interface InitPetResult extends WrittenPet {
  kind: PetKind;
  format: PetBundle['format'];
  bundle: PetBundle;
}

export const INIT_PET_DEFAULTS = {
  rank: 8,
  bottleneck: 16,
  diffDensity: 0.01,
  maskDensity: 0.1,
} as const;

// PEFT's usual pairing lora_alpha = 2r, i.e. scale 2.
const LORA_ALPHA_PER_RANK = 2;
// Size of ‖s·B·A·x‖ relative to ‖W·x‖ at each site. With A ~ N(0, 1/in),
// ‖A·x‖ ≈ ‖x‖·√(r/in), so B ~ N(0, σ) gives a ratio s·σ·√(r/in) / σ_W;
// σ is solved from it. 0.3 per site moves bert-tiny's pooled output by ~4%.
const LORA_RELATIVE_DELTA = 0.3;
const ADAPTER_STD = 0.05;
const DIFF_VALUE_STD = 0.02;
const IA3_SPREAD = 0.1;
const BITFIT_SPREAD = 0.05;
// As init-model's classifier: large enough that labels differ visibly.
const HEAD_WEIGHT_STD = 0.2;
const HEAD_BIAS_STD = 0.02;

/** PEFT target_modules as users write them for BERT; 'output.dense' also selects attention.output.dense. */
const LORA_TARGET_MODULES = ['query', 'key', 'value', 'attention.output.dense', 'intermediate.dense', 'output.dense'];
/** PEFT's own defaults for BERT IA³ (TRANSFORMERS_MODELS_TO_IA3_*_MAPPING). */
const IA3_TARGET_MODULES = ['key', 'value', 'output.dense'];
const IA3_FEEDFORWARD_MODULES = ['output.dense'];

/** Draw a random PET in memory (what initPet writes). */
export function generatePet(opts: Omit<InitPetOptions, 'outDir'> & { source?: string }): PetBundle {
  const { model, kind } = opts;
  const config = model.config;
  checkOptions(opts);
  const rng = new Rng(opts.seed ?? 0);
  let pet: PetSpec;
  switch (kind) {
    case 'lora': {
      const rank = opts.rank ?? INIT_PET_DEFAULTS.rank;
      const scale = LORA_ALPHA_PER_RANK;
      const sites: LoraSite[] = [];
      for (const { layer, site } of allLinearSites(config)) {
        const { outDim, inDim } = linearSiteDims(config, site);
        const bStd = (LORA_RELATIVE_DELTA * config.initializerRange * Math.sqrt(inDim / rank)) / scale;
        const a = rng.fillNormal(new Float32Array(rank * inDim), 0, 1 / Math.sqrt(inDim));
        const b = rng.fillNormal(new Float32Array(outDim * rank), 0, bStd);
        sites.push({ layer, site, rank, scale, a, b });
      }
      pet = { kind, sites };
      break;
    }
    case 'adapter': {
      const m = opts.bottleneck ?? INIT_PET_DEFAULTS.bottleneck;
      const H = config.hiddenSize;
      const sites: AdapterSite[] = [];
      for (let layer = 0; layer < config.numHiddenLayers; layer++) {
        for (const site of ['attention_output', 'output'] as const) {
          sites.push({
            layer,
            site,
            bottleneck: m,
            activation: 'gelu',
            downWeight: rng.fillNormal(new Float32Array(m * H), 0, ADAPTER_STD),
            downBias: rng.fillNormal(new Float32Array(m), 0, ADAPTER_STD),
            upWeight: rng.fillNormal(new Float32Array(H * m), 0, ADAPTER_STD),
            upBias: rng.fillNormal(new Float32Array(H), 0, ADAPTER_STD),
          });
        }
      }
      pet = { kind, sites };
      break;
    }
    case 'diff': {
      const density = opts.density ?? INIT_PET_DEFAULTS.diffDensity;
      const sites: DiffSite[] = [];
      for (const { layer, site } of allLinearSites(config)) {
        const { outDim, inDim } = linearSiteDims(config, site);
        const indices = randomIndexSet(rng, outDim * inDim, density);
        const values = rng.fillNormal(new Float32Array(indices.length), 0, DIFF_VALUE_STD);
        const biasDelta = rng.fillNormal(new Float32Array(outDim), 0, DIFF_VALUE_STD);
        sites.push({ layer, site, indices, values, biasDelta });
      }
      pet = { kind, sites };
      break;
    }
    case 'mask': {
      const density = opts.density ?? INIT_PET_DEFAULTS.maskDensity;
      const sites: MaskSite[] = [];
      for (const { layer, site } of allLinearSites(config)) {
        const { outDim, inDim } = linearSiteDims(config, site);
        sites.push({ layer, site, removed: randomIndexSet(rng, outDim * inDim, density) });
      }
      pet = { kind, sites };
      break;
    }
    case 'bitfit': {
      const perturb = (values: Float32Array): Float32Array => {
        const out = rng.fillNormal(new Float32Array(values.length), 0, BITFIT_SPREAD);
        for (let i = 0; i < out.length; i++) out[i] = out[i]! + values[i]!;
        return out;
      };
      const params: BitfitParams = { biases: [], layerNorms: [], embeddingsLayerNorm: null, poolerBias: null };
      for (const { layer, site } of allLinearSites(config)) {
        params.biases.push({ layer, site, bias: perturb(baseLinear(model, layer, site).bias) });
      }
      for (let layer = 0; layer < config.numHiddenLayers; layer++) {
        for (const site of LAYER_NORM_SITES) {
          const ln = baseLayerNorm(model, layer, site);
          params.layerNorms.push({ layer, site, gamma: perturb(ln.gamma), beta: perturb(ln.beta) });
        }
      }
      const embeddings = model.weights.embeddingLayerNorm;
      params.embeddingsLayerNorm = { gamma: perturb(embeddings.gamma), beta: perturb(embeddings.beta) };
      params.poolerBias = perturb(model.weights.pooler.bias);
      pet = { kind, params };
      break;
    }
    case 'ia3': {
      // The placements PEFT's BERT defaults give: key/value outputs scaled,
      // attention.output.dense and output.dense inputs scaled ('output.dense'
      // in feedforward_modules is a plain suffix and selects both).
      const sites: Ia3Site[] = [];
      for (const { layer, site } of allLinearSites(config)) {
        const { outDim, inDim } = linearSiteDims(config, site);
        if (site === 'key' || site === 'value') {
          sites.push({ layer, site, mode: 'output', scale: rng.fillNormal(new Float32Array(outDim), 1, IA3_SPREAD) });
        } else if (site === 'attention_output' || site === 'output') {
          sites.push({ layer, site, mode: 'input', scale: rng.fillNormal(new Float32Array(inDim), 1, IA3_SPREAD) });
        }
      }
      pet = { kind, sites };
      break;
    }
  }
  return {
    pet,
    head: randomHead(rng, opts),
    source: opts.source ?? `random ${kind} PET (seed ${opts.seed ?? 0})`,
    format: kind === 'lora' || kind === 'ia3' ? 'peft' : 'bundle',
  };
}

/** Write a random PET of `kind` for `model` into `outDir` (PEFT for lora / ia3, a bundle otherwise). */
export async function initPet(opts: InitPetOptions): Promise<InitPetResult> {
  const bundle = generatePet({ ...opts, source: opts.outDir });
  const other = bundle.format === 'peft' ? PET_MANIFEST_FILE : PEFT_CONFIG_FILE;
  if (await pathExists(join(opts.outDir, other))) {
    throw new InvalidInputError(`${opts.outDir} already holds ${other}; write the ${opts.kind} PET to another directory`);
  }
  const written =
    bundle.format === 'peft'
      ? await writePeftDirectory(opts.outDir, bundle, opts.model.config, {
          baseModelNameOrPath: opts.model.dir,
          targetModules: opts.kind === 'lora' ? LORA_TARGET_MODULES : IA3_TARGET_MODULES,
          ...(opts.kind === 'ia3' ? { feedforwardModules: IA3_FEEDFORWARD_MODULES } : {}),
        })
      : await writePetBundle(opts.outDir, bundle, opts.model.config);
  return { ...written, kind: opts.kind, format: bundle.format, bundle };
}


function randomHead(rng: Rng, opts: Omit<InitPetOptions, 'outDir'>): TaskHead | null {
  const config = opts.model.config;
  const rows = opts.numLabels ?? (opts.model.numLabels > 0 ? opts.model.numLabels : 2);
  if (rows === 0) return null;
  return {
    weight: rng.fillNormal(new Float32Array(rows * config.hiddenSize), 0, HEAD_WEIGHT_STD),
    bias: rng.fillNormal(new Float32Array(rows), 0, HEAD_BIAS_STD),
    id2label: resolveId2label(null, rows, config, 'init-pet'),
  };
}

/**
 * round(density·size) distinct flat indices (at least one), ascending.
 * Rejection sampling into a bitmap: at density ≤ 0.5 it needs under 1.4
 * draws per index, and walking the bitmap yields them sorted.
 */
function randomIndexSet(rng: Rng, size: number, density: number): Int32Array {
  const count = Math.min(size, Math.max(1, Math.round(density * size)));
  const taken = new Uint8Array(size);
  for (let drawn = 0; drawn < count; ) {
    const i = rng.int(0, size);
    if (taken[i] === 0) {
      taken[i] = 1;
      drawn++;
    }
  }
  const out = new Int32Array(count);
  for (let i = 0, n = 0; i < size; i++) if (taken[i] === 1) out[n++] = i;
  return out;
}

function checkOptions(opts: Omit<InitPetOptions, 'outDir'>): void {
  const { kind, model } = opts;
  const config = model.config;
  const fail = (message: string): never => {
    throw new InvalidInputError(`init-pet: ${message}`);
  };
  if (!PET_KINDS.includes(kind)) fail(`kind must be one of ${PET_KINDS.join(', ')}, got ${JSON.stringify(kind)}`);
  const onlyFor = (option: string, value: unknown, kinds: PetKind[]): void => {
    if (value !== undefined && !kinds.includes(kind)) fail(`${option} applies to kind ${kinds.join(' / ')} only, not ${kind}`);
  };
  onlyFor('rank', opts.rank, ['lora']);
  onlyFor('density', opts.density, ['diff', 'mask']);
  onlyFor('bottleneck', opts.bottleneck, ['adapter']);
  const maxRank = Math.min(config.hiddenSize, config.intermediateSize);
  if (opts.rank !== undefined && (!Number.isInteger(opts.rank) || opts.rank < 1 || opts.rank > maxRank)) {
    fail(`rank must be an integer in 1..${maxRank} (min(in, out) over the sites), got ${opts.rank}`);
  }
  if (opts.density !== undefined && !(opts.density > 0 && opts.density <= MAX_SPARSE_DENSITY)) {
    fail(`density must be in (0, ${MAX_SPARSE_DENSITY}], got ${opts.density}`);
  }
  if (opts.bottleneck !== undefined && (!Number.isInteger(opts.bottleneck) || opts.bottleneck < 1 || opts.bottleneck > config.hiddenSize)) {
    fail(`bottleneck must be an integer in 1..${config.hiddenSize} (the hidden size), got ${opts.bottleneck}`);
  }
  if (opts.numLabels !== undefined && (!Number.isInteger(opts.numLabels) || opts.numLabels < 0)) {
    fail(`numLabels must be a non-negative integer, got ${opts.numLabels}`);
  }
  if (opts.seed !== undefined && !Number.isSafeInteger(opts.seed)) fail(`seed must be an integer, got ${opts.seed}`);
}
