// Hugging Face PEFT LoRA directories for causal decoders (adapter_config.json +
// adapter_model.safetensors), matched against the model family's module table
// with PEFT's own rules (./match.ts). Every module an adapter touches must
// exist in the base with the same shape; otherwise the adapter was trained for
// another base and is refused naming the module.

import { join } from 'node:path';
import { z } from 'zod';

import type { DecoderConfig, DecoderFamily, DecoderLinearSite } from '../../model/families/decoder/types.js';
import { PetFormatError } from '../../util/errors.js';
import type { DecoderAdapter, DecoderLoraDelta, DecoderScale } from '../decoder-adapter.js';
import { PetTensorFile, formatIssues, listNames, pathExists, readJsonObject } from './common.js';
import { isFeedforwardModule, isTargetModule, patternKeyFor } from './match.js';

export const PEFT_CONFIG_FILE = 'adapter_config.json';
export const PEFT_WEIGHTS_FILE = 'adapter_model.safetensors';
const PREFIX = 'base_model.model.';

const selector = z.union([z.string(), z.array(z.string())]);
const configSchema = z.object({
  peft_type: z.string(),
  r: z.number().int().positive().default(8),
  lora_alpha: z.number().positive().default(8),
  target_modules: selector.nullish(),
  exclude_modules: selector.nullish(),
  layers_to_transform: z.union([z.number().int(), z.array(z.number().int())]).nullish(),
  layers_pattern: selector.nullish(),
  use_rslora: z.boolean().default(false),
  use_dora: z.boolean().default(false),
  rank_pattern: z.record(z.string(), z.number().int().positive()).default({}),
  alpha_pattern: z.record(z.string(), z.number().positive()).default({}),
  modules_to_save: z.array(z.string()).nullish(),
  bias: z.string().default('none'),
  fan_in_fan_out: z.boolean().default(false),
  feedforward_modules: selector.nullish(),
});
type PeftConfig = z.infer<typeof configSchema>;

/** Modules of a decoder a LoRA can target: the layer linears plus lm_head. */
function targetSites(family: DecoderFamily, config: DecoderConfig): DecoderLinearSite[] {
  const H = config.hiddenSize;
  return [
    ...family.linearSites(config),
    { module: family.vocabModules.lmHead, layer: -1, gemm: 'up', colOffset: 0, outDim: config.vocabSize, inDim: H, storage: 'linear', bias: false, outRows: null },
  ];
}


