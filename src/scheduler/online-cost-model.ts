import { PET_KINDS } from '../pet/types.js';
import { LinearCostModel, solveLinear, type BatchFeatures, type CostCoefficients, type CostEstimator, type CostModelState } from './cost-model.js';

/**
 * The linear cost model, learned online from every batch the scheduler runs.
 *
 * Start-up gives it a prior (a short calibration, or a cached model); each
 * batch's measured wall time is then one observation, and the coefficients are
 * refitted over a sliding window of recent batches by non-negative, relative
 * (1/t²-weighted) least squares, regularised toward the prior:
 *
 *   min_c Σ_i ((x_i·c − t_i) / t_i)² + κ Σ_j s_j (c_j − prior_j)²,  c ≥ 0
 *
 * where s_j is the mean of (x_ij / t_i)² over the window, so the prior weighs
 * like κ batches in every direction. Real traffic rarely separates every term
 * (lengths cluster, so rows, tokens and Σlen² move together): in directions the
 * data does not constrain the fit stays at the prior, in those it does it follows
 * the data after a few batches. Relative weighting makes a 10 ms batch count as
 * much as a 2 s one, so both ends of the batch sizes are predicted well.
 * The normal equations are kept as running sums (add the new batch, subtract
 * the one leaving the window), so an update is O(p²) plus a p×p solve, p = 11.
 */

/** Feature order of the fit: the terms of LinearCostModel. */
const KINDS: readonly string[] = PET_KINDS;
const P = 4 + KINDS.length + 1;
const featureVector = (f: BatchFeatures): number[] => [
  1,
  f.rows,
  f.tokens,
  f.sumSqLen,
  ...KINDS.map((k) => f.kindTokens[k] ?? 0),
  f.distinctTasks,
];

function toVector(c: CostCoefficients): number[] {
  return [c.fixedMs, c.perRowMs, c.perTokenMs, c.perSqLenMs, ...KINDS.map((k) => c.perKindTokenMs[k] ?? 0), c.perTaskMs];
}

function fromVector(v: readonly number[], profiledPackedFloats: CostCoefficients['profiledPackedFloats']): CostCoefficients {
  const perKindTokenMs: Record<string, number> = {};
  KINDS.forEach((k, i) => (perKindTokenMs[k] = v[4 + i]!));
  return {
    fixedMs: v[0]!,
    perRowMs: v[1]!,
    perTokenMs: v[2]!,
    perSqLenMs: v[3]!,
    perKindTokenMs,
    perTaskMs: v[P - 1]!,
    ...(profiledPackedFloats ? { profiledPackedFloats } : {}),
  };
}

export interface OnlineCostOptions {
  /** Batches kept for the fit. Long enough to span the batch shapes traffic makes, short enough to follow a change of machine load. */
  window?: number;
  /** Weight of the prior, in batches (κ above). */
  priorWeight?: number;
  /** Batches seen before the model may call itself converged. */
  minBatches?: number;
  /** Converged when the mean relative error of the last `errorWindow` predictions is at most this. */
  convergedError?: number;
  /**
   * Converged anyway after this many batches: the window then holds enough data
   * that the error left is the device's own timing noise (a machine shared with
   * other work), which waiting longer does not remove.
   */
  maxCalibrationBatches?: number;
  errorWindow?: number;
  /** True when the prior is itself a model fitted on this device (the cache): converged from the start. */
  priorConverged?: boolean;
}

/** The largest batch the start-up calibration times (cost-profiler.ts: 8 rows × 32 tokens). */
const CALIBRATED_TOKENS = 256;

interface Observation {
  x: number[];
  ms: number;
  /** Weight of the observation in the fit: 1 / (expected time)². */
  weight: number;
}

export class OnlineCostModel implements CostEstimator {
  private current: LinearCostModel;
  private readonly prior: number[];
  private readonly window: Observation[] = [];
  private readonly ata: number[][] = zeros(P, P);
  private readonly aty: number[] = new Array<number>(P).fill(0);
  /** Σ (x_ij/t_i)² per feature over the window: the scale of the prior's weight. */
  private readonly colSq: number[] = new Array<number>(P).fill(0);
  private readonly errors: number[] = [];
  private seen = 0;
  /** Tokens of the largest batch observed since start. */
  private largestTokens = 0;
  private convergedFlag: boolean;
  private readonly opts: Required<Omit<OnlineCostOptions, 'priorConverged'>>;
  private listeners: ((model: OnlineCostModel) => void)[] = [];

  constructor(
    prior: CostCoefficients,
    readonly source: string,
    opts: OnlineCostOptions = {},
  ) {
    this.opts = {
      window: opts.window ?? 128,
      priorWeight: opts.priorWeight ?? 0.25,
      minBatches: opts.minBatches ?? 16,
      convergedError: opts.convergedError ?? 0.15,
      maxCalibrationBatches: opts.maxCalibrationBatches ?? 64,
      errorWindow: opts.errorWindow ?? 16,
    };
    this.prior = toVector(prior).map((v) => Math.max(0, v));
    this.current = new LinearCostModel(prior);
    this.convergedFlag = opts.priorConverged ?? false;
  }

  get coef(): CostCoefficients {
    return this.current.coef;
  }

  estimateMs(f: BatchFeatures): number {
    return this.current.estimateMs(f);
  }

  sizeScale(kind: string, packedFloats: number): number {
    return this.current.sizeScale(kind, packedFloats);
  }

