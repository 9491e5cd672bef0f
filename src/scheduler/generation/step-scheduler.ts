import type { PhaseTiming, ProfileMode } from '../../gpu/batch-encoder.js';
import type { KvBlockManager } from '../../engine/generation/kv-blocks.js';
import type { DecoderRunner } from '../../engine/generation/decoder-runner.js';
import { SequenceSampler, type SampledToken, type SamplingParams } from '../../engine/generation/sampling.js';
import type { StepSequence } from '../../engine/generation/step-inputs.js';
import type { DecoderAdapter } from '../../pet/decoder-adapter.js';
import { PoolExhaustedError, type PetGpuPool, type ResidentPet } from '../../pet/gpu-pool.js';
import { DeviceLostError, InvalidInputError, PetServeError } from '../../util/errors.js';

/** One generation request as the step scheduler takes it (token ids; text lives above). */
export interface GenerationRequest {
  /** Task (adapter) id, or null for the base model. */
  taskId: string | null;
  promptIds: readonly number[];
  maxTokens: number;
  sampling: SamplingParams;
  /** Token ids that end the sequence (the model's EOS unless the caller says otherwise); the stop token is kept in the output. */
  stopTokenIds: readonly number[];
  /** Aborting removes the sequence before the next step and frees its blocks. */
  signal?: AbortSignal;
  /** Called with each new token; return true to finish now with reason 'stop' (stop strings). */
  onToken?: (token: SampledToken) => boolean | void;
  /**
   * 'offline' (batch queue items) is admitted only when no online sequence
   * waits, unless it has waited maxOfflineWaitMs. Default 'online'.
   */
  priority?: 'online' | 'offline';
  /**
   * Time-to-first-token objective: waiting sequences are admitted earliest
   * deadline first (submit + ttftSloMs; default StepSchedulerOptions.defaultTtftSloMs).
   */
  ttftSloMs?: number;
  /**
   * Time-per-output-token objective: while a sequence with one decodes, each
   * step's prefill work is cut so the step's predicted time stays within it.
   */
  tpotSloMs?: number;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerationResult {
  tokenIds: number[];
  tokens: SampledToken[];
  finishReason: FinishReason;
  promptTokens: number;
  /** Prompt tokens served from the prefix cache at (first) admission. */
  cachedPromptTokens: number;
  /** Wall ms from submit to the first token, and per later token. */
  ttftMs: number;
  tpotMs: number;
  preemptions: number;
  seed: number;
}

export class GenerationCancelledError extends PetServeError {
  constructor() {
    super('CLIENT_ABORTED', 'generation cancelled by the client');
  }
}

/** Where the scheduler finds a task's adapter (host copy and registration key), for paging it into the GPU pool. */
export interface AdapterSource {
  resolve(taskId: string): { key: string; adapter: DecoderAdapter };
}

export interface StepSchedulerOptions {
  /** Rows (tokens) in one step: decode rows first, then prefill chunks. */
  maxStepTokens: number;
  /** Sequences admitted at once. */
  maxRunning: number;
  /** Requests waiting beyond this are refused (OVERLOADED). */
  maxWaiting: number;
  /** Context length served (config max positions). */
  maxContext: number;
  /** Step timing hook (metrics, benchmarks). */
  onStep?: (s: StepReport) => void;
  /** Profile every step: device time per phase (true) or per dispatch ('dispatches') in the report. */
  profile?: ProfileMode;
  /**
   * With `profile`: time only every Nth step (default 1 = every step; 0 = never).
   * Timestamp queries split the step into one pass per phase, so a serving
   * process samples steps instead of paying that on all of them.
   */
  profileEverySteps?: number;
  /**
   * Baseline for benchmarks (PEFT-style unmerged serving): a step holds rows of
   * ONE adapter only (the oldest sequence's), the others wait. Default false.
   */
  oneAdapterPerStep?: boolean;
  /** Starvation bound: an offline sequence waiting this long is admitted like an online one. Default 30 000. */
  maxOfflineWaitMs?: number;
  /** TTFT objective of requests that give none (their admission deadline). Default 10 000. */
  defaultTtftSloMs?: number;
}

export interface StepReport {
  decodeRows: number;
  prefillRows: number;
  sequences: number;
  adapters: number;
  wallMs: number;
  phases: PhaseTiming[] | null;
  running: number;
  waiting: number;
  preempted: number;
}

interface Sequence {
  id: number;
  req: GenerationRequest;
  /** The adapter registration this sequence runs with ('' = base): pool page key and prefix-cache key. */
  cacheKey: string;
  adapter: DecoderAdapter | null;
  /** Prompt + generated: what the KV cache must hold. */
  tokens: number[];
  /** Tokens whose K/V are in the cache. */
  computed: number;
  generated: SampledToken[];
  sampler: SequenceSampler;
  resident: ResidentPet<DecoderAdapter> | null;
  /** The pool (of one device generation) holding `resident`'s pin. */
  pinnedIn: PetGpuPool | null;
  admitted: boolean;
  cachedPromptTokens: number;
  submittedAt: number;
  firstTokenAt: number | null;
  preemptions: number;
  finished: boolean;
  resolve(r: GenerationResult): void;
  reject(e: unknown): void;
}

/**
 * Iteration-level (continuous) batching for decoders. Every step is one packed
 * batch: one decode row for each running sequence first, then prefill chunks of
 * admitted sequences with the token budget left (a long prompt spreads over
 * several steps, so decodes are never held back by it). Sequences are admitted
 * when the KV blocks for their prompt and first decode are free; when a running
 * sequence needs a block and none is free, the youngest running sequence is
 * preempted by recompute (blocks freed, requeued first with its tokens so far;
 * its sampler, and so its random stream, is kept). Nothing is lost, not even
 * by a device loss: every running sequence restarts the same way.
 */
export class StepScheduler {
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private nextId = 1;
  private loop: Promise<void> | null = null;
  private preemptedTotal = 0;
  /** Smoothed step wall time per row (TPOT objectives); null until a step has run. */
  private msPerRow: number | null = null;
  private stepsRun = 0;
  private closed = false;
  /** The device generation running sequences' KV blocks and pool pins are on (null before the first step). */
  private deviceGeneration: number | null = null;
  /** A step met a device loss and its sequences restart; a second loss in a row fails them. */
  private lossRetried = false;
  /** Set when admission waits for pool space another model pins (the shared pool): its next unpin. */
  private poolFreed: Promise<void> | null = null;

