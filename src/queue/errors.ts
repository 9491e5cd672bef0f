import { PetServeError } from '../util/errors.js';

/**
 * Errors of the offline batch queue. Each has a stable code; src/server/errors.ts
 * maps codes to HTTP status (one map for all layers), src/cli/exit-codes.ts to
 * exit codes.
 */

/** Redis cannot be reached (or dropped the connection): the batch API is unavailable, online inference is not affected. */
export class RedisUnavailableError extends PetServeError {
  constructor(redisUrl: string, detail: string, options?: { cause?: unknown }) {
    super(
      'REDIS_UNAVAILABLE',
      `offline batches are unavailable: cannot reach Redis at ${redisUrl} (${detail}); ` +
        'start Redis or point REDIS_URL (config redis.url) at a reachable one',
      options,
    );
  }
}

export class BatchNotFoundError extends PetServeError {
  constructor(readonly batchId: string) {
    super('BATCH_NOT_FOUND', `batch '${batchId}' does not exist (or its records expired)`);
  }
}

/** The idempotency key was used before for a different set of items. */
export class IdempotencyConflictError extends PetServeError {
  constructor(readonly batchId: string) {
    super(
      'IDEMPOTENCY_CONFLICT',
      `this idempotency key already created batch '${batchId}' with different items; use a new key for a new batch`,
    );
  }
}

/** More items than batches.maxItems. */
export class BatchTooLargeError extends PetServeError {
  constructor(items: number, maxItems: number) {
    super('BATCH_TOO_LARGE', `a batch holds at most ${maxItems} items (config batches.maxItems), got ${items}`);
  }
}

/** Cancelling a batch that already finished. */
export class BatchFinishedError extends PetServeError {
  constructor(batchId: string, status: string) {
    super('BATCH_FINISHED', `batch '${batchId}' is already ${status}; there is nothing left to cancel`);
  }
}

/**
 * A chunk met transient faults (device lost, engine overloaded or shutting
 * down, Redis dropped): BullMQ runs it again after a backoff. Items already
 * answered are kept and not run again.
 */
export class ChunkRetryError extends PetServeError {
  constructor(batchId: string, chunk: number, failedItems: number, cause: unknown) {
    super(
      'CHUNK_RETRY',
      `batch ${batchId} chunk ${chunk}: ${failedItems} item(s) met a transient fault (${describeError(cause)}); retrying`,
      { cause },
    );
  }
}

export function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

/** A chat or completions line reached a worker that runs no decoder: the chunk is retried (another worker may run one). */
export class GenerationUnavailableError extends PetServeError {
  constructor() {
    super(
      'GENERATION_UNAVAILABLE',
      'this worker runs no decoder for chat/completions lines: start workers with the same generation.modelDir (and generation.tasksDir) as the server',
    );
  }
}
