import { CheckpointError } from '../../util/errors.js';
import { bertFamily, type BertFamily } from './bert.js';
import { bloomFamily } from './bloom.js';
import type { DecoderFamily } from './decoder/types.js';
import { gpt2Family } from './gpt2.js';
import { llamaFamily } from './llama.js';

/**
 * The model families PetServe can load, in one table. A checkpoint's family is
 * picked from config.json: `model_type` when given (what transformers'
 * AutoConfig keys on), else its `architectures`.
 */
export const MODEL_FAMILIES = [bertFamily] as const;

/** Causal decoders (generation): one module each, sharing the decoder step graph. */
export const DECODER_FAMILIES: readonly DecoderFamily[] = [llamaFamily as unknown as DecoderFamily, gpt2Family, bloomFamily];

/** Any encoder family of the table (BERT only today). */
export type AnyModelFamily = BertFamily;

/** config.json names a model that no family of MODEL_FAMILIES loads. */
export class UnsupportedModelError extends CheckpointError {}

type Named = { name: string; modelTypes: readonly string[]; architectures: readonly string[] };
const ALL: readonly Named[] = [...MODEL_FAMILIES, ...DECODER_FAMILIES];

const supported = (families: readonly Named[] = ALL): string =>
  families.map((f) => `${f.name} (model_type ${f.modelTypes.map((t) => `'${t}'`).join(', ')}; ${f.architectures.join(', ')})`).join('; ');

/** The family config.json names, among `families`, or UnsupportedModelError listing every supported one. */
function pick<F extends Named>(families: readonly F[], raw: unknown, source: string): F | null {
  const cfg = (typeof raw === 'object' && raw !== null ? raw : {}) as { model_type?: unknown; architectures?: unknown };
  if (cfg.model_type !== undefined) return families.find((f) => f.modelTypes.includes(String(cfg.model_type))) ?? null;
  if (Array.isArray(cfg.architectures) && cfg.architectures.length > 0) {
    const names = cfg.architectures.map(String);
    return families.find((f) => names.some((n) => f.architectures.includes(n))) ?? null;
  }
  throw new UnsupportedModelError(`${source}: names neither model_type nor architectures; supported: ${supported()}`);
}

function describe(raw: unknown): string {
  const cfg = (typeof raw === 'object' && raw !== null ? raw : {}) as { model_type?: unknown; architectures?: unknown };
  return cfg.model_type !== undefined
    ? `model_type '${String(cfg.model_type)}'`
    : `architectures [${(cfg.architectures as unknown[]).map(String).join(', ')}]`;
}

/** The encoder family of a config.json; a decoder or unknown model is refused naming what is supported. */
export function familyForConfig(raw: unknown, source: string): AnyModelFamily {
  const family = pick(MODEL_FAMILIES, raw, source);
  if (family) return family;
  if (pick(DECODER_FAMILIES, raw, source)) {
    throw new UnsupportedModelError(
      `${source}: ${describe(raw)} is a causal decoder; encoder serving supports ${supported(MODEL_FAMILIES)} (decoders run through generation)`,
    );
  }
  throw new UnsupportedModelError(`${source}: ${describe(raw)} is not supported; supported: ${supported()}`);
}

/** The decoder family of a config.json; an encoder or unknown model is refused naming what is supported. */
export function decoderFamilyForConfig(raw: unknown, source: string): DecoderFamily {
  const family = pick(DECODER_FAMILIES, raw, source);
  if (family) return family;
  if (pick(MODEL_FAMILIES, raw, source)) {
    throw new UnsupportedModelError(`${source}: ${describe(raw)} is an encoder; generation supports ${supported(DECODER_FAMILIES)}`);
  }
  throw new UnsupportedModelError(`${source}: ${describe(raw)} is not supported; supported: ${supported()}`);
}

/** Whether a config.json is a causal decoder (for commands that serve both kinds). */
export function isDecoderConfig(raw: unknown, source: string): boolean {
  return pick(DECODER_FAMILIES, raw, source) !== null;
}
