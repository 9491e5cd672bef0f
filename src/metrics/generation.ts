import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { KvBlockStats } from '../engine/generation/kv-blocks.js';
import type { GenerationObserver, GenerationReport } from '../gateway/completions.js';
import type { StepReport } from '../scheduler/generation/step-scheduler.js';
import { METRIC_PREFIX } from './metrics.js';
import { PetOverheadWindow, type DeviceSplitMs } from './pet-overhead.js';
import { RollingWindow, type WindowSummary } from './rolling-window.js';
import { TaskRequestCounts } from './task-counts.js';

/** What the generation gauges read at each scrape (a GenerationRuntime's scheduler and blocks fit). */
export interface GenerationStatsSource {
  scheduler: { readonly stats: { running: number; waiting: number; preempted: number } };
  blocks: { stats(): KvBlockStats };
}

/**
 * The Generation section of the status page (`GET /v1/status` → `generation`):
 * the /metrics figures, plus recent percentiles the page cannot get from a
 * Prometheus server it may not have.
 */
export interface GenerationStatus {
  running: number;
  waiting: number;
  preemptedTotal: number;
  kvBlocksUsed: number;
  kvBlocksCapacity: number;
  /** Evictable blocks holding a cached prefix (free for new sequences, kept for prefix hits). */
  kvBlocksCachedFree: number;
  /** null before the first prefix lookup. */
  prefixCacheHitRatio: number | null;
  /** TTFT of sequences finished in the window; `requests` = sequences, `tokensPerSecond` = generated tokens/s. */
  ttft: WindowSummary;
  /** Mean time per output token of each sequence finished in the window (sequences with two or more tokens). */
  tpot: WindowSummary;
  /** Share of profiled step device time spent in adapter dispatches (LoRA, IA³, task heads/embeddings); null before a profiled step. */
  loraDeviceShare: number | null;
  /** Profiled steps the share is taken over. */
  profiledSteps: number;
  /** Decoder tasks with the sequences each finished since start, busiest first. */
  tasks: { id: string; kind: string; sequences: number }[];
}

/** Which adapter op class a dispatch label belongs to (graph labels: `l3.q.lora_shrink`, `l0.up.ia3_in`, `task_heads`); null = base model. */
export function adapterOpClass(label: string): string | null {
  if (label.endsWith('.lora_shrink') || label.endsWith('.lora_expand')) return 'lora';
  if (label.endsWith('.ia3_in') || label.endsWith('.ia3_out')) return 'ia3';
  if (label === 'task_heads' || label === 'task_embed') return label;
  return null;
}

/** Split a per-dispatch profile of one step into base-model time and adapter time by op class. */
export function stepDeviceSplit(phases: readonly { name: string; ms: number }[]): DeviceSplitMs {
  let shared = 0;
  const pet: Record<string, number> = {};
  for (const { name, ms } of phases) {
    if (!Number.isFinite(ms)) continue;
    const cls = adapterOpClass(name);
    if (cls === null) shared += ms;
    else pet[cls] = (pet[cls] ?? 0) + ms;
  }
  return { shared, pet };
}

// Seconds. TTFT spans prefill on lavapipe (seconds) to a GPU (ms); per-token gaps are smaller.
const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60];
const TPOT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const E2E_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300];

/**
 * Metrics of the decoder (generation) path, registered only when `serve`
 * runs a decoder. Like every PetServe metric: no task label, base units in
 * the name. Per-request figures come from the gateway's observer, the
 * running/waiting/KV state is read from the scheduler at scrape time.
 */
export class GenerationMetrics {
  readonly ttft: Histogram;
  readonly interToken: Histogram;
  readonly e2e: Histogram;
  readonly promptTokens: Counter;
  readonly generatedTokens: Counter;
  readonly slo: Counter<'objective' | 'outcome'>;
  readonly step: Histogram;
  readonly loraDeviceShare: Gauge;
  private source: GenerationStatsSource | null = null;
  private preemptedSeen = 0;
  // Recent figures for the status page: TTFT (with generated tokens as its
  // "batch" tokens, for tokens/s) and TPOT windows, the last profiled steps.
  private readonly ttftWindow = new RollingWindow({ horizonSeconds: 300 });
  private readonly tpotWindow = new RollingWindow({ horizonSeconds: 300 });
  private readonly deviceWindow = new PetOverheadWindow(64);
  private readonly taskSequences = new TaskRequestCounts(10_000);