  constructor(
    private readonly runner: DecoderRunner,
    private readonly blocks: KvBlockManager,
    private readonly adapters: AdapterSource,
    private readonly options: StepSchedulerOptions,
  ) {}

  get stats(): { running: number; waiting: number; preempted: number } {
    return { running: this.running.length, waiting: this.waiting.length, preempted: this.preemptedTotal };
  }

  /** Queue a request; resolves when it finishes (or rejects: cancelled, refused). */
  submit(req: GenerationRequest): Promise<GenerationResult> {
    this.check(req);
    const resolved = req.taskId === null ? null : this.adapters.resolve(req.taskId);
    return new Promise<GenerationResult>((resolve, reject) => {
      const seq: Sequence = {
        id: this.nextId++,
        req,
        cacheKey: resolved?.key ?? '',
        adapter: resolved?.adapter ?? null,
        tokens: [...req.promptIds],
        computed: 0,
        generated: [],
        sampler: new SequenceSampler(req.sampling, req.promptIds),
        resident: null,
        pinnedIn: null,
        admitted: false,
        cachedPromptTokens: 0,
        submittedAt: performance.now(),
        firstTokenAt: null,
        preemptions: 0,
        finished: false,
        resolve,
        reject,
      };
      if (req.signal?.aborted) return reject(new GenerationCancelledError());
      req.signal?.addEventListener('abort', () => this.kick(), { once: true });
      this.waiting.push(seq);
      this.kick();
    });
  }

  /** Refuse at once what can never run: too long for the context, or for the whole KV pool. */
  private check(req: GenerationRequest): void {
    if (this.closed) throw new PetServeError('SHUTTING_DOWN', 'generation is shutting down');
    const n = req.promptIds.length;
    if (n === 0) throw new InvalidInputError('prompt: must hold at least one token');
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1) throw new InvalidInputError('max_tokens: must be an integer ≥ 1');
    if (n + req.maxTokens > this.options.maxContext) {
      throw new PetServeError(
        'SEQUENCE_TOO_LONG',
        `prompt (${n} tokens) + max_tokens (${req.maxTokens}) exceeds the model's context of ${this.options.maxContext} tokens`,
      );
    }
    const need = this.blocks.blocksFor(n + req.maxTokens);
    if (need > this.blocks.numBlocks) {
      throw new PetServeError(
        'SEQUENCE_TOO_LONG',
        `prompt + max_tokens needs ${need} KV blocks but the KV cache holds ${this.blocks.numBlocks}; lower max_tokens or raise the KV cache size`,
      );
    }
    if (this.waiting.length >= this.options.maxWaiting) throw new PetServeError('OVERLOADED', `${this.waiting.length} generation requests are waiting; retry later`);
  }

