import { describe, expect, it } from 'vitest';
import type { RunTasksOptions, TaskRow } from '../../src/engine/model-runner.js';
import type { AdmissionCalibrationOptions } from '../../src/scheduler/admission-calibration.js';
import { batchFeatures } from '../../src/scheduler/batch-policy.js';
import { LinearCostModel } from '../../src/scheduler/cost-model.js';
import { Scheduler, type SchedulerConfig } from '../../src/scheduler/scheduler.js';
import { DeadlineExceededError, DeadlineUnreachableError, OverloadError, ShuttingDownError, type InferenceRequest, type InferenceResult } from '../../src/scheduler/types.js';
import { PoolExhaustedError } from '../../src/pet/gpu-pool.js';
import { UnknownTaskError } from '../../src/pet/registry.js';
import { silentLogger } from '../../src/util/logger.js';
import { Rng } from '../../src/util/random.js';

/**
 * A fake engine on a virtual clock: a batch "takes" what the cost model says,
 * and arrivals scheduled during it are submitted at their own times. Answers
 * are a function of the row only, so batching must not change them.
 */
const COST = new LinearCostModel({ fixedMs: 20, perRowMs: 0.2, perTokenMs: 0.05, perSqLenMs: 0, perKindTokenMs: { lora: 0.01 }, perTaskMs: 0.1 });

interface Arrival {
  t: number;
  req: InferenceRequest;
}

class Sim {
  clock = 0;
  readonly batches: TaskRow[][] = [];
  /** The options of every runTasks call. */
  readonly runOptions: RunTasksOptions[] = [];
  private pending: Arrival[] = [];
  readonly tasks = new Set<string>(['hot', 'rare', 'a', 'b']);
  readonly results: { arrival: Arrival; result?: InferenceResult; error?: unknown; doneAt: number }[] = [];
  readonly scheduler: Scheduler;
  onBatch: (n: number) => unknown = () => undefined;
  /** Distinct tasks whose PETs fit the (fake) GPU pool at once. */
  poolTasks = Infinity;
  /** How much longer than the cost model's estimate each batch runs (1 = exactly as estimated). */
  slowdown: () => number = () => 1;

  constructor(config: Partial<SchedulerConfig> = {}, costState: { converged?: boolean } = {}, admissionCalibration: Partial<AdmissionCalibrationOptions> = {}) {
    const runner = {
      checkpoint: { config: { maxPositionEmbeddings: 512, vocabSize: 1000, typeVocabSize: 2 } },
      registry: {
        baseModelId: 'base',
        get: (id: string) => (this.tasks.has(id) ? { kind: 'lora' } : undefined),
        has: (id: string) => this.tasks.has(id),
      },
      runTasks: (rows: readonly TaskRow[], _outputs: unknown, opts: RunTasksOptions = {}) => {
        this.runOptions.push(opts);
        if (new Set(rows.map((r) => r.task)).size > this.poolTasks) {
          return Promise.reject(new PoolExhaustedError('PET pool exhausted'));
        }
        this.batches.push([...rows]);
        const end = this.clock + this.slowdown() * COST.estimateMs(batchFeatures(rows.map((r, i) => ({ seq: i, task: r.task, kind: 'lora', length: r.inputIds.length, arrivalMs: 0, dueMs: 0, offline: false }))));
        this.deliver(end);
        this.onBatch(this.batches.length);
        this.clock = end;
        return Promise.resolve({
          rows: rows.map((r) => ({ logits: Float32Array.of(r.inputIds.reduce((a, b) => a + b, 0), r.task === null ? -1 : r.task.length), pooled: null, lastHiddenState: null })),
          phases: null,
        });
      },
    };
    this.scheduler = new Scheduler(
      runner as never,
      {
        policy: 'slo',
        maxBatchTokens: 4096,
        maxBatchRows: 16,
        maxQueue: 10_000,
        defaultSloMs: 1000,
        taskSloMs: {},
        maxWaitMs: 5000,
        profileEveryBatches: 0,
        operatorScheduler: true,
        costCacheDir: null,
        ...config,
      },
      {
        logger: silentLogger,
        cost: costState.converged === false ? { estimateMs: (f) => COST.estimateMs(f), converged: false } : COST,
        now: () => this.clock,
        admissionCalibration,
      },
    );
  }

