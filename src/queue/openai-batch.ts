import { z } from 'zod';
import { checkChatRequest, checkCompletionRequest } from '../gateway/openai-generation.js';
import {
  chatCompletionRequestSchema,
  completionRequestSchema,
  embeddingsRequestSchema,
  type ChatCompletionRequest,
  type CompletionRequest,
} from '../gateway/openai-protocol.js';
import { PetServeError } from '../util/errors.js';
import { jsonSyntaxWhere } from '../util/json-syntax.js';
import { issueMessage } from '../util/zod-issues.js';
import { MAX_CUSTOM_ID_LENGTH, parseJsonlItems } from './items.js';
import { OPENAI_BATCH_URLS, type OpenAiBatchEndpoint, type ParsedItem, type StoredItem } from './types.js';

/**
 * OpenAI's Batch input format: one `{"custom_id", "method": "POST", "url",
 * "body"}` per JSONL line, `url` one of /v1/chat/completions, /v1/completions,
 * /v1/embeddings, `body` what that route takes. Unlike PetServe's item format,
 * where a bad item becomes an error line, one bad line refuses the whole batch
 * (as OpenAI validates an input file before it runs): every line is checked
 * with the routes' own schemas before anything is queued.
 */

/** Which models a batch line may name, as the server that takes the batch serves them. */
export interface BatchModels {
  /** The decoder base or one of its tasks (chat and completions lines). */
  isDecoderModel(id: string): boolean;
  /** The encoder base or one of its tasks (embeddings lines). */
  isEncoderModel(id: string): boolean;
}

/** A line of an OpenAI-format batch that cannot run: the batch is refused (HTTP 400) naming the line and field. */
export class InvalidBatchLineError extends PetServeError {
  constructor(
    readonly line: number,
    readonly param: string | null,
    detail: string,
  ) {
    super('INVALID_REQUEST', `line ${line}${param !== null ? `: ${param}` : ''}: ${detail}; nothing of this batch was queued`);
  }
}

const URLS = Object.keys(OPENAI_BATCH_URLS) as [keyof typeof OPENAI_BATCH_URLS, ...(keyof typeof OPENAI_BATCH_URLS)[]];

const lineSchema = z.strictObject({
  custom_id: z.string().min(1, 'must be a non-empty string').max(MAX_CUSTOM_ID_LENGTH),
  method: z.literal('POST', { error: 'must be "POST"' }),
  url: z.enum(URLS, { error: `must be one of ${URLS.join(', ')}` }),
  body: z.record(z.string(), z.unknown(), { error: 'must be a JSON object (the request body of url)' }),
});

const BODY_SCHEMAS = {
  chat: chatCompletionRequestSchema,
  completions: completionRequestSchema,
  embeddings: embeddingsRequestSchema,
} as const;

/** Whether a batch's first line is in OpenAI's format (it names a url, method or body; PetServe items name a task). */
export function isOpenAiBatchLine(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return ['url', 'method', 'body'].some((k) => k in value);
}

function pathOf(prefix: string, path: readonly PropertyKey[]): string {
  return [prefix, ...path.map(String)].filter((p) => p !== '').join('.');
}

/** One line checked: the stored item, or InvalidBatchLineError. */
function parseLine(value: unknown, index: number, lineNo: number, models: BatchModels, seen: Map<string, number>): StoredItem {
  const line = lineSchema.safeParse(value);
  if (!line.success) {
    const issue = line.error.issues[0]!;
    throw new InvalidBatchLineError(lineNo, issue.path.length > 0 ? pathOf('', issue.path) : null, issueMessage(issue));
  }
  const { custom_id: customId, url, body: raw } = line.data;
  const earlier = seen.get(customId);
  if (earlier !== undefined) throw new InvalidBatchLineError(lineNo, 'custom_id', `repeats the custom_id of line ${earlier} (each must be unique in a batch)`);
  seen.set(customId, lineNo);
  const endpoint: OpenAiBatchEndpoint = OPENAI_BATCH_URLS[url];
  const parsed = BODY_SCHEMAS[endpoint].safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new InvalidBatchLineError(lineNo, pathOf('body', issue.path), issueMessage(issue));
  }
  const body = parsed.data;
  if ('stream' in body && body.stream === true) throw new InvalidBatchLineError(lineNo, 'body.stream', 'streaming is not available in a batch (results are written whole)');
  try {
    if (endpoint === 'chat') checkChatRequest(body as ChatCompletionRequest);
    else if (endpoint === 'completions') checkCompletionRequest(body as CompletionRequest);
  } catch (err) {
    const param = (err as { param?: unknown }).param;
    if (err instanceof PetServeError) throw new InvalidBatchLineError(lineNo, typeof param === 'string' ? `body.${param}` : 'body', err.message);
    throw err;
  }
  const known = endpoint === 'embeddings' ? models.isEncoderModel(body.model) : models.isDecoderModel(body.model);
  if (!known) {
    const wants = endpoint === 'embeddings' ? 'the encoder base or one of its tasks' : 'the decoder base or one of its tasks';
    throw new InvalidBatchLineError(lineNo, 'body.model', `model '${body.model.slice(0, 128)}' is not served here as ${wants} (GET /v1/models lists the models)`);
  }
  return { i: index, t: body.model, c: customId, u: endpoint, b: body as Record<string, unknown> };
}

const LINES_PER_SLICE = 2000;
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The lines of an OpenAI-format batch; throws InvalidBatchLineError at the first bad line. */
export async function parseOpenAiBatch(text: string, models: BatchModels): Promise<ParsedItem[]> {
  const out: ParsedItem[] = [];
  const seen = new Map<string, number>();
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    if (n > 0 && n % LINES_PER_SLICE === 0) await yieldToEventLoop();
    const line = lines[n]!.endsWith('\r') ? lines[n]!.slice(0, -1) : lines[n]!;
    if (line.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new InvalidBatchLineError(n + 1, null, `not valid JSON (${jsonSyntaxWhere((err as Error).message)})`);
    }
    out.push({ ok: true, item: parseLine(value, out.length, n + 1, models, seen) });
  }
  return out;
}

/** A JSONL batch in either format, told apart by its first line's keys. */
export async function parseBatchJsonl(text: string, models: BatchModels): Promise<ParsedItem[]> {
  const first = text.split('\n').find((l) => l.trim() !== '');
  let value: unknown = null;
  try {
    value = first === undefined ? null : JSON.parse(first);
  } catch {
    // not JSON: the item parser reports it as line 1's error
  }
  return isOpenAiBatchLine(value) ? parseOpenAiBatch(text, models) : parseJsonlItems(text);
}