  /** Stop admitting; running and waiting sequences finish. */
  async close(): Promise<void> {
    this.closed = true;
    await this.loop;
  }

  private kick(): void {
    if (this.loop) return;
    this.loop = this.run()
      .catch((err: unknown) => this.failAll(err))
      .finally(() => {
        this.loop = null;
        if (this.waiting.length > 0 || this.running.length > 0) this.kick();
      });
  }

  /** A scheduler bug must not hang callers: every sequence fails with it, the loop starts clean. */
  private failAll(err: unknown): void {
    for (const seq of [...this.running.splice(0), ...this.waiting.splice(0)]) this.finishWith(seq, null, err);
  }

  private async run(): Promise<void> {
    while (this.waiting.length > 0 || this.running.length > 0) {
      this.dropAborted();
      if (this.runner.deviceLost) await this.runner.recoverDevice();
      this.followDevice();
      const plan = this.planStep();
      if (plan.length === 0 && this.running.length === 0) {
        // The pool space is pinned by the other model's batch in flight: it frees when that batch ends.
        if (this.poolFreed !== null) {
          await this.poolFreed;
          continue;
        }
        // Nothing runs and nothing could be admitted into an empty cache and pool: the head never will be.
        if (this.waiting.length > 0) this.failHead(); // (all may have been cancelled just now)
        continue;
      }
      await this.executeStep(plan);
    }
  }

  /**
   * After a device loss (met by a step here or by the encoder's batch) the KV
   * cache's contents and the pool's copies are gone: every running sequence
   * restarts by recompute, as a preemption does (tokens and sampler kept,
   * requeued first in its order), and no cached prefix is served again.
   */
  private followDevice(): void {
    const generation = this.runner.deviceGeneration();
    if (this.deviceGeneration === generation) return;
    const restarting = this.deviceGeneration !== null;
    this.deviceGeneration = generation;
    if (!restarting) return;
    const running = this.running.splice(0);
    for (const seq of running) {
      this.release(seq);
      seq.computed = 0;
    }
    this.waiting.unshift(...running);
    this.blocks.forgetAllPrefixes();
  }

  /** The head of the queue cannot be admitted into an empty cache/pool: refuse it rather than spin. */
  private failHead(): void {
    const seq = this.nextToAdmit();
    this.waiting.splice(this.waiting.indexOf(seq), 1);
    this.finishWith(seq, null, new PetServeError('POOL_EXHAUSTED', `request cannot be admitted: not enough KV blocks or adapter pool space even with nothing else running`));
  }

  private dropAborted(): void {
    for (const list of [this.running, this.waiting]) {
      for (let i = list.length - 1; i >= 0; i--) {
        const seq = list[i]!;
        if (seq.req.signal?.aborted) {
          list.splice(i, 1);
          this.finishWith(seq, null, new GenerationCancelledError());
        }
      }
    }
  }

  /** Decode rows first, then prefill chunks, then admissions, under the token budget. */
  private planStep(): { seq: Sequence; take: number }[] {
    const plan: { seq: Sequence; take: number }[] = [];
    this.poolFreed = null;
    // Baseline mode: only the adapter of the oldest sequence (running first, then waiting) takes part.
    const only = this.options.oneAdapterPerStep ? (this.running[0] ?? this.waiting[0])?.cacheKey : undefined;
    const eligible = (s: Sequence): boolean => only === undefined || s.cacheKey === only;
    const decoding = this.running.filter((s) => eligible(s) && s.tokens.length - s.computed === 1 && s.computed > 0);
    const prefilling = this.running.filter((s) => eligible(s) && !decoding.includes(s));
    let budget = this.stepBudget(decoding);
    for (const seq of decoding) {
      if (budget === 0) break;
      if (!this.running.includes(seq)) continue; // preempted to make room for an earlier one
      if (!this.growFor(seq, seq.tokens.length)) continue; // seq itself was preempted
      plan.push({ seq, take: 1 });
      budget -= 1;
    }
    for (const seq of prefilling) {
      if (budget === 0) break;
      if (!this.running.includes(seq)) continue;
      const take = Math.min(budget, seq.tokens.length - seq.computed);
      plan.push({ seq, take });
      budget -= take;
    }
    while (budget > 0 && this.waiting.length > 0 && this.running.length < this.options.maxRunning) {
      const seq = this.nextToAdmit();
      if (!eligible(seq)) break;
      if (!this.admit(seq)) break;
      this.waiting.splice(this.waiting.indexOf(seq), 1);
      this.running.push(seq);
      const take = Math.min(budget, seq.tokens.length - seq.computed);
      plan.push({ seq, take });
      budget -= take;
    }
    return plan.filter((p) => this.running.includes(p.seq));
  }

