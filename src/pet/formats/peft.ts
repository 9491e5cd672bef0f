// Hugging Face PEFT directories (adapter_config.json + adapter_model.safetensors)
// for LoRA and IA³, read with PEFT's own rules for which modules an adapter
// sits on (./match.ts) and refused by name where PetServe would compute
// something else than PEFT does. Contract: docs/pet-format.md.

import { join } from 'node:path';

import { z } from 'zod';

import type { BertConfig } from '../../model/bert-config.js';
import type { BertCheckpoint } from '../../model/checkpoint.js';
import type { TensorToWrite } from '../../model/safetensors.js';
import { PetFormatError } from '../../util/errors.js';
import { readHead } from '../head.js';
import type { Ia3Site, LoraSite } from '../kinds/index.js';
import {
  INPUT_SCALE_SITES,
  LINEAR_SITES,
  baseModuleNames,
  compareSites,
  linearSiteDims,
  linearSiteOfModule,
  siteModule,
  type LinearSite,
} from '../sites.js';
import type { PetBundle } from '../types.js';
import { validatePet, validatePetForConfig } from '../validate.js';
import {
  PetTensorFile,
  formatIssues,
  listNames,
  pathExists,
  readJsonObject,
  writePetFiles,
  type WrittenPet,
} from './common.js';
import { isFeedforwardModule, isTargetModule, patternKeyFor } from './match.js';
import type { ModuleSelector, TargetSpec } from './match.js';

export const PEFT_CONFIG_FILE = 'adapter_config.json';
export const PEFT_WEIGHTS_FILE = 'adapter_model.safetensors';

const TENSOR_PREFIX = 'base_model.model.';
const BERT_PREFIX = 'bert.';

// PEFT fills a missing target_modules from its per-architecture table
// (TRANSFORMERS_MODELS_TO_{LORA,IA3}_TARGET_MODULES_MAPPING["bert"]).
const DEFAULT_LORA_TARGETS = ['query', 'value'];
const DEFAULT_IA3_TARGETS = ['key', 'value', 'output.dense'];
const DEFAULT_IA3_FEEDFORWARD = ['output.dense'];

/** How PEFT's target_modules spell each site: the shortest suffix that names it. */
const PEFT_SITE_TARGET: Readonly<Record<LinearSite, string>> = {
  query: 'query',
  key: 'key',
  value: 'value',
  attention_output: 'attention.output.dense',
  intermediate: 'intermediate.dense',
  output: 'output.dense',
};

const selector = z.union([z.string(), z.array(z.string())]);
const nonNegativeInt = z.number().int().nonnegative();
const positiveInt = z.number().int().positive();

// z.object drops keys it does not list: PEFT adds configuration keys every
// release, most of them training-only. The ones that change what the adapter
// computes are listed and refused below when set.
const commonFields = {
  peft_type: z.string(),
  task_type: z.string().nullable().optional(),
  target_modules: selector.nullable().optional(),
  exclude_modules: selector.nullable().optional(),
  layers_to_transform: z.union([nonNegativeInt, z.array(nonNegativeInt)]).nullable().optional(),
  layers_pattern: selector.nullable().optional(),
  fan_in_fan_out: z.boolean().default(false),
  modules_to_save: z.array(z.string()).nullable().optional(),
  // Not written by PEFT; honoured when a user adds them.
  id2label: z.union([z.array(z.string()), z.record(z.string(), z.string())]).nullable().optional(),
  label2id: z.record(z.string(), nonNegativeInt).nullable().optional(),
};

const loraConfigSchema = z.object({
  ...commonFields,
  r: positiveInt.default(8),
  lora_alpha: z.number().default(8),
  rank_pattern: z.record(z.string(), positiveInt).nullable().optional(),
  alpha_pattern: z.record(z.string(), z.number()).nullable().optional(),
  use_rslora: z.boolean().default(false),
  use_dora: z.boolean().default(false),
  bias: z.string().default('none'),
  lora_bias: z.boolean().default(false),
  layer_replication: z.unknown().optional(),
  trainable_token_indices: z.unknown().optional(),
  target_parameters: z.unknown().optional(),
  alora_invocation_tokens: z.unknown().optional(),
});

