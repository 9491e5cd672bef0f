// Random Hugging Face PEFT LoRA adapters for causal LMs (Llama, Qwen2,
// Mistral, GPT-2, BLOOM): adapter_config.json + adapter_model.safetensors with
// the keys PEFT's get_peft_model_state_dict saves, so engines and tests get a
// real-looking adapter without training one. Unlike PEFT's initialisation,
// lora_B is not zero: the adapter must change what the model computes.
// Deterministic by seed.

import { join } from 'node:path';

import { decoderModuleTable, moduleShortNames } from '../../model/decoder-modules.js';
import type { DecoderModule, DecoderModuleTable } from '../../model/decoder-modules.js';
import { readCheckpointJson } from '../../model/checkpoint.js';
import type { TensorToWrite } from '../../model/safetensors.js';
import { InvalidInputError } from '../../util/errors.js';
import { Rng } from '../../util/random.js';
import { listNames, writePetFiles, type WrittenPet } from './common.js';
import { matchesModuleList, patternKeyFor } from './match.js';
import { PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE } from './peft.js';

export interface RandomPeftLoraOptions {
  /** Base checkpoint directory (its config.json is read); or give `config`. */
  modelDir?: string;
  /** The base model's parsed config.json, when there is no directory. */
  config?: Record<string, unknown>;
  /** adapter_config base_model_name_or_path (default: modelDir, else config _name_or_path, else ''). */
  baseModelNameOrPath?: string;
  /** PEFT target_modules as a list (names or dotted suffixes). Default: PEFT's default for the model type. */
  targetModules?: string[];
  rank: number;
  /** lora_alpha (default 8, PEFT's). */
  alpha?: number;
  /** rsLoRA: scale alpha / sqrt(r) instead of alpha / r. */
  useRslora?: boolean;
  /** Per-module r, keys matched as PEFT's get_pattern_key does. */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  /** Modules trained and saved whole (`lm_head`, `embed_tokens`, ...). */
  modulesToSave?: string[];
  seed: number;
  dtype?: 'f32' | 'f16';
}

export interface WrittenPeftLora extends WrittenPet {
  /** Module paths that carry LoRA, in model order. */
  loraModules: string[];
  /** Module paths saved whole. */
  savedModules: string[];
}

/** The prefix PeftModelForCausalLM puts before every module path. */
export const PEFT_MODEL_PREFIX = 'base_model.model.';
const PEFT_DEFAULT_ALPHA = 8;
// lora_B is drawn so that scale * B A x has ~DELTA_GAIN times the rms of x:
// about half of what the base projection itself writes (init-decoder's gain 2),
// whatever r, alpha and rsLoRA are.
const DELTA_GAIN = 1;
const BIAS_STD = 0.1;