  /**
   * Among waiting sequences that count as online (online, or offline past the
   * starvation bound), the one whose TTFT deadline comes first (ties: the
   * oldest, so without SLOs this is arrival order and a preempted sequence,
   * submitted earliest, goes first); the oldest offline one only when none
   * counts as online. Online work that cannot be admitted yet holds offline
   * work back too: offline only fills capacity online traffic leaves idle.
   */
  private nextToAdmit(): Sequence {
    const bound = this.options.maxOfflineWaitMs ?? 30_000;
    const now = performance.now();
    let pick: Sequence | null = null;
    for (const s of this.waiting) {
      if (s.req.priority === 'offline' && now - s.submittedAt < bound) continue;
      if (!pick || this.ttftDeadline(s) < this.ttftDeadline(pick)) pick = s;
    }
    return pick ?? this.waiting[0]!;
  }

  private ttftDeadline(s: Sequence): number {
    return s.submittedAt + (s.req.ttftSloMs ?? this.options.defaultTtftSloMs ?? 10_000);
  }

  /**
   * Rows this step may hold so that a decoding sequence with a TPOT objective
   * gets its token in time: the tightest objective over the measured cost of a
   * row (step wall time per row, smoothed; it includes the fixed cost of a step,
   * so it errs towards smaller steps). Never below the decode rows themselves:
   * decodes go first and prefill is what gets cut. No objective or no
   * measurement yet: the configured budget.
   */
  private stepBudget(decoding: readonly Sequence[]): number {
    const max = this.options.maxStepTokens;
    let tightest = Infinity;
    for (const s of decoding) if (s.req.tpotSloMs !== undefined) tightest = Math.min(tightest, s.req.tpotSloMs);
    if (!Number.isFinite(tightest) || this.msPerRow === null) return max;
    return Math.min(max, Math.max(decoding.length, Math.floor(tightest / this.msPerRow)));
  }

  /** Blocks for the prompt + one decode token, and the adapter paged in; all or nothing. */
  private admit(seq: Sequence): boolean {
    let resident: ResidentPet<DecoderAdapter> | null = null;
    const adapter = seq.adapter;
    const pool = adapter !== null ? this.runner.pool.current() : null;
    if (adapter !== null && pool !== null) {
      try {
        resident = pool.pin(seq.cacheKey, () => adapter);
      } catch (err) {
        if (err instanceof PoolExhaustedError && err.shortage === 'pinned') {
          // Pinned by running sequences here (one finishing frees it) or, with none running,
          // by the encoder's batch in flight on the shared pool (its unpin frees it).
          if (this.running.length === 0) this.poolFreed = pool.nextUnpin();
          return false;
        }
        this.waiting.splice(this.waiting.indexOf(seq), 1);
        this.finishWith(seq, null, err);
        return false;
      }
    }
    const got = this.blocks.allocate(seq.id, seq.cacheKey, seq.tokens, 1);
    if (!got) {
      if (resident) pool?.unpin(seq.cacheKey);
      return false;
    }
    seq.resident = resident;
    seq.pinnedIn = resident ? pool : null;
    seq.computed = got.cachedTokens;
    if (!seq.admitted) seq.cachedPromptTokens = got.cachedTokens;
    seq.admitted = true;
    return true;
  }

  /** Make room for `tokens` in seq's blocks, preempting the youngest others first; false if seq itself had to go. */
  private growFor(seq: Sequence, tokens: number): boolean {
    while (!this.blocks.ensureCapacity(seq.id, tokens)) {
      const victim = this.youngest();
      this.preempt(victim);
      if (victim === seq) return false;
    }
    return true;
  }

  private youngest(): Sequence {
    let pick = this.running[this.running.length - 1]!;
    for (const s of this.running) if (s.generated.length < pick.generated.length) pick = s;
    return pick;
  }

  private preempt(seq: Sequence): void {
    this.running.splice(this.running.indexOf(seq), 1);
    this.release(seq);
    seq.computed = 0;
    seq.preemptions += 1;
    this.preemptedTotal += 1;
    this.waiting.unshift(seq);
  }

