import { Registry, register as globalRegistry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { MemoryReport, TaskMemory } from '../../src/engine/model-runner.js';
import { createMetrics, type MemorySource } from '../../src/metrics/metrics.js';
import type { PoolStats } from '../../src/pet/gpu-pool.js';
import type { BatchReport, RequestReport, SchedulerStats } from '../../src/scheduler/types.js';
import { promtool } from './promtool.js';
import { gauge, has, labelSets, value } from './values.js';

const req = (over: Partial<RequestReport>): RequestReport => ({
  kind: 'lora',
  outcome: 'ok',
  queueWaitMs: 10,
  latencyMs: 50,
  slackMs: 100,
  priority: 'online',
  ...over,
});

const batch = (over: Partial<BatchReport>): BatchReport => ({
  rows: 4,
  tokens: 128,
  distinctTasks: 2,
  maxBatchTokens: 512,
  wallMs: 40,
  deviceMs: null,
  estimatedMs: 40,
  ...over,
});

/** PET device time keyed by op class, as the scheduler fills `deviceMs.pet` (src/scheduler/device-time.ts). */
const opClasses = (ms: Record<string, number>): Record<string, number> => ms;

function fakeRunner(pool: PoolStats | null, tasks: TaskMemory[]): MemorySource & { report: MemoryReport; tasks: TaskMemory[] } {
  const src = {
    report: { baseModelBytes: 17_000_000, activationArenaBytes: 3_000_000, pool } as MemoryReport,
    tasks,
    memory: () => src.report,
    taskMemory: () => src.tasks,
    registry: { memory: () => ({ hostCachedBytes: 12_345, hostTotalBytes: 99_999 }) },
  };
  return src;
}

describe('scheduler observer', () => {
  it('moves request counters, latency/queue-wait/slack histograms and SLO misses by the expected amounts', async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false });
    const obs = m.observer;
    obs.requestDone!(req({ kind: 'lora', latencyMs: 50, queueWaitMs: 10, slackMs: 150 }));
    obs.requestDone!(req({ kind: 'lora', latencyMs: 300, queueWaitMs: 200, slackMs: -40 })); // answered late
    obs.requestDone!(req({ kind: 'base', outcome: 'expired', latencyMs: 900, queueWaitMs: 900, slackMs: -5 }));
    obs.requestDone!(req({ kind: 'mask', outcome: 'overload', latencyMs: 0, queueWaitMs: 0, slackMs: 0 }));
    obs.requestDone!(req({ kind: 'adapter', outcome: 'error', priority: 'offline' }));

    expect(await value(reg, 'petserve_requests_total')).toBe(5);
    expect(await value(reg, 'petserve_requests_total', { kind: 'lora', outcome: 'ok', priority: 'online' })).toBe(2);
    expect(await value(reg, 'petserve_requests_total', { outcome: 'expired' })).toBe(1);
    expect(await value(reg, 'petserve_requests_total', { outcome: 'overload' })).toBe(1);
    expect(await value(reg, 'petserve_requests_total', { kind: 'adapter', outcome: 'error', priority: 'offline' })).toBe(1);

    // Only answered requests have a service time.
    expect(await value(reg, 'petserve_request_latency_seconds_count')).toBe(2);
    expect(await value(reg, 'petserve_request_latency_seconds_sum')).toBeCloseTo(0.35, 9);
    expect(await value(reg, 'petserve_request_queue_wait_seconds_sum')).toBeCloseTo(0.21, 9);
    expect(await value(reg, 'petserve_request_deadline_slack_seconds_count')).toBe(2);
    // The late answer (−40 ms) lands in le="0" and not in le="-0.1".
    expect(await value(reg, 'petserve_request_deadline_slack_seconds_bucket', { le: 0 })).toBe(1);
    expect(await value(reg, 'petserve_request_deadline_slack_seconds_bucket', { le: -0.1 })).toBe(0);

    // Late answer + expiry; refusals and errors are not SLO misses.
    expect(await value(reg, 'petserve_slo_misses_total')).toBe(2);
    expect(await value(reg, 'petserve_slo_misses_total', { kind: 'base' })).toBe(1);

    // The status window sees the same: 3 judged (2 ok + 1 expired), 2 missed.
    const w = m.window.summary(60);
    expect(w.requests).toBe(5);
    expect(w.sloAttainment).toBeCloseTo(1 / 3, 9);
    expect(w.p50Ms).toBe(50);
    expect(w.p99Ms).toBe(300);
  });

  it('fills batch histograms, token utilisation and the device-time split from batch reports', async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false });
    m.observer.batchDone!(batch({ rows: 3, tokens: 128, distinctTasks: 2, maxBatchTokens: 512, wallMs: 40, estimatedMs: 20 }));
    m.observer.batchDone!(
      batch({
        rows: 10,
        tokens: 500,
        distinctTasks: 7,
        maxBatchTokens: 512,
        wallMs: 80,
        estimatedMs: 80,
        // As the scheduler reports it: PET time keyed by op class (src/scheduler/device-time.ts).
        deviceMs: { total: 12, shared: 8, pet: opClasses({ lora: 2, sparse: 1, task_heads: 1 }) },
      }),
    );

    expect(await value(reg, 'petserve_batch_requests_count')).toBe(2);
    expect(await value(reg, 'petserve_batch_requests_sum')).toBe(13);
    expect(await value(reg, 'petserve_batch_tokens_sum')).toBe(628);
    expect(await value(reg, 'petserve_batch_tasks_bucket', { le: 2 })).toBe(1);
    expect(await value(reg, 'petserve_batch_tasks_bucket', { le: 8 })).toBe(2);
    // 128/512 = 0.25 and 500/512 ≈ 0.98.
    expect(await value(reg, 'petserve_batch_token_utilization_ratio_bucket', { le: 0.3 })).toBe(1);
    expect(await value(reg, 'petserve_batch_token_utilization_ratio_bucket', { le: 0.9 })).toBe(1);
    expect(await value(reg, 'petserve_batch_token_utilization_ratio_sum')).toBeCloseTo(628 / 512, 9);
    expect(await value(reg, 'petserve_batch_duration_seconds_sum')).toBeCloseTo(0.12, 9);
    // Wall / estimate: 2 and 1.
    expect(await value(reg, 'petserve_batch_cost_estimate_ratio_sum')).toBeCloseTo(3, 9);

    // Only the profiled batch has a device split.
    expect(await value(reg, 'petserve_batch_device_seconds_count', { part: 'shared' })).toBe(1);
    expect(await value(reg, 'petserve_batch_device_seconds_sum', { part: 'shared' })).toBeCloseTo(0.008, 9);
    expect(await value(reg, 'petserve_batch_device_seconds_sum', { part: 'lora' })).toBeCloseTo(0.002, 9);
    expect(await value(reg, 'petserve_batch_device_seconds_sum', { part: 'sparse' })).toBeCloseTo(0.001, 9);
    expect(await value(reg, 'petserve_batch_device_seconds_sum', { part: 'task_heads' })).toBeCloseTo(0.001, 9);
    // (2 + 1 + 1) / 8
    expect(await gauge(reg, 'petserve_pet_overhead_ratio')).toBeCloseTo(0.5, 9);
  });

  it('reports PET overhead as NaN before the first profiled batch and over the last N profiled batches only', async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false, overheadWindowBatches: 2 });
    m.observer.batchDone!(batch({}));
    expect(await gauge(reg, 'petserve_pet_overhead_ratio')).toBeNaN();
    m.observer.batchDone!(batch({ deviceMs: { total: 20, shared: 10, pet: { adapter: 10 } } }));
    m.observer.batchDone!(batch({ deviceMs: { total: 10, shared: 10, pet: {} } }));
    // (10 + 0) / (10 + 10)
    expect(await gauge(reg, 'petserve_pet_overhead_ratio')).toBeCloseTo(0.5, 9);
    m.observer.batchDone!(batch({ deviceMs: { total: 11, shared: 10, pet: { lora: 1 } } }));
    // The adapter batch fell out of the 2-batch window: (0 + 1) / 20.
    expect(await gauge(reg, 'petserve_pet_overhead_ratio')).toBeCloseTo(0.05, 9);
    expect(m.petOverhead()!.byKind).toEqual({ lora: 0.05 });
  });

  it('keeps the device-part label bounded and never throws on odd reports', async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false });
    const weird = { total: 3, shared: 1, pet: opClasses({ 'some-new-op': 1, lora: Number.NaN }) };
    expect(() => m.observer.batchDone!(batch({ deviceMs: weird, wallMs: Number.NaN, estimatedMs: 0 }))).not.toThrow();
    expect(() => m.observer.requestDone!(req({ kind: 'not-a-kind' as 'lora', latencyMs: Number.POSITIVE_INFINITY }))).not.toThrow();
    expect(await value(reg, 'petserve_batch_device_seconds_count', { part: 'other_pet' })).toBe(1);
    expect(await has(reg, 'petserve_batch_device_seconds_count', { part: 'lora' })).toBe(false);
    expect(await value(reg, 'petserve_requests_total', { kind: 'other' })).toBe(1);
    expect(await value(reg, 'petserve_request_latency_seconds_count')).toBe(0);
  });
});

