// PetServe bundles: pet.json (manifest) + pet.safetensors, for every PET kind.
// Format contract: docs/pet-format.md ("PetServe bundle").

import { join } from 'node:path';

import { z } from 'zod';

import type { BertConfig } from '../../model/bert-config.js';
import type { BertCheckpoint } from '../../model/checkpoint.js';
import type { TensorToWrite } from '../../model/safetensors.js';
import { PetFormatError } from '../../util/errors.js';
import { PET_KINDS, siteModule } from '../types.js';
import type {
  AdapterSite,
  BitfitParams,
  DiffSite,
  Ia3Site,
  LoraSite,
  MaskSite,
  PetBundle,
  PetKind,
  PetSpec,
} from '../types.js';
import { validatePet, validatePetForConfig } from '../validate.js';
import {
  CLASSIFIER_BIAS,
  CLASSIFIER_WEIGHT,
  EMBEDDINGS_LAYER_NORM_MODULE,
  LAYER_NORM_SITES,
  POOLER_MODULE,
  PetTensorFile,
  allLinearSites,
  baseLayerNorm,
  bundleNames,
  formatIssues,
  linearSiteDims,
  listNames,
  readHead,
  readJsonObject,
  writePetFiles,
  type WrittenPet,
} from './common.js';
import { patternKeyFor } from './match.js';

export const PET_MANIFEST_FILE = 'pet.json';
export const PET_TENSORS_FILE = 'pet.safetensors';
export const PET_FORMAT_NAME = 'petserve-pet';
export const PET_FORMAT_VERSION = 1;

const positiveInt = z.number().int().positive();

// Strict objects: a key this version does not know is refused by name rather
// than silently ignored (it may change what the task computes).
const manifestSchema = z.strictObject({
  format: z.literal(PET_FORMAT_NAME),
  version: z.literal(PET_FORMAT_VERSION),
  kind: z.enum(['lora', 'adapter', 'diff', 'mask', 'bitfit', 'ia3']),
  base_model: z
    .strictObject({ hidden_size: positiveInt, num_hidden_layers: positiveInt, intermediate_size: positiveInt })
    .optional(),
  lora: z
    .strictObject({
      alpha: z.number(),
      use_rslora: z.boolean().default(false),
      alpha_pattern: z.record(z.string(), z.number()).default({}),
    })
    .optional(),
  adapter: z.strictObject({ bottleneck: positiveInt, activation: z.enum(['relu', 'gelu']) }).optional(),
  ia3: z.strictObject({ feedforward_modules: z.array(z.string()).default([]) }).optional(),
  head: z.strictObject({ id2label: z.array(z.string()).min(1) }).optional(),
});

type Manifest = z.infer<typeof manifestSchema>;

/** The kind-specific manifest section each kind needs; diff, mask and bitfit have none. */
const SECTION_OF_KIND: Readonly<Record<PetKind, 'lora' | 'adapter' | 'ia3' | null>> = {
  lora: 'lora',
  adapter: 'adapter',
  diff: null,
  mask: null,
  bitfit: null,
  ia3: 'ia3',
};
const REQUIRED_SECTION: ReadonlySet<string> = new Set(['lora', 'adapter']);

