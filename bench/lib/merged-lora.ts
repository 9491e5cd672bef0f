/**
 * Baseline (a) of the gen-adapters benchmark: one merged model per adapter,
 * vLLM-without-LoRA / PEFT merge_and_unload style. The GPU holds ONE model;
 * a request for another adapter waits until the loaded model's requests are
 * done, then the runner is destroyed and a new one is built from that
 * adapter's merged weights (weights uploaded, KV cache and buffers created).
 *
 * Policy (first come, first served): requests are served in arrival order;
 * consecutive requests of the loaded adapter join its continuous batch; when
 * the head of the queue names another adapter, admission stops, the running
 * requests drain, and the model is swapped. Requests behind the head wait even
 * when they name the loaded adapter (no reordering: a reordering server trades
 * fairness for fewer swaps, and is not what this baseline measures).
 *
 * Merged weights are computed on the host before the clock starts (a real
 * deployment keeps merged checkpoints on disk); a swap counts the GPU side
 * only: destroying the old runner, uploading the new weights, creating the KV
 * cache, until the queue is idle. It does not count reading from disk, which
 * favours this baseline.
 */
import type { PetServeConfig } from '../../src/config/config.js';
import { DecoderRunner } from '../../src/engine/generation/decoder-runner.js';
import { KvBlockManager } from '../../src/engine/generation/kv-blocks.js';
import { kvCacheBlocks } from '../../src/engine/generation/kv-cache-gpu.js';
import { GenerationGateway, type GenerateInput, type GenerateOutput } from '../../src/gateway/generation.js';
import type { GpuContext } from '../../src/gpu/context.js';
import type { DecoderCheckpoint } from '../../src/model/decoder-checkpoint.js';
import type { DecoderLayerWeights, DecoderLinear, DecoderWeights } from '../../src/model/families/decoder/types.js';
import type { DecoderAdapter } from '../../src/pet/decoder-adapter.js';
import { StepScheduler, type StepReport } from '../../src/scheduler/generation/step-scheduler.js';
import type { TextTokenizer } from '../../src/tokenizer/text-tokenizer.js';

/**
 * W += scale·B·A on the module's rows of the fused GEMM (qkv rows colOffset..,
 * gate|up rows colOffset..), and on lm_head; modules_to_save heads replace it.
 * Untouched tensors are shared with `base` (nothing here mutates them).
 */
export function mergeLora(base: DecoderWeights, adapter: DecoderAdapter): DecoderWeights {
  const layers: DecoderLayerWeights[] = base.layers.map((l) => ({ ...l }));
  const copied = new Set<DecoderLinear>();
  const own = (layer: DecoderLayerWeights, gemm: 'qkv' | 'o' | 'up' | 'down'): DecoderLinear => {
    const l = layer[gemm];
    if (copied.has(l)) return l;
    const c: DecoderLinear = { ...l, weight: l.weight.slice() };
    copied.add(c);
    layer[gemm] = c;
    return c;
  };
  let lmHead = base.lmHead;
  if (adapter.lmHeadOff !== null) {
    const size = base.embed.length;
    lmHead = adapter.floats.slice(adapter.lmHeadOff, adapter.lmHeadOff + size);
  }
  let lmHeadOwned = adapter.lmHeadOff !== null;
  const f = adapter.floats;
  for (const d of adapter.loras) {
    let w: Float32Array;
    if (d.gemm === 'lm_head') {
      if (!lmHeadOwned) {
        lmHead = (base.lmHead ?? base.embed).slice();
        lmHeadOwned = true;
      }
      w = lmHead!;
    } else {
      w = own(layers[d.layer]!, d.gemm).weight;
    }
    const { K, N, rank, scale, aOff, bOff, colOffset } = d;
    // Row n of the module is row colOffset + n of the fused [outDim, K] weight.
    for (let n = 0; n < N; n++) {
      const row = (colOffset + n) * K;
      for (let j = 0; j < rank; j++) {
        const b = scale * f[bOff + n * rank + j]!;
        if (b === 0) continue;
        const a = aOff + j * K;
        for (let k = 0; k < K; k++) w[row + k] = w[row + k]! + b * f[a + k]!;
      }
    }
  }
  return { ...base, layers, lmHead };
}

const noAdapter = (): never => {
  throw new Error('merged models serve no adapters');
};
/** Every request runs on the merged model as on a base model; the scheduler never asks for an adapter. */
const NO_ADAPTERS = { resolve: noAdapter };

interface Pending {
  taskId: string | null;
  input: GenerateInput;
  queuedAt: number;
  resolve(r: MergedOutput): void;
  reject(e: unknown): void;
}

export interface MergedOutput extends GenerateOutput {
  /** ms the request waited in the swap queue before its model took it. */
  swapQueueMs: number;
}

export interface SwapStats {
  swaps: number;
  swapMs: number[];
}

