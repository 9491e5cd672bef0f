// Checkpoint side of the float64 decoder reference: reads model.safetensors or a
// sharded model.safetensors.index.json, widens F32/F16/BF16 to float64, and
// names every tensor by its module path in the *ForCausalLM model (the names
// PEFT adapters address), whichever prefix the file was saved with.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DecoderFamily } from './decoder-config.js';
import { readSafetensorsF64Typed } from './safetensors-f64.js';
import type { RefTensor } from './safetensors-f64.js';

const WEIGHT_DTYPES = new Set(['F64', 'F32', 'F16', 'BF16']);

/** Prefix of the decoder body in the *ForCausalLM module tree. */
export const BODY_PREFIX: Record<DecoderFamily, string> = { llama: 'model.', gpt2: 'transformer.', bloom: 'transformer.' };

/** The token embedding module, which a tied lm_head shares. */
export const EMBED_MODULE: Record<DecoderFamily, string> = {
  llama: 'model.embed_tokens',
  gpt2: 'transformer.wte',
  bloom: 'transformer.word_embeddings',
};

/** Buffers some checkpoints carry that hold no weights (causal masks, cached rotary tables). */
const IGNORED = [/\.attn\.bias$/, /\.attn\.masked_bias$/, /\.rotary_emb\.inv_freq$/];

export function readJsonObject(path: string, what: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf-8'));
  } catch (error) {
    throw new Error(`refDecoder: cannot read ${what} ${path}: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`refDecoder: ${what} ${path} is not a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

function shardFiles(modelDir: string): string[] {
  const single = join(modelDir, 'model.safetensors');
  if (existsSync(single)) return [single];
  const indexPath = join(modelDir, 'model.safetensors.index.json');
  if (!existsSync(indexPath)) throw new Error(`refDecoder: ${modelDir} has neither model.safetensors nor its index`);
  const weightMap = readJsonObject(indexPath, 'shard index')['weight_map'];
  if (typeof weightMap !== 'object' || weightMap === null) throw new Error(`refDecoder: ${indexPath} has no weight_map`);
  const files = new Set<string>();
  for (const [name, file] of Object.entries(weightMap)) {
    if (typeof file !== 'string' || file.includes('/') || file.includes('\\')) {
      throw new Error(`refDecoder: ${indexPath} maps ${name} to a bad file ${JSON.stringify(file)}`);
    }
    files.add(file);
  }
  return [...files].map((f) => join(modelDir, f));
}

/** The module-path name of a checkpoint tensor: the body prefix is added when the file was saved without it. */
export function canonicalName(family: DecoderFamily, name: string): string {
  if (name === 'lm_head.weight' || name.startsWith(BODY_PREFIX[family])) return name;
  return BODY_PREFIX[family] + name;
}

/** Every weight of the checkpoint, float64, by canonical module-path name. */
export function readDecoderCheckpoint(modelDir: string, family: DecoderFamily): Map<string, RefTensor> {
  const tensors = new Map<string, RefTensor>();
  for (const file of shardFiles(modelDir)) {
    for (const [name, tensor] of readSafetensorsF64Typed(file)) {
      if (IGNORED.some((re) => re.test(name))) continue;
      if (!WEIGHT_DTYPES.has(tensor.dtype)) {
        throw new Error(`refDecoder: ${name} in ${file} has dtype ${tensor.dtype}; weights must be F32, F16 or BF16`);
      }
      const canonical = canonicalName(family, name);
      if (tensors.has(canonical)) throw new Error(`refDecoder: two tensors map to ${canonical} (second from ${file})`);
      tensors.set(canonical, { shape: tensor.shape, data: tensor.data });
    }
  }
  return tensors;
}

export type ModuleKind = 'linear' | 'conv1d' | 'embedding' | 'norm';

/** How a module stores its weight: nn.Linear [out, in], GPT-2's Conv1D [in, out], nn.Embedding, or a norm. */
export function moduleKind(family: DecoderFamily, module: string): ModuleKind {
  if (/(^|\.)(embed_tokens|wte|wpe|word_embeddings)$/.test(module)) return 'embedding';
  if (/(norm|ln_\d|ln_f|layernorm)$/.test(module)) return 'norm';
  if (family === 'gpt2' && /\.(c_attn|c_proj|c_fc)$/.test(module)) return 'conv1d';
  return 'linear';
}
