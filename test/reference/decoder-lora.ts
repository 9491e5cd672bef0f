// A Hugging Face PEFT LoRA directory (adapter_config.json + adapter_model.safetensors)
// merged into the float64 decoder's checkpoint tensors, following PEFT's own rules
// (peft/tuners/lora, peft/utils/other.py, save_and_load.py) rather than this
// project's PET formats:
//   W ← W + s·B·A, A [r, in], B [out, r], s = alpha/r (alpha/√r with use_rslora),
//     r and alpha per module from rank_pattern / alpha_pattern (get_pattern_key);
//   GPT-2 Conv1D weights are stored [in, out], so the delta is added transposed.
//     PEFT forces fan_in_fan_out to True for Conv1D targets and to False for
//     nn.Linear ones whatever the config says, so the module type decides here too;
//   modules_to_save tensors replace the module's parameters. Saved files name them
//     <path>.weight (PEFT strips "modules_to_save.<adapter>."); the unstripped
//     spellings are accepted as well.
// Tied embeddings: PEFT wraps one module and leaves the other on the original
// shared Parameter, and an unmerged LoRA on lm_head changes only lm_head's output.
// So when an adapter touches lm_head or the token embedding of a tied model, the
// two are untied first and only the addressed one changes.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BODY_PREFIX, EMBED_MODULE, moduleKind, readJsonObject } from './decoder-checkpoint.js';
import type { DecoderSpec } from './decoder-config.js';
import { readSafetensorsF64Typed } from './safetensors-f64.js';
import type { RefTensor, RefTypedTensor } from './safetensors-f64.js';

type Json = Record<string, unknown>;

export interface PeftLoraConfig {
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  rankPattern: Map<string, number>;
  alphaPattern: Map<string, number>;
  targetModules: string | string[] | null;
  excludeModules: string | string[] | null;
  modulesToSave: string[];
  layersToTransform: number[] | null;
  layersPattern: string[] | null;
  ensureWeightTying: boolean;
}

function fail(where: string, message: string): never {
  throw new Error(`refDecoder LoRA ${where}: ${message}`);
}

function numberMap(where: string, value: unknown, key: string): Map<string, number> {
  const map = new Map<string, number>();
  if (value === undefined || value === null) return map;
  if (typeof value !== 'object' || Array.isArray(value)) fail(where, `${key} must be an object`);
  for (const [k, v] of Object.entries(value as Json)) {
    if (typeof v !== 'number' || !(v > 0)) fail(where, `${key}[${JSON.stringify(k)}] must be a positive number`);
    map.set(k, v);
  }
  return map;
}

function stringOrList(where: string, value: unknown, key: string): string | string[] | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value as string[];
  fail(where, `${key} must be a string, a list of strings or null`);
}

/** adapter_config.json, refusing the LoRA variants this reference does not model. */
export function parsePeftLoraConfig(raw: Json, where = 'adapter_config.json'): PeftLoraConfig {
  const peftType = raw['peft_type'] ?? 'LORA';
  if (peftType !== 'LORA') fail(where, `peft_type ${JSON.stringify(peftType)} is not LORA`);
  const bias = raw['bias'] ?? 'none';
  if (bias !== 'none') fail(where, `bias ${JSON.stringify(bias)} is not supported (only "none")`);
  const refused: [string, (v: unknown) => boolean][] = [
    ['use_dora', (v) => v === true],
    ['lora_bias', (v) => v === true],
    ['target_parameters', (v) => v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0)],
    ['trainable_token_indices', (v) => v !== undefined && v !== null],
    ['layer_replication', (v) => v !== undefined && v !== null],
  ];
  for (const [key, isSet] of refused) if (isSet(raw[key])) fail(where, `${key} is not supported by the reference`);
  const r = raw['r'] ?? 8;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) fail(where, `r must be a positive integer, got ${JSON.stringify(r)}`);
  const loraAlpha = raw['lora_alpha'] ?? 8;
  if (typeof loraAlpha !== 'number' || !Number.isFinite(loraAlpha)) fail(where, 'lora_alpha must be a number');
  const useRslora = raw['use_rslora'] ?? false;
  if (typeof useRslora !== 'boolean') fail(where, 'use_rslora must be a boolean');
  const modulesToSave = stringOrList(where, raw['modules_to_save'], 'modules_to_save');
  if (typeof modulesToSave === 'string') fail(where, 'modules_to_save must be a list');
  const layers = raw['layers_to_transform'];
  let layersToTransform: number[] | null = null;
  if (typeof layers === 'number') layersToTransform = [layers];
  else if (Array.isArray(layers) && layers.length > 0) layersToTransform = layers as number[];
  const pattern = stringOrList(where, raw['layers_pattern'], 'layers_pattern');
  const ensureWeightTying = raw['ensure_weight_tying'] ?? false;
  if (typeof ensureWeightTying !== 'boolean') fail(where, 'ensure_weight_tying must be a boolean');
  return {
    r,
    loraAlpha,
    useRslora,
    rankPattern: numberMap(where, raw['rank_pattern'], 'rank_pattern'),
    alphaPattern: numberMap(where, raw['alpha_pattern'], 'alpha_pattern'),
    targetModules: stringOrList(where, raw['target_modules'], 'target_modules'),
    excludeModules: stringOrList(where, raw['exclude_modules'], 'exclude_modules'),
    modulesToSave: modulesToSave ?? [],
    layersToTransform,
    layersPattern: pattern === null ? null : typeof pattern === 'string' ? [pattern] : pattern,
    ensureWeightTying,
  };
}