describe('collectors', () => {
  it('read runner memory at each scrape; page-in and eviction counters never go down when the pool is rebuilt', async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false });
    const pool: PoolStats = { budgetBytes: 1 << 20, usedBytes: 8192, residentTasks: 2, pageIns: 3, evictions: 1 };
    const src = fakeRunner(pool, [
      { id: 'a', kind: 'lora', hostBytes: 100, gpuBytes: 80, resident: true },
      { id: 'b', kind: 'lora', hostBytes: 100, gpuBytes: 80, resident: false },
      { id: 'c', kind: 'mask', hostBytes: 100, gpuBytes: 80, resident: true },
    ]);
    m.bindMemory(src);
    expect(await gauge(reg, 'petserve_base_model_bytes')).toBe(17_000_000);
    expect(await gauge(reg, 'petserve_activation_arena_bytes')).toBe(3_000_000);
    expect(await gauge(reg, 'petserve_pet_pool_used_bytes')).toBe(8192);
    expect(await gauge(reg, 'petserve_pet_pool_budget_bytes')).toBe(1 << 20);
    expect(await gauge(reg, 'petserve_pet_host_cache_bytes')).toBe(12_345);
    expect(await value(reg, 'petserve_pet_page_ins_total')).toBe(3);
    expect(await value(reg, 'petserve_pet_evictions_total')).toBe(1);
    expect(await value(reg, 'petserve_tasks_registered', { kind: 'lora' })).toBe(2);
    expect(await value(reg, 'petserve_tasks_registered', { kind: 'ia3' })).toBe(0);
    expect(await value(reg, 'petserve_tasks_resident', { kind: 'lora' })).toBe(1);
    expect(await value(reg, 'petserve_tasks_resident')).toBe(2);

    src.report = { ...src.report, pool: { ...pool, pageIns: 7, evictions: 4, usedBytes: 4096 } };
    expect(await value(reg, 'petserve_pet_page_ins_total')).toBe(7);
    expect(await value(reg, 'petserve_pet_evictions_total')).toBe(4);
    expect(await gauge(reg, 'petserve_pet_pool_used_bytes')).toBe(4096);

    // Device lost → a new pool counts from 0 again; the exported counters keep growing.
    src.report = { ...src.report, pool: { ...pool, pageIns: 2, evictions: 0 } };
    expect(await value(reg, 'petserve_pet_page_ins_total')).toBe(9);
    expect(await value(reg, 'petserve_pet_evictions_total')).toBe(4);
    // Repeated scrapes without change add nothing.
    expect(await value(reg, 'petserve_pet_page_ins_total')).toBe(9);

    src.tasks = src.tasks.slice(1);
    expect(await value(reg, 'petserve_tasks_registered', { kind: 'lora' })).toBe(1);
  });

  it('exports pool gauges as NaN, not 0, when the runner has no PET pool', async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false });
    m.bindMemory(fakeRunner(null, []));
    expect(await gauge(reg, 'petserve_pet_pool_budget_bytes')).toBeNaN();
    expect(await gauge(reg, 'petserve_base_model_bytes')).toBe(17_000_000);
  });

  it('exports the scheduler queue depth by priority', async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false });
    const stats: SchedulerStats = { policy: 'slo', queued: 7, queuedOnline: 5, queuedOffline: 2, inFlightBatches: 1, maxQueue: 4096, batchesRun: 3, requestsDone: 9 };
    m.bindScheduler({ stats: () => stats });
    expect(await value(reg, 'petserve_scheduler_queue_depth', { priority: 'online' })).toBe(5);
    expect(await value(reg, 'petserve_scheduler_queue_depth', { priority: 'offline' })).toBe(2);
    expect(await gauge(reg, 'petserve_scheduler_queue_capacity')).toBe(4096);
    expect(await gauge(reg, 'petserve_scheduler_in_flight_batches')).toBe(1);
  });

  it("exports the online cost model's recent error, batches learned and whether it has converged", async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false });
    let costModel: SchedulerStats['costModel'] = { phase: 'calibrating', batches: 3, recentError: 0.42, source: 'calibration' };
    m.bindScheduler({ stats: () => ({ policy: 'slo', queued: 0, queuedOnline: 0, queuedOffline: 0, inFlightBatches: 0, maxQueue: 1, batchesRun: 3, requestsDone: 3, costModel }) });
    expect(await gauge(reg, 'petserve_cost_model_error')).toBe(0.42);
    expect(await gauge(reg, 'petserve_cost_model_converged')).toBe(0);
    expect(await gauge(reg, 'petserve_cost_model_batches')).toBe(3);
    costModel = { phase: 'converged', batches: 40, recentError: 0.04, source: 'calibration' };
    expect(await gauge(reg, 'petserve_cost_model_error')).toBe(0.04);
    expect(await gauge(reg, 'petserve_cost_model_converged')).toBe(1);
  });

  it("exports early refusal's admission limit as a fraction of the SLO, NaN without the policy", async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false });
    let admission: SchedulerStats['admission'] = { sloMs: 1500, admitsUpToMs: 1200, learnedFrom: 120 };
    m.bindScheduler({ stats: () => ({ policy: 'slo', queued: 0, queuedOnline: 0, queuedOffline: 0, inFlightBatches: 0, maxQueue: 1, batchesRun: 3, requestsDone: 3, admission }) });
    expect(await gauge(reg, 'petserve_admission_limit_ratio')).toBe(0.8);
    admission = null;
    expect(await gauge(reg, 'petserve_admission_limit_ratio')).toBeNaN();
  });

  it('exports BullMQ jobs by state and workers; an unreachable or hanging Redis sets queue_up 0 without failing the scrape', async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false, queueTimeoutMs: 200 });
    let mode: 'ok' | 'fail' | 'hang' = 'ok';
    let reads = 0;
    m.bindQueue({
      jobCounts: async () => {
        reads += 1;
        if (mode === 'fail') throw new Error('ECONNREFUSED');
        if (mode === 'hang') return new Promise<Record<string, number>>(() => undefined);
        return { waiting: 4, active: 2, completed: 10, failed: 1, delayed: 0, paused: 3 };
      },
      workers: async () => 3,
    });
    await reg.metrics();
    // One Redis read per scrape, shared by the three queue gauges.
    expect(reads).toBe(1);
    expect(await gauge(reg, 'petserve_queue_up')).toBe(1);
    expect(await value(reg, 'petserve_queue_jobs', { state: 'waiting' })).toBe(4);
    expect(await value(reg, 'petserve_queue_jobs', { state: 'failed' })).toBe(1);
    expect(await gauge(reg, 'petserve_queue_workers')).toBe(3);
    // Only the five documented states become series.
    expect((await labelSets(reg, 'petserve_queue_jobs')).map((l) => l['state']).sort()).toEqual(['active', 'completed', 'delayed', 'failed', 'waiting']);

    mode = 'fail';
    const text = await reg.metrics();
    expect(text).toMatch(/^petserve_queue_up 0$/m);
    expect(text).toMatch(/^petserve_queue_jobs\{state="waiting"\} 4$/m);

    mode = 'hang';
    const started = Date.now();
    expect(await reg.metrics()).toMatch(/^petserve_queue_up 0$/m);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('counts device losses and worker items', async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false });
    m.deviceLost();
    m.deviceLost();
    m.recordQueueItems(250, 6);
    m.recordQueueItems(6, 0);
    expect(await value(reg, 'petserve_gpu_device_lost_total')).toBe(2);
    expect(await value(reg, 'petserve_queue_items_total', { outcome: 'processed' })).toBe(256);
    expect(await value(reg, 'petserve_queue_items_total', { outcome: 'failed' })).toBe(6);
  });
});