  /** Submit every arrival with t ≤ until, each at its own time. */
  private deliver(until: number): void {
    const saved = this.clock;
    while (this.pending.length > 0 && this.pending[0]!.t <= until) {
      const a = this.pending.shift()!;
      this.clock = Math.max(saved, a.t);
      const rec: (typeof this.results)[number] = { arrival: a, doneAt: NaN };
      this.results.push(rec);
      this.scheduler.submit(a.req).then(
        (r) => {
          rec.result = r;
          rec.doneAt = this.clock;
        },
        (e: unknown) => {
          rec.error = e;
          rec.doneAt = this.clock;
        },
      );
    }
    this.clock = saved;
  }

  async run(arrivals: Arrival[]): Promise<void> {
    this.pending = [...arrivals].sort((a, b) => a.t - b.t);
    const settle = async (): Promise<void> => {
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    };
    for (;;) {
      await settle();
      const s = this.scheduler.stats();
      if (s.queued > 0 || s.inFlightBatches > 0) continue;
      if (this.pending.length === 0) break;
      this.clock = Math.max(this.clock, this.pending[0]!.t);
      this.deliver(this.clock);
    }
    await settle();
  }
}

const req = (task: string | null, len: number, extra: Partial<InferenceRequest> = {}): InferenceRequest => ({
  task,
  inputIds: Array.from({ length: len }, (_, i) => (i * 7 + len) % 1000),
  ...extra,
});

