import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelRunner, TaskRow } from '../engine/model-runner.js';
import { generatePet } from '../pet/init-pet.js';
import { PET_KINDS, type PetKind } from '../pet/types.js';
import { PetServeError } from '../util/errors.js';
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

/** Read a cached model, profile on a miss, write it back (atomically). */
export async function loadOrProfileCostModel(
  runner: ModelRunner,
  key: CostModelKey,
  cacheDir: string | null,
  opts: ProfileOptions,
): Promise<LinearCostModel> {
  const file = cacheDir ? join(cacheDir, `cost-${costModelKeyHash(key)}.json`) : null;
  if (file) {
    try {
      const cached = JSON.parse(await readFile(file, 'utf8')) as { key: CostModelKey; coef: CostCoefficients };
      if (JSON.stringify(cached.key) === JSON.stringify(key)) {
        opts.logger.info({ file }, 'cost model loaded from cache');
        return new LinearCostModel(cached.coef);
      }
    } catch {
      // Missing or unreadable cache: profile below.
    }
  }
  const t0 = performance.now();
  const model = await profileCostModel(runner, opts);
  opts.logger.info({ ms: Math.round(performance.now() - t0), coef: model.coef }, 'cost model profiled');
  if (file && cacheDir) {
    await mkdir(cacheDir, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify({ key, coef: model.coef }, null, 2));
    await rename(tmp, file);
  }
  return model;
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
  const X: number[][] = [];
  const y: number[] = [];
  const baseRows = new Map<string, TaskRow[]>();
  for (const [rows, len] of shapes) {
    const batch = Array.from({ length: rows }, (): TaskRow => ({ task: null, inputIds: seq(len) }));
    baseRows.set(`${rows}x${len}`, batch);
    X.push([1, rows, rows * len, rows * len * len]);
    y.push(await timeRows(batch));
  }
  const [fixedMs, perRowMs, perTokenMs, perSqLenMs] = fitNonNegative(X, y) as [number, number, number, number];

  // PET kinds: the same 8×32 rows under one temporary task of each kind.
  const registry = runner.registry;
  const perKindTokenMs: Record<string, number> = {};
  const profiledPackedFloats: Record<string, number> = {};
  let perTaskMs = 0;
  if (registry) {
    const probeRows = Math.min(8, Math.floor(budget / 32));
    const probe = Array.from({ length: probeRows }, (): TaskRow => ({ task: null, inputIds: seq(32) }));
    const baseMs = await timeRows(probe);
    const ids: string[] = [];
    try {
      for (const kind of PET_KINDS) {
        const id = `${PROFILE_TASK_PREFIX}${kind}`;
        const info = registry.registerBundle(id, generatePet({ model: runner.checkpoint, kind: kind as PetKind, seed: 1 }));
        ids.push(id);
        profiledPackedFloats[kind] = info.packedFloats;
        const ms = await timeRows(probe.map((r) => ({ ...r, task: id })));
        perKindTokenMs[kind] = Math.max(0, (ms - baseMs) / (probeRows * 32));
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
      try {
        const spreadMs = await timeRows(probe.map((r, i) => ({ ...r, task: spread[i % spread.length]! })));
        perTaskMs = Math.max(0, (spreadMs - oneMs) / 7);
      } catch (err) {
        // A pool too small for 8 LoRAs at once: leave the per-task term at 0 rather than fail start-up.
        if (!(err instanceof PetServeError && err.code === 'POOL_EXHAUSTED')) throw err;
        opts.logger.warn('PET pool too small to profile the per-task cost; assuming 0');
      }
    } finally {
      for (const id of ids) await registry.unregister(id);
    }
  }
  return new LinearCostModel({ fixedMs, perRowMs, perTokenMs, perSqLenMs, perKindTokenMs, perTaskMs, profiledPackedFloats });
}
