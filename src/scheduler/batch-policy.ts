import type { BatchFeatures, CostEstimator } from './cost-model.js';

/**
 * How the next batch is cut from the queue. Pure functions over queue entries:
 * the scheduler owns the queue, the clock and the engine; a policy only chooses.
 * docs/scheduling.md explains the algorithms and their complexity.
 */

/** What a policy needs to know about one queued request. */
export interface QueuedItem {
  /** Unique, increasing with arrival (FIFO order and stable tie-break). */
  seq: number;
  task: string | null;
  /** PET kind of the task ('base' for base-model rows): the cost model prices kinds differently. */
  kind: string;
  length: number;
  /** PET size relative to the profiled PET of its kind (CostEstimator.sizeScale); 1 if absent. */
  petScale?: number;
  arrivalMs: number;
  /**
   * min(arrival + SLO, arrival + maxWait): the time the scheduler tries to finish
   * it by. The maxWait cap is the starvation bound for offline items and long SLOs.
   */
  dueMs: number;
  offline: boolean;
}

export interface BatchLimits {
  maxRows: number;
  maxTokens: number;
  /**
   * Longest a batch may take (by the cost model); Infinity = no cap. Batches are
   * not preemptible, so a request arriving just after one starts waits for all of
   * it: the scheduler caps batch time at a fraction of the tightest recent SLO.
   */
  maxMs?: number;
}

/** Features of a batch, as the cost model prices them. */
export function batchFeatures(items: readonly QueuedItem[]): BatchFeatures {
  let tokens = 0;
  let sumSqLen = 0;
  const kindTokens: Record<string, number> = {};
  const tasks = new Set<string>();
  for (const it of items) {
    tokens += it.length;
    sumSqLen += it.length * it.length;
    if (it.task !== null) {
      tasks.add(it.task);
      kindTokens[it.kind] = (kindTokens[it.kind] ?? 0) + it.length * (it.petScale ?? 1);
    }
  }
  return { rows: items.length, tokens, sumSqLen, kindTokens, distinctTasks: tasks.size };
}

const byArrival = (a: QueuedItem, b: QueuedItem): number => a.seq - b.seq;
const byDue = (a: QueuedItem, b: QueuedItem): number => a.dueMs - b.dueMs || a.seq - b.seq;
const byLength = (a: QueuedItem, b: QueuedItem): number => a.length - b.length || a.dueMs - b.dueMs || a.seq - b.seq;

/**
 * Take items in the given order while they fit the limits (a too-long item is
 * skipped, not blocking). The first item always fits, so nothing waits forever
 * behind a limit it can never meet.
 */
export function greedyFill(
  ordered: readonly QueuedItem[],
  limits: BatchLimits,
  start: readonly QueuedItem[] = [],
  cost?: CostEstimator,
): QueuedItem[] {
  const batch = [...start];
  let tokens = start.reduce((s, it) => s + it.length, 0);
  const maxMs = limits.maxMs ?? Infinity;
  for (const it of ordered) {
    if (batch.length >= limits.maxRows) break;
    if (batch.length > 0 && tokens + it.length > limits.maxTokens) continue;
    if (batch.length > 0 && cost && maxMs < Infinity && cost.estimateMs(batchFeatures([...batch, it])) > maxMs) continue;
    batch.push(it);
    tokens += it.length;
  }
  return batch;
}

/**
 * PetS §4.2, adapted to a packed engine: sort by length and split the sorted run
 * into contiguous batches minimising Σ est(batch) by dynamic programming.
 * dp[j] = min_i dp[i] + est(items i..j-1), i ranging over at most maxRows
 * predecessors whose tokens fit the budget: O(n · maxRows) cost evaluations,
 * each O(1) because the features are accumulated while i walks back.
 * Returns the batches in length order.
 */
const TIE_BREAK_MS = 1e-6;

export function partitionByLength(items: readonly QueuedItem[], cost: CostEstimator, limits: BatchLimits): QueuedItem[][] {
  const sorted = [...items].sort(byLength);
  const n = sorted.length;
  const dp = new Float64Array(n + 1).fill(Infinity);
  const cut = new Int32Array(n + 1);
  const maxMs = limits.maxMs ?? Infinity;
  dp[0] = 0;
  for (let j = 1; j <= n; j++) {
    let tokens = 0;
    let sumSqLen = 0;
    const kindTokens: Record<string, number> = {};
    const taskCount = new Map<string, number>();
    for (let i = j - 1; i >= 0 && j - i <= limits.maxRows; i--) {
      const it = sorted[i]!;
      tokens += it.length;
      // A single item longer than the budget still forms a batch of its own.
      if (tokens > limits.maxTokens && j - i > 1) break;
      sumSqLen += it.length * it.length;
      if (it.task !== null) {
        kindTokens[it.kind] = (kindTokens[it.kind] ?? 0) + it.length * (it.petScale ?? 1);
        taskCount.set(it.task, (taskCount.get(it.task) ?? 0) + 1);
      }
      const batchMs = cost.estimateMs({ rows: j - i, tokens, sumSqLen, kindTokens, distinctTasks: taskCount.size });
      // Longer runs only cost more: once over the time cap, stop extending.
      if (batchMs > maxMs && j - i > 1) break;
      // A hair per batch: when the profile's fixed per-batch term fitted to 0, all
      // partitions would tie and the first found (singletons) would win; this
      // prefers fewer batches, and among those keeps the earlier batches full.
      const c = dp[i]! + batchMs + TIE_BREAK_MS;
      // Only a clearly cheaper split replaces the first found (float sums of equal costs differ in the last bits).
      if (dp[j] === Infinity || c < dp[j]! - 1e-9 * dp[j]!) {
        dp[j] = c;
        cut[j] = i;
      }
    }
  }
  const batches: QueuedItem[][] = [];
  for (let j = n; j > 0; j = cut[j]!) batches.push(sorted.slice(cut[j]!, j));
  return batches.reverse();
}

