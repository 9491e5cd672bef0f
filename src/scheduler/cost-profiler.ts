import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelRunner, TaskRow } from '../engine/model-runner.js';
import { generatePet } from '../pet/init-pet.js';
import { PET_KINDS, type PetKind } from '../pet/types.js';
import { PoolExhaustedError } from '../pet/gpu-pool.js';
import type { Logger } from '../util/logger.js';
import { Rng } from '../util/random.js';
import { fitNonNegative, LinearCostModel, type CostCoefficients } from './cost-model.js';

/**
 * Profiles the cost model on the device the runner uses: times a grid of
 * packed base batches (fits fixed / per-row / per-token / per-len² terms), then
 * the same rows under a temporary task of each PET kind (per-kind per-token
 * term) and spread over several tasks (per-task term). Wall time of the runner
 * call is what the scheduler must predict, so that is what is measured.
 */

export interface ProfileOptions {
  logger: Logger;
  /** Largest batch (tokens) to time; the grid stays under the scheduler's budget. */
  maxTokens: number;
  /** Timed repetitions per point (median taken) after one untimed warm-up. */
  reps?: number;
  /** Called after each timed point (a CLI shows a progress line with it). */
  onProgress?: (progress: ProfileProgress) => void;
}

export interface ProfileProgress {
  /** Points timed so far, of `total`. */
  done: number;
  total: number;
  /** What was just timed, e.g. "base 16×32" or "lora". */
  what: string;
}

/** Identifies what a cached model is valid for. */
export interface CostModelKey {
  adapter: string;
  model: unknown;
  dtype: string;
  /** Bumped when kernels change enough to invalidate profiles. */
  engineVersion: string;
}

const PROFILE_TASK_PREFIX = 'petserve.profile.';

export function costModelKeyHash(key: CostModelKey): string {
  return createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 16);
}

/** Where the model for `key` is cached under `cacheDir`. */
export function costModelFile(cacheDir: string, key: CostModelKey): string {
  return join(cacheDir, `cost-${costModelKeyHash(key)}.json`);
}

/** The cached coefficients for `key`, or null when absent, unreadable or for another key. */
export async function readCachedCostModel(cacheDir: string | null, key: CostModelKey): Promise<CostCoefficients | null> {
  if (!cacheDir) return null;
  try {
    const cached = JSON.parse(await readFile(costModelFile(cacheDir, key), 'utf8')) as { key: CostModelKey; coef: CostCoefficients };
    return JSON.stringify(cached.key) === JSON.stringify(key) ? cached.coef : null;
  } catch {
    return null;
  }
}

/** Write the coefficients for `key` atomically (a reader never sees half a file). */
export async function writeCachedCostModel(cacheDir: string, key: CostModelKey, coef: CostCoefficients, meta: Record<string, unknown> = {}): Promise<string> {
  const file = costModelFile(cacheDir, key);
  await mkdir(cacheDir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify({ key, coef, ...meta }, null, 2));
  await rename(tmp, file);
  return file;
}

/** Read a cached model, run the full profile on a miss, write it back. */
export async function loadOrProfileCostModel(
  runner: ModelRunner,
  key: CostModelKey,
  cacheDir: string | null,
  opts: ProfileOptions,
): Promise<LinearCostModel> {
  const cached = await readCachedCostModel(cacheDir, key);
  if (cached) {
    opts.logger.info({ cacheDir }, 'cost model loaded from cache');
    return new LinearCostModel(cached);
  }
  const t0 = performance.now();
  const model = await profileCostModel(runner, opts);
  opts.logger.info({ ms: Math.round(performance.now() - t0), coef: model.coef }, 'cost model profiled');
  if (cacheDir) await writeCachedCostModel(cacheDir, key, model.coef, { source: 'profile' });
  return model;
}

/**
 * Multiples of the base per-token cost assumed for what the short calibration
 * does not time (PET ops, distinct tasks), until real batches teach the online
 * model. Chosen above what the full profile measured for bert-mini on lavapipe,
 * so an untaught term errs toward "slower": smaller batches, earlier at-risk
 * decisions, never a promise the device cannot keep.
 */
const PRIOR_KIND_TOKEN_FACTOR = 0.5;
const PRIOR_TASK_FIXED_FACTOR = 0.25;

/**
 * A few seconds instead of the full profile: one untimed warm-up (compiles the
 * pipelines), then three base batches of different shapes, each timed twice
 * (the faster kept). Fits the fixed and per-token terms; the terms it cannot
 * separate (per row, Σlen², PET kinds, distinct tasks) start from the
 * conservative multiples above and are learned online (online-cost-model.ts).
 */
