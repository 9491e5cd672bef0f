/**
 * Estimated wall time of one batch on this device, from features of the batch.
 *
 * The engine packs sequences end to end, so a batch's cost is not PetS's padded
 * table T(rows, maxLen) but close to linear in a few features:
 *   t = fixed + perRow·rows + perToken·tokens + perSqLen·Σlen² (attention)
 *       + Σ_kind perKindToken[kind]·tokens of that kind + perTask·distinct tasks
 * The coefficients are fitted from batches timed on the actual device at start-up
 * (cost-profiler.ts) and cached on disk; nothing here is a hard-coded time.
 */
export interface BatchFeatures {
  rows: number;
  tokens: number;
  sumSqLen: number;
  /**
   * Tokens of rows of each PET kind (base rows are not listed), each row's tokens
   * scaled by its PET's size relative to the profiled one (rank, bottleneck, nnz:
   * PET op time grows with them).
   */
  kindTokens: Readonly<Record<string, number>>;
  distinctTasks: number;
}

export interface CostEstimator {
  estimateMs(f: BatchFeatures): number;
  /** How much heavier a PET of this size is than the profiled one of its kind (1 = same). */
  sizeScale?(kind: string, packedFloats: number): number;
  /** Learn from one measured batch (online models; see online-cost-model.ts). */
  observe?(f: BatchFeatures, measuredMs: number): void;
  /** False while an online model is still calibrating: the scheduler then decides conservatively. Absent = a fixed, trusted model. */
  readonly converged?: boolean;
  /** Calibration state for /v1/status and the status page. */
  state?(): CostModelState;
  /** Largest batch (tokens) the model has grounds to price; the slo policy cuts no larger batch. Absent = any. */
  trustedBatchTokens?(): number;
}

/** Where an online cost model stands (status page: "cost model: calibrating, 12 batches"). */
export interface CostModelState {
  phase: 'calibrating' | 'converged';
  /** Real batches observed since start. */
  batches: number;
  /** Mean |predicted − measured| / measured over the last predictions, each made before its batch was learned from; null before any. */
  recentError: number | null;
  /** Where the model started from: 'cache' (a model saved on this device), 'calibration' (a few timed batches at start). */
  source: string;
}

export interface CostCoefficients {
  fixedMs: number;
  perRowMs: number;
  perTokenMs: number;
  perSqLenMs: number;
  perKindTokenMs: Record<string, number>;
  perTaskMs: number;
  /** Packed floats of the PET each kind was profiled with (the reference for sizeScale). */
  profiledPackedFloats?: Record<string, number>;
}

export class LinearCostModel implements CostEstimator {
  constructor(readonly coef: CostCoefficients) {}

  estimateMs(f: BatchFeatures): number {
    const c = this.coef;
    let t = c.fixedMs + c.perRowMs * f.rows + c.perTokenMs * f.tokens + c.perSqLenMs * f.sumSqLen + c.perTaskMs * f.distinctTasks;
    for (const kind in f.kindTokens) t += (c.perKindTokenMs[kind] ?? 0) * f.kindTokens[kind]!;
    return t;
  }

  sizeScale(kind: string, packedFloats: number): number {
    const ref = this.coef.profiledPackedFloats?.[kind];
    return ref && ref > 0 && packedFloats > 0 ? packedFloats / ref : 1;
  }

  /** Tokens per second of a full batch of `length`-token sequences on the base model. */
  baseTokensPerSecond(rows: number, length: number): number {
    const ms = this.estimateMs({ rows, tokens: rows * length, sumSqLen: rows * length * length, kindTokens: {}, distinctTasks: 0 });
    return (rows * length * 1000) / ms;
  }
}

/**
 * Least squares with non-negative coefficients (projected: a feature whose fitted
 * coefficient is negative is dropped and the rest refitted), so a noisy profile
 * can never produce a model where adding work makes a batch cheaper.
 * Solves the normal equations by Gaussian elimination; the systems are tiny.
 */
export function fitNonNegative(rows: readonly number[][], targets: readonly number[]): number[] {
  const p = rows[0]?.length ?? 0;
  const active = new Set(Array.from({ length: p }, (_, i) => i));
  for (;;) {
    const idx = [...active];
    const coef = new Array<number>(p).fill(0);
    if (idx.length === 0) return coef;
    const A = idx.map((a) => idx.map((b) => rows.reduce((s, r) => s + r[a]! * r[b]!, 0)));
    const y = idx.map((a) => rows.reduce((s, r, k) => s + r[a]! * targets[k]!, 0));
    const x = solveLinear(A, y);
    idx.forEach((col, i) => (coef[col] = x[i]!));
    const negative = idx.filter((col) => coef[col]! < 0);
    if (negative.length === 0) return coef;
    // Drop the most negative one and refit.
    active.delete(negative.reduce((m, col) => (coef[col]! < coef[m]! ? col : m)));
  }
}

export function solveLinear(A: number[][], y: number[]): number[] {
  const n = y.length;
  const M = A.map((row, i) => [...row, y[i]!]);
  for (let c = 0; c < n; c++) {
    let piv = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r]![c]!) > Math.abs(M[piv]![c]!)) piv = r;
    [M[c], M[piv]] = [M[piv]!, M[c]!];
    const d = M[c]![c]!;
    // A singular column (feature constant zero in the profile): its coefficient is 0.
    if (Math.abs(d) < 1e-12) continue;
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = M[r]![c]! / d;
      for (let k = c; k <= n; k++) M[r]![k]! -= f * M[c]![k]!;
    }
  }
  return M.map((row, i) => (Math.abs(row[i]!) < 1e-12 ? 0 : row[n]! / row[i]!));
}
