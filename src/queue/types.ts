/**
 * Shapes of the offline batch API (HTTP JSON, JSONL results) and of what the
 * queue keeps in Redis. HTTP fields are snake_case like the rest of the API
 * (`input_ids`, `custom_id`).
 */

export const BATCH_STATUSES = ['queued', 'running', 'completed', 'failed', 'cancelled'] as const;
export type BatchStatus = (typeof BATCH_STATUSES)[number];

/** A batch that will not change any more (its results may still be read until they expire). */
export function isTerminal(status: BatchStatus): boolean {
  return status === 'completed' || status === 'failed' || status === 'cancelled';
}

/** One item as the client sends it (a JSON array element or one JSONL line). */
export interface BatchItemInput {
  task: string;
  /** Text, tokenized by the worker with the model's tokenizer. */
  inputs?: string;
  /** Token ids, used as they are. */
  input_ids?: number[];
  token_type_ids?: number[];
  /** Echoed on the item's result line. */
  custom_id?: string;
  /** As on the online predict route. */
  options?: { truncate?: boolean; return_logits?: boolean };
}

/** A validated item as stored in Redis (compact keys: a batch can hold a million of them). */
export interface StoredItem {
  /** Position in the batch (0-based, blank JSONL lines not counted). */
  i: number;
  /** Task id. */
  t: string;
  /** Text input. */
  x?: string;
  /** Token ids. */
  ids?: number[];
  /** Token type ids. */
  tt?: number[];
  /** Client's custom_id. */
  c?: string;
  /** options.truncate */
  tr?: true;
  /** options.return_logits */
  lg?: true;
  /**
   * OpenAI batch lines only: the endpoint the line calls, and its body as
   * validated at submit (`t` holds body.model, `c` the custom_id).
   */
  u?: OpenAiBatchEndpoint;
  b?: Record<string, unknown>;
}

/** The endpoints an OpenAI batch line may call, by the `url` it names. */
export const OPENAI_BATCH_URLS = {
  '/v1/chat/completions': 'chat',
  '/v1/completions': 'completions',
  '/v1/embeddings': 'embeddings',
} as const;
export type OpenAiBatchEndpoint = (typeof OPENAI_BATCH_URLS)[keyof typeof OPENAI_BATCH_URLS];

/** An item refused before it was queued (malformed JSON, missing fields): answered with an error line at once. */
export interface RejectedItem {
  i: number;
  c?: string;
  error: ItemError;
}

export type ParsedItem = { ok: true; item: StoredItem } | { ok: false; rejected: RejectedItem };

export interface ItemError {
  code: string;
  message: string;
}

/**
 * One line of a batch's results (JSONL, in item order). `response` is exactly
 * what the online predict route answers for that input; a failed item carries
 * `error` instead — per-item errors never fail the batch.
 */
export interface ResultLine {
  index: number;
  custom_id?: string;
  task?: string;
  response?: unknown;
  error?: ItemError;
}

/**
 * One output line of an OpenAI-format batch (OpenAI's Batch API shape): the
 * route's response body with its status, or `error` for a line that failed.
 */
export interface OpenAiBatchOutputLine {
  id: string;
  custom_id: string | null;
  response: { status_code: number; request_id: string; body: unknown } | null;
  error: ItemError | null;
}

export interface BatchCounts {
  total: number;
  /** Items answered. */
  done: number;
  /** Items answered with an error line. */
  failed: number;
  /** Items that never ran because the batch was cancelled. */
  cancelled: number;
  /** Items not settled yet. */
  pending: number;
}

/** GET /v1/batches/{id}. Times are ISO 8601; null until they happen. */
export interface BatchView {
  id: string;
  object: 'batch';
  status: BatchStatus;
  counts: BatchCounts;
  chunks: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  cancelled_at: string | null;
  /** When Redis drops the batch and its results (refreshed by every result written). */
  expires_at: string | null;
  idempotency_key: string | null;
}

/** Data of one BullMQ job: a chunk of a batch (items [chunk·chunkSize, (chunk+1)·chunkSize)). */
export interface ChunkJobData {
  batchId: string;
  chunk: number;
}