const ia3ConfigSchema = z.object({
  ...commonFields,
  feedforward_modules: selector.nullable().optional(),
});

type LoraConfig = z.infer<typeof loraConfigSchema>;
type Ia3Config = z.infer<typeof ia3ConfigSchema>;

/** (layer, site) of a module name when it is a linear site of an encoder layer. */
function linearSiteOf(config: BertConfig, name: string, prefix: string): { layer: number; site: LinearSite } | null {
  return name.startsWith(prefix) ? linearSiteOfModule(config, name.slice(prefix.length)) : null;
}

const SUPPORTED_SITES_TEXT =
  'supported: attention.self.query, attention.self.key, attention.self.value, attention.output.dense, ' +
  'intermediate.dense and output.dense of the encoder layers';

// Where PEFT has saved modules_to_save=["classifier"] over its versions: in a
// ModulesToSaveWrapper with or without the adapter name, or unwrapped (newer).
const HEAD_SPELLINGS = ['classifier.modules_to_save.', 'classifier.modules_to_save.default.', 'classifier.'] as const;

/**
 * Load and validate a PEFT LoRA or IA³ directory against the base model.
 * Messages name the files relative to `dir` (a server's task directories are
 * nobody's business).
 */
export async function loadPeftDirectory(dir: string, base: BertCheckpoint): Promise<PetBundle> {
  const configPath = PEFT_CONFIG_FILE;
  const raw = await readJsonObject(join(dir, PEFT_CONFIG_FILE), configPath);
  const peftType = raw['peft_type'];
  if (peftType !== 'LORA' && peftType !== 'IA3') {
    throw new PetFormatError(
      `${configPath}: peft_type ${JSON.stringify(peftType)} is not supported (PetServe reads PEFT LORA and IA3 ` +
        `directories; other PET kinds come as PetServe bundles, see docs/pet-format.md)`,
    );
  }
  const parsed = (peftType === 'LORA' ? loraConfigSchema : ia3ConfigSchema).safeParse(raw);
  if (!parsed.success) throw new PetFormatError(`${configPath}: invalid ${peftType} adapter config: ${formatIssues(parsed.error.issues)}`);
  const config = parsed.data;
  if (peftType === 'LORA') refuseLoraFeatures(config as LoraConfig, configPath);

  const weightsPath = PEFT_WEIGHTS_FILE;
  if (!(await pathExists(join(dir, PEFT_WEIGHTS_FILE)))) {
    const binary = await pathExists(join(dir, 'adapter_model.bin'));
    const hint = binary ? ' (adapter_model.bin is there: only safetensors is read; re-save with safe_serialization=True)' : '';
    throw new PetFormatError(`${PEFT_WEIGHTS_FILE} not found${hint}`);
  }
  const file = await PetTensorFile.open(join(dir, PEFT_WEIGHTS_FILE), weightsPath);
  const layout = parseTensorNames(file, peftType);
  const prefix = layout.prefix ?? (config.task_type === 'SEQ_CLS' ? BERT_PREFIX : '');
  const modules = baseModuleNames(base.config, prefix);
  const spec: TargetSpec = {
    targetModules: config.target_modules ?? (peftType === 'LORA' ? DEFAULT_LORA_TARGETS : DEFAULT_IA3_TARGETS),
    excludeModules: config.exclude_modules,
    layersToTransform: config.layers_to_transform,
    layersPattern: config.layers_pattern,
    source: configPath,
  };

  // Which modules PEFT puts the adapter on; each must be a site the engine serves.
  const selected = modules.filter((name) => isTargetModule(spec, name));
  const unsupported = selected.filter((name) => linearSiteOf(base.config, name, prefix) === null);
  if (unsupported.length > 0) {
    throw new PetFormatError(
      `${configPath}: target_modules ${JSON.stringify(spec.targetModules)} select ${listNames(unsupported)}, ` +
        `not a supported ${peftType} site (${SUPPORTED_SITES_TEXT})`,
    );
  }
  if (selected.length === 0) {
    throw new PetFormatError(`${configPath}: target_modules ${JSON.stringify(spec.targetModules)} match no module of the base model`);
  }
  const selectedSet = new Set(selected);
  const stray = [...layout.modules.keys()].filter((m) => !selectedSet.has(m));
  if (stray.length > 0) {
    // Report in model order (file order is by tensor size), modules the base lacks last.
    const rank = (m: string): number => (modules.includes(m) ? modules.indexOf(m) : modules.length);
    const module = stray.sort((a, b) => rank(a) - rank(b))[0]!;
    const why = modules.includes(module)
      ? 'which target_modules does not select'
      : `which the base model does not have (${base.config.numHiddenLayers} layers)`;
    const more = stray.length > 1 ? ` (and ${stray.length - 1} more such modules)` : '';
    const tensor = Object.values(layout.modules.get(module)!).sort()[0]!;
    throw new PetFormatError(`${weightsPath}: tensor '${tensor}' is for module '${module}', ${why}${more}`);
  }
  refuseModulesToSave(config.modules_to_save ?? [], modules, configPath);

  const pet =
    peftType === 'LORA'
      ? { kind: 'lora' as const, sites: readLoraSites(config as LoraConfig, selected, layout, file, base.config, prefix, configPath) }
      : { kind: 'ia3' as const, sites: readIa3Sites(config as Ia3Config, spec, selected, layout, file, base.config, prefix) };

  const head = readPeftHead(file, ownId2label(config, configPath), base.config, configPath);
  const unread = file.unread();
  if (unread.length > 0) throw new PetFormatError(`${weightsPath}: tensors not understood: ${listNames(unread)}`);
  const bundle: PetBundle = { pet, head, source: dir, format: 'peft' };
  validatePet(bundle, base, weightsPath);
  return bundle;
}


