import type { z } from 'zod';
import { CheckpointError } from '../../../util/errors.js';

/** zod result → value, or CheckpointError listing every issue with its key. */
export function parseOrThrow<T>(schema: z.ZodType<T>, raw: unknown, source: string, family: string): T {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new CheckpointError(`${source}: invalid ${family} config: ${issues}`);
  }
  return parsed.data;
}

/** config.json's eos_token_id may be one id, a list, or absent. */
export function eosIds(raw: unknown): number[] {
  if (typeof raw === 'number' && Number.isInteger(raw) && raw >= 0) return [raw];
  if (Array.isArray(raw)) return raw.filter((v): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0);
  return [];
}

export function requireDivisible(source: string, what: string, a: number, aName: string, b: number, bName: string): void {
  if (a % b !== 0) throw new CheckpointError(`${source}: ${what}: ${aName} ${a} is not divisible by ${bName} ${b}`);
}
