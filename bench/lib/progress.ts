/**
 * Progress of benchmark runs on stderr (stdout holds the result tables): a
 * live line on a terminal, a plain line every 10 s when logged.
 */
import { startPhasedProgress, startProgress, type PhasedProgress, type Progress, type ProgressOptions } from '../../src/cli/progress.js';

const BENCH_PLAIN_INTERVAL_MS = 10_000;

export function benchProgress(label: string, total: number, unit: string, opts: Pick<ProgressOptions, 'endsAtMs'> = {}): Progress {
  return startProgress({ ...opts, label: `[bench] ${label}`, total, unit, plainIntervalMs: BENCH_PLAIN_INTERVAL_MS });
}

/** For initModel's onProgress: bert-base takes ~25 s to generate and write here. */
export function checkpointProgress(preset: string): PhasedProgress<'generate' | 'write'> {
  return startPhasedProgress((phase) => `[bench] ${preset} checkpoint: ${phase === 'generate' ? 'generating' : 'writing'} tensors`, {
    unit: 'tensors',
    showAfterMs: 1000,
    plainIntervalMs: BENCH_PLAIN_INTERVAL_MS,
  });
}
