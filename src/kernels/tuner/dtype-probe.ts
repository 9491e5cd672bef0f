/**
 * Times one GEMM of a model's shape in f32 and in f16 storage on this device: on GPUs f16 halves the bytes
 * moved and is usually faster; on CPU adapters (lavapipe) f16 is emulated and slower. The runtime's
 * dtype 'auto' asks this probe instead of assuming either.
 */
import { BatchEncoder, EncoderResources } from '../../gpu/batch-encoder.js';
import type { GpuContext } from '../../gpu/context.js';
import { gemm } from '../gemm.js';
import { defaultKernelChoices } from '../tuning.js';
import type { Dtype } from '../types.js';
import { TuneBuffers } from './tune-workload.js';

export interface DtypeTiming {
  f32Ms: number;
  f16Ms: number;
  timer: 'timestamp' | 'wall';
}

/** Fastest of `trials` runs of Y[M,N] = X[M,K]·Wᵀ per dtype, after one untimed run each. Needs shader-f16. */
export async function probeGemmDtypes(ctx: GpuContext, shape: { M: number; N: number; K: number }, trials = 3): Promise<DtypeTiming> {
  const res = new EncoderResources(ctx);
  const ms: Record<Dtype, number> = { f32: Infinity, f16: Infinity };
  let timer: DtypeTiming['timer'] = 'timestamp';
  try {
    for (const dtype of ['f32', 'f16'] as const) {
      const bufs = new TuneBuffers(ctx.device, dtype);
      try {
        const x = bufs.random(shape.M * shape.K, 'probe.x');
        const w = bufs.random(shape.N * shape.K, 'probe.w');
        const y = bufs.output(shape.M * shape.N, 'probe.y');
        for (let i = 0; i <= trials; i++) {
          const enc = new BatchEncoder(res, { profile: true, label: 'dtype-probe' });
          enc.phase('gemm');
          gemm(enc, dtype, { x, w, y, ...shape }, 'probe.gemm', defaultKernelChoices.gemm);
          const t = performance.now();
          const r = await enc.submit();
          const phase = r.phases?.find((p) => p.name === 'gemm');
          if (!phase) timer = 'wall';
          if (i > 0) ms[dtype] = Math.min(ms[dtype], phase?.ms ?? performance.now() - t);
        }
      } finally {
        bufs.destroy();
      }
    }
  } finally {
    res.destroy();
  }
  return { f32Ms: ms.f32, f16Ms: ms.f16, timer };
}
