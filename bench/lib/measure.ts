import { BatchEncoder, type EncoderResources } from '../../src/gpu/batch-encoder.js';

/** How long one timed submit should last. */
export interface MeasureBudget {
  /** Aim for at least this much work per timed submit, so timer quantisation and launch jitter vanish. */
  targetMs: number;
  /** Never queue more than this much work in one timed submit (the slowest naive GEMM runs once). */
  maxMs: number;
  /** Upper bound on repetitions (each is its own dispatch, bind group and uniform slot). */
  maxReps: number;
  /** Timed submits per measurement, the fastest kept; later ones are skipped when they would exceed maxMs in all. */
  trials: number;
}

export interface Measurement {
  reps: number;
  /** Device time per repetition from timestamp queries; null when the adapter lacks timestamp-query. */
  deviceMs: number | null;
  /** Wall-clock time per repetition around submit (encode + submit + wait for the readback). */
  wallMs: number;
  /** deviceMs where available, else wallMs: what derived figures (GFLOP/s, ratios) use. */
  ms: number;
  timer: 'timestamp' | 'wall';
  /** Per-repetition `ms` of every timed submit, in order (the kept one is the minimum). */
  trialMs: number[];
}

/**
 * Time `recordOne` (one repetition of the work, possibly several dispatches):
 * an untimed warm-up submit of one repetition compiles the pipelines and
 * gives a first estimate, then `reps` repetitions are recorded into ONE
 * profiled phase and submitted once; the result is the phase time / reps.
 * That timed submit is repeated up to `trials` times and the fastest kept:
 * on a shared CPU (lavapipe) other processes only ever add time.
 */
export async function measureRepeated(
  res: EncoderResources,
  recordOne: (enc: BatchEncoder) => void,
  budget: MeasureBudget,
): Promise<Measurement> {
  const warmUp = await submitReps(res, recordOne, 1);
  let spentMs = warmUp.ms;
  let reps = chooseReps(warmUp.ms, budget);
  let best = await submitReps(res, recordOne, reps);
  spentMs += best.ms * reps;
  // A cold first run can overestimate the time per repetition and leave the
  // timed submit well short of the target; start over with the new estimate.
  if (best.ms * reps < budget.targetMs / 2 && reps < budget.maxReps) {
    reps = chooseReps(best.ms, budget);
    best = await submitReps(res, recordOne, reps);
    spentMs += best.ms * reps;
  }
  const trialMs = [best.ms];
  while (trialMs.length < budget.trials && spentMs + best.ms * reps <= budget.maxMs) {
    const m = await submitReps(res, recordOne, reps);
    spentMs += m.ms * reps;
    trialMs.push(m.ms);
    if (m.ms < best.ms) best = m;
  }
  return { ...best, trialMs };
}

function chooseReps(msPerRep: number, budget: MeasureBudget): number {
  const perRep = Math.max(msPerRep, 1e-3);
  const wanted = Math.ceil(budget.targetMs / perRep);
  const affordable = Math.floor(budget.maxMs / perRep);
  return Math.max(1, Math.min(wanted, affordable, budget.maxReps));
}

async function submitReps(
  res: EncoderResources,
  recordOne: (enc: BatchEncoder) => void,
  reps: number,
): Promise<Measurement> {
  const enc = new BatchEncoder(res, { profile: true, label: 'bench' });
  enc.phase('measure');
  for (let i = 0; i < reps; i++) recordOne(enc);
  const t0 = performance.now();
  const { phases } = await enc.submit();
  const wallMs = (performance.now() - t0) / reps;
  const phaseMs = phases?.[0]?.ms;
  const deviceMs = phaseMs !== undefined && phaseMs > 0 ? phaseMs / reps : null;
  const ms = deviceMs ?? wallMs;
  return { reps, deviceMs, wallMs, ms, timer: deviceMs !== null ? 'timestamp' : 'wall', trialMs: [ms] };
}