function refuseLoraFeatures(config: LoraConfig, path: string): void {
  const refuse = (what: string, why: string): never => {
    throw new PetFormatError(`${path}: ${what} is not supported: ${why}`);
  };
  if (config.use_dora) refuse('use_dora: true (DoRA)', 'its weight-norm rescaling is not a low-rank delta the engine applies');
  if (config.bias !== 'none') {
    refuse(`bias ${JSON.stringify(config.bias)}`, 'only "none"; trained biases of adapted modules need a bitfit PET');
  }
  if (config.lora_bias) refuse('lora_bias: true', 'lora_B with a bias is not a plain low-rank delta');
  const isSet = (v: unknown): boolean => v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0);
  if (isSet(config.layer_replication)) refuse('layer_replication', 'it changes the depth of the base model');
  if (isSet(config.trainable_token_indices)) refuse('trainable_token_indices', 'it changes the shared embeddings');
  if (isSet(config.target_parameters)) refuse('target_parameters', 'only target_modules (linear layers) are served');
  if (isSet(config.alora_invocation_tokens)) refuse('alora_invocation_tokens (activated LoRA)', 'the delta must apply to every token');
}

interface ModuleTensorNames {
  loraA?: string;
  loraB?: string;
  ia3?: string;
}

interface TensorLayout {
  /** 'bert.' or '' as the tensors show it; null when no adapter tensor says. */
  prefix: '' | 'bert.' | null;
  /** Module name as PEFT knows it (with the prefix) → its stored tensors. */
  modules: Map<string, ModuleTensorNames>;
}

