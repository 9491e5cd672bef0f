import { CheckpointError } from '../../util/errors.js';
import { bertFamily, type BertFamily } from './bert.js';

/**
 * The model families PetServe can load, in one table. A checkpoint's family is
 * picked from config.json: `model_type` when given (what transformers'
 * AutoConfig keys on), else its `architectures`.
 */
export const MODEL_FAMILIES = [bertFamily] as const;

/** Any family of the table (BERT only today). */
export type AnyModelFamily = BertFamily;

/** config.json names a model that no family of MODEL_FAMILIES loads. */
export class UnsupportedModelError extends CheckpointError {}

const supported = (): string =>
  MODEL_FAMILIES.map((f) => `${f.name} (model_type ${f.modelTypes.map((t) => `'${t}'`).join(', ')}; ${f.architectures.join(', ')})`).join('; ');

export function familyForConfig(raw: unknown, source: string): AnyModelFamily {
  const cfg = (typeof raw === 'object' && raw !== null ? raw : {}) as { model_type?: unknown; architectures?: unknown };
  if (cfg.model_type !== undefined) {
    const family = MODEL_FAMILIES.find((f) => f.modelTypes.includes(String(cfg.model_type)));
    if (!family) throw new UnsupportedModelError(`${source}: model_type '${String(cfg.model_type)}' is not supported; supported: ${supported()}`);
    return family;
  }
  if (Array.isArray(cfg.architectures) && cfg.architectures.length > 0) {
    const names = cfg.architectures.map(String);
    const family = MODEL_FAMILIES.find((f) => names.some((n) => f.architectures.includes(n)));
    if (!family) throw new UnsupportedModelError(`${source}: architectures [${names.join(', ')}] are not supported; supported: ${supported()}`);
    return family;
  }
  throw new UnsupportedModelError(`${source}: names neither model_type nor architectures; supported: ${supported()}`);
}