export class MergedModelServer {
  private readonly queue: Pending[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  private loaded: { taskId: string | null; runner: DecoderRunner; scheduler: StepScheduler; gateway: GenerationGateway } | null = null;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  readonly swapStats: SwapStats = { swaps: 0, swapMs: [] };
  /** Largest GPU footprint seen (weights + KV + buffers of the one resident model). */
  peakWeightsBytes = 0;
  kvBytes = 0;

  constructor(
    private readonly ctx: GpuContext,
    private readonly config: PetServeConfig,
    private readonly base: DecoderCheckpoint,
    private readonly tokenizer: TextTokenizer | null,
    /** Merged weights per task id (null = the base model). */
    private readonly mergedWeights: (taskId: string | null) => DecoderWeights,
    private readonly onStep?: (s: StepReport) => void,
  ) {}

  /** Load `taskId`'s model before the clock starts (the others start with theirs loaded too). */
  async preload(taskId: string | null): Promise<void> {
    await this.swapTo(taskId, false);
  }

  generate(taskId: string | null, input: GenerateInput): Promise<MergedOutput> {
    return new Promise<MergedOutput>((resolve, reject) => {
      this.queue.push({ taskId, input, queuedAt: performance.now(), resolve, reject });
      this.wake?.();
      this.kick();
    });
  }

  private kick(): void {
    if (this.loop) return;
    this.loop = this.run().finally(() => {
      this.loop = null;
      if (this.queue.length > 0) this.kick();
    });
  }

  private async run(): Promise<void> {
    while (this.queue.length > 0 || this.inFlight.size > 0) {
      const head = this.queue[0];
      if (head && (this.loaded === null || head.taskId !== this.loaded.taskId)) {
        // Drain, then swap.
        await Promise.all(this.inFlight);
        await this.swapTo(head.taskId, true);
        continue;
      }
      while (this.queue.length > 0 && this.queue[0]!.taskId === this.loaded!.taskId) this.admit(this.queue.shift()!);
      // Wait for a new arrival or a finished request, whichever first.
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        if (this.inFlight.size > 0) void Promise.race(this.inFlight).then(() => resolve());
      });
      this.wake = null;
    }
  }

  private admit(p: Pending): void {
    const started = performance.now();
    // The merged model IS the adapter: the request runs on it as on a base model.
    const job = this.loaded!.gateway.generate({ ...p.input, task: null }).then(
      (out) => p.resolve({ ...out, swapQueueMs: started - p.queuedAt }),
      (err: unknown) => p.reject(err),
    );
    const tracked = job.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  private async swapTo(taskId: string | null, count: boolean): Promise<void> {
    const t0 = performance.now();
    if (this.loaded) {
      await this.loaded.scheduler.close();
      this.loaded.runner.destroy();
      this.loaded = null;
    }
    const checkpoint: DecoderCheckpoint = { ...this.base, weights: this.mergedWeights(taskId) };
    const g = this.config.generation;
    const dtype = this.config.model.dtype;
    if (dtype === 'auto') throw new Error('the merged baseline needs model.dtype pinned to f32 or f16 (benchGenerationConfig does)');
    const numBlocks = kvCacheBlocks(checkpoint.config, g.blockTokens, dtype, g.kvCacheBytes, this.ctx.capabilities.maxStorageBufferBindingSize);
    const runner = new DecoderRunner(this.ctx, checkpoint, { dtype, numBlocks, blockTokens: g.blockTokens, poolBytes: 0 });
    const blocks = new KvBlockManager({ numBlocks, blockTokens: g.blockTokens, prefixCaching: g.prefixCaching });
    const scheduler = new StepScheduler(runner, blocks, NO_ADAPTERS, {
      maxStepTokens: g.maxStepTokens,
      maxRunning: g.maxRunning,
      maxWaiting: g.maxWaiting,
      maxContext: checkpoint.config.maxPositionEmbeddings,
      ...(this.onStep ? { onStep: this.onStep } : {}),
    });
    const gateway = new GenerationGateway({ scheduler, tokenizer: this.tokenizer, config: checkpoint.config, hasTask: () => false, defaultMaxTokens: g.defaultMaxTokens });
    // The swap is done when the uploads are.
    await this.ctx.device.queue.onSubmittedWorkDone();
    this.loaded = { taskId, runner, scheduler, gateway };
    this.peakWeightsBytes = Math.max(this.peakWeightsBytes, runner.weights.bytes);
    this.kvBytes = runner.kv.bytes;
    if (count) {
      this.swapStats.swaps += 1;
      this.swapStats.swapMs.push(performance.now() - t0);
    }
  }

  async close(): Promise<void> {
    await this.loop;
    if (this.loaded) {
      await this.loaded.scheduler.close();
      this.loaded.runner.destroy();
      this.loaded = null;
    }
  }
}