/** Fixed batching: arrival order, as many as fit. The baseline every server starts with. */
export function pickFifo(queue: readonly QueuedItem[], limits: BatchLimits): QueuedItem[] {
  return greedyFill([...queue].sort(byArrival), { maxRows: limits.maxRows, maxTokens: limits.maxTokens });
}

export interface SloPickContext {
  nowMs: number;
  cost: CostEstimator;
  limits: BatchLimits;
  /** Candidates considered per decision (earliest due first), bounding the DP's cost. */
  window: number;
  /** Safety margin on deadlines (cost-model error, host jitter). */
  marginMs: number;
}

export interface SloPick {
  batch: QueuedItem[];
  /** 'throughput': the DP's batch; 'deadline': earliest-due greedy fill because some item was at risk. */
  mode: 'throughput' | 'deadline';
}

/**
 * Ours: PetS's length DP for throughput, under deadlines.
 * 1. Online items first; offline items only when no online item waits, or to fill
 *    room left in an online batch (offline work uses idle capacity). An offline
 *    item past its maxWait due time counts as online (bounded wait).
 * 2. Take the `window` earliest-due candidates, partition them by the DP (batches
 *    within the time cap), and simulate running the batches earliest-due first
 *    with the cost model.
 * 3. If every candidate finishes by its due time (− margin), run the first of
 *    those batches: the throughput-optimal grouping costs nobody their SLO.
 * 4. Otherwise some item is at risk: run the candidates earliest-due first, in
 *    batches of the size that lets the most of them finish in time
 *    (bestDueChunk). That size may exceed the time cap: the cap protects
 *    requests yet to arrive, and must not shrink batches below what the queue
 *    already there needs — capped singletons pay the fixed per-batch cost once
 *    per request, the queue outgrows the device, and everyone misses.
 */
export function pickSlo(queue: readonly QueuedItem[], ctx: SloPickContext): SloPick {
  const urgentOffline = (it: QueuedItem): boolean => it.offline && it.dueMs <= ctx.nowMs;
  let pool = queue.filter((it) => !it.offline || urgentOffline(it));
  const offline = queue.filter((it) => it.offline && !urgentOffline(it));
  if (pool.length === 0) pool = offline;
  const candidates = [...pool].sort(byDue).slice(0, ctx.window);
  const parts = partitionByLength(candidates, ctx.cost, ctx.limits);
  const partDue = (p: readonly QueuedItem[]): number => Math.min(...p.map((it) => it.dueMs));
  parts.sort((a, b) => partDue(a) - partDue(b));
  let t = ctx.nowMs;
  let atRisk = false;
  for (const p of parts) {
    t += ctx.cost.estimateMs(batchFeatures(p));
    if (p.some((it) => it.dueMs - ctx.marginMs < t)) {
      atRisk = true;
      break;
    }
  }
  const fillFrom = pool === offline ? [] : offline.sort(byDue);
  if (!atRisk) return { batch: greedyFill(fillFrom, ctx.limits, parts[0] ?? [], ctx.cost), mode: 'throughput' };
  const urgent = bestDueChunk(candidates, ctx);
  return { batch: greedyFill(fillFrom, ctx.limits, urgent, ctx.cost), mode: 'deadline' };
}

/**
 * The first batch of the earliest-due-first plan that meets the most due times:
 * for each batch size k (1..maxRows), cut the due-ordered candidates into
 * consecutive batches of k rows (fewer where the token budget ends one), run
 * them back to back by the cost model and count the items done by their due time.
 * No margin here: the margin decided that something is at risk; among the plans,
 * the one the model says meets the most wins (a margin would trade items that
 * the model says make it for none). Among plans that meet as many, the largest k
 * whose first batch is all on time (more throughput for what comes next); if no
 * such plan meets the most — the first batch would carry a late row whatever k —
 * the smallest k: never a batch made larger by rows that are late anyway
 * (a model that prices everything as late must not send the whole queue at once).
 * O(maxRows × candidates) feature updates; each batch's estimate is O(kinds).
 */
export function bestDueChunk(byDueOrder: readonly QueuedItem[], ctx: SloPickContext): QueuedItem[] {
  const n = byDueOrder.length;
  let bestMet = -1;
  let bestK = 1;
  for (let k = 1; k <= Math.min(n, ctx.limits.maxRows); k++) {
    let t = ctx.nowMs;
    let met = 0;
    let firstOnTime = true;
    for (let i = 0; i < n; ) {
      const chunk = takeChunk(byDueOrder, i, k, ctx.limits.maxTokens);
      t += ctx.cost.estimateMs(batchFeatures(chunk));
      for (const it of chunk) {
        if (it.dueMs >= t) met++;
        else if (i === 0) firstOnTime = false;
      }
      i += chunk.length;
    }
    // More met wins; at an equal count, a larger k replaces the smaller only if its first batch is all on time.
    if (met > bestMet || (met === bestMet && firstOnTime)) {
      bestMet = met;
      bestK = k;
    }
  }
  return takeChunk(byDueOrder, 0, bestK, ctx.limits.maxTokens);
}

/** Up to k items from index `from`, within the token budget (the first always). */
function takeChunk(items: readonly QueuedItem[], from: number, k: number, maxTokens: number): QueuedItem[] {
  const chunk: QueuedItem[] = [];
  let tokens = 0;
  for (let i = from; i < items.length && chunk.length < k; i++) {
    const it = items[i]!;
    if (chunk.length > 0 && tokens + it.length > maxTokens) break;
    chunk.push(it);
    tokens += it.length;
  }
  return chunk;
}
