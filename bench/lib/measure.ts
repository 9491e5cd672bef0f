import { BatchEncoder, type EncoderResources } from '../../src/gpu/batch-encoder.js';
import { otherCpuShare, sampleCpu, type QuietGate } from './cpu-load.js';

/** How long one measurement may run. */
export interface MeasureBudget {
  /** Aim for at least this much work per timed submit, so timer quantisation and launch jitter vanish. */
  targetMs: number;
  /** Warm-up plus timed trials stay within this much work (the slowest naive GEMM runs with R = 1). */
  maxMs: number;
  /** Upper bound on repetitions (each is its own dispatch, bind group and uniform slot). */
  maxReps: number;
  /** Timed submits per measurement, the fastest kept; later ones are skipped when they would exceed maxMs. */
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
  /** Share of the machine's CPU other processes used during the kept trial (0..1). */
  otherCpuShare: number;
  /** Per-repetition `ms` of every timed submit, in order (the kept one is the minimum). */
  trialMs: number[];
}

/**
 * Time `recordOne` (one repetition of the work, possibly several dispatches):
 * an untimed warm-up submit of one repetition compiles the pipelines and
 * gives a first estimate, then `reps` repetitions are recorded into ONE
 * profiled phase and submitted once; the result is the phase time / reps.
 * That timed submit is repeated up to `trials` times and the fastest kept:
 * on a shared CPU device (lavapipe) other processes only ever add time.
 */
export async function measureRepeated(
  res: EncoderResources,
  recordOne: (enc: BatchEncoder) => void,
  budget: MeasureBudget,
  gate: QuietGate | null,
): Promise<Measurement> {
  const warmUp = await submitReps(res, recordOne, 1);
  let spentMs = warmUp.ms;
  let reps = chooseReps(warmUp.ms, budget);
  const timed = async (): Promise<Measurement> => {
    await gate?.waitForQuiet();
    const m = await submitReps(res, recordOne, reps);
    spentMs += m.ms * reps;
    return m;
  };
  let best = await timed();
  // A cold first run can overestimate the time per repetition and leave the
  // timed submit well short of the target; start over with the new estimate.
  if (best.ms * reps < budget.targetMs / 2 && reps < budget.maxReps) {
    reps = chooseReps(best.ms, budget);
    best = await timed();
  }
  const trialMs = [best.ms];
  while (trialMs.length < budget.trials && spentMs + best.ms * reps <= budget.maxMs) {
    const m = await timed();
    trialMs.push(m.ms);
    if (m.ms < best.ms) best = m;
  }
  return { ...best, trialMs };
}

function chooseReps(msPerRep: number, budget: MeasureBudget): number {
  const perRep = Math.max(msPerRep, 1e-3);
  const wanted = Math.ceil(budget.targetMs / perRep);
  // Leave room in maxMs for the warm-up (one more repetition).
  const affordable = Math.floor(budget.maxMs / perRep) - 1;
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
  const cpuBefore = sampleCpu();
  const t0 = performance.now();
  const { phases } = await enc.submit();
  const wallMs = (performance.now() - t0) / reps;
  const otherShare = otherCpuShare(cpuBefore);
  const phaseMs = phases?.[0]?.ms;
  const deviceMs = phaseMs !== undefined && phaseMs > 0 ? phaseMs / reps : null;
  const ms = deviceMs ?? wallMs;
  return {
    reps,
    deviceMs,
    wallMs,
    ms,
    timer: deviceMs !== null ? 'timestamp' : 'wall',
    otherCpuShare: otherShare,
    trialMs: [ms],
  };
}