export async function calibrateCostModel(runner: ModelRunner, opts: { maxTokens: number; onProgress?: (done: number, total: number) => void }): Promise<CostCoefficients> {
  const cfg = runner.checkpoint.config;
  const rng = new Rng(4242);
  const seq = (len: number): number[] => Array.from({ length: len }, () => rng.int(Math.min(1000, cfg.vocabSize - 1), cfg.vocabSize));
  const maxLen = Math.min(cfg.maxPositionEmbeddings, 64);
  const shapes: [number, number][] = [
    [1, 8],
    [1, maxLen],
    [Math.max(1, Math.min(8, Math.floor(opts.maxTokens / 32))), Math.min(32, maxLen)],
  ];
  await runner.runTasks([{ task: null, inputIds: seq(8) }], { logits: true });
  const X: number[][] = [];
  const y: number[] = [];
  for (const [i, [rows, len]] of shapes.entries()) {
    const batch = Array.from({ length: rows }, (): TaskRow => ({ task: null, inputIds: seq(len) }));
    let best = Infinity;
    for (let r = 0; r < 2; r++) {
      const t0 = performance.now();
      await runner.runTasks(batch, { logits: true });
      best = Math.min(best, performance.now() - t0);
    }
    X.push([1, rows * len]);
    y.push(best);
    opts.onProgress?.(i + 1, shapes.length);
  }
  const [fixedMs, perTokenMs] = fitNonNegative(X, y) as [number, number];
  const perKindTokenMs: Record<string, number> = {};
  for (const kind of PET_KINDS) perKindTokenMs[kind] = PRIOR_KIND_TOKEN_FACTOR * perTokenMs;
  return { fixedMs, perRowMs: 0, perTokenMs, perSqLenMs: 0, perKindTokenMs, perTaskMs: PRIOR_TASK_FIXED_FACTOR * fixedMs };
}

export async function profileCostModel(runner: ModelRunner, opts: ProfileOptions): Promise<LinearCostModel> {
  const cfg = runner.checkpoint.config;
  const reps = opts.reps ?? 2;
  const rng = new Rng(12345);
  const maxLen = Math.min(cfg.maxPositionEmbeddings, 256);
  // Ids above the special tokens, wherever the vocabulary ends.
  const seq = (len: number): number[] => Array.from({ length: len }, () => rng.int(Math.min(1000, cfg.vocabSize - 1), cfg.vocabSize));
  const budget = Math.max(64, Math.min(opts.maxTokens, 1024));

  const timeRows = async (rows: TaskRow[]): Promise<number> => {
    await runner.runTasks(rows, { logits: true });
    const ms: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      await runner.runTasks(rows, { logits: true });
      ms.push(performance.now() - t0);
    }
    ms.sort((a, b) => a - b);
    return ms[Math.floor(ms.length / 2)]!;
  };

  // Base grid: few rows and many, short and long sequences, all within budget.
  const shapes: [number, number][] = [];
  for (const len of [8, 32, 128, maxLen]) {
    if (len > maxLen) continue;
    for (const rows of [1, 4, 16, 64]) if (rows * len <= budget) shapes.push([rows, len]);
  }
  const registry = runner.registry;
  // Base grid, then (with a registry) the probe, one point per PET kind, one LoRA and the spread.
  const total = shapes.length + (registry ? PET_KINDS.length + 3 : 0);
  let done = 0;
  const progress = (what: string): void => opts.onProgress?.({ done: ++done, total, what });
  const X: number[][] = [];
  const y: number[] = [];
  for (const [rows, len] of shapes) {
    const batch = Array.from({ length: rows }, (): TaskRow => ({ task: null, inputIds: seq(len) }));
    X.push([1, rows, rows * len, rows * len * len]);
    y.push(await timeRows(batch));
    progress(`base ${rows}×${len}`);
  }
  const [fixedMs, perRowMs, perTokenMs, perSqLenMs] = fitNonNegative(X, y) as [number, number, number, number];

  // PET kinds: the same 8×32 rows under one temporary task of each kind.
  const perKindTokenMs: Record<string, number> = {};
  const profiledPackedFloats: Record<string, number> = {};
  let perTaskMs = 0;
  if (registry) {
    const probeRows = Math.min(8, Math.floor(budget / 32));
    const probe = Array.from({ length: probeRows }, (): TaskRow => ({ task: null, inputIds: seq(32) }));
    const baseMs = await timeRows(probe);
    progress('base probe');
    const ids: string[] = [];
    try {
      for (const kind of PET_KINDS) {
        const id = `${PROFILE_TASK_PREFIX}${kind}`;
        const info = registry.registerBundle(id, generatePet({ model: runner.checkpoint, kind: kind as PetKind, seed: 1 }));
        ids.push(id);
        profiledPackedFloats[kind] = info.packedFloats;
        const ms = await timeRows(probe.map((r) => ({ ...r, task: id })));
        perKindTokenMs[kind] = Math.max(0, (ms - baseMs) / (probeRows * 32));
        progress(kind);
      }
      // Distinct tasks: the LoRA probe spread over 8 tasks instead of one.
      const spread: string[] = [];
      for (let i = 0; i < 8; i++) {
        const id = `${PROFILE_TASK_PREFIX}lora-${i}`;
        registry.registerBundle(id, generatePet({ model: runner.checkpoint, kind: 'lora', seed: 10 + i }));
        ids.push(id);
        spread.push(id);
      }
      const oneMs = await timeRows(probe.map((r) => ({ ...r, task: `${PROFILE_TASK_PREFIX}lora` })));
      progress('one LoRA task');
      try {
        const spreadMs = await timeRows(probe.map((r, i) => ({ ...r, task: spread[i % spread.length]! })));
        perTaskMs = Math.max(0, (spreadMs - oneMs) / 7);
        progress('8 LoRA tasks');
      } catch (err) {
        // A pool too small for 8 LoRAs at once: leave the per-task term at 0 rather than fail start-up.
        if (!(err instanceof PoolExhaustedError)) throw err;
        opts.logger.warn('PET pool too small to profile the per-task cost; assuming 0');
        progress('8 LoRA tasks (skipped: pool too small)');
      }
    } finally {
      for (const id of ids) await registry.unregister(id);
    }
  }
  return new LinearCostModel({ fixedMs, perRowMs, perTokenMs, perSqLenMs, perKindTokenMs, perTaskMs, profiledPackedFloats });
}
