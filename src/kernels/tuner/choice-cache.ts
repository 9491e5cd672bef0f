/**
 * Tuned kernel choices cached per (adapter, workload, candidate set), beside the cost model, so only the
 * first start on an adapter pays for tuning. A cached pick that is no longer a candidate (the candidate
 * list changed) is ignored rather than trusted: only tested kernels may run.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  attentionCandidates,
  attentionChoiceName,
  gemmCandidates,
  gemmChoiceName,
  rowWorkgroupCandidates,
  smallGemmCandidates,
  type CandidateFeatures,
} from '../candidates.js';
import type { KernelChoices } from '../types.js';
import type { CandidateTiming, TuneOutcome } from './kernel-tuner.js';
import type { TuneWorkload } from './tune-workload.js';

/** Bump when kernels change enough that cached picks no longer hold. */
export const KERNEL_TUNE_VERSION = '1';

export interface ChoiceCacheKey {
  adapter: string;
  workload: TuneWorkload;
  version: string;
}

export interface CachedChoices {
  key: ChoiceCacheKey;
  choices: KernelChoices;
  timings: CandidateTiming[];
  timer: TuneOutcome['timer'];
  tunedAt: string;
  elapsedMs: number;
}

export function choiceCacheKey(adapter: string, workload: TuneWorkload): ChoiceCacheKey {
  return { adapter, workload, version: KERNEL_TUNE_VERSION };
}

export function choiceCacheFile(cacheDir: string, key: ChoiceCacheKey): string {
  const hash = createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 16);
  return join(cacheDir, `kernels-${hash}.json`);
}

/**
 * Features under which every candidate is listed: a cached pick may name any subgroup candidate (the tuner
 * only picks those its device has; the subgroup size only gates which exist, any single size lists them all).
 */
const EVERY_CANDIDATE: CandidateFeatures = { subgroups: true, subgroupSize: 32 };

/** Every field of `c` is one of today's candidates. */
function isCandidateSet(c: KernelChoices): boolean {
  const gemmNames = new Set([...gemmCandidates(EVERY_CANDIDATE), ...smallGemmCandidates(EVERY_CANDIDATE)].map(gemmChoiceName));
  return (
    gemmNames.has(gemmChoiceName(c.gemm)) &&
    gemmNames.has(gemmChoiceName(c.smallGemm)) &&
    attentionCandidates(EVERY_CANDIDATE).some((a) => attentionChoiceName(a) === attentionChoiceName(c.attention)) &&
    rowWorkgroupCandidates.includes(c.rowWorkgroupSize)
  );
}

/** The cached entry for `key`, or null when absent, unreadable, for another key or naming a non-candidate. */
export async function readCachedChoices(cacheDir: string | null, key: ChoiceCacheKey): Promise<CachedChoices | null> {
  if (!cacheDir) return null;
  try {
    const cached = JSON.parse(await readFile(choiceCacheFile(cacheDir, key), 'utf8')) as CachedChoices;
    if (JSON.stringify(cached.key) !== JSON.stringify(key)) return null;
    return isCandidateSet(cached.choices) ? cached : null;
  } catch {
    return null;
  }
}

export async function writeCachedChoices(cacheDir: string, key: ChoiceCacheKey, outcome: TuneOutcome): Promise<string> {
  const file = choiceCacheFile(cacheDir, key);
  await mkdir(cacheDir, { recursive: true });
  const entry: CachedChoices = { key, ...outcome, tunedAt: new Date().toISOString() };
  // Write then rename: a reader (another replica starting) never sees half a file.
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(entry, null, 2));
  await rename(tmp, file);
  return file;
}