function parseTensorNames(file: PetTensorFile, peftType: 'LORA' | 'IA3'): TensorLayout {
  const modules = new Map<string, ModuleTensorNames>();
  const unknown: string[] = [];
  let withBert = false;
  let bare = false;
  // PEFT drops the adapter name ("default") when saving; older files may keep it.
  const pattern = peftType === 'LORA' ? /^(.+)\.(lora_A|lora_B)(?:\.default)?\.weight$/ : /^(.+)\.(ia3_l)(?:\.default)?$/;
  for (const name of file.names()) {
    const rest = name.startsWith(TENSOR_PREFIX) ? name.slice(TENSOR_PREFIX.length) : null;
    if (rest !== null && HEAD_SPELLINGS.some((h) => rest === `${h}weight` || rest === `${h}bias`)) continue;
    const m = rest === null ? null : pattern.exec(rest);
    if (!m) {
      unknown.push(name);
      continue;
    }
    const module = m[1]!;
    if (module.startsWith(BERT_PREFIX)) withBert = true;
    else if (module !== 'classifier') bare = true;
    const entry = modules.get(module) ?? {};
    const slot = m[2] === 'lora_A' ? 'loraA' : m[2] === 'lora_B' ? 'loraB' : 'ia3';
    if (entry[slot] !== undefined) throw new PetFormatError(`${file.label}: tensors '${entry[slot]}' and '${name}' are the same parameter`);
    entry[slot] = name;
    modules.set(module, entry);
  }
  if (unknown.length > 0) {
    const expected =
      peftType === 'LORA' ? '<module>.lora_A.weight / <module>.lora_B.weight' : '<module>.ia3_l';
    throw new PetFormatError(
      `${file.label}: tensors not understood for a ${peftType} adapter: ${listNames(unknown)} ` +
        `(expected ${TENSOR_PREFIX}[bert.]${expected} and the classifier)`,
    );
  }
  if (withBert && bare) {
    throw new PetFormatError(`${file.label}: adapter tensors mix names with and without the "${BERT_PREFIX}" prefix`);
  }
  return { prefix: withBert ? BERT_PREFIX : bare ? '' : null, modules };
}

function refuseModulesToSave(entries: readonly string[], modules: readonly string[], path: string): void {
  for (const entry of entries) {
    if (entry === 'classifier') continue;
    // PEFT wraps every module whose name ends with the entry ("score", added
    // for SEQ_CLS, matches nothing in BERT and is harmless).
    const hits = modules.filter((m) => m.endsWith(entry));
    if (hits.length > 0) {
      throw new PetFormatError(
        `${path}: modules_to_save entry '${entry}' (module ${listNames(hits, 2)}) is not supported: ` +
          `a task may bring its own classifier, not its own copy of a base module`,
      );
    }
  }
}

function readLoraSites(
  config: LoraConfig,
  selected: readonly string[],
  layout: TensorLayout,
  file: PetTensorFile,
  baseConfig: BertConfig,
  prefix: string,
  configPath: string,
): LoraSite[] {
  const sites: LoraSite[] = [];
  const fanInFanOut = config.fan_in_fan_out;
  for (const module of selected) {
    const { layer, site } = linearSiteOf(baseConfig, module, prefix)!;
    const names = layout.modules.get(module) ?? {};
    const expected = (part: 'lora_A' | 'lora_B'): string => `${TENSOR_PREFIX}${module}.${part}.weight`;
    if (names.loraA === undefined || names.loraB === undefined) {
      const missing = names.loraA === undefined ? expected('lora_A') : expected('lora_B');
      const has = names.loraA ?? names.loraB;
      throw new PetFormatError(
        `${file.label}: missing tensor '${missing}' for target module '${module}'${has ? ` ('${has}' is present)` : ''}`,
      );
    }
    const rankKey = config.rank_pattern ? patternKeyFor(config.rank_pattern, module, `${configPath}: rank_pattern`) : undefined;
    const rank = rankKey === undefined ? config.r : config.rank_pattern![rankKey]!;
    const alphaKey = config.alpha_pattern ? patternKeyFor(config.alpha_pattern, module, `${configPath}: alpha_pattern`) : undefined;
    const alpha = alphaKey === undefined ? config.lora_alpha : config.alpha_pattern![alphaKey]!;
    const { outDim, inDim } = linearSiteDims(baseConfig, site);
    const rankWhy = `r = ${rank}${rankKey === undefined ? '' : ` from rank_pattern key '${rankKey}'`}`;
    const stored = fanInFanOut ? ', stored transposed (fan_in_fan_out)' : '';
    let a: Float32Array;
    let b: Float32Array;
    if (fanInFanOut) {
      a = transpose(file.readFloat(names.loraA, [inDim, rank], `lora_A is [in, r]${stored}, ${rankWhy}`), inDim, rank);
      b = transpose(file.readFloat(names.loraB, [rank, outDim], `lora_B is [r, out]${stored}, ${rankWhy}`), rank, outDim);
    } else {
      a = file.readFloat(names.loraA, [rank, inDim], `lora_A is [r, in], ${rankWhy}`);
      b = file.readFloat(names.loraB, [outDim, rank], `lora_B is [out, r], ${rankWhy}`);
    }
    // rsLoRA (Kalajdzievski 2023): alpha/√r keeps the update's scale rank-independent.
    const scale = alpha / (config.use_rslora ? Math.sqrt(rank) : rank);
    sites.push({ layer, site, rank, scale, a, b });
  }
  return sites.sort(compareSites);
}