  readonly observer: GenerationObserver = { generated: (r) => this.onGenerated(r) };

  constructor(registry: Registry) {
    const registers = [registry];
    const p = `${METRIC_PREFIX}generation_`;
    this.ttft = new Histogram({
      name: `${p}ttft_seconds`,
      help: 'Time to first token: from submit to the first generated token of each finished sequence.',
      buckets: TTFT_BUCKETS,
      registers,
    });
    this.interToken = new Histogram({
      name: `${p}inter_token_seconds`,
      help: 'Time per output token after the first (TPOT), averaged over each finished sequence with two or more tokens.',
      buckets: TPOT_BUCKETS,
      registers,
    });
    this.e2e = new Histogram({
      name: `${p}e2e_seconds`,
      help: 'End-to-end time of each finished sequence, from submit to its last token.',
      buckets: E2E_BUCKETS,
      registers,
    });
    this.step = new Histogram({
      name: `${p}step_seconds`,
      help: 'Wall time of one continuous-batching step (decode rows and prefill chunks of every running sequence).',
      buckets: TPOT_BUCKETS,
      registers,
    });
    this.promptTokens = new Counter({ name: `${p}prompt_tokens_total`, help: 'Prompt tokens of finished sequences.', registers });
    this.slo = new Counter({
      name: `${p}slo_total`,
      help: 'Finished sequences that had a TTFT or TPOT objective (request ttft_slo_ms / tpot_slo_ms or generation.taskSlo), by objective and whether it was met.',
      labelNames: ['objective', 'outcome'],
      registers,
    });
    this.generatedTokens = new Counter({ name: `${p}generated_tokens_total`, help: 'Tokens generated by finished sequences.', registers });
    const state = (): { running: number; waiting: number; preempted: number } | null => this.source?.scheduler.stats ?? null;
    const kv = (): KvBlockStats | null => this.source?.blocks.stats() ?? null;
    const running: Gauge = new Gauge({
      name: `${p}running_sequences`,
      help: 'Sequences admitted and holding KV blocks.',
      registers,
      collect: () => running.set(state()?.running ?? 0),
    });
    const waiting: Gauge = new Gauge({
      name: `${p}waiting_sequences`,
      help: 'Sequences waiting for admission (preempted ones included).',
      registers,
      collect: () => waiting.set(state()?.waiting ?? 0),
    });
    const preempted: Counter = new Counter({
      name: `${p}preempted_total`,
      help: 'Sequences preempted (KV blocks freed, recomputed later) to make room for others.',
      registers,
      collect: () => {
        const total = state()?.preempted ?? this.preemptedSeen;
        if (total > this.preemptedSeen) preempted.inc(total - this.preemptedSeen);
        this.preemptedSeen = total;
      },
    });
    const used: Gauge = new Gauge({
      name: `${p}kv_blocks_used`,
      help: 'KV cache blocks referenced by sequences (cached free blocks not counted).',
      registers,
      collect: () => used.set(kv()?.usedBlocks ?? 0),
    });
    const total: Gauge = new Gauge({
      name: `${p}kv_blocks_capacity`,
      help: 'KV cache blocks (generation.kvCacheBytes / block size).',
      registers,
      collect: () => total.set(kv()?.totalBlocks ?? 0),
    });
    const hitRatio: Gauge = new Gauge({
      name: `${p}prefix_cache_hit_ratio`,
      help: 'Prompt tokens served from the prefix cache divided by prompt tokens looked up, since start (NaN before the first).',
      registers,
      collect: () => {
        const s = kv();
        hitRatio.set(s && s.prefixQueries > 0 ? s.prefixHits / s.prefixQueries : Number.NaN);
      },
    });
    const share = (): number => this.deviceShare()?.share ?? Number.NaN;
    this.loraDeviceShare = new Gauge({
      name: `${p}lora_device_share`,
      help: 'Share of profiled step device time in adapter dispatches (LoRA shrink/expand, IA³, task heads and embeddings), over the last 64 profiled steps (generation.profileEverySteps); NaN before the first.',
      registers,
      collect: () => this.loraDeviceShare.set(share()),
    });
  }

