import type { z } from 'zod';
import { issueMessage } from '../util/zod-issues.js';
import { RequestValidationError } from './errors.js';

/** `input_ids[0][3]`, `options.truncate`: how a client would write the path to the field. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out === '' ? '' : '.'}${String(p)}`;
  return out || '(body)';
}

/** Parse `value` with `schema`; failures become one 400 naming every bad field (first few). */
export function parseOrThrow<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.slice(0, 5).map((i) => `${fieldPath(i.path)}: ${issueMessage(i)}`);
  const more = parsed.error.issues.length > 5 ? ` (and ${parsed.error.issues.length - 5} more)` : '';
  throw new RequestValidationError(`invalid request: ${issues.join('; ')}${more}`, fieldPath(parsed.error.issues[0]!.path));
}
