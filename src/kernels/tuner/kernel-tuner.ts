/**
 * The self-tuner: times each candidate of each hot kernel (candidates.ts) on the workload of the model at
 * hand and picks the fastest. It runs one short GPU trial at a time through `exclusive`, which the runtime
 * points at the runner's batch queue, so trials run between batches, never beside them, and serving
 * never waits for the whole tuning run.
 */
import { BatchEncoder, EncoderResources } from '../../gpu/batch-encoder.js';
import type { GpuContext } from '../../gpu/context.js';
import { DeviceLostError } from '../../util/errors.js';
import {
  attentionCandidates,
  attentionChoiceName,
  choiceNames,
  gemmCandidates,
  gemmChoiceName,
  rowWorkgroupCandidates,
  rowWorkgroupName,
  smallGemmCandidates,
  type KernelClass,
} from '../candidates.js';
import type { KernelChoices } from '../types.js';
import { attentionRecorder, gemmRecorder, normRecorder, TuneBuffers, type RecordCandidate, type TuneWorkload } from './tune-workload.js';

export type { KernelClass } from '../candidates.js';

export interface CandidateTiming {
  kernel: KernelClass;
  candidate: string;
  /** Fastest of the timed trials, ms of one pass over the workload's shapes; null = failed to compile or run. */
  ms: number | null;
  error?: string;
}

export interface TuneOutcome {
  choices: KernelChoices;
  timings: CandidateTiming[];
  timer: 'timestamp' | 'wall';
  elapsedMs: number;
}

export interface TunerOptions {
  /** Runs one trial with the device to itself (between the runner's batches). */
  exclusive: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Timed trials per candidate; the fastest is kept (on a shared CPU device others only ever add time). */
  trials?: number;
  /**
   * Leave the start choice only for a candidate at least this much faster: run-to-run noise on a shared
   * machine is a few percent, and a flip-flopping pick would only churn caches and pipelines.
   */
  minGain?: number;
  onProgress?: (done: number, total: number) => void;
}

interface Entry<C> {
  name: string;
  choice: C;
  record: (bufs: TuneBuffers) => RecordCandidate;
}

export async function tuneKernels(
  ctx: GpuContext,
  workload: TuneWorkload,
  start: KernelChoices,
  opts: TunerOptions,
): Promise<TuneOutcome> {
  const t0 = performance.now();
  const trials = opts.trials ?? 3;
  const minGain = opts.minGain ?? 0.05;
  const w = workload;
  const gemms: Entry<KernelChoices['gemm']>[] = gemmCandidates({ subgroups: ctx.capabilities.subgroups }).map((c) => ({
    name: gemmChoiceName(c),
    choice: c,
    record: (b) => gemmRecorder(w, b, w.largeRows, c),
  }));
  const smallGemms: Entry<KernelChoices['gemm']>[] =
    w.smallRows === null
      ? []
      : smallGemmCandidates({ subgroups: ctx.capabilities.subgroups }).map((c) => ({
          name: gemmChoiceName(c),
          choice: c,
          record: (b) => gemmRecorder(w, b, w.smallRows!, c),
        }));
  const attentions: Entry<KernelChoices['attention']>[] =
    w.attention === null
      ? []
      : attentionCandidates(ctx.capabilities).map((c) => ({ name: attentionChoiceName(c), choice: c, record: (b) => attentionRecorder(w, b, c) }));
  const norms: Entry<number>[] = rowWorkgroupCandidates
    .filter((wg) => wg <= ctx.capabilities.maxComputeInvocationsPerWorkgroup)
    .map((wg) => ({ name: rowWorkgroupName(wg), choice: wg, record: (b) => normRecorder(w, b, wg) }));
  const total = gemms.length + smallGemms.length + attentions.length + norms.length;

  const timings: CandidateTiming[] = [];
  let done = 0;
  let timer: 'timestamp' | 'wall' = ctx.capabilities.timestampQuery ? 'timestamp' : 'wall';
  const res = new EncoderResources(ctx);
  const bufs = new TuneBuffers(ctx.device, w.dtype);
  try {
    const pick = async <C>(kernel: KernelClass, entries: Entry<C>[], current: C, currentName: string): Promise<C> => {
      let best: { ms: number; choice: C } | null = null;
      let currentMs: number | null = null;
      for (const e of entries) {
        const timing = await timeCandidate(ctx, res, bufs, e.record, trials, opts.exclusive);
        if (timing.timer === 'wall') timer = 'wall';
        timings.push({ kernel, candidate: e.name, ms: timing.ms, ...(timing.error ? { error: timing.error } : {}) });
        opts.onProgress?.(++done, total);
        if (timing.ms === null) continue;
        if (e.name === currentName) currentMs = timing.ms;
        if (!best || timing.ms < best.ms) best = { ms: timing.ms, choice: e.choice };
      }
      if (!best) return current;
      if (currentMs !== null && best.ms > currentMs * (1 - minGain)) return current;
      return best.choice;
    };
    const choices: KernelChoices = { ...start };
    const startNames = choiceNames(start);
    choices.gemm = await pick('gemm', gemms, start.gemm, startNames.gemm);
    if (smallGemms.length > 0) choices.smallGemm = await pick('smallGemm', smallGemms, start.smallGemm, startNames.smallGemm);
    if (attentions.length > 0) choices.attention = await pick('attention', attentions, start.attention, startNames.attention);
    choices.rowWorkgroupSize = await pick('norm', norms, start.rowWorkgroupSize, startNames.norm);
    return { choices, timings, timer, elapsedMs: performance.now() - t0 };
  } finally {
    bufs.destroy();
    res.destroy();
  }
}

