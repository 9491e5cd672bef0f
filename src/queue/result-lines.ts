import { createHash } from 'node:crypto';
import type { BatchStore } from './store.js';
import type { ItemError, OpenAiBatchOutputLine, ResultLine, StoredItem } from './types.js';

/**
 * Result lines as stored in Redis and returned verbatim by GET /v1/batches/{id}/results.
 * PetServe items answer `{index, custom_id, task, response | error}`; OpenAI
 * batch lines answer OpenAI's batch output shape. A line is written once, whole.
 */

/** Stable ids of an OpenAI output line (the same if the line is answered again after a crash). */
function openAiIds(batchId: string, index: number): { id: string; requestId: string } {
  const h = createHash('sha256').update(`${batchId}\n${index}`).digest('hex');
  return { id: `batch_req_${h.slice(0, 24)}`, requestId: `req_${h.slice(24, 48)}` };
}

function openAiLine(batchId: string, item: StoredItem, response: unknown, error: ItemError | null): string {
  const { id, requestId } = openAiIds(batchId, item.i);
  const line: OpenAiBatchOutputLine = {
    id,
    custom_id: item.c ?? null,
    response: error === null ? { status_code: 200, request_id: requestId, body: response } : null,
    error,
  };
  return JSON.stringify(line);
}

export function answerLine(batchId: string, item: StoredItem, response: unknown): string {
  if (item.u !== undefined) return openAiLine(batchId, item, response, null);
  const line: ResultLine = { index: item.i, ...(item.c !== undefined ? { custom_id: item.c } : {}), task: item.t, response };
  return JSON.stringify(line);
}

/** An item's error line, in its batch's format. */
export function itemErrorLine(batchId: string, item: StoredItem, error: ItemError): string {
  if (item.u !== undefined) return openAiLine(batchId, item, null, error);
  return errorLine(item.i, item.c, item.t, error);
}

/** A PetServe-format error line (also for items known only by index: rejected at submit, or expired). */
export function errorLine(index: number, customId: string | undefined, task: string | undefined, error: ItemError): string {
  const line: ResultLine = {
    index,
    ...(customId !== undefined ? { custom_id: customId } : {}),
    ...(task !== undefined ? { task } : {}),
    error,
  };
  return JSON.stringify(line);
}

export const CANCELLED_ERROR: ItemError = { code: 'CANCELLED', message: 'the batch was cancelled before this item ran' };

/** Answer the unsettled items of chunk n with CANCELLED lines (settled ones are left as they are). */
export async function cancelChunkItems(store: BatchStore, batchId: string, chunk: number, items?: StoredItem[] | null): Promise<void> {
  const list = items ?? (await store.chunkItems(batchId, chunk));
  if (!list || list.length === 0) return;
  await store.writeResults(
    batchId,
    list.map((it) => ({ index: it.i, kind: 'cancelled' as const, line: itemErrorLine(batchId, it, CANCELLED_ERROR) })),
  );
}
