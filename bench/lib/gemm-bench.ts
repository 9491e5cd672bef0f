import type { EncoderResources } from '../../src/gpu/batch-encoder.js';
import { uploadStorage } from '../../src/gpu/buffers.js';
import { gemm, type GemmVariant } from '../../src/kernels/gemm.js';
import { defaultKernelChoices } from '../../src/kernels/tuning.js';
import type { Dtype, GemmChoice } from '../../src/kernels/types.js';
import { f32ArrayToF16 } from '../../src/util/f16.js';
import { Rng } from '../../src/util/random.js';
import type { QuietGate } from './cpu-load.js';
import { measureRepeated, type MeasureBudget } from './measure.js';

/** The three linear-layer shapes of a bert-base encoder layer, as (N, K) of Y[M,N] = X[M,K]·W[N,K]ᵀ. */
export const BERT_BASE_GEMM_SHAPES: readonly { N: number; K: number; role: string }[] = [
  { N: 768, K: 768, role: 'q/k/v/out projection' },
  { N: 3072, K: 768, role: 'FFN up' },
  { N: 768, K: 3072, role: 'FFN down' },
];

/** One kernel under test; `name` is how tables and JSON refer to it. */
export interface GemmKernel {
  name: string;
  variant: GemmVariant;
  choice: GemmChoice;
  dtype: Dtype;
}

/** The register-blocked GEMM without subgroups (the default before sgx, and sgx's fallback). */
const RB: GemmChoice = { variant: 'rb', rowsPerInvocation: 4, colsPerInvocation: 8 };

/** naive, tiled and rb always; the default sgx kernel where the adapter has subgroups; f16 forms where it has shader-f16. */
export function gemmKernels(caps: { shaderF16: boolean; subgroups: boolean }): GemmKernel[] {
  const sgx = defaultKernelChoices.gemm;
  const kernels: GemmKernel[] = [
    { name: 'naive', variant: 'naive', choice: { variant: 'naive' }, dtype: 'f32' },
    { name: 'tiled', variant: 'tiled', choice: { variant: 'tiled', bk: 16 }, dtype: 'f32' },
    { name: 'rb', variant: 'rb', choice: RB, dtype: 'f32' },
  ];
  if (caps.subgroups && sgx.variant === 'sgx') kernels.push({ name: 'sgx', variant: 'sgx', choice: sgx, dtype: 'f32' });
  if (caps.shaderF16) kernels.push({ name: 'rb-f16', variant: 'rb', choice: RB, dtype: 'f16' });
  if (caps.shaderF16 && caps.subgroups && sgx.variant === 'sgx') kernels.push({ name: 'sgx-f16', variant: 'sgx', choice: sgx, dtype: 'f16' });
  return kernels;
}

export interface GemmMeasurement {
  M: number;
  N: number;
  K: number;
  kernel: string;
  variant: GemmVariant;
  dtype: Dtype;
  reps: number;
  timer: 'timestamp' | 'wall';
  deviceMs: number | null;
  wallMs: number;
  /** 2·M·N·K / time, from device time where the adapter has timestamps. */
  gflops: number;
  /** The same from wall-clock time (cross-check: includes encode, submit and readback wait). */
  wallGflops: number;
  /** Share of the machine's CPU other processes used during the kept trial (0..1). */
  otherCpuShare: number;
  /** Per-repetition ms of each timed trial (the fastest is used). */
  trialMs: number[];
}

export interface GemmShapeSummary {
  M: number;
  N: number;
  K: number;
  role: string;
  gflops: Record<string, number>;
  tiledOverNaive: number;
  rbOverNaive: number;
  /** rb in f16 over rb in f32; null without shader-f16. */
  rbF16OverRb: number | null;
  /** The subgroup-shuffle kernel over rb (f32); null without subgroups. */
  sgxOverRb: number | null;
}

interface OperandBuffers {
  x: GPUBuffer;
  w: GPUBuffer;
  y: GPUBuffer;
}

/**
 * Allocate operands once at the largest shape of the sweep and bind them for
 * every smaller one (GEMM reads only the M·K / N·K / M·N prefix it is told).
 */