/** Python re.match(pattern, text): anchored at the start only (a sticky regex from index 0). */
function pyMatch(pattern: string, text: string): boolean {
  return new RegExp(pattern, 'y').test(text);
}

const pyFullMatch = (pattern: string, text: string): boolean => new RegExp(`^(?:${pattern})$`).test(text);

/** PEFT get_pattern_key: the first key K, in file order, with re.match(rf"(.*\.)?({K})$", module). */
function patternKey(keys: Iterable<string>, module: string): string {
  for (const key of keys) if (pyMatch(`(.*\\.)?(${key})$`, module)) return key;
  return module;
}

/** Rank, alpha and scale PEFT gives the LoRA layer on `module` (its name in the model PEFT wrapped). */
export function loraRankAlpha(config: PeftLoraConfig, module: string): { rank: number; alpha: number; scale: number } {
  const rank = config.rankPattern.get(patternKey(config.rankPattern.keys(), module)) ?? config.r;
  const alpha = config.alphaPattern.get(patternKey(config.alphaPattern.keys(), module)) ?? config.loraAlpha;
  return { rank, alpha, scale: config.useRslora ? alpha / Math.sqrt(rank) : alpha / rank };
}

/** PEFT check_target_module_exists, for a module that holds LoRA weights. */
export function isLoraTarget(config: PeftLoraConfig, module: string, isOutputLayer: boolean): boolean {
  const { excludeModules, targetModules } = config;
  if (typeof excludeModules === 'string' ? pyFullMatch(excludeModules, module) : excludeModules?.some((e) => module === e || module.endsWith(`.${e}`))) {
    return false;
  }
  // Adapters never sit on modules_to_save modules.
  if (config.modulesToSave.some((m) => pyMatch(`(^|.*\\.)${m}($|\\..*)`, module))) return false;
  if (targetModules === null) return false;
  if (typeof targetModules === 'string') {
    // 'all-linear' is expanded by PEFT to every linear layer but the output layer.
    return targetModules === 'all-linear' ? !isOutputLayer : pyFullMatch(targetModules, module);
  }
  if (targetModules.includes(module)) return true;
  if (!targetModules.some((t) => module.endsWith(`.${t}`))) return false;
  if (config.layersToTransform === null) return true;
  const patterns = config.layersPattern ?? [null];
  for (const pattern of patterns) {
    const match = pattern === null ? /^.*?\.[^.]*\.(\d+)\./.exec(module) : new RegExp(`^.*?\\.${pattern}\\.(\\d+)\\.`).exec(module);
    if (match !== null) return config.layersToTransform.includes(Number(match[1]));
  }
  return false;
}

interface LoraPair {
  a?: RefTypedTensor;
  b?: RefTypedTensor;
}

