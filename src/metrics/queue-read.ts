/**
 * What the queue collectors read; the BullMQ side implements it (job counts
 * from `Queue.getJobCounts()`, workers from `Queue.getWorkersCount()`), so
 * metrics do not depend on the queue code.
 */
export interface QueueStatsSource {
  jobCounts(): Promise<Record<string, number>>;
  workers(): Promise<number>;
}

export interface QueueReading {
  counts: Record<string, number>;
  workers: number;
}

/**
 * One read of the BullMQ queue's counts, or null when it failed or took longer
 * than `timeoutMs`. ioredis queues commands while it reconnects, so without a
 * bound a Redis outage would hang every scrape and every status poll instead of
 * showing up as "queue down".
 */
export async function readQueueStats(source: QueueStatsSource, timeoutMs = 2000): Promise<QueueReading | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), timeoutMs);
  });
  const read = Promise.all([source.jobCounts(), source.workers()]).then(
    ([counts, workers]): QueueReading => ({ counts, workers }),
    () => null,
  );
  try {
    return await Promise.race([read, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