function parseManifest(raw: Record<string, unknown>, path: string, config: BertConfig): Manifest {
  // The three identity fields first, with messages that say what is expected.
  if (raw['format'] !== PET_FORMAT_NAME) {
    throw new PetFormatError(`${path}: format is ${JSON.stringify(raw['format'])}, expected "${PET_FORMAT_NAME}"`);
  }
  if (raw['version'] !== PET_FORMAT_VERSION) {
    throw new PetFormatError(
      `${path}: version ${JSON.stringify(raw['version'])} is not supported (this PetServe reads version ${PET_FORMAT_VERSION})`,
    );
  }
  if (typeof raw['kind'] !== 'string' || !(PET_KINDS as readonly string[]).includes(raw['kind'])) {
    throw new PetFormatError(`${path}: kind ${JSON.stringify(raw['kind'])} is not a PET kind (${PET_KINDS.join(', ')})`);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) throw new PetFormatError(`${path}: invalid manifest: ${formatIssues(parsed.error.issues)}`);
  const manifest = parsed.data;

  const own = SECTION_OF_KIND[manifest.kind];
  for (const section of ['lora', 'adapter', 'ia3'] as const) {
    if (manifest[section] !== undefined && section !== own) {
      throw new PetFormatError(`${path}: section "${section}" does not apply to kind "${manifest.kind}"`);
    }
  }
  if (own !== null && REQUIRED_SECTION.has(own) && manifest[own] === undefined) {
    throw new PetFormatError(`${path}: kind "${manifest.kind}" needs a "${own}" section`);
  }

  if (manifest.base_model) {
    const expected: [string, number, number][] = [
      ['hidden_size', manifest.base_model.hidden_size, config.hiddenSize],
      ['num_hidden_layers', manifest.base_model.num_hidden_layers, config.numHiddenLayers],
      ['intermediate_size', manifest.base_model.intermediate_size, config.intermediateSize],
    ];
    for (const [key, pet, served] of expected) {
      if (pet !== served) {
        throw new PetFormatError(`${path}: base_model.${key} is ${pet} but the serving model has ${key} ${served}`);
      }
    }
  }
  return manifest;
}

/** Load and validate a pet.json + pet.safetensors directory against the base model. */
export async function loadPetBundle(dir: string, base: BertCheckpoint): Promise<PetBundle> {
  const manifestPath = join(dir, PET_MANIFEST_FILE);
  const manifest = parseManifest(await readJsonObject(manifestPath), manifestPath, base.config);
  const file = await PetTensorFile.open(join(dir, PET_TENSORS_FILE));
  const pet = readSpec(manifest, file, base, manifestPath);
  const head = readHead(file, CLASSIFIER_WEIGHT, CLASSIFIER_BIAS, manifest.head?.id2label ?? null, base.config, manifestPath);
  const unknown = file.unread();
  if (unknown.length > 0) {
    throw new PetFormatError(
      `${file.path}: tensors not understood for kind "${manifest.kind}": ${listNames(unknown)} ` +
        `(names follow docs/pet-format.md, without a "bert." prefix)`,
    );
  }
  const bundle: PetBundle = { pet, head, source: dir, format: 'bundle' };
  validatePet(bundle, base);
  return bundle;
}

