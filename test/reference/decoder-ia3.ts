// Float64 merge of a Hugging Face PEFT IA³ adapter into a decoder's weights
// (no code shared with src/). PEFT's IA³ scales a targeted linear's OUTPUT by
// ia3_l (shape [out, 1]) or, for feedforward_modules, its INPUT (shape [1, in]):
//   output:  y = (x·Wᵀ + b) ⊙ l   ⇔  W[o, :] *= l[o], b[o] *= l[o]
//   input:   y = (x ⊙ l)·Wᵀ + b   ⇔  W[:, i] *= l[i]
// GPT-2's Conv1D stores W as [in, out], so rows and columns swap there.
// target_modules / feedforward_modules as lists match a module name or a dotted
// suffix ("mlp.c_proj"); as a string, a full regex match (PEFT's rules).

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BODY_PREFIX, moduleKind, readJsonObject } from './decoder-checkpoint.js';
import type { DecoderSpec } from './decoder-config.js';
import { readSafetensorsF64Typed } from './safetensors-f64.js';
import type { RefTensor } from './safetensors-f64.js';

function fail(where: string, message: string): never {
  throw new Error(`${where}: ${message}`);
}

function selects(selector: unknown, module: string, suffixRule: 'dotted' | 'plain'): boolean {
  if (typeof selector === 'string') return new RegExp(`^(?:${selector})$`).test(module);
  if (!Array.isArray(selector)) return false;
  return selector.some((t: string) => module === t || (suffixRule === 'dotted' ? module.endsWith(`.${t}`) : module.endsWith(t)));
}

export function isIa3Adapter(adapterDir: string): boolean {
  return readJsonObject(join(adapterDir, 'adapter_config.json'), 'adapter config')['peft_type'] === 'IA3';
}

export function mergePeftIa3(spec: DecoderSpec, tensors: Map<string, RefTensor>, adapterDir: string): void {
  const where = adapterDir;
  const config = readJsonObject(join(adapterDir, 'adapter_config.json'), 'adapter config');
  const file = join(adapterDir, 'adapter_model.safetensors');
  if (!existsSync(file)) fail(where, 'adapter_model.safetensors is missing');
  const prefix = BODY_PREFIX[spec.family];
  for (const [name, t] of readSafetensorsF64Typed(file)) {
    const m = /^base_model\.model\.(.+)\.ia3_l(?:\.default)?$/.exec(name);
    if (!m) fail(where, `tensor ${name} is not an IA³ vector`);
    const path = m[1]!;
    const module = path.startsWith(prefix) ? path : prefix + path;
    if (!selects(config['target_modules'], path, 'dotted')) fail(where, `module ${path} is not in target_modules`);
    const input = selects(config['feedforward_modules'], path, 'plain');
    const kind = moduleKind(spec.family, module);
    if (kind !== 'linear' && kind !== 'conv1d') fail(where, `module ${path} is not a linear layer`);
    const w = tensors.get(`${module}.weight`);
    if (!w) fail(where, `base model lacks ${module}.weight`);
    const [outDim, inDim] = kind === 'conv1d' ? [w.shape[1]!, w.shape[0]!] : [w.shape[0]!, w.shape[1]!];
    const want = input ? [1, inDim] : [outDim, 1];
    if (JSON.stringify(t.shape) !== JSON.stringify(want)) fail(where, `${name} has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(want)}`);
    const l = t.data;
    for (let o = 0; o < outDim; o++) {
      for (let i = 0; i < inDim; i++) {
        const at = kind === 'conv1d' ? i * outDim + o : o * inDim + i;
        w.data[at] = w.data[at]! * (input ? l[i]! : l[o]!);
      }
    }
    const b = tensors.get(`${module}.bias`);
    if (b && !input) for (let o = 0; o < outDim; o++) b.data[o] = b.data[o]! * l[o]!;
  }
}