  baseTokensPerSecond(rows: number, length: number): number {
    return this.current.baseTokensPerSecond(rows, length);
  }

  get converged(): boolean {
    return this.convergedFlag;
  }

  /**
   * The largest batch (tokens) whose estimate the scheduler should act on: twice
   * the largest batch learned from (at least CALIBRATED_TOKENS, what start-up
   * timed). A linear fit is trustworthy where it has data; beyond, batches grow
   * geometrically, each teaching the model the next size, instead of betting a
   * burst on one extrapolated giant batch. A cached model is trusted everywhere.
   */
  trustedBatchTokens(): number {
    if (this.source === 'cache') return Infinity;
    return Math.max(CALIBRATED_TOKENS, 2 * this.largestTokens);
  }

  state(): CostModelState {
    return { phase: this.convergedFlag ? 'converged' : 'calibrating', batches: this.seen, recentError: this.recentError(), source: this.source };
  }

  /** Called once when the model first converges and then every `window` batches (persist it). */
  onUpdate(listener: (model: OnlineCostModel) => void): void {
    this.listeners.push(listener);
  }

  /** One measured batch: record the error of what was predicted, then refit. */
  observe(f: BatchFeatures, measuredMs: number): void {
    if (!(measuredMs > 0) || !Number.isFinite(measuredMs)) return;
    const predicted = this.current.estimateMs(f);
    this.errors.push(Math.abs(predicted - measuredMs) / measuredMs);
    if (this.errors.length > this.opts.errorWindow) this.errors.shift();
    // Relative weights from the prediction, not the measurement: weighting by the
    // measured time itself would favour the batches that happened to run fast and
    // bias every coefficient low. Clamped so a far-off early model cannot make one
    // batch dominate.
    const expected = Math.min(4 * measuredMs, Math.max(0.25 * measuredMs, predicted));
    const obs = { x: featureVector(f), ms: measuredMs, weight: 1 / (expected * expected) };
    this.window.push(obs);
    this.accumulate(obs, 1);
    if (this.window.length > this.opts.window) this.accumulate(this.window.shift()!, -1);
    this.seen += 1;
    this.largestTokens = Math.max(this.largestTokens, f.tokens);
    // Running sums drift in floating point; rebuild them once per window.
    if (this.seen % this.opts.window === 0) this.rebuildSums();
    this.current = new LinearCostModel(fromVector(this.fit(), this.current.coef.profiledPackedFloats));
    const wasConverged = this.convergedFlag;
    const accurate = this.seen >= this.opts.minBatches && (this.recentError() ?? Infinity) <= this.opts.convergedError;
    if (!wasConverged && (accurate || this.seen >= this.opts.maxCalibrationBatches)) this.convergedFlag = true;
    if ((this.convergedFlag && !wasConverged) || (this.convergedFlag && this.seen % this.opts.window === 0)) {
      for (const l of this.listeners) l(this);
    }
  }

  private recentError(): number | null {
    return this.errors.length === 0 ? null : this.errors.reduce((a, b) => a + b, 0) / this.errors.length;
  }

  private accumulate(o: Observation, sign: 1 | -1): void {
    const w = o.weight;
    for (let a = 0; a < P; a++) {
      const xa = o.x[a]!;
      if (xa === 0) continue;
      this.aty[a]! += sign * w * xa * o.ms;
      this.colSq[a]! += sign * w * xa * xa;
      for (let b = 0; b < P; b++) this.ata[a]![b]! += sign * w * xa * o.x[b]!;
    }
  }

  private rebuildSums(): void {
    for (const row of this.ata) row.fill(0);
    this.aty.fill(0);
    this.colSq.fill(0);
    for (const o of this.window) this.accumulate(o, 1);
  }

  /**
   * Ridge toward the prior, non-negative by active set: a coefficient the fit
   * drives below zero is pinned at 0 and the rest refitted (as fitNonNegative).
   */
  private fit(): number[] {
    const n = this.window.length;
    const lambda = this.colSq.map((s) => (this.opts.priorWeight * Math.max(s, 0)) / Math.max(1, n));
    const active = new Set<number>();
    // A feature no batch in the window had (a PET kind not served lately) keeps its prior.
    for (let j = 0; j < P; j++) if (lambda[j]! > 0) active.add(j);
    for (;;) {
      const idx = [...active];
      const coef = [...this.prior];
      for (let j = 0; j < P; j++) if (!active.has(j) && lambda[j]! > 0) coef[j] = 0;
      if (idx.length === 0) return coef;
      // Fixed coefficients move to the right-hand side.
      const A = idx.map((a) => idx.map((b) => this.ata[a]![b]! + (a === b ? lambda[a]! : 0)));
      const y = idx.map((a) => {
        let r = this.aty[a]! + lambda[a]! * this.prior[a]!;
        for (let b = 0; b < P; b++) if (!active.has(b)) r -= this.ata[a]![b]! * coef[b]!;
        return r;
      });
      const x = solveLinear(A, y);
      idx.forEach((col, i) => (coef[col] = x[i]!));
      const negative = idx.filter((col) => coef[col]! < 0);
      if (negative.length === 0) return coef;
      active.delete(negative.reduce((m, col) => (coef[col]! < coef[m]! ? col : m)));
    }
  }
}

function zeros(r: number, c: number): number[][] {
  return Array.from({ length: r }, () => new Array<number>(c).fill(0));
}
