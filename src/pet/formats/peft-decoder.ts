// Hugging Face PEFT LoRA directories for causal decoders (adapter_config.json +
// adapter_model.safetensors), matched against the model family's module table
// with PEFT's own rules (./match.ts). Every module an adapter touches must
// exist in the base with the same shape; otherwise the adapter was trained for
// another base and is refused naming the module.

import { join } from 'node:path';
import { z } from 'zod';

import type { DecoderConfig, DecoderFamily, DecoderLinearSite } from '../../model/families/decoder/types.js';
import { PetFormatError } from '../../util/errors.js';
import type { DecoderAdapter, DecoderLoraDelta } from '../decoder-adapter.js';
import { PetTensorFile, formatIssues, listNames, pathExists, readJsonObject } from './common.js';
import { isTargetModule, patternKeyFor } from './match.js';

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
});

/** Modules of a decoder a LoRA can target: the layer linears plus lm_head. */
function targetSites(family: DecoderFamily, config: DecoderConfig): DecoderLinearSite[] {
  const H = config.hiddenSize;
  return [
    ...family.linearSites(config),
    { module: family.vocabModules.lmHead, layer: -1, gemm: 'up', colOffset: 0, outDim: config.vocabSize, inDim: H, outRows: null },
  ];
}

const isKvGemm = (s: DecoderLinearSite): boolean => s.gemm === 'qkv';

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

/** Load a PEFT LoRA directory for `model`; PetFormatError naming the file, field or module on anything it cannot serve exactly. */
export async function loadDecoderPeftLora(dir: string, model: { family: DecoderFamily; config: DecoderConfig }): Promise<DecoderAdapter> {
  const configPath = join(dir, PEFT_CONFIG_FILE);
  if (!(await pathExists(configPath))) throw new PetFormatError(`${dir}: ${PEFT_CONFIG_FILE} not found (expected a Hugging Face PEFT directory)`);
  const parsed = configSchema.safeParse(await readJsonObject(configPath, PEFT_CONFIG_FILE));
  if (!parsed.success) throw new PetFormatError(`${PEFT_CONFIG_FILE}: ${formatIssues(parsed.error.issues)}`);
  const cfg = parsed.data;
  if (cfg.peft_type !== 'LORA') throw new PetFormatError(`${PEFT_CONFIG_FILE}: peft_type '${cfg.peft_type}' is not served for decoders (LORA only)`);
  if (cfg.use_dora) throw new PetFormatError(`${PEFT_CONFIG_FILE}: use_dora true is not supported (DoRA rescales the merged weight)`);
  if (cfg.bias !== 'none') throw new PetFormatError(`${PEFT_CONFIG_FILE}: bias '${cfg.bias}' is not supported (only 'none')`);
  const file = await PetTensorFile.open(join(dir, PEFT_WEIGHTS_FILE), PEFT_WEIGHTS_FILE);

  const sites = targetSites(model.family, model.config);
  const spec = {
    targetModules: cfg.target_modules ?? [],
    excludeModules: cfg.exclude_modules ?? null,
    layersToTransform: cfg.layers_to_transform ?? null,
    layersPattern: cfg.layers_pattern ?? null,
    source: PEFT_CONFIG_FILE,
  };
  const block = new FloatBlock();
  const loras: DecoderLoraDelta[] = [];
  let touchesKv = false;
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
    if (site.layer >= 0 && isKvGemm(site)) touchesKv = true;
  }

  let lmHeadOff: number | null = null;
  const lmHead = model.family.vocabModules.lmHead;
  for (const m of cfg.modules_to_save ?? []) {
    const isHead = m === lmHead || lmHead.endsWith(`.${m}`);
    const headKeys = [`${PREFIX}${lmHead}.weight`, `${PREFIX}${lmHead}.modules_to_save.default.weight`];
    if (isHead) {
      const k = headKeys.find((n) => file.has(n));
      if (!k) throw new PetFormatError(`${PEFT_WEIGHTS_FILE}: modules_to_save names '${m}' but no '${headKeys[0]}' tensor is stored`);
      lmHeadOff = block.add(file.readFloat(k, [model.config.vocabSize, model.config.hiddenSize], `modules_to_save ${m}`));
    } else {
      const saved = file.names().some((n) => n.startsWith(`${PREFIX}`) && n.includes(`${m}.`) && !n.includes('lora_'));
      if (saved) {
        throw new PetFormatError(
          `${PEFT_CONFIG_FILE}: modules_to_save '${m}' is not supported for decoders (supported: ${lmHead}); the adapter cannot be served exactly`,
        );
      }
    }
  }

  const unread = file.unread();
  if (unread.length > 0) {
    throw new PetFormatError(
      `${PEFT_WEIGHTS_FILE}: tensors that no module of this ${model.family.name} model takes: ${listNames(unread)} (an adapter for another base model, or an unsupported module)`,
    );
  }
  if (loras.length === 0 && lmHeadOff === null) throw new PetFormatError(`${PEFT_WEIGHTS_FILE}: no LoRA tensor matches a module of this model`);
  return {
    floats: block.finish(),
    words: new Uint32Array(0),
    loras,
    lmHeadOff,
    touchesKv,
    maxRank: Math.max(0, ...loras.map((l) => l.rank)),
  };
}