describe('label cardinality', () => {
  it('has no per-task label unless perTaskTopK is set, and then exports only the K busiest tasks', async () => {
    const off = new Registry();
    const m0 = createMetrics(off, { defaultMetrics: false });
    m0.countTaskRequest('t1');
    expect((await off.getMetricsAsJSON()).some((x) => x.name === 'petserve_task_requests_total')).toBe(false);
    for (const x of await off.getMetricsAsJSON()) {
      for (const v of x.values as { labels: Record<string, unknown> }[]) expect(Object.keys(v.labels)).not.toContain('task');
    }

    const reg = new Registry();
    const m = createMetrics(reg, { defaultMetrics: false, perTaskTopK: 2 });
    for (const [task, n] of [['a', 5], ['b', 1], ['c', 9], ['d', 2]] as const) m.countTaskRequest(task, n);
    expect(await labelSets(reg, 'petserve_task_requests_total')).toEqual([{ task: 'c' }, { task: 'a' }]);
    expect(await value(reg, 'petserve_task_requests_total', { task: 'c' })).toBe(9);
    // 'd' overtakes 'a': the exported set follows, counts stay exact.
    m.countTaskRequest('d', 10);
    expect(await labelSets(reg, 'petserve_task_requests_total')).toEqual([{ task: 'd' }, { task: 'c' }]);
    expect(await value(reg, 'petserve_task_requests_total', { task: 'd' })).toBe(12);
  });

  it('defines everything on the given registry and nothing on the global one', async () => {
    const a = new Registry();
    const b = new Registry();
    createMetrics(a);
    createMetrics(b);
    expect((await globalRegistry.getMetricsAsJSON()).filter((x) => x.name.startsWith('petserve_'))).toEqual([]);
    const names = (await a.getMetricsAsJSON()).map((x) => x.name);
    expect(names).toContain('petserve_process_cpu_seconds_total');
    expect(names).toContain('petserve_nodejs_eventloop_lag_seconds');
    expect(names.every((n) => n.startsWith('petserve_'))).toBe(true);
  });
});

describe('exposition', () => {
  it('passes promtool check metrics with every collector bound', async () => {
    const reg = new Registry();
    const m = createMetrics(reg, { perTaskTopK: 3 });
    m.bindMemory(fakeRunner({ budgetBytes: 4096, usedBytes: 4096, residentTasks: 1, pageIns: 1, evictions: 0 }, [{ id: 'x', kind: 'bitfit', hostBytes: 1, gpuBytes: 1, resident: true }]));
    m.bindScheduler({ stats: () => ({ policy: 'fifo', queued: 0, queuedOnline: 0, queuedOffline: 0, inFlightBatches: 0, maxQueue: 1, batchesRun: 0, requestsDone: 0 }) });
    m.bindQueue({ jobCounts: async () => ({ waiting: 1 }), workers: async () => 1 });
    m.observer.requestDone!(req({ slackMs: -3 }));
    m.observer.batchDone!(batch({ deviceMs: { total: 3, shared: 2, pet: { lora: 1 } } }));
    m.countTaskRequest('x');
    m.deviceLost();
    const r = promtool(['check', 'metrics'], await reg.metrics());
    expect(r.output).toBe('');
    expect(r.status).toBe(0);
  });
});