function readSpec(manifest: Manifest, file: PetTensorFile, base: BertCheckpoint, manifestPath: string): PetSpec {
  const config = base.config;
  switch (manifest.kind) {
    case 'lora': {
      const section = manifest.lora!;
      const sites: LoraSite[] = [];
      for (const { layer, site, module } of allLinearSites(config)) {
        const aName = bundleNames.loraA(module);
        const bName = bundleNames.loraB(module);
        if (!file.has(aName) && !file.has(bName)) continue;
        requireBoth(file, aName, bName);
        const { outDim, inDim } = linearSiteDims(config, site);
        const a = file.readFloat(aName, [null, inDim], `lora_A of ${module} is [r, in] = [r, ${inDim}]`);
        const rank = file.shape(aName)[0]!;
        const b = file.readFloat(bName, [outDim, rank], `lora_B of ${module} is [out, r] with r = ${rank} from lora_A`);
        const key = patternKeyFor(section.alpha_pattern, module, `${manifestPath}: lora.alpha_pattern`);
        const alpha = key === undefined ? section.alpha : section.alpha_pattern[key]!;
        sites.push({ layer, site, rank, scale: alpha / (section.use_rslora ? Math.sqrt(rank) : rank), a, b });
      }
      return { kind: 'lora', sites };
    }
    case 'adapter': {
      const { bottleneck, activation } = manifest.adapter!;
      const H = config.hiddenSize;
      const sites: AdapterSite[] = [];
      for (let layer = 0; layer < config.numHiddenLayers; layer++) {
        for (const site of ['attention_output', 'output'] as const) {
          const name = (part: 'down' | 'up', param: 'weight' | 'bias'): string => bundleNames.adapter(layer, site, part, param);
          const why = `adapter bottleneck ${bottleneck} from pet.json, hidden size ${H}; adapters sit at both sites of every layer`;
          sites.push({
            layer,
            site,
            bottleneck,
            activation,
            downWeight: file.readFloat(name('down', 'weight'), [bottleneck, H], why),
            downBias: file.readFloat(name('down', 'bias'), [bottleneck], why),
            upWeight: file.readFloat(name('up', 'weight'), [H, bottleneck], why),
            upBias: file.readFloat(name('up', 'bias'), [H], why),
          });
        }
      }
      return { kind: 'adapter', sites };
    }
    case 'diff': {
      const sites: DiffSite[] = [];
      for (const { layer, site, module } of allLinearSites(config)) {
        const indicesName = bundleNames.diffIndices(module);
        const valuesName = bundleNames.diffValues(module);
        const biasName = bundleNames.biasDiff(module);
        const hasWeightDiff = file.has(indicesName) || file.has(valuesName);
        if (!hasWeightDiff && !file.has(biasName)) continue;
        let indices: Int32Array = new Int32Array(0);
        let values: Float32Array = new Float32Array(0);
        if (hasWeightDiff) {
          requireBoth(file, indicesName, valuesName);
          indices = file.readIndices(indicesName, `flat indices row·in + col into ${module}.weight`);
          values = file.readFloat(valuesName, [indices.length], `one value per index of '${indicesName}'`);
        }
        const { outDim } = linearSiteDims(config, site);
        const biasDelta = file.has(biasName) ? file.readFloat(biasName, [outDim], `bias delta of ${module}`) : null;
        sites.push({ layer, site, indices, values, biasDelta });
      }
      return { kind: 'diff', sites };
    }
    case 'mask': {
      const sites: MaskSite[] = [];
      for (const { layer, site, module } of allLinearSites(config)) {
        const name = bundleNames.maskRemoved(module);
        if (!file.has(name)) continue;
        sites.push({ layer, site, removed: file.readIndices(name, `flat indices row·in + col into ${module}.weight`) });
      }
      return { kind: 'mask', sites };
    }
    case 'bitfit':
      return { kind: 'bitfit', params: readBitfit(file, base) };
    case 'ia3': {
      const feedforward = manifest.ia3?.feedforward_modules ?? [];
      const matched = new Set<string>();
      const sites: Ia3Site[] = [];
      for (const { layer, site, module } of allLinearSites(config)) {
        const name = bundleNames.ia3(module);
        if (!file.has(name)) continue;
        const entry = feedforward.find((e) => module === e || module.endsWith(`.${e}`));
        if (entry !== undefined) matched.add(entry);
        const { outDim, inDim } = linearSiteDims(config, site);
        const scale =
          entry === undefined
            ? file.readFloat(name, [outDim, 1], `output scaling of ${module}, not in ia3.feedforward_modules`)
            : file.readFloat(name, [1, inDim], `input scaling of ${module}, listed in ia3.feedforward_modules as '${entry}'`);
        sites.push({ layer, site, mode: entry === undefined ? 'output' : 'input', scale });
      }
      const unmatched = feedforward.filter((e) => !matched.has(e));
      if (unmatched.length > 0) {
        throw new PetFormatError(`${manifestPath}: ia3.feedforward_modules ${listNames(unmatched)} match no IA³ tensor's module`);
      }
      return { kind: 'ia3', sites };
    }
  }
}

function requireBoth(file: PetTensorFile, a: string, b: string): void {
  if (file.has(a) && !file.has(b)) throw new PetFormatError(`${file.path}: tensor '${a}' is present but '${b}' is missing`);
  if (file.has(b) && !file.has(a)) throw new PetFormatError(`${file.path}: tensor '${b}' is present but '${a}' is missing`);
}