/** Groups the adapter file's tensors: LoRA pairs by module, modules_to_save parameters by parameter path. */
function splitAdapterTensors(where: string, tensors: Map<string, RefTypedTensor>): { pairs: Map<string, LoraPair>; saved: Map<string, RefTypedTensor> } {
  const pairs = new Map<string, LoraPair>();
  const saved = new Map<string, RefTypedTensor>();
  const prefix = 'base_model.model.';
  for (const [name, tensor] of tensors) {
    if (!name.startsWith(prefix)) fail(where, `tensor ${name} does not start with ${prefix}`);
    if (!['F64', 'F32', 'F16', 'BF16'].includes(tensor.dtype)) fail(where, `tensor ${name} has dtype ${tensor.dtype}`);
    const path = name.slice(prefix.length);
    if (/\.lora_(embedding_[AB]|magnitude_vector)\b/.test(path)) fail(where, `tensor ${name}: embedding LoRA and DoRA are not supported`);
    const lora = /^(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(path);
    if (lora !== null) {
      const pair = pairs.get(lora[1]!) ?? {};
      if (lora[2] === 'A' ? pair.a : pair.b) fail(where, `module ${lora[1]} has two lora_${lora[2]} tensors`);
      if (lora[2] === 'A') pair.a = tensor;
      else pair.b = tensor;
      pairs.set(lora[1]!, pair);
      continue;
    }
    if (/\.lora_/.test(path)) fail(where, `tensor ${name} is not a LoRA weight this reference understands`);
    const param = path.replace(/\.modules_to_save(?:\.default)?\./, '.');
    if (saved.has(param)) fail(where, `two tensors save ${param}`);
    saved.set(param, tensor);
  }
  return { pairs, saved };
}

function shapeOf(t: { shape: number[] }): string {
  return JSON.stringify(t.shape);
}

/** Merges the adapter in adapterDir into `tensors` (canonical names, see decoder-checkpoint) in place. */
export function mergePeftLora(spec: DecoderSpec, tensors: Map<string, RefTensor>, adapterDir: string): void {
  const where = adapterDir;
  const config = parsePeftLoraConfig(readJsonObject(join(adapterDir, 'adapter_config.json'), 'adapter config'), where);
  const file = join(adapterDir, 'adapter_model.safetensors');
  if (!existsSync(file)) fail(where, 'adapter_model.safetensors is missing (adapter_model.bin is not read)');
  const { pairs, saved } = splitAdapterTensors(where, readSafetensorsF64Typed(file));

  const prefix = BODY_PREFIX[spec.family];
  const canonical = (path: string): string => (path === 'lm_head' || path.startsWith(prefix) ? path : prefix + path);
  const embedModule = EMBED_MODULE[spec.family];
  const savedModules = [...saved.keys()].map((p) => canonical(p.slice(0, p.lastIndexOf('.'))));
  const touched = [...[...pairs.keys()].map(canonical), ...savedModules];
  if (spec.tieWordEmbeddings && touched.some((m) => m === 'lm_head' || m === embedModule)) {
    if (config.ensureWeightTying) fail(where, 'ensure_weight_tying with a tied lm_head / embedding is not supported');
    const embedding = tensors.get(`${embedModule}.weight`);
    if (embedding === undefined) fail(where, `base model lacks ${embedModule}.weight`);
    if (!tensors.has('lm_head.weight')) tensors.set('lm_head.weight', { shape: [...embedding.shape], data: embedding.data.slice() });
  }

  for (const [path, pair] of pairs) {
    const module = canonical(path);
    if (pair.a === undefined || pair.b === undefined) fail(where, `module ${path} has only one of lora_A / lora_B`);
    const kind = moduleKind(spec.family, module);
    if (kind !== 'linear' && kind !== 'conv1d') fail(where, `module ${path} is a ${kind}, not a linear layer LoRA can merge into`);
    if (!isLoraTarget(config, path, module === 'lm_head')) fail(where, `module ${path} holds LoRA weights but is not targeted by adapter_config.json`);
    const base = tensors.get(`${module}.weight`);
    if (base === undefined || base.shape.length !== 2) fail(where, `module ${path} has no 2-D weight in the base model`);
    const [outDim, inDim] = kind === 'conv1d' ? [base.shape[1]!, base.shape[0]!] : [base.shape[0]!, base.shape[1]!];
    const { rank, scale } = loraRankAlpha(config, path);
    if (shapeOf(pair.a) !== JSON.stringify([rank, inDim]) || shapeOf(pair.b) !== JSON.stringify([outDim, rank])) {
      fail(
        where,
        `module ${path}: lora_A ${shapeOf(pair.a)} and lora_B ${shapeOf(pair.b)} do not fit rank ${rank} on a ${outDim}×${inDim} layer`,
      );
    }
    const a = pair.a.data;
    const b = pair.b.data;
    const w = base.data;
    for (let o = 0; o < outDim; o++) {
      for (let i = 0; i < inDim; i++) {
        let delta = 0;
        for (let k = 0; k < rank; k++) delta += b[o * rank + k]! * a[k * inDim + i]!;
        const at = kind === 'conv1d' ? i * outDim + o : o * inDim + i;
        w[at] = w[at]! + scale * delta;
      }
    }
  }

  for (const [param, tensor] of saved) {
    const module = param.slice(0, param.lastIndexOf('.'));
    if (!config.modulesToSave.some((m) => module.endsWith(m))) {
      fail(where, `tensor ${param} is neither a LoRA weight nor part of a modules_to_save module`);
    }
    const target = tensors.get(canonical(module) + param.slice(module.length));
    if (target === undefined || shapeOf(target) !== shapeOf(tensor)) {
      fail(where, `modules_to_save ${param} ${shapeOf(tensor)} matches no base parameter of that shape`);
    }
    target.data.set(tensor.data);
  }
}