/** One untimed run (compiles the pipelines), then `trials` timed runs; the fastest counts. */
async function timeCandidate(
  ctx: GpuContext,
  res: EncoderResources,
  bufs: TuneBuffers,
  makeRecorder: (bufs: TuneBuffers) => RecordCandidate,
  trials: number,
  exclusive: TunerOptions['exclusive'],
): Promise<{ ms: number | null; timer: 'timestamp' | 'wall'; error?: string }> {
  let record: RecordCandidate;
  try {
    record = makeRecorder(bufs);
  } catch (err) {
    return { ms: null, timer: 'wall', error: (err as Error).message };
  }
  const runOnce = (): Promise<{ ms: number; timer: 'timestamp' | 'wall' }> =>
    exclusive(async () => {
      if (ctx.isLost) throw new DeviceLostError('GPU device lost during kernel tuning');
      const enc = new BatchEncoder(res, { profile: true, label: 'kernel-tune' });
      enc.phase('trial');
      record(enc);
      const t = performance.now();
      const result = await enc.submit();
      const wallMs = performance.now() - t;
      const phase = result.phases?.find((p) => p.name === 'trial');
      return phase ? { ms: phase.ms, timer: 'timestamp' } : { ms: wallMs, timer: 'wall' };
    });
  try {
    // The untimed first run compiles the candidate's pipelines; its error scope sits inside the exclusive
    // section so a batch of the runner can never land in it.
    const compileError = await exclusive(async () => {
      ctx.device.pushErrorScope('validation');
      const enc = new BatchEncoder(res, { label: 'kernel-tune-warmup' });
      record(enc);
      const submitted = enc.submit().then(
        () => null,
        (err: unknown) => err,
      );
      const scopeError = await ctx.device.popErrorScope();
      const submitError = await submitted;
      if (submitError instanceof DeviceLostError) throw submitError;
      return scopeError?.message ?? (submitError ? (submitError as Error).message : null);
    });
    if (compileError) return { ms: null, timer: 'wall', error: compileError };
    let best = Infinity;
    let timer: 'timestamp' | 'wall' = 'timestamp';
    for (let i = 0; i < trials; i++) {
      const r = await runOnce();
      best = Math.min(best, r.ms);
      timer = r.timer;
    }
    return { ms: best, timer };
  } catch (err) {
    if (err instanceof DeviceLostError) throw err;
    return { ms: null, timer: 'wall', error: (err as Error).message };
  }
}