/** BitFit values replace the base ones; a LayerNorm given by only gamma or beta keeps the base value of the other. */
function readBitfit(file: PetTensorFile, base: BertCheckpoint): BitfitParams {
  const config = base.config;
  const H = config.hiddenSize;
  const params: BitfitParams = { biases: [], layerNorms: [], embeddingsLayerNorm: null, poolerBias: null };
  for (const { layer, site, module } of allLinearSites(config)) {
    const name = bundleNames.bias(module);
    if (file.has(name)) {
      params.biases.push({ layer, site, bias: file.readFloat(name, [linearSiteDims(config, site).outDim], `bias of ${module}`) });
    }
  }
  const layerNorm = (
    module: string,
    baseValues: { gamma: Float32Array; beta: Float32Array },
  ): { gamma: Float32Array; beta: Float32Array } | null => {
    const gammaName = bundleNames.layerNormGamma(module);
    const betaName = bundleNames.layerNormBeta(module);
    if (!file.has(gammaName) && !file.has(betaName)) return null;
    return {
      gamma: file.has(gammaName) ? file.readFloat(gammaName, [H], `gain of ${module}`) : baseValues.gamma.slice(),
      beta: file.has(betaName) ? file.readFloat(betaName, [H], `bias of ${module}`) : baseValues.beta.slice(),
    };
  };
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    for (const site of LAYER_NORM_SITES) {
      const values = layerNorm(siteModule(layer, site), baseLayerNorm(base, layer, site));
      if (values) params.layerNorms.push({ layer, site, ...values });
    }
  }
  params.embeddingsLayerNorm = layerNorm(EMBEDDINGS_LAYER_NORM_MODULE, base.weights.embeddingLayerNorm);
  const poolerName = bundleNames.bias(POOLER_MODULE);
  if (file.has(poolerName)) params.poolerBias = file.readFloat(poolerName, [H], `bias of ${POOLER_MODULE}`);
  return params;
}

// ------------------------------------------------------------------ writer

export type { WrittenPet } from './common.js';