  private release(seq: Sequence): void {
    this.blocks.free(seq.id);
    if (seq.resident) seq.pinnedIn?.unpin(seq.cacheKey);
    seq.resident = null;
    seq.pinnedIn = null;
  }

  private async executeStep(plan: { seq: Sequence; take: number }[]): Promise<void> {
    const steps: StepSequence[] = plan.map(({ seq, take }) => {
      const from = seq.computed;
      const slots: number[] = [];
      for (let i = from; i < from + take; i++) slots.push(this.blocks.slot(seq.id, i));
      return {
        adapter: seq.resident,
        tokens: seq.tokens.slice(from, from + take),
        startPos: from,
        slots,
        blockTable: this.blocks.blockTable(seq.id).slice(),
        wantLogits: from + take === seq.tokens.length,
      };
    });
    const t0 = performance.now();
    let out;
    try {
      out = await this.runner.runStep(steps, this.profileThisStep());
    } catch (err) {
      if (err instanceof DeviceLostError && !this.lossRetried) {
        // The next loop rebuilds the device and restarts every running sequence (followDevice).
        this.lossRetried = true;
        return;
      }
      // A failed step fails its sequences (their state on the device is unknown), not the scheduler.
      for (const { seq } of plan) {
        this.running.splice(this.running.indexOf(seq), 1);
        this.finishWith(seq, null, err);
      }
      return;
    }
    this.lossRetried = false;
    const now = performance.now();
    const rows = steps.reduce((n, st) => n + st.tokens.length, 0);
    // Profiled steps run one timed pass per phase and are slower: they do not train the estimate.
    if (rows > 0 && out.phases === null) {
      const perRow = (now - t0) / rows;
      this.msPerRow = this.msPerRow === null ? perRow : 0.8 * this.msPerRow + 0.2 * perRow;
    }
    const adapters = new Set(plan.map((p) => p.seq.req.taskId).filter((t) => t !== null)).size;
    let decodeRows = 0;
    plan.forEach(({ seq, take }, i) => {
      if (take === 1 && seq.computed > 0 && seq.tokens.length - seq.computed === 1) decodeRows++;
      seq.computed += take;
      this.blocks.markComputed(seq.id, seq.tokens, seq.computed);
      const logits = out.logits[i];
      if (!logits) return;
      const sampled = seq.sampler.sample(logits);
      seq.generated.push(sampled);
      seq.tokens.push(sampled.token);
      seq.firstTokenAt ??= now;
      const stopped = seq.req.onToken?.(sampled) === true;
      if (stopped || seq.req.stopTokenIds.includes(sampled.token)) return this.finish(seq, 'stop');
      if (seq.generated.length >= seq.req.maxTokens) return this.finish(seq, 'length');
    });
    this.options.onStep?.({
      decodeRows,
      prefillRows: steps.reduce((n, s) => n + s.tokens.length, 0) - decodeRows,
      sequences: plan.length,
      adapters,
      wallMs: now - t0,
      phases: out.phases,
      running: this.running.length,
      waiting: this.waiting.length,
      preempted: this.preemptedTotal,
    });
  }

  private profileThisStep(): ProfileMode {
    const every = this.options.profileEverySteps ?? 1;
    this.stepsRun += 1;
    return every > 0 && this.stepsRun % every === 0 ? (this.options.profile ?? false) : false;
  }

  private finish(seq: Sequence, reason: FinishReason): void {
    this.running.splice(this.running.indexOf(seq), 1);
    this.finishWith(seq, reason, null);
  }

  private finishWith(seq: Sequence, reason: FinishReason | null, err: unknown): void {
    if (seq.finished) return;
    seq.finished = true;
    if (this.blocks.has(seq.id) || seq.resident) this.release(seq);
    if (err || reason === null) return seq.reject(err);
    const n = seq.generated.length;
    const first = seq.firstTokenAt ?? performance.now();
    const end = performance.now();
    seq.resolve({
      tokenIds: seq.generated.map((t) => t.token),
      tokens: seq.generated,
      finishReason: reason,
      promptTokens: seq.req.promptIds.length,
      cachedPromptTokens: seq.cachedPromptTokens,
      ttftMs: first - seq.submittedAt,
      tpotMs: n > 1 ? (end - first) / (n - 1) : 0,
      preemptions: seq.preemptions,
      seed: seq.sampler.seed,
    });
  }
}
