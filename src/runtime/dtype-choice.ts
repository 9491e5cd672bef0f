/**
 * model.dtype 'auto': f16 storage where the adapter has shader-f16, the weights fit f16's range, and f16 is
 * measurably faster on this device (a one-GEMM probe, well under a second); f32 otherwise. Why each:
 * - shader-f16: without it f16 kernels cannot compile.
 * - range: a weight beyond ±65504 becomes ±Inf in f16, so a checkpoint with one stays f32. Activations
 *   are accumulated in f32 in every kernel; fidelity on the demo tasks is measured in bench/results/f16-*.
 * - speed: f16 halves the bytes moved, but where it is not measurably faster (lavapipe measured anywhere from
 *   13 % faster to 1 % slower) it would trade fidelity for nothing. The verdict is cached so restarts agree.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GpuContext } from '../gpu/context.js';
import { probeGemmDtypes } from '../kernels/tuner/dtype-probe.js';
import type { Dtype } from '../kernels/types.js';
import type { Logger } from '../util/logger.js';

export type DtypeSetting = Dtype | 'auto';

/** f16 must beat f32 by this share before 'auto' takes it (probe noise is a few percent). */
const MIN_F16_GAIN = 0.1;
const F16_MAX = 65504;

export interface DtypeDecision {
  dtype: Dtype;
  reason: string;
}

/** Largest |value| over every Float32Array reachable from `weights` (a checkpoint's nested weight object). */
export function maxAbsWeight(weights: unknown): number {
  let max = 0;
  const seen = new Set<unknown>();
  const visit = (v: unknown): void => {
    if (v === null || typeof v !== 'object' || seen.has(v)) return;
    seen.add(v);
    if (v instanceof Float32Array) {
      for (let i = 0; i < v.length; i++) {
        const a = Math.abs(v[i]!);
        if (a > max || Number.isNaN(a)) max = Number.isNaN(a) ? Infinity : a;
      }
      return;
    }
    if (ArrayBuffer.isView(v)) return;
    for (const child of v instanceof Map ? v.values() : Array.isArray(v) ? v : Object.values(v)) visit(child);
  };
  visit(weights);
  return max;
}

/** The storage dtype to serve `weights` with, and why (logged at start). */
export async function chooseDtype(
  ctx: GpuContext,
  setting: DtypeSetting,
  weights: unknown,
  probeShape: { M: number; N: number; K: number },
  logger: Logger,
  /** Where the probe's verdict is kept per adapter and shape (kernels.cacheDir), so restarts do not flip on noise. */
  cacheDir: string | null = null,
): Promise<DtypeDecision> {
  if (setting !== 'auto') return { dtype: setting, reason: 'model.dtype' };
  if (!ctx.capabilities.shaderF16) return { dtype: 'f32', reason: 'auto: the adapter has no shader-f16' };
  const maxAbs = maxAbsWeight(weights);
  if (!(maxAbs <= F16_MAX)) return { dtype: 'f32', reason: `auto: a weight of magnitude ${maxAbs} does not fit f16` };
  const cacheFile = cacheDir
    ? join(cacheDir, `dtype-${createHash('sha256').update(JSON.stringify({ adapter: ctx.capabilities.adapterName, probeShape })).digest('hex').slice(0, 16)}.json`)
    : null;
  const cached = cacheFile ? await readFile(cacheFile, 'utf8').then((t) => JSON.parse(t) as DtypeDecision, () => null) : null;
  if (cached && (cached.dtype === 'f16' || cached.dtype === 'f32')) {
    logger.info({ dtype: cached.dtype, reason: cached.reason, cacheFile }, 'storage dtype from the cached probe');
    return cached;
  }
  const t = await probeGemmDtypes(ctx, probeShape);
  const gain = 1 - t.f16Ms / t.f32Ms;
  const timing = `GEMM ${probeShape.M}x${probeShape.N}x${probeShape.K}: f32 ${t.f32Ms.toFixed(2)} ms, f16 ${t.f16Ms.toFixed(2)} ms (${t.timer})`;
  const decision: DtypeDecision =
    gain >= MIN_F16_GAIN
      ? { dtype: 'f16', reason: `auto: f16 ${(gain * 100).toFixed(0)} % faster; ${timing}` }
      : { dtype: 'f32', reason: `auto: f16 not faster by ${MIN_F16_GAIN * 100} % on this adapter; ${timing}` };
  logger.info({ dtype: decision.dtype, reason: decision.reason }, 'storage dtype chosen');
  if (cacheDir && cacheFile) {
    await mkdir(cacheDir, { recursive: true });
    await writeFile(cacheFile, JSON.stringify(decision)).catch((err: unknown) => logger.warn({ err }, 'could not cache the dtype probe'));
  }
  return decision;
}

/** The encoder's storage dtype per config.model.dtype (probe shape: the FFN up-projection of a ~256-token batch). */
export async function encoderDtype(
  ctx: GpuContext,
  setting: DtypeSetting,
  checkpoint: { config: { hiddenSize: number; intermediateSize: number }; weights: unknown },
  logger: Logger,
  cacheDir: string | null = null,
): Promise<Dtype> {
  const c = checkpoint.config;
  return (await chooseDtype(ctx, setting, checkpoint.weights, { M: 256, N: c.intermediateSize, K: c.hiddenSize }, logger, cacheDir)).dtype;
}