describe('Scheduler', () => {
  it('answers a lone request at once on an idle system', async () => {
    const sim = new Sim();
    await sim.run([{ t: 100, req: req('a', 10) }]);
    expect(sim.batches.length).toBe(1);
    expect(sim.results[0]!.result!.queueWaitMs).toBe(0);
  });

  it('batches requests that arrive while the device is busy, across tasks', async () => {
    const sim = new Sim();
    await sim.run([{ t: 0, req: req('a', 10) }, ...Array.from({ length: 10 }, (_, i) => ({ t: 1 + i, req: req(i % 2 ? 'a' : 'b', 10 + i) }))]);
    expect(sim.batches.length).toBe(2);
    expect(new Set(sim.batches[1]!.map((r) => r.task))).toEqual(new Set(['a', 'b']));
  });

  it('meets tight deadlines under adversarial arrivals where FIFO misses them', async () => {
    // A flood of long, relaxed requests; every 50 ms a short one with a tight SLO.
    const arrivals: Arrival[] = [];
    for (let i = 0; i < 300; i++) arrivals.push({ t: i * 2, req: req('hot', 200, { sloMs: 60_000 }) });
    for (let i = 0; i < 10; i++) arrivals.push({ t: 5 + i * 50, req: req('rare', 8, { sloMs: 300 }) });
    const missed = async (policy: SchedulerConfig['policy']): Promise<number> => {
      const sim = new Sim({ policy, maxWaitMs: 60_000 });
      await sim.run(arrivals);
      const tight = sim.results.filter((r) => r.arrival.req.task === 'rare');
      expect(tight.length).toBe(10);
      return tight.filter((r) => r.error instanceof DeadlineExceededError || r.doneAt - r.arrival.t > 300).length;
    };
    expect(await missed('slo')).toBe(0);
    expect(await missed('fifo')).toBeGreaterThan(5);
  });

  it('bounds the wait of a rare task under a flood from a hot one (no starvation)', async () => {
    const arrivals: Arrival[] = [];
    // More work than the device can do: the queue only grows.
    for (let i = 0; i < 2000; i++) arrivals.push({ t: i, req: req('hot', 64 + (i % 3), { sloMs: 1e9, dropExpired: false }) });
    arrivals.push({ t: 500, req: req('rare', 500, { sloMs: 1e9, dropExpired: false }) });
    const sim = new Sim({ maxWaitMs: 3000 });
    await sim.run(arrivals);
    const rare = sim.results.find((r) => r.arrival.req.task === 'rare')!;
    const wait = rare.result!.queueWaitMs;
    // maxWait + one batch in flight + the batch the scheduler had already chosen.
    expect(wait).toBeLessThanOrEqual(3000 + 2 * COST.estimateMs({ rows: 16, tokens: 4096, sumSqLen: 0, kindTokens: { lora: 4096 }, distinctTasks: 2 }));
    const lastHot = Math.max(...sim.results.filter((r) => r.arrival.req.task === 'hot').map((r) => r.doneAt));
    expect(rare.doneAt).toBeLessThan(lastHot);
  });

  it('gives online requests priority over offline ones and fills idle room with offline work', async () => {
    const arrivals: Arrival[] = [{ t: 0, req: req('a', 10) }];
    for (let i = 0; i < 40; i++) arrivals.push({ t: 1, req: req('b', 10, { priority: 'offline', dropExpired: false }) });
    for (let i = 0; i < 4; i++) arrivals.push({ t: 2, req: req('a', 10) });
    const sim = new Sim();
    await sim.run(arrivals);
    // Second batch: the 4 online requests first, then offline fill up to 16 rows.
    expect(sim.batches[1]!.slice(0, 4).every((r) => r.task === 'a')).toBe(true);
    expect(sim.batches[1]!.length).toBe(16);
    expect(sim.results.every((r) => r.result)).toBe(true);
  });

  it('refuses beyond the bounded queue with an overload error carrying Retry-After', async () => {
    const sim = new Sim({ maxQueue: 5 });
    await sim.run(Array.from({ length: 12 }, (_, i) => ({ t: i === 0 ? 0 : 1, req: req('a', 10) })));
    const overloaded = sim.results.filter((r) => r.error instanceof OverloadError);
    expect(overloaded.length).toBe(6);
    expect((overloaded[0]!.error as OverloadError).retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(sim.results.filter((r) => r.result).length).toBe(6);
  });

  it('answers expired requests with a deadline error instead of running them', async () => {
    // FIFO does not refuse at submit, so the tight request is queued and expires there.
    const sim = new Sim({ maxBatchRows: 1, policy: 'fifo' });
    await sim.run([{ t: 0, req: req('a', 400) }, { t: 1, req: req('a', 400) }, { t: 2, req: req('b', 10, { sloMs: 5 }) }]);
    expect(sim.results[2]!.error).toBeInstanceOf(DeadlineExceededError);
    expect(sim.batches.flat().some((r) => r.task === 'b')).toBe(false);
  });

  it('gives the base model (task null) the SLO override under its id, as a task gets its own', async () => {
    const queued = (baseSloMs: Record<string, number>) => {
      const sim = new Sim({ maxBatchRows: 1, policy: 'fifo', taskSloMs: baseSloMs });
      return sim.run([{ t: 0, req: req('a', 400) }, { t: 1, req: req('a', 400) }, { t: 2, req: req(null, 10) }]).then(() => sim.results[2]!);
    };
    expect((await queued({ base: 5 })).error).toBeInstanceOf(DeadlineExceededError);
    expect((await queued({ a: 5 })).error).toBeUndefined();
    expect((await queued({})).result).toBeDefined();
  });

  it('refuses at once, with 429 DEADLINE_UNREACHABLE, a request the queue ahead makes miss its deadline', async () => {
    const sim = new Sim({ maxBatchRows: 1 });
    await sim.run([{ t: 0, req: req('a', 400) }, { t: 1, req: req('a', 400) }, { t: 2, req: req('b', 10, { sloMs: 5 }) }]);
    const err = sim.results[2]!.error as DeadlineUnreachableError;
    expect(err).toBeInstanceOf(DeadlineUnreachableError);
    expect(err.code).toBe('DEADLINE_UNREACHABLE');
    expect(err.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(sim.batches.flat().some((r) => r.task === 'b')).toBe(false);
  });

  // Spread over 20 ms, and all in one instant (an arrival gap of 0 must still price the batch's room).
  it.each([
    { burst: 'spread over 20 ms', at: (i: number) => i * 0.1 },
    { burst: 'submitted in one instant', at: () => 5 },
  ])('under a burst $burst, refuses early what cannot make it and serves the rest in time: no 504', async ({ at }) => {
    const sim = new Sim();
    const sloMs = 200;
    await sim.run(Array.from({ length: 200 }, (_, i) => ({ t: at(i), req: req(i % 2 ? 'a' : 'b', 10 + (i % 30), { sloMs }) })));
    const refused = sim.results.filter((r) => r.error instanceof DeadlineUnreachableError);
    const served = sim.results.filter((r) => r.result);
    expect(sim.results.filter((r) => r.error instanceof DeadlineExceededError)).toEqual([]);
    expect(refused.length).toBeGreaterThan(0);
    expect(served.length).toBeGreaterThan(0);
    expect(refused.length + served.length).toBe(200);
    for (const r of served) expect(r.doneAt - r.arrival.t).toBeLessThanOrEqual(sloMs);
  });

  it('under sustained overload on an engine slower than the model says, serves what it admits in time', async () => {
    // The engine runs each batch 0.85-1.25x its estimate (mean 1.05), as a measured device does around
    // a converged model (bench/results/sched-latency-*-1926: 95th percentile of actual/estimate over
    // five batches 1.26). Admission must price the whole wait with a margin on all of it, and the later
    // arrivals that will fill the request's own batch: with a one-batch margin and the batch priced by
    // the rows queued at submit, 471 of 1136 served came back late here; with either fix alone, 48 or 341.
    const sim = new Sim();
    const noise = new Rng(5);
    sim.slowdown = () => 0.85 + 0.4 * noise.next();
    const arrivalsRng = new Rng(6);
    const sloMs = 300;
    const arrivals: Arrival[] = [];
    // ~330 requests/s against a capacity of ~250/s (16-row batches of 40-token requests).
    for (let i = 0, t = 0; i < 1500; i++) {
      t += -Math.log(1 - arrivalsRng.next()) * 3;
      arrivals.push({ t, req: req(i % 2 ? 'a' : 'b', 30 + arrivalsRng.int(0, 20), { sloMs }) });
    }
    await sim.run(arrivals);
    const served = sim.results.filter((r) => r.result);
    const late = served.filter((r) => r.doneAt - r.arrival.t > sloMs);
    const refused = sim.results.filter((r) => r.error instanceof DeadlineUnreachableError);
    expect(refused.length).toBeGreaterThan(100);
    expect(served.length).toBeGreaterThan(900);
    expect(late.length).toBeLessThanOrEqual(0.01 * served.length);
  });

  // Admission learns from outcomes how far its predictions run over (AdmissionCalibration); a fixed
  // margin (minSamples: Infinity keeps the fallback, a quarter of each prediction, for ever) is right
  // for neither kind of model error.
  const FIXED_MARGIN = { minSamples: Infinity };
  const poisson = (seed: number, n: number, meanGapMs: number, sloMs: number): Arrival[] => {
    const rng = new Rng(seed);
    const out: Arrival[] = [];
    for (let i = 0, t = 0; i < n; i++) {
      t += -Math.log(1 - rng.next()) * meanGapMs;
      out.push({ t, req: req(i % 2 ? 'a' : 'b', 30 + rng.int(0, 20), { sloMs }) });
    }
    return out;
  };
  const outcome = async (slow: [number, number], arrivals: Arrival[], sloMs: number, calibration: Partial<AdmissionCalibrationOptions>) => {
    const sim = new Sim({ defaultSloMs: sloMs }, {}, calibration);
    const noise = new Rng(8);
    sim.slowdown = () => slow[0] + (slow[1] - slow[0]) * noise.next();
    await sim.run(arrivals);
    const served = sim.results.filter((r) => r.result);
    return {
      admitsUpToMs: sim.scheduler.stats().admission!.admitsUpToMs,
      learnedFrom: sim.scheduler.stats().admission!.learnedFrom,
      served: served.length,
      late: served.filter((r) => r.doneAt - r.arrival.t > sloMs).length,
      refused: sim.results.filter((r) => r.error instanceof DeadlineUnreachableError).length,
      expired: sim.results.filter((r) => r.error instanceof DeadlineExceededError).length,
    };
  };

  it('when the engine runs longer than the model says, learns to refuse more and serves what it admits in time', async () => {
    // Batches take 1.3-1.7x their estimate (a model not yet refitted after the device slowed down;
    // refitting is the online cost model's job), offered ~1.3x what the device really does. Measured:
    // the fixed margin served 1027, of them 807 late, and dropped 218 as expired; learned served
    // 1045, 122 late, 12 expired, admitting predictions up to 120 ms of the 300 ms SLO (fixed: 240).
    // A √-scaled margin under-corrects an error that is proportional (a ratio learned here left 17
    // late, but over-refused on the real device, where the overshoot is flatter: admission-calibration.ts).
    const arrivals = poisson(12, 1500, 4, 300);
    const fixed = await outcome([1.3, 1.7], arrivals, 300, FIXED_MARGIN);
    const learned = await outcome([1.3, 1.7], arrivals, 300, {});
    expect(learned.learnedFrom).toBeGreaterThan(0);
    expect(learned.admitsUpToMs).toBeLessThan(0.5 * fixed.admitsUpToMs);
    expect(learned.late + learned.expired).toBeLessThanOrEqual(0.15 * learned.served);
    expect(learned.served).toBeGreaterThan(0.95 * fixed.served);
    expect(fixed.late + fixed.expired).toBeGreaterThan(5 * (learned.late + learned.expired));
  });

  it('when the engine runs shorter than the model says, refuses fewer of the requests that would have made it', async () => {
    // Batches take 0.55-0.75x their estimate; arrivals at about 60 % of what the device really does,
    // an SLO of about two full batches, so Poisson bursts queue near it. Measured: the fixed margin
    // refused 97 (none served late); learned refused 4, none served late, admitting predictions up to
    // 110 ms of the 100 ms SLO (the bound: the predictions run long).
    const arrivals = poisson(13, 1500, 4, 100);
    const fixed = await outcome([0.55, 0.75], arrivals, 100, FIXED_MARGIN);
    const learned = await outcome([0.55, 0.75], arrivals, 100, {});
    expect(learned.learnedFrom).toBeGreaterThan(0);
    expect(learned.admitsUpToMs).toBeGreaterThan(100);
    expect(learned.late + learned.expired).toBe(0);
    expect(fixed.refused).toBeGreaterThan(50);
    expect(learned.refused).toBeLessThan(fixed.refused / 5);
  });

  it('refuses nobody as unreachable while an online cost model is still calibrating', async () => {
    const sim = new Sim({ maxBatchRows: 1 }, { converged: false });
    await sim.run([{ t: 0, req: req('a', 400) }, { t: 1, req: req('a', 400) }, { t: 2, req: req('b', 10, { sloMs: 5 }) }]);
    expect(sim.results[2]!.error).toBeInstanceOf(DeadlineExceededError);
  });

  it('fails only the rows of a task removed while queued', async () => {
    const sim = new Sim();
    // 'b' is removed while the first batch runs, after its request was queued.
    sim.onBatch = (n) => n === 1 && sim.tasks.delete('b');
    await sim.run([{ t: 0, req: req('a', 300) }, { t: 1, req: req('b', 10) }, { t: 1, req: req('a', 10) }]);
    expect(sim.results[1]!.error).toBeInstanceOf(UnknownTaskError);
    expect(sim.results[2]!.result).toBeDefined();
  });

  it('splits a batch whose PETs do not fit the GPU pool at once instead of failing it', async () => {
    const sim = new Sim();
    sim.poolTasks = 2;
    await sim.run([{ t: 0, req: req('a', 10) }, ...['a', 'b', 'hot', 'rare', 'b'].map((task) => ({ t: 1, req: req(task, 10) }))]);
    expect(sim.results.every((r) => r.result)).toBe(true);
    for (const b of sim.batches) expect(new Set(b.map((r) => r.task)).size).toBeLessThanOrEqual(2);
    expect(sim.batches.length).toBe(3);
  });

  it('rejects at submit a task that is not registered (it may go after the gateway looked) and a bad deadline', async () => {
    const sim = new Sim();
    await expect(sim.scheduler.submit(req('nope', 4))).rejects.toBeInstanceOf(UnknownTaskError);
    await expect(sim.scheduler.submit(req('a', 4, { sloMs: -1 }))).rejects.toThrow(/deadline_ms/);
    expect(sim.scheduler.stats().queued).toBe(0);
  });

  it('trusts the id checks of the gateway: every batch runs with rowsChecked, so the runner does not check again', async () => {
    // The id checks themselves: test/gateway/encoder-checks.test.ts.
    const sim = new Sim();
    await sim.run([{ t: 0, req: req('a', 4) }, { t: 1, req: req(null, 3) }]);
    expect(sim.runOptions.length).toBeGreaterThan(0);
    for (const o of sim.runOptions) expect(o.rowsChecked).toBe(true);
  });

  it('gives every request the same answer whatever the policy and batch size', async () => {
    const rng = new Rng(9);
    const arrivals: Arrival[] = Array.from({ length: 200 }, (_, i) => ({
      t: rng.int(0, 400),
      req: req(['a', 'b', 'hot', null][i % 4]!, rng.int(1, 200), { dropExpired: false }),
    }));
    const answers = async (cfg: Partial<SchedulerConfig>): Promise<number[][]> => {
      const sim = new Sim(cfg);
      await sim.run(arrivals);
      const byArrival = new Map(sim.results.map((r) => [r.arrival, [...r.result!.logits!]]));
      return arrivals.map((a) => byArrival.get(a)!);
    };
    const ref = await answers({ policy: 'fifo', maxBatchRows: 1 });
    expect(await answers({ policy: 'fifo', maxBatchRows: 16 })).toEqual(ref);
    expect(await answers({ policy: 'pets' })).toEqual(ref);
    expect(await answers({ policy: 'slo', maxBatchRows: 7, maxBatchTokens: 300 })).toEqual(ref);
  });

  it('drains queued work before shutdown and refuses new requests', async () => {
    const sim = new Sim();
    let drained: Promise<void> | null = null;
    let queuedAtDrain = -1;
    // Drain while the first batch runs and two requests wait behind it.
    sim.onBatch = (n) => {
      if (n !== 1) return;
      queuedAtDrain = sim.scheduler.stats().queued;
      drained = sim.scheduler.drain(10_000);
    };
    const p = sim.run([{ t: 0, req: req('a', 100) }, { t: 1, req: req('a', 100) }, { t: 2, req: req('b', 100) }]);
    while (!drained) await new Promise((r) => setImmediate(r));
    expect(queuedAtDrain).toBe(2);
    await expect(sim.scheduler.submit(req('a', 3))).rejects.toBeInstanceOf(ShuttingDownError);
    await p;
    await drained;
    expect(sim.results.every((r) => r.result)).toBe(true);
  });
});