function readIa3Sites(
  config: Ia3Config,
  spec: TargetSpec,
  selected: readonly string[],
  layout: TensorLayout,
  file: PetTensorFile,
  baseConfig: BertConfig,
  prefix: string,
): Ia3Site[] {
  // As target_modules, a missing feedforward_modules comes from PEFT's table for BERT.
  const feedforward: ModuleSelector = config.feedforward_modules ?? DEFAULT_IA3_FEEDFORWARD;
  // IA3Config.__post_init__ refuses the same (only for lists the user gave).
  if (Array.isArray(config.feedforward_modules) && Array.isArray(spec.targetModules)) {
    const outside = (config.feedforward_modules as string[]).filter((f) => !(spec.targetModules as readonly string[]).includes(f));
    if (outside.length > 0) {
      throw new PetFormatError(
        `${spec.source ?? file.label}: feedforward_modules ${listNames(outside)} are not in target_modules (PEFT requires a subset)`,
      );
    }
  }
  const sites: Ia3Site[] = [];
  for (const module of selected) {
    const { layer, site } = linearSiteOf(baseConfig, module, prefix)!;
    const name = layout.modules.get(module)?.ia3;
    if (name === undefined) {
      throw new PetFormatError(`${file.label}: missing tensor '${TENSOR_PREFIX}${module}.ia3_l' for target module '${module}'`);
    }
    const { outDim, inDim } = linearSiteDims(baseConfig, site);
    if (isFeedforwardModule(feedforward, module, `${spec.source ?? file.label}: feedforward_modules`)) {
      if (!INPUT_SCALE_SITES.includes(site)) {
        throw new PetFormatError(
          `${file.label}: IA³ input scaling of '${module}' (selected by feedforward_modules) is not supported: ` +
            `only the inputs of attention.output.dense and output.dense can be scaled; query, key, value and ` +
            `intermediate.dense share their input with other sites`,
        );
      }
      sites.push({ layer, site, mode: 'input', scale: file.readFloat(name, [1, inDim], 'feedforward module: input scaling [1, in]') });
    } else {
      sites.push({ layer, site, mode: 'output', scale: file.readFloat(name, [outDim, 1], 'output scaling [out, 1]') });
    }
  }
  return sites.sort(compareSites);
}

function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
  }
  return out;
}

function ownId2label(config: LoraConfig | Ia3Config, path: string): string[] | null {
  if (config.id2label) {
    if (Array.isArray(config.id2label)) return config.id2label;
    return labelsByIndex(
      Object.entries(config.id2label).map(([k, v]): [number, string] => [Number(k), v]),
      path,
      'id2label',
    );
  }
  if (config.label2id) {
    return labelsByIndex(
      Object.entries(config.label2id).map(([k, v]): [number, string] => [v, k]),
      path,
      'label2id',
    );
  }
  return null;
}

function labelsByIndex(entries: [number, string][], path: string, key: string): string[] {
  const labels: string[] = [];
  for (const [index, label] of entries) {
    if (!Number.isInteger(index) || index < 0 || index >= entries.length || labels[index] !== undefined) {
      throw new PetFormatError(`${path}: ${key} does not map the indices 0..${entries.length - 1} one to one`);
    }
    labels[index] = label;
  }
  return labels;
}