/** Write a bundle as pet.json + pet.safetensors (F32 values, I32 indices). Refuses an invalid bundle. */
export async function writePetBundle(dir: string, bundle: PetBundle, baseConfig: BertConfig): Promise<WrittenPet> {
  validatePetForConfig(bundle, baseConfig);
  const tensors: Record<string, TensorToWrite> = {};
  const f32 = (name: string, data: Float32Array, shape: number[]): void => {
    tensors[name] = { dtype: 'F32', shape, data };
  };
  const i32 = (name: string, data: Int32Array): void => {
    tensors[name] = { dtype: 'I32', shape: [data.length], data };
  };
  const manifest: Record<string, unknown> = {
    format: PET_FORMAT_NAME,
    version: PET_FORMAT_VERSION,
    kind: bundle.pet.kind,
    base_model: {
      hidden_size: baseConfig.hiddenSize,
      num_hidden_layers: baseConfig.numHiddenLayers,
      intermediate_size: baseConfig.intermediateSize,
    },
  };

  const pet = bundle.pet;
  switch (pet.kind) {
    case 'lora': {
      // One alpha for the task, per-module overrides where a site's scale differs.
      const alphaOf = (s: LoraSite): number => s.scale * s.rank;
      const alpha = pet.sites.length > 0 ? alphaOf(pet.sites[0]!) : 1;
      const alphaPattern: Record<string, number> = {};
      for (const s of pet.sites) {
        const module = siteModule(s.layer, s.site);
        const { outDim, inDim } = linearSiteDims(baseConfig, s.site);
        f32(bundleNames.loraA(module), s.a, [s.rank, inDim]);
        f32(bundleNames.loraB(module), s.b, [outDim, s.rank]);
        if (alphaOf(s) !== alpha) alphaPattern[module] = alphaOf(s);
      }
      manifest['lora'] = { alpha, use_rslora: false, alpha_pattern: alphaPattern };
      break;
    }
    case 'adapter': {
      const first = pet.sites[0]!;
      const odd = pet.sites.find((s) => s.bottleneck !== first.bottleneck || s.activation !== first.activation);
      if (odd) {
        throw new PetFormatError(
          `${bundle.source}: a bundle holds one adapter bottleneck and activation per task, but ` +
            `encoder.layer.${odd.layer} ${odd.site} has (${odd.bottleneck}, ${odd.activation}) and ` +
            `encoder.layer.${first.layer} ${first.site} has (${first.bottleneck}, ${first.activation})`,
        );
      }
      const H = baseConfig.hiddenSize;
      for (const s of pet.sites) {
        f32(bundleNames.adapter(s.layer, s.site, 'down', 'weight'), s.downWeight, [s.bottleneck, H]);
        f32(bundleNames.adapter(s.layer, s.site, 'down', 'bias'), s.downBias, [s.bottleneck]);
        f32(bundleNames.adapter(s.layer, s.site, 'up', 'weight'), s.upWeight, [H, s.bottleneck]);
        f32(bundleNames.adapter(s.layer, s.site, 'up', 'bias'), s.upBias, [H]);
      }
      manifest['adapter'] = { bottleneck: first.bottleneck, activation: first.activation };
      break;
    }
    case 'diff':
      for (const s of pet.sites) {
        const module = siteModule(s.layer, s.site);
        if (s.indices.length > 0) {
          i32(bundleNames.diffIndices(module), s.indices);
          f32(bundleNames.diffValues(module), s.values, [s.values.length]);
        }
        if (s.biasDelta) f32(bundleNames.biasDiff(module), s.biasDelta, [s.biasDelta.length]);
      }
      break;
    case 'mask':
      for (const s of pet.sites) i32(bundleNames.maskRemoved(siteModule(s.layer, s.site)), s.removed);
      break;
    case 'bitfit': {
      const p = pet.params;
      for (const s of p.biases) f32(bundleNames.bias(siteModule(s.layer, s.site)), s.bias, [s.bias.length]);
      for (const s of p.layerNorms) {
        const module = siteModule(s.layer, s.site);
        f32(bundleNames.layerNormGamma(module), s.gamma, [s.gamma.length]);
        f32(bundleNames.layerNormBeta(module), s.beta, [s.beta.length]);
      }
      if (p.embeddingsLayerNorm) {
        f32(bundleNames.layerNormGamma(EMBEDDINGS_LAYER_NORM_MODULE), p.embeddingsLayerNorm.gamma, [baseConfig.hiddenSize]);
        f32(bundleNames.layerNormBeta(EMBEDDINGS_LAYER_NORM_MODULE), p.embeddingsLayerNorm.beta, [baseConfig.hiddenSize]);
      }
      if (p.poolerBias) f32(bundleNames.bias(POOLER_MODULE), p.poolerBias, [p.poolerBias.length]);
      break;
    }
    case 'ia3': {
      const feedforward: string[] = [];
      for (const s of pet.sites) {
        const module = siteModule(s.layer, s.site);
        f32(bundleNames.ia3(module), s.scale, s.mode === 'input' ? [1, s.scale.length] : [s.scale.length, 1]);
        if (s.mode === 'input') feedforward.push(module);
      }
      manifest['ia3'] = { feedforward_modules: feedforward };
      break;
    }
  }
  if (bundle.head) {
    const rows = bundle.head.bias.length;
    f32(CLASSIFIER_WEIGHT, bundle.head.weight, [rows, baseConfig.hiddenSize]);
    f32(CLASSIFIER_BIAS, bundle.head.bias, [rows]);
    manifest['head'] = { id2label: bundle.head.id2label };
  }

  return writePetFiles(dir, { name: PET_MANIFEST_FILE, json: manifest }, PET_TENSORS_FILE, tensors);
}