class FloatBlock {
  private readonly parts: Float32Array[] = [];
  private count = 0;
  add(data: Float32Array): number {
    const off = this.count;
    this.parts.push(data);
    this.count += data.length;
    return off;
  }
  finish(): Float32Array {
    const out = new Float32Array(this.count);
    let off = 0;
    for (const p of this.parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }
}

function permuteRows(b: Float32Array, cols: number, order: Uint32Array): Float32Array {
  const out = new Float32Array(b.length);
  for (let r = 0; r < order.length; r++) out.set(b.subarray(order[r]! * cols, (order[r]! + 1) * cols), r * cols);
  return out;
}

/** Load a PEFT LoRA or IA³ directory for `model`; PetFormatError naming the file, field or module on anything it cannot serve exactly. */
export async function loadDecoderPeft(dir: string, model: { family: DecoderFamily; config: DecoderConfig }): Promise<DecoderAdapter> {
  const configPath = join(dir, PEFT_CONFIG_FILE);
  if (!(await pathExists(configPath))) throw new PetFormatError(`${dir}: ${PEFT_CONFIG_FILE} not found (expected a Hugging Face PEFT directory)`);
  const parsed = configSchema.safeParse(await readJsonObject(configPath, PEFT_CONFIG_FILE));
  if (!parsed.success) throw new PetFormatError(`${PEFT_CONFIG_FILE}: ${formatIssues(parsed.error.issues)}`);
  const cfg = parsed.data;
  if (cfg.peft_type !== 'LORA' && cfg.peft_type !== 'IA3') {
    throw new PetFormatError(`${PEFT_CONFIG_FILE}: peft_type '${cfg.peft_type}' is not served for decoders (LORA, IA3)`);
  }
  if (cfg.use_dora) throw new PetFormatError(`${PEFT_CONFIG_FILE}: use_dora true is not supported (DoRA rescales the merged weight)`);
  if (cfg.bias !== 'none') throw new PetFormatError(`${PEFT_CONFIG_FILE}: bias '${cfg.bias}' is not supported (only 'none')`);
  const file = await PetTensorFile.open(join(dir, PEFT_WEIGHTS_FILE), PEFT_WEIGHTS_FILE);
  const block = new FloatBlock();
  const spec = {
    targetModules: cfg.target_modules ?? [],
    excludeModules: cfg.exclude_modules ?? null,
    layersToTransform: cfg.layers_to_transform ?? null,
    layersPattern: cfg.layers_pattern ?? null,
    source: PEFT_CONFIG_FILE,
  };
  const sites = targetSites(model.family, model.config);
  const loras = cfg.peft_type === 'LORA' ? readLoras(cfg, spec, sites, file, block) : [];
  const scales = cfg.peft_type === 'IA3' ? readScales(cfg, spec, sites, file, block) : [];
  const saved = readSavedModules(cfg, model, file, block);

  const unread = file.unread();
  if (unread.length > 0) {
    throw new PetFormatError(
      `${PEFT_WEIGHTS_FILE}: tensors that no module of this ${model.family.name} model takes: ${listNames(unread)} (an adapter for another base model, or an unsupported module)`,
    );
  }
  if (loras.length === 0 && scales.length === 0 && saved.lmHeadOff === null && saved.embedOff === null) {
    throw new PetFormatError(`${PEFT_WEIGHTS_FILE}: no tensor matches a module of this model`);
  }
  return {
    kind: cfg.peft_type === 'LORA' ? 'lora' : 'ia3',
    floats: block.finish(),
    words: new Uint32Array(0),
    loras,
    scales,
    lmHeadOff: saved.lmHeadOff,
    embedOff: saved.embedOff,
    touchesKv: scales.length > 0 || saved.embedOff !== null || loras.some((l) => l.gemm !== 'lm_head'),
    maxRank: Math.max(0, ...loras.map((l) => l.rank)),
  };
}

type Spec = Parameters<typeof isTargetModule>[0];

function readLoras(cfg: PeftConfig, spec: Spec, sites: readonly DecoderLinearSite[], file: PetTensorFile, block: FloatBlock): DecoderLoraDelta[] {
  const loras: DecoderLoraDelta[] = [];
  for (const site of sites) {
    const key = (part: 'lora_A' | 'lora_B'): string | null => {
      for (const k of [`${PREFIX}${site.module}.${part}.weight`, `${PREFIX}${site.module}.${part}.default.weight`]) if (file.has(k)) return k;
      return null;
    };
    const aKey = key('lora_A');
    const bKey = key('lora_B');
    if (!aKey && !bKey) continue;
    if (!aKey || !bKey) throw new PetFormatError(`${PEFT_WEIGHTS_FILE}: module '${site.module}' has only one of lora_A / lora_B`);
    if (!isTargetModule(spec, site.module)) {
      throw new PetFormatError(`${PEFT_WEIGHTS_FILE}: module '${site.module}' has LoRA weights but target_modules does not select it`);
    }
    const rankKey = patternKeyFor(cfg.rank_pattern, site.module, `${PEFT_CONFIG_FILE} rank_pattern`);
    const alphaKey = patternKeyFor(cfg.alpha_pattern, site.module, `${PEFT_CONFIG_FILE} alpha_pattern`);
    const rank = rankKey !== undefined ? cfg.rank_pattern[rankKey]! : cfg.r;
    const alpha = alphaKey !== undefined ? cfg.alpha_pattern[alphaKey]! : cfg.lora_alpha;
    const context = `module ${site.module}: rank ${rank}, base shape [${site.outDim}, ${site.inDim}]; an adapter for another base model?`;
    const a = file.readFloat(aKey, [rank, site.inDim], context);
    let b = file.readFloat(bKey, [site.outDim, rank], context);
    if (site.outRows) b = permuteRows(b, rank, site.outRows);
    loras.push({
      layer: site.layer,
      gemm: site.layer < 0 ? 'lm_head' : site.gemm,
      colOffset: site.colOffset,
      K: site.inDim,
      N: site.outDim,
      rank,
      aOff: block.add(a),
      bOff: block.add(b),
      scale: cfg.use_rslora ? alpha / Math.sqrt(rank) : alpha / rank,
    });
  }
  return loras;
}

/**
 * IA³ vectors. Output scaling is applied to the GEMM output before anything is
 * added to it, which the graph can do on GEMMs without a fused residual
 * (q/k/v, gate/up/fc); o_proj and down_proj fuse the residual, so there only
 * input scaling (feedforward_modules, PEFT's default for down_proj) is served.
 */
function readScales(cfg: PeftConfig, spec: Spec, sites: readonly DecoderLinearSite[], file: PetTensorFile, block: FloatBlock): DecoderScale[] {
  const scales: DecoderScale[] = [];
  for (const site of sites) {
    if (site.layer < 0) continue;
    const key = [`${PREFIX}${site.module}.ia3_l`, `${PREFIX}${site.module}.ia3_l.default`].find((k) => file.has(k));
    if (!key) continue;
    if (!isTargetModule(spec, site.module)) {
      throw new PetFormatError(`${PEFT_WEIGHTS_FILE}: module '${site.module}' has an IA³ vector but target_modules does not select it`);
    }
    const input = isFeedforwardModule(cfg.feedforward_modules, site.module, `${PEFT_CONFIG_FILE} feedforward_modules`);
    if (!input && (site.gemm === 'o' || site.gemm === 'down')) {
      throw new PetFormatError(
        `${PEFT_CONFIG_FILE}: IA³ output scaling of '${site.module}' is not supported (its residual is fused); list it in feedforward_modules`,
      );
    }
    const context = `module ${site.module}: IA³ ${input ? 'input' : 'output'} scaling; an adapter for another base model?`;
    let l = file.readFloat(key, input ? [1, site.inDim] : [site.outDim, 1], context);
    if (!input && site.outRows) l = permuteRows(l, 1, site.outRows);
    scales.push({
      layer: site.layer,
      gemm: site.gemm,
      mode: input ? 'input' : 'output',
      colOffset: input ? 0 : site.colOffset,
      width: input ? site.inDim : site.outDim,
      off: block.add(l),
    });
  }
  return scales;
}

/** modules_to_save lm_head / embed_tokens as per-task head and embedding tables; other saved modules are refused. */
function readSavedModules(
  cfg: PeftConfig,
  model: { family: DecoderFamily; config: DecoderConfig },
  file: PetTensorFile,
  block: FloatBlock,
): { lmHeadOff: number | null; embedOff: number | null } {
  const { lmHead, embed } = model.family.vocabModules;
  const shape = [model.config.vocabSize, model.config.hiddenSize];
  let lmHeadOff: number | null = null;
  let embedOff: number | null = null;
  for (const m of cfg.modules_to_save ?? []) {
    const names = (module: string): boolean => m === module || module.endsWith(`.${m}`);
    const read = (module: string): number => {
      const keys = [`${PREFIX}${module}.weight`, `${PREFIX}${module}.modules_to_save.default.weight`];
      const k = keys.find((n) => file.has(n));
      if (!k) throw new PetFormatError(`${PEFT_WEIGHTS_FILE}: modules_to_save names '${m}' but no '${keys[0]}' tensor is stored`);
      return block.add(file.readFloat(k, shape, `modules_to_save ${m}`));
    };
    if (names(lmHead)) lmHeadOff = read(lmHead);
    else if (names(embed)) embedOff = read(embed);
    else if (file.names().some((n) => n.startsWith(`${PREFIX}`) && n.includes(`${m}.`) && !n.includes('lora_') && !n.includes('ia3_'))) {
      throw new PetFormatError(
        `${PEFT_CONFIG_FILE}: modules_to_save '${m}' is not supported for decoders (supported: ${lmHead}, ${embed}); the adapter cannot be served exactly`,
      );
    }
  }
  return { lmHeadOff, embedOff };
}