function allocateOperands(device: GPUDevice, dtype: Dtype, maxM: number, seed: number): OperandBuffers {
  const maxK = Math.max(...BERT_BASE_GEMM_SHAPES.map((s) => s.K));
  const maxNK = Math.max(...BERT_BASE_GEMM_SHAPES.map((s) => s.N * s.K));
  const maxN = Math.max(...BERT_BASE_GEMM_SHAPES.map((s) => s.N));
  const rng = new Rng(seed);
  const data = (n: number, std: number): ArrayBufferView => {
    const f32 = rng.fillNormal(new Float32Array(n), 0, std);
    return dtype === 'f16' ? f32ArrayToF16(f32) : f32;
  };
  return {
    x: uploadStorage(device, data(maxM * maxK, 1), `bench-gemm-x-${dtype}`),
    // Weight scale of a trained BERT; keeps f16 sums far from overflow.
    w: uploadStorage(device, data(maxNK, 0.02), `bench-gemm-w-${dtype}`),
    y: uploadStorage(device, new Uint8Array(maxM * maxN * (dtype === 'f16' ? 2 : 4)), `bench-gemm-y-${dtype}`),
  };
}

/** How many measurements benchGemm makes: one per token count, shape and kernel. */
export function gemmMeasurementCount(tokenCounts: readonly number[], kernels: readonly GemmKernel[]): number {
  return tokenCounts.length * BERT_BASE_GEMM_SHAPES.length * kernels.length;
}

export async function benchGemm(
  res: EncoderResources,
  opts: {
    tokenCounts: readonly number[];
    kernels: readonly GemmKernel[];
    budget: MeasureBudget;
    gate: QuietGate | null;
    log: (msg: string) => void;
    /** After each measurement (progress). */
    onMeasured?: () => void;
  },
): Promise<{ measurements: GemmMeasurement[]; summary: GemmShapeSummary[] }> {
  const device = res.ctx.device;
  const maxM = Math.max(...opts.tokenCounts);
  const operands = new Map<Dtype, OperandBuffers>();
  const measurements: GemmMeasurement[] = [];
  const summary: GemmShapeSummary[] = [];
  try {
    for (const k of opts.kernels) {
      if (!operands.has(k.dtype)) operands.set(k.dtype, allocateOperands(device, k.dtype, maxM, 1234));
    }
    for (const M of opts.tokenCounts) {
      for (const { N, K, role } of BERT_BASE_GEMM_SHAPES) {
        const gflops: Record<string, number> = {};
        for (const k of opts.kernels) {
          const { x, w, y } = operands.get(k.dtype)!;
          const m = await measureRepeated(
            res,
            (enc) => gemm(enc, k.dtype, { x, w, y, M, N, K }, `bench.gemm.${k.name}`, k.choice),
            opts.budget,
            opts.gate,
          );
          const flop = 2 * M * N * K;
          const result: GemmMeasurement = {
            M,
            N,
            K,
            kernel: k.name,
            variant: k.variant,
            dtype: k.dtype,
            reps: m.reps,
            timer: m.timer,
            deviceMs: m.deviceMs,
            wallMs: m.wallMs,
            gflops: flop / (m.ms * 1e6),
            wallGflops: flop / (m.wallMs * 1e6),
            otherCpuShare: m.otherCpuShare,
            trialMs: m.trialMs,
          };
          measurements.push(result);
          gflops[k.name] = result.gflops;
          opts.log(
            `gemm ${M}x${N}x${K} ${k.name}: ${result.gflops.toFixed(2)} GFLOP/s ` +
              `(${m.ms.toFixed(2)} ms x ${m.reps}, wall ${result.wallGflops.toFixed(2)} GFLOP/s)`,
          );
          opts.onMeasured?.();
        }
        const naive = gflops['naive'] ?? Number.NaN;
        const rb = gflops['rb'] ?? Number.NaN;
        const rbF16 = gflops['rb-f16'];
        summary.push({
          M,
          N,
          K,
          role,
          gflops,
          tiledOverNaive: (gflops['tiled'] ?? Number.NaN) / naive,
          rbOverNaive: rb / naive,
          rbF16OverRb: rbF16 !== undefined ? rbF16 / rb : null,
          sgxOverRb: gflops['sgx'] !== undefined ? gflops['sgx'] / rb : null,
        });
      }
    }
  } finally {
    for (const b of operands.values()) {
      b.x.destroy();
      b.w.destroy();
      b.y.destroy();
    }
  }
  return { measurements, summary };
}