function readPeftHead(file: PetTensorFile, id2label: string[] | null, config: BertConfig, source: string): PetBundle['head'] {
  const present = HEAD_SPELLINGS.filter((h) => file.has(`${TENSOR_PREFIX}${h}weight`) || file.has(`${TENSOR_PREFIX}${h}bias`));
  if (present.length > 1) {
    throw new PetFormatError(
      `${file.label}: the classifier is saved twice (${present.map((h) => `'${TENSOR_PREFIX}${h}weight'`).join(' and ')})`,
    );
  }
  const spelling = present[0] ?? 'classifier.';
  return readHead(file, `${TENSOR_PREFIX}${spelling}weight`, `${TENSOR_PREFIX}${spelling}bias`, id2label, config, source);
}

// ------------------------------------------------------------------ writer

export interface PeftWriteOptions {
  /** adapter_config.json base_model_name_or_path. */
  baseModelNameOrPath: string;
  /** target_modules to write; must select exactly the bundle's sites. Default: the sites' PEFT suffixes, or full names. */
  targetModules?: string[];
  /** IA³ feedforward_modules; must select exactly the input-scaled sites. */
  feedforwardModules?: string[];
}

/**
 * Write a LoRA or IA³ bundle as PEFT saves it: adapter_config.json (sorted
 * keys) + adapter_model.safetensors with base_model.model.[bert.] names. A task
 * with a head is written as PEFT's SEQ_CLS on BertForSequenceClassification
 * (classifier under modules_to_save), one without as FEATURE_EXTRACTION on BertModel.
 */
