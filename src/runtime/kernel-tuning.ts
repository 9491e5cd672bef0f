/**
 * Self-tuning of one runner's kernels, as a server or worker runs it: the cached pick for this adapter and
 * model is applied before the first batch; without one the runner starts on the defaults and the tuner
 * runs in the background once serving has begun (its trials queue between batches), then the pick takes
 * effect from the next batch and is cached. Readiness never waits for it.
 */
import { attentionChoiceName, choiceNames, gemmChoiceName, type KernelClass } from '../kernels/candidates.js';
import { choiceCacheKey, readCachedChoices, writeCachedChoices } from '../kernels/tuner/choice-cache.js';
import { tuneKernels, type TuneOutcome } from '../kernels/tuner/kernel-tuner.js';
import type { TuneWorkload } from '../kernels/tuner/tune-workload.js';
import type { KernelChoices } from '../kernels/types.js';
import type { PetServeConfig } from '../config/config.js';
import type { GpuContext } from '../gpu/context.js';
import type { Logger } from '../util/logger.js';

/** What the tuner needs of a runner (ModelRunner, DecoderRunner). */
export interface TunableRunner {
  kernels: KernelChoices;
  tuneWorkload(): TuneWorkload;
  exclusive<T>(work: () => Promise<T>): Promise<T>;
}

export interface KernelTuningConfig {
  /** Tune in the background when no cached pick exists. */
  autotune: boolean;
  /** Where picks are cached; null = never cached (tuned at every start when autotune is on). */
  cacheDir: string | null;
  /** Wait this long after start before the first trial, so start-up requests meet an idle device. */
  startDelayMs: number;
}

/** The kernel self-tuning settings of config.kernels. */
export function kernelTuningConfig(config: PetServeConfig): KernelTuningConfig {
  return { autotune: config.kernels.autotune, cacheDir: config.kernels.cacheDir, startDelayMs: config.kernels.tuneDelayMs };
}

export type KernelTuningState = 'defaults' | 'cached' | 'waiting' | 'tuning' | 'tuned' | 'failed';

export interface KernelTuningStatus {
  state: KernelTuningState;
  /** Candidates timed so far / in all, while tuning. */
  progress: { done: number; total: number } | null;
  /** The kernels the runner records with now. */
  choices: { gemm: string; smallGemm: string; attention: string; rowWorkgroupSize: number };
  /** Device ms of the workload per kernel class, start choice vs pick (after tuning). */
  gain: Record<string, { startMs: number | null; pickedMs: number | null }> | null;
  error: string | null;
}

const IDLE_POLL_MS = 50;

export class KernelTuning {
  private state: KernelTuningState = 'defaults';
  private progress: KernelTuningStatus['progress'] = null;
  private error: string | null = null;
  private outcome: TuneOutcome | null = null;
  private startChoices: KernelChoices;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  /** True while nothing is queued or running; trials start only then (setIdleProbe). */
  private idle: () => boolean = () => true;

  private constructor(
    private readonly ctx: GpuContext,
    private readonly runner: TunableRunner,
    private readonly config: KernelTuningConfig,
    private readonly logger: Logger,
  ) {
    this.startChoices = runner.kernels;
  }

  /** Apply a cached pick if there is one (before the first batch); otherwise arm the background run. */
  static async start(ctx: GpuContext, runner: TunableRunner, config: KernelTuningConfig, logger: Logger): Promise<KernelTuning> {
    const t = new KernelTuning(ctx, runner, config, logger);
    const cached = await readCachedChoices(config.cacheDir, t.key());
    if (cached) {
      runner.kernels = cached.choices;
      t.state = 'cached';
      t.outcome = cached;
      logger.info({ choices: t.status().choices }, 'kernel choices loaded from cache');
    } else if (config.autotune) {
      t.state = 'waiting';
      t.timer = setTimeout(() => void t.runNow(), config.startDelayMs);
      t.timer.unref();
    }
    return t;
  }

  /**
   * Start each trial only when `idle()` holds (the scheduler has nothing queued or running): a trial that
   * compiles a candidate can hold the device for seconds on a CPU adapter, and serving comes first.
   */
  setIdleProbe(idle: () => boolean): void {
    this.idle = idle;
  }

  private async waitForIdle(): Promise<void> {
    while (!this.stopped && !this.idle()) await new Promise((r) => setTimeout(r, IDLE_POLL_MS));
  }

  private key(): ReturnType<typeof choiceCacheKey> {
    return choiceCacheKey(this.ctx.capabilities.adapterName, this.runner.tuneWorkload());
  }

  /** Tune now (the background timer calls this; tests and `petserve tune` may too). Resolves when done. */
  runNow(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.running ??= this.tune();
    return this.running;
  }

  private async tune(): Promise<void> {
    if (this.stopped) return;
    this.state = 'tuning';
    this.startChoices = this.runner.kernels;
    const generation = this.ctx.generation;
    try {
      const outcome = await tuneKernels(this.ctx, this.runner.tuneWorkload(), this.startChoices, {
        exclusive: async (work) => {
          await this.waitForIdle();
          return this.runner.exclusive(async () => {
            if (this.stopped) throw new Error('kernel tuning stopped');
            return work();
          });
        },
        onProgress: (done, total) => (this.progress = { done, total }),
      });
      // A device rebuilt mid-run may be another device: its timings are not this one's.
      if (this.ctx.generation !== generation) throw new Error('the GPU device was rebuilt during tuning');
      this.runner.kernels = outcome.choices;
      this.outcome = outcome;
      this.state = 'tuned';
      const status = this.status();
      this.logger.info({ choices: status.choices, gain: status.gain, ms: Math.round(outcome.elapsedMs) }, 'kernels tuned');
      if (this.config.cacheDir) {
        const file = await writeCachedChoices(this.config.cacheDir, this.key(), outcome);
        this.logger.info({ file }, 'kernel choices cached');
      }
    } catch (err) {
      if (this.stopped) return;
      this.state = 'failed';
      this.error = (err as Error).message;
      this.logger.warn({ err }, 'kernel tuning failed; the default kernels stay');
    }
  }

  status(): KernelTuningStatus {
    const k = this.runner.kernels;
    return {
      state: this.state,
      progress: this.state === 'tuning' ? this.progress : null,
      choices: {
        gemm: gemmChoiceName(k.gemm),
        smallGemm: gemmChoiceName(k.smallGemm),
        attention: attentionChoiceName(k.attention),
        rowWorkgroupSize: k.rowWorkgroupSize,
      },
      gain: this.outcome ? gainOf(this.outcome, this.startChoices) : null,
      error: this.error,
    };
  }

  /** Stop a pending or running tuning (at the next trial boundary) and wait for it. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }
}

function gainOf(o: TuneOutcome, start: KernelChoices): KernelTuningStatus['gain'] {
  const startNames = choiceNames(start);
  const pickedNames = choiceNames(o.choices);
  const out: NonNullable<KernelTuningStatus['gain']> = {};
  for (const kernel of Object.keys(startNames) as KernelClass[]) {
    const [from, to] = [startNames[kernel], pickedNames[kernel]];
    const ms = (name: string): number | null => o.timings.find((t) => t.kernel === kernel && t.candidate === name)?.ms ?? null;
    if (o.timings.some((t) => t.kernel === kernel)) out[kernel] = { startMs: ms(from), pickedMs: ms(to) };
  }
  return out;
}
