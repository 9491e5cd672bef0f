import type { PetServeConfig } from '../config/config.js';

/** The BullMQ queue of batch chunks: keys `{prefix}:batches:*`. */
export const CHUNK_QUEUE_NAME = 'batches';

/** What the producer (HTTP server) and the workers share about the batch queue. */
export interface BatchQueueSettings {
  redisUrl: string;
  /** Prefix of every Redis key (ours and BullMQ's); tests use their own. */
  prefix: string;
  chunkSize: number;
  resultsTtlSeconds: number;
  /** Attempts per chunk for transient faults. */
  attempts: number;
  maxItems: number;
  /** Delay before a chunk's first retry; doubles with each further one (BullMQ exponential backoff). */
  retryBackoffMs: number;
}

export function batchQueueSettings(config: PetServeConfig): BatchQueueSettings {
  return {
    redisUrl: config.redis.url,
    prefix: config.batches.prefix,
    chunkSize: config.batches.chunkSize,
    resultsTtlSeconds: config.batches.resultsTtlSeconds,
    attempts: config.batches.attempts,
    maxItems: config.batches.maxItems,
    retryBackoffMs: 1000,
  };
}

export function chunkJobId(batchId: string, chunk: number): string {
  // BullMQ job ids must not contain ':' (it separates key parts).
  return `${batchId}-${chunk}`;
}
