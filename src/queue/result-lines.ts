import type { BatchStore } from './store.js';
import type { ItemError, ResultLine, StoredItem } from './types.js';

/** Result lines as stored in Redis and returned verbatim by GET /v1/batches/{id}/results. */

export function answerLine(item: StoredItem, response: unknown): string {
  const line: ResultLine = { index: item.i, ...(item.c !== undefined ? { custom_id: item.c } : {}), task: item.t, response };
  return JSON.stringify(line);
}

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
    list.map((it) => ({ index: it.i, kind: 'cancelled' as const, line: errorLine(it.i, it.c, it.t, CANCELLED_ERROR) })),
  );
}