  /** Adapter share of device time over the recent profiled steps; null before the first. */
  deviceShare(): { share: number; steps: number } | null {
    const o = this.deviceWindow.overhead();
    // overhead() is adapter time / base time; the share of the whole is r / (1 + r).
    return o ? { share: o.ratio / (1 + o.ratio), steps: o.batches } : null;
  }

  /** The status page's Generation section; `tasks` lists the decoder's tasks with their counts. */
  status(tasks: readonly { id: string; kind: string }[], windowSeconds = 60): GenerationStatus {
    const state = this.source?.scheduler.stats;
    const kv = this.source?.blocks.stats();
    const device = this.deviceShare();
    return {
      running: state?.running ?? 0,
      waiting: state?.waiting ?? 0,
      preemptedTotal: state?.preempted ?? 0,
      kvBlocksUsed: kv?.usedBlocks ?? 0,
      kvBlocksCapacity: kv?.totalBlocks ?? 0,
      kvBlocksCachedFree: kv?.cachedFreeBlocks ?? 0,
      prefixCacheHitRatio: kv && kv.prefixQueries > 0 ? kv.prefixHits / kv.prefixQueries : null,
      ttft: this.ttftWindow.summary(windowSeconds),
      tpot: this.tpotWindow.summary(windowSeconds),
      loraDeviceShare: device?.share ?? null,
      profiledSteps: device?.steps ?? 0,
      tasks: tasks
        .map((t) => ({ id: t.id, kind: t.kind, sequences: this.taskSequences.get(t.id) }))
        .sort((a, b) => b.sequences - a.sequences || (a.id < b.id ? -1 : 1)),
    };
  }

  /** Read running/waiting/KV figures from here at each scrape. */
  bind(source: GenerationStatsSource): void {
    this.source = source;
  }

  /** The StepScheduler's onStep hook (a plain function, safe to pass around). */
  readonly onStep = (report: StepReport): void => {
    if (Number.isFinite(report.wallMs)) this.step.observe(report.wallMs / 1000);
    if (report.phases && report.phases.length > 0) {
      const split = stepDeviceSplit(report.phases);
      if (split.shared > 0) this.deviceWindow.record(split);
    }
  };

  private onGenerated(r: GenerationReport): void {
    this.promptTokens.inc(r.promptTokens);
    this.generatedTokens.inc(r.completionTokens);
    if (r.completionTokens > 0 && Number.isFinite(r.ttftMs)) this.ttft.observe(r.ttftMs / 1000);
    if (r.completionTokens > 1 && Number.isFinite(r.tpotMs)) this.interToken.observe(r.tpotMs / 1000);
    if (Number.isFinite(r.e2eMs)) this.e2e.observe(r.e2eMs / 1000);
    if (r.ttftSloMs !== undefined && r.completionTokens > 0) this.slo.inc({ objective: 'ttft', outcome: r.ttftMs <= r.ttftSloMs ? 'met' : 'missed' });
    if (r.tpotSloMs !== undefined && r.completionTokens > 1) this.slo.inc({ objective: 'tpot', outcome: r.tpotMs <= r.tpotSloMs ? 'met' : 'missed' });
    if (r.task !== null) this.taskSequences.add(r.task);
    if (r.completionTokens > 0 && Number.isFinite(r.ttftMs)) {
      this.ttftWindow.recordRequest({ ok: true, latencyMs: r.ttftMs, slo: 'none' });
      this.ttftWindow.recordBatch(1, r.completionTokens);
    }
    if (r.completionTokens > 1 && Number.isFinite(r.tpotMs)) this.tpotWindow.recordRequest({ ok: true, latencyMs: r.tpotMs, slo: 'none' });
  }
}