export async function writePeftDirectory(
  dir: string,
  bundle: PetBundle,
  baseConfig: BertConfig,
  options: PeftWriteOptions,
): Promise<WrittenPet> {
  const pet = bundle.pet;
  if (pet.kind !== 'lora' && pet.kind !== 'ia3') {
    throw new PetFormatError(`${bundle.source}: PEFT directories hold lora or ia3 PETs, not ${pet.kind}`);
  }
  validatePetForConfig(bundle, baseConfig);
  const prefix = bundle.head ? BERT_PREFIX : '';
  const modules = baseModuleNames(baseConfig, prefix);
  const siteNames = pet.sites.map((s) => `${prefix}${siteModule(baseConfig, s.layer, s.site)}`);
  const siteTypes = LINEAR_SITES.filter((t) => pet.sites.some((s) => s.site === t));
  const selects = (targets: string[], names: readonly string[]): boolean => {
    const chosen = modules.filter((m) => isTargetModule({ targetModules: targets }, m));
    return chosen.length === names.length && names.every((n) => chosen.includes(n));
  };
  let targetModules = options.targetModules ?? siteTypes.map((t) => PEFT_SITE_TARGET[t]);
  if (!selects(targetModules, siteNames)) {
    if (options.targetModules) {
      throw new PetFormatError(`${bundle.source}: target_modules ${JSON.stringify(targetModules)} do not select exactly the PET's sites`);
    }
    targetModules = siteNames; // exact module names always do
  }
  const tensors: Record<string, TensorToWrite> = {};
  const common: PeftCommonConfig = {
    auto_mapping: null,
    base_model_name_or_path: options.baseModelNameOrPath,
    fan_in_fan_out: false,
    inference_mode: true,
    modules_to_save: bundle.head ? ['classifier'] : null,
    revision: null,
    target_modules: targetModules,
    task_type: bundle.head ? 'SEQ_CLS' : 'FEATURE_EXTRACTION',
  };
  const parts: PeftWriteParts = { common, siteNames, tensors, baseConfig, options, source: bundle.source };
  const adapterConfig = pet.kind === 'lora' ? loraAdapterConfig(pet.sites, parts) : ia3AdapterConfig(pet.sites, parts);
  if (bundle.head) {
    const rows = bundle.head.bias.length;
    tensors[`${TENSOR_PREFIX}classifier.weight`] = { dtype: 'F32', shape: [rows, baseConfig.hiddenSize], data: bundle.head.weight };
    tensors[`${TENSOR_PREFIX}classifier.bias`] = { dtype: 'F32', shape: [rows], data: bundle.head.bias };
  }

  // PEFT writes json.dumps(config, indent=2, sort_keys=True).
  const sorted = Object.fromEntries(Object.entries(adapterConfig).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return writePetFiles(dir, { name: PEFT_CONFIG_FILE, json: sorted }, PEFT_WEIGHTS_FILE, tensors);
}

/** adapter_config.json keys LoRA and IA³ share. */
interface PeftCommonConfig {
  auto_mapping: null;
  base_model_name_or_path: string;
  fan_in_fan_out: boolean;
  inference_mode: boolean;
  modules_to_save: string[] | null;
  revision: null;
  target_modules: string[];
  task_type: string;
}

interface PeftWriteParts {
  common: PeftCommonConfig;
  /** PEFT module name of each site, in site order. */
  siteNames: readonly string[];
  /** adapter_model.safetensors being assembled. */
  tensors: Record<string, TensorToWrite>;
  baseConfig: BertConfig;
  options: PeftWriteOptions;
  source: string;
}

/** LoRA tensors, and its config: one r and lora_alpha, per-module overrides where a site differs. */
function loraAdapterConfig(sites: readonly LoraSite[], { common, siteNames, tensors, baseConfig }: PeftWriteParts): Record<string, unknown> {
  const r = sites[0]?.rank ?? 8;
  const alpha = sites[0] ? sites[0].scale * r : 8;
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  sites.forEach((s, i) => {
    const name = siteNames[i]!;
    const { outDim, inDim } = linearSiteDims(baseConfig, s.site);
    tensors[`${TENSOR_PREFIX}${name}.lora_A.weight`] = { dtype: 'F32', shape: [s.rank, inDim], data: s.a };
    tensors[`${TENSOR_PREFIX}${name}.lora_B.weight`] = { dtype: 'F32', shape: [outDim, s.rank], data: s.b };
    if (s.rank !== r) rankPattern[name] = s.rank;
    if (s.scale * s.rank !== alpha) alphaPattern[name] = s.scale * s.rank;
  });
  return {
    ...common,
    alpha_pattern: alphaPattern,
    bias: 'none',
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: alpha,
    lora_dropout: 0.1,
    megatron_config: null,
    megatron_core: 'megatron.core',
    peft_type: 'LORA',
    r,
    rank_pattern: rankPattern,
    use_dora: false,
    use_rslora: false,
  };
}

/** IA³ tensors, and its config: feedforward_modules must select exactly the input-scaled sites. */
function ia3AdapterConfig(sites: readonly Ia3Site[], { common, siteNames, tensors, options, source }: PeftWriteParts): Record<string, unknown> {
  const inputNames = sites.flatMap((s, i) => (s.mode === 'input' ? [siteNames[i]!] : []));
  const ffSelects = (ff: string[]): boolean => siteNames.every((n) => isFeedforwardModule(ff, n) === inputNames.includes(n));
  const inputTypes = LINEAR_SITES.filter((t) => sites.some((s) => s.site === t && s.mode === 'input'));
  let feedforward = options.feedforwardModules ?? inputTypes.map((t) => PEFT_SITE_TARGET[t]);
  if (!ffSelects(feedforward) || !feedforward.every((f) => common.target_modules.includes(f))) {
    if (options.feedforwardModules || options.targetModules) {
      throw new PetFormatError(
        `${source}: feedforward_modules ${JSON.stringify(feedforward)} do not select exactly the input-scaled sites ` +
          `within target_modules ${JSON.stringify(common.target_modules)}`,
      );
    }
    // Exact names: target_modules matches them exactly, feedforward's endswith only itself.
    common.target_modules = [...siteNames];
    feedforward = inputNames;
  }
  sites.forEach((s, i) => {
    tensors[`${TENSOR_PREFIX}${siteNames[i]!}.ia3_l`] = {
      dtype: 'F32',
      shape: s.mode === 'input' ? [1, s.scale.length] : [s.scale.length, 1],
      data: s.scale,
    };
  });
  return { ...common, feedforward_modules: feedforward, init_ia3_weights: true, peft_type: 'IA3' };
}
