import { z } from 'zod';
import { InvalidInputError } from '../util/errors.js';
import { jsonSyntaxWhere } from '../util/json-syntax.js';
import { issueMessage } from '../util/zod-issues.js';
import type { ParsedItem, StoredItem } from './types.js';

/**
 * Parsing of batch items. A malformed item does not refuse the batch: it
 * becomes an error line of the results at its index and the rest runs. Only a
 * body that is not a batch at all (no items array, nothing in it) is refused.
 */

/** Longest custom_id (it is echoed on every result line). */
export const MAX_CUSTOM_ID_LENGTH = 256;
/** Longest text; the tokenizer truncates to the model's positions anyway, this only bounds what Redis stores. */
export const MAX_TEXT_LENGTH = 100_000;
/** Longest input_ids (the engine refuses more than the model's positions; this bounds storage). */
export const MAX_INPUT_IDS = 65_536;

const ids = z.array(z.number().int().nonnegative().max(0xffffffff)).min(1).max(MAX_INPUT_IDS);

export const itemSchema = z
  .strictObject({
    task: z.string().min(1).max(128),
    inputs: z.string().min(1).max(MAX_TEXT_LENGTH).optional(),
    input_ids: ids.optional(),
    token_type_ids: ids.optional(),
    custom_id: z.string().min(1).max(MAX_CUSTOM_ID_LENGTH).optional(),
    // The online predict route's options that make sense offline (no deadline: offline items wait for capacity).
    options: z.strictObject({ truncate: z.boolean().optional(), return_logits: z.boolean().optional() }).optional(),
  })
  .superRefine((v, ctx) => {
    if ((v.inputs === undefined) === (v.input_ids === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give exactly one of "inputs" (text) or "input_ids" (token ids)' });
    }
    if (v.token_type_ids !== undefined && v.token_type_ids.length !== v.input_ids?.length) {
      ctx.addIssue({ code: 'custom', path: ['token_type_ids'], message: 'token_type_ids needs input_ids of the same length' });
    }
  });

function issuesText(error: z.ZodError): string {
  return error.issues.map((i) => (i.path.length > 0 ? `${i.path.join('.')}: ${issueMessage(i)}` : issueMessage(i))).join('; ');
}

/** Validate one decoded item; `where` names it in errors ("line 7", "items[6]"). */
export function parseItem(value: unknown, index: number, where: string): ParsedItem {
  const parsed = itemSchema.safeParse(value);
  if (!parsed.success) {
    // Echo a usable custom_id even on a bad item so the client can match the error line.
    const raw = typeof value === 'object' && value !== null ? (value as Record<string, unknown>)['custom_id'] : undefined;
    const c = typeof raw === 'string' && raw.length > 0 && raw.length <= MAX_CUSTOM_ID_LENGTH ? raw : undefined;
    return {
      ok: false,
      rejected: { i: index, ...(c !== undefined ? { c } : {}), error: { code: 'INVALID_INPUT', message: `${where}: ${issuesText(parsed.error)}` } },
    };
  }
  const v = parsed.data;
  const item: StoredItem = { i: index, t: v.task };
  if (v.inputs !== undefined) item.x = v.inputs;
  if (v.input_ids !== undefined) item.ids = v.input_ids;
  if (v.token_type_ids !== undefined) item.tt = v.token_type_ids;
  if (v.custom_id !== undefined) item.c = v.custom_id;
  if (v.options?.truncate === true) item.tr = true;
  if (v.options?.return_logits === true) item.lg = true;
  return { ok: true, item };
}

/**
 * Items parsed between two yields to the event loop: a million-line batch
 * takes seconds to validate, and the server must keep answering online
 * requests meanwhile.
 */
const ITEMS_PER_SLICE = 2000;
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Items of a JSONL text: one JSON object per line; blank lines are skipped and not counted. */
export async function parseJsonlItems(text: string): Promise<ParsedItem[]> {
  const out: ParsedItem[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    if (n > 0 && n % ITEMS_PER_SLICE === 0) await yieldToEventLoop();
    const line = lines[n]!.endsWith('\r') ? lines[n]!.slice(0, -1) : lines[n]!;
    if (line.trim() === '') continue;
    const index = out.length;
    const where = `line ${n + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      out.push({ ok: false, rejected: { i: index, error: { code: 'INVALID_INPUT', message: `${where}: not valid JSON (${jsonSyntaxWhere((err as Error).message)})` } } });
      continue;
    }
    out.push(parseItem(value, index, where));
  }
  if (out.length === 0) throw new InvalidInputError('the JSONL file holds no items (one JSON object per line)');
  return out;
}

/** Items of a JSON body `{"items": [...]}`. */
export async function parseJsonItems(items: unknown): Promise<ParsedItem[]> {
  if (!Array.isArray(items)) throw new InvalidInputError('"items" must be an array of {"task", "inputs" | "input_ids", "custom_id"?}');
  if (items.length === 0) throw new InvalidInputError('"items" is empty');
  const out: ParsedItem[] = [];
  for (let i = 0; i < items.length; i++) {
    if (i > 0 && i % ITEMS_PER_SLICE === 0) await yieldToEventLoop();
    out.push(parseItem(items[i], i, `items[${i}]`));
  }
  return out;
}

/** Idempotency keys are client strings; bounded so they fit a Redis key after hashing and a log line. */
export function checkIdempotencyKey(key: unknown): string | undefined {
  if (key === undefined || key === null || key === '') return undefined;
  if (typeof key !== 'string' || key.length > 256) throw new InvalidInputError('idempotency_key must be a string of at most 256 characters');
  return key;
}
