// Bootstrap of generation over a causal decoder, without HTTP: the `generate`
// command, benchmarks and (next) the OpenAI routes start from here so the KV
// cache, the adapter pool and the step scheduler are set up one way.

import type { PetServeConfig } from '../config/config.js';
import { DecoderRunner } from '../engine/generation/decoder-runner.js';
import { KvBlockManager } from '../engine/generation/kv-blocks.js';
import { kvBlockBytes, kvCacheBlocks } from '../engine/generation/kv-cache-gpu.js';
import { GenerationGateway } from '../gateway/generation.js';
import type { ProfileMode } from '../gpu/batch-encoder.js';
import type { GpuContext } from '../gpu/context.js';
import { loadDecoderCheckpoint, type DecoderCheckpoint } from '../model/decoder-checkpoint.js';
import type { DevicePetPool } from '../pet/device-pool.js';
import { DecoderTaskRegistry, type DecoderTaskInfo } from '../pet/decoder-registry.js';
import { StepScheduler, type StepReport } from '../scheduler/generation/step-scheduler.js';
import { TextTokenizer } from '../tokenizer/text-tokenizer.js';
import { ConfigError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { silentLogger } from '../util/logger.js';
import { chooseDtype } from './dtype-choice.js';
import { KernelTuning, kernelTuningConfig } from './kernel-tuning.js';

export interface GenerationRuntime {
  checkpoint: DecoderCheckpoint;
  tokenizer: TextTokenizer | null;
  registry: DecoderTaskRegistry;
  runner: DecoderRunner;
  blocks: KvBlockManager;
  scheduler: StepScheduler;
  gateway: GenerationGateway;
  /** The decoder's kernel self-tuning; null unless the options asked for it (`serve` does). */
  kernelTuning: KernelTuning | null;
  /** Register a PEFT adapter directory as task `id` (hot: no restart, running sequences untouched). */
  registerTask(id: string, dir: string): Promise<DecoderTaskInfo>;
  /** Unregister: new requests get 404; its GPU pool copy and cached prefix blocks go (running sequences finish first). */
  unregisterTask(id: string): void;
  close(): Promise<void>;
}

export interface GenerationRuntimeOptions {
  modelDir: string;
  /** Task id → PEFT LoRA directory, registered before the first request. */
  tasks?: ReadonlyMap<string, string>;
  onStep?: (s: StepReport) => void;
  /** Time every step on the device: per phase (true) or per dispatch ('dispatches'). */
  profile?: ProfileMode;
  /** With `profile`: time only every Nth step (default 1; 0 = never). */
  profileEverySteps?: number;
  /** Benchmark baselines: PEFT-style one adapter per step. */
  oneAdapterPerStep?: boolean;
  /** The base model's id (generation.taskSlo may name it). */
  baseModelId?: string;
  /** Ids other models of the server answer under: no adapter may take them (DecoderTaskRegistry). */
  idTakenElsewhere?: (id: string) => boolean;
  /**
   * The device's PET pool when an encoder is served on the same device (its Runtime.pool):
   * adapters page through the encoder's budget and LRU. Without it the runtime makes a pool
   * of its own of pets.poolBytes (`generate`, benchmarks), destroyed at close.
   */
  pool?: DevicePetPool;
  /**
   * Apply the cached kernel pick and tune in the background per config.kernels (a server does; one-shot
   * commands and benchmarks keep the defaults, so their figures do not move under them).
   */
  kernelTuning?: { logger: Logger };
}

export async function startGenerationRuntime(ctx: GpuContext, config: PetServeConfig, opts: GenerationRuntimeOptions): Promise<GenerationRuntime> {
  const checkpoint = await loadDecoderCheckpoint(opts.modelDir);
  const tokenizer = await TextTokenizer.load(opts.modelDir);
  const registry = new DecoderTaskRegistry(checkpoint, (id) => id === opts.baseModelId || (opts.idTakenElsewhere?.(id) ?? false));
  for (const [id, dir] of opts.tasks ?? []) await registry.register(id, dir);

  const g = config.generation;
  if (config.model.dtype === 'f16' && !ctx.capabilities.shaderF16) throw new ConfigError('model.dtype f16 needs the shader-f16 feature, which this adapter lacks');
  const dc = checkpoint.config;
  // Beside an encoder the decoder stores in the dtype of the pool they share (the encoder chose it).
  const { dtype } = opts.pool
    ? { dtype: opts.pool.dtype }
    : await chooseDtype(ctx, config.model.dtype, checkpoint.weights, { M: 64, N: dc.intermediateSize, K: dc.hiddenSize }, opts.kernelTuning?.logger ?? silentLogger, config.kernels.cacheDir);
  const numBlocks = kvCacheBlocks(checkpoint.config, g.blockTokens, dtype, g.kvCacheBytes, ctx.capabilities.maxStorageBufferBindingSize);
  if (numBlocks < 1) {
    throw new ConfigError(`generation.kvCacheBytes ${g.kvCacheBytes} holds no KV block (one block is ${kvBlockBytes(checkpoint.config, g.blockTokens, dtype)} bytes)`);
  }
  const runner = new DecoderRunner(ctx, checkpoint, {
    dtype,
    numBlocks,
    blockTokens: g.blockTokens,
    ...(opts.pool ? { pool: opts.pool } : { poolBytes: config.pets.poolBytes }),
  });
  const kernelTuning = opts.kernelTuning ? await KernelTuning.start(ctx, runner, kernelTuningConfig(config), opts.kernelTuning.logger) : null;
  const blocks = new KvBlockManager({ numBlocks, blockTokens: g.blockTokens, prefixCaching: g.prefixCaching });
  const scheduler = new StepScheduler(runner, blocks, registry, {
    maxStepTokens: g.maxStepTokens,
    maxRunning: g.maxRunning,
    maxWaiting: g.maxWaiting,
    maxContext: checkpoint.config.maxPositionEmbeddings,
    maxOfflineWaitMs: g.maxOfflineWaitMs,
    defaultTtftSloMs: g.defaultTtftSloMs,
    ...(opts.onStep ? { onStep: opts.onStep } : {}),
    ...(opts.profile ? { profile: opts.profile } : {}),
    ...(opts.profileEverySteps !== undefined ? { profileEverySteps: opts.profileEverySteps } : {}),
    ...(opts.oneAdapterPerStep ? { oneAdapterPerStep: true } : {}),
  });
  kernelTuning?.setIdleProbe(() => scheduler.stats.running === 0 && scheduler.stats.waiting === 0);
  const gateway = new GenerationGateway({
    scheduler,
    tokenizer,
    config: checkpoint.config,
    hasTask: (id) => registry.has(id),
    defaultMaxTokens: g.defaultMaxTokens,
    taskSlo: (task) => {
      const key = task ?? opts.baseModelId;
      return (key !== undefined ? g.taskSlo[key] : undefined) ?? {};
    },
  });
  let closed = false;
  return {
    checkpoint,
    tokenizer,
    registry,
    runner,
    blocks,
    scheduler,
    gateway,
    kernelTuning,
    registerTask(id, dir) {
      return registry.register(id, dir);
    },
    unregisterTask(id) {
      const key = registry.unregister(id);
      // A pinned copy (a sequence still running) stays until it ends, then ages out of the LRU pool.
      runner.pool.drop(key);
      blocks.dropCacheKey(key);
    },
    async close() {
      if (closed) return;
      closed = true;
      await kernelTuning?.stop();
      await scheduler.close();
      runner.destroy();
    },
  };
}