/** Write a random LoRA adapter for a causal LM into `dir`. */
export async function writeRandomPeftLora(dir: string, opts: RandomPeftLoraOptions): Promise<WrittenPeftLora> {
  const fail = (message: string): never => {
    throw new InvalidInputError(`random PEFT LoRA: ${message}`);
  };
  let config = opts.config;
  if (config === undefined) {
    if (opts.modelDir === undefined) fail('give modelDir or config');
    config = (await readCheckpointJson(join(opts.modelDir!, 'config.json'))) as Record<string, unknown>;
  }
  const source = opts.modelDir === undefined ? 'config' : join(opts.modelDir, 'config.json');
  const table = decoderModuleTable(config, source);
  const { rank, alpha = PEFT_DEFAULT_ALPHA, useRslora = false, rankPattern = {}, alphaPattern = {}, modulesToSave = [] } = opts;
  const dtype = opts.dtype ?? 'f32';
  if (!Number.isSafeInteger(rank) || rank < 1) fail(`rank must be an integer >= 1, got ${rank}`);
  if (!Number.isFinite(alpha) || alpha === 0) fail(`alpha must be a non-zero finite number, got ${alpha}`);
  if (!Number.isSafeInteger(opts.seed)) fail(`seed must be an integer, got ${opts.seed}`);
  if (dtype !== 'f32' && dtype !== 'f16') fail(`dtype must be f32 or f16, got ${JSON.stringify(dtype)}`);

  const targetModules = opts.targetModules ?? table.defaultLoraTargets;
  if (targetModules.length === 0) fail('target modules must not be empty');
  const loraModules = selectModules(table, targetModules, 'target module', fail);
  const savedModules = selectModules(table, modulesToSave, 'modules_to_save entry', fail);
  const both = loraModules.filter((m) => savedModules.includes(m));
  if (both.length > 0) fail(`${listNames(both.map((m) => m.path))} are both LoRA targets and modules_to_save; PEFT allows one or the other`);
  checkPattern(rankPattern, loraModules, 'rank_pattern', (v) => Number.isSafeInteger(v) && v >= 1, 'an integer >= 1', fail);
  checkPattern(alphaPattern, loraModules, 'alpha_pattern', (v) => Number.isFinite(v) && v !== 0, 'a non-zero finite number', fail);

  const rng = new Rng(opts.seed);
  const tensorDtype: TensorToWrite['dtype'] = dtype === 'f16' ? 'F16' : 'F32';
  const tensors: Record<string, TensorToWrite> = {};
  const put = (name: string, shape: number[], std: number): void => {
    const data = rng.fillNormal(new Float32Array(shape[0]! * (shape[1] ?? 1)), 0, std);
    tensors[`${PEFT_MODEL_PREFIX}${name}`] = { dtype: tensorDtype, shape, data };
  };
  for (const module of loraModules) {
    const rankKey = patternKeyFor(rankPattern, module.path, 'rank_pattern');
    const alphaKey = patternKeyFor(alphaPattern, module.path, 'alpha_pattern');
    const r = rankKey === undefined ? rank : rankPattern[rankKey]!;
    const a = alphaKey === undefined ? alpha : alphaPattern[alphaKey]!;
    const scale = useRslora ? a / Math.sqrt(r) : a / r;
    if (module.kind === 'embedding') {
      // PEFT's lora.Embedding: A [r, num_embeddings] picks a column per token, B [dim, r].
      const bStd = (DELTA_GAIN / Math.sqrt(table.hiddenSize)) / (Math.abs(scale) * Math.sqrt(r));
      put(`${module.path}.lora_embedding_A`, [r, module.inFeatures], 1);
      put(`${module.path}.lora_embedding_B`, [module.outFeatures, r], bStd);
    } else {
      // Shapes are the same for Conv1D: PEFT takes in/out from its [in, out] weight.
      put(`${module.path}.lora_A.weight`, [r, module.inFeatures], 1 / Math.sqrt(module.inFeatures));
      put(`${module.path}.lora_B.weight`, [module.outFeatures, r], DELTA_GAIN / (Math.abs(scale) * Math.sqrt(r)));
    }
  }
  for (const module of savedModules) {
    // get_peft_model_state_dict drops the wrapper's `modules_to_save.<adapter>`:
    // the key is the module's own parameter name.
    if (module.kind === 'embedding') {
      put(`${module.path}.weight`, [module.inFeatures, module.outFeatures], 1 / Math.sqrt(module.outFeatures));
    } else {
      const shape = module.kind === 'conv1d' ? [module.inFeatures, module.outFeatures] : [module.outFeatures, module.inFeatures];
      put(`${module.path}.weight`, shape, 2 / Math.sqrt(module.inFeatures));
      if (module.bias) put(`${module.path}.bias`, [module.outFeatures], BIAS_STD);
    }
  }

  const adapterConfig: Record<string, unknown> = {
    alpha_pattern: { ...alphaPattern },
    auto_mapping: null,
    base_model_name_or_path: opts.baseModelNameOrPath ?? opts.modelDir ?? (typeof config['_name_or_path'] === 'string' ? config['_name_or_path'] : ''),
    bias: 'none',
    exclude_modules: null,
    // PEFT merges Conv1D's [in, out] weight with the delta transposed; the flag
    // says so for GPT-2 (its Linear lm_head would need false, PEFT flips it per module).
    fan_in_fan_out: loraModules.some((m) => m.kind === 'conv1d'),
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: alpha,
    lora_bias: false,
    lora_dropout: 0.0,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: modulesToSave.length > 0 ? [...modulesToSave] : null,
    peft_type: 'LORA',
    r: rank,
    rank_pattern: { ...rankPattern },
    revision: null,
    target_modules: [...targetModules],
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: useRslora,
  };
  // PEFT writes json.dumps(config, indent=2, sort_keys=True).
  const sorted = Object.fromEntries(Object.entries(adapterConfig).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const written = await writePetFiles(dir, { name: PEFT_CONFIG_FILE, json: sorted }, PEFT_WEIGHTS_FILE, tensors);
  return { ...written, loraModules: loraModules.map((m) => m.path), savedModules: savedModules.map((m) => m.path) };
}

/** Modules selected by a PEFT module list; every entry must select at least one. */
function selectModules(
  table: DecoderModuleTable,
  entries: readonly string[],
  what: string,
  fail: (message: string) => never,
): DecoderModule[] {
  for (const entry of entries) {
    if (typeof entry !== 'string' || entry === '') fail(`${what} ${JSON.stringify(entry)} is not a module name`);
    if (!table.modules.some((m) => matchesModuleList([entry], m.path))) {
      fail(
        `${what} ${JSON.stringify(entry)} matches no module of this ${table.modelType} model ` +
          `(its modules: ${moduleShortNames(table).join(', ')})`,
      );
    }
  }
  return table.modules.filter((m) => matchesModuleList(entries, m.path));
}

function checkPattern(
  pattern: Readonly<Record<string, number>>,
  targeted: readonly DecoderModule[],
  what: string,
  valid: (value: number) => boolean,
  expected: string,
  fail: (message: string) => never,
): void {
  for (const [key, value] of Object.entries(pattern)) {
    if (!valid(value)) fail(`${what}[${JSON.stringify(key)}] must be ${expected}, got ${value}`);
    if (!targeted.some((m) => patternKeyFor({ [key]: value }, m.path, what) === key)) {
      fail(`${what} key ${JSON.stringify(key)} matches none of the targeted modules`);
    }
  }
}
