import { BatchEncoder, EncoderResources, type PhaseTiming } from '../gpu/batch-encoder.js';
import { ActivationArena } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import type { GemmVariant } from '../kernels/gemm.js';
import { tuning } from '../kernels/tuning.js';
import { bytesPerElement, type Dtype } from '../kernels/types.js';
import { batchBuffers, recordBertForward } from '../model/bert-graph.js';
import type { BertCheckpoint } from '../model/checkpoint.js';
import { uploadBertWeights, type GpuBertWeights } from '../model/gpu-weights.js';
import { ConfigError, DeviceLostError } from '../util/errors.js';
import { f16ArrayToF32 } from '../util/f16.js';
import type { Logger } from '../util/logger.js';
import { packBatch, type SequenceBatch } from './batch-input.js';

export interface OutputSelection {
  lastHiddenState?: boolean;
  pooled?: boolean;
  logits?: boolean;
}

export interface RunResult {
  /** Per sequence, [length × hidden] row-major (when requested). */
  lastHiddenState: Float32Array[] | null;
  /** [sequences × hidden] (when requested). */
  pooled: Float32Array | null;
  /** [sequences × labels] (when requested and the model has a classifier). */
  logits: Float32Array | null;
  /** Device time per phase, when run with `profile`. */
  phases: PhaseTiming[] | null;
}

export interface MemoryReport {
  baseModelBytes: number;
  activationArenaBytes: number;
}

interface DeviceState {
  generation: number;
  weights: GpuBertWeights;
  arena: ActivationArena;
  encoderResources: EncoderResources;
}

/**
 * Runs batches of one base model on one GPU context, one batch at a time.
 * Owns the model's GPU state (weights, activation arena, uniform/staging
 * buffers) and rebuilds it when the context reports a new device generation
 * (after a device loss); a batch that meets a loss is retried once.
 */
export class ModelRunner {
  private state: DeviceState | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly ctx: GpuContext,
    readonly checkpoint: BertCheckpoint,
    readonly dtype: Dtype,
    private readonly logger: Logger,
    readonly gemmVariant: GemmVariant,
  ) {}

  static async create(
    ctx: GpuContext,
    checkpoint: BertCheckpoint,
    opts: { dtype: Dtype; logger: Logger; gemmVariant?: GemmVariant },
  ): Promise<ModelRunner> {
    if (opts.dtype === 'f16' && !ctx.capabilities.shaderF16) {
      throw new ConfigError(`dtype f16 needs the shader-f16 feature, which adapter '${ctx.capabilities.adapterName}' lacks; use dtype f32`);
    }
    const runner = new ModelRunner(ctx, checkpoint, opts.dtype, opts.logger, opts.gemmVariant ?? tuning.gemmVariant);
    runner.ensureDeviceState();
    // Warm-up: compile every pipeline and size the arena with a small batch.
    await runner.run({ inputIds: [[0]] }, { lastHiddenState: true, pooled: true, logits: true });
    return runner;
  }

  get numLabels(): number {
    return this.checkpoint.numLabels;
  }

  memory(): MemoryReport {
    return {
      baseModelBytes: this.state?.weights.bytes ?? 0,
      activationArenaBytes: this.state?.arena.bytes ?? 0,
    };
  }

  private ensureDeviceState(): DeviceState {
    if (this.state && this.state.generation === this.ctx.generation) return this.state;
    if (this.state) {
      this.logger.warn({ generation: this.ctx.generation }, 're-uploading model weights to the rebuilt device');
      this.releaseState();
    }
    const device = this.ctx.device;
    this.state = {
      generation: this.ctx.generation,
      weights: uploadBertWeights(device, this.checkpoint.weights, this.dtype),
      arena: new ActivationArena(device),
      encoderResources: new EncoderResources(this.ctx),
    };
    return this.state;
  }

  private releaseState(): void {
    if (!this.state) return;
    try {
      this.state.weights.destroy();
      this.state.arena.destroy();
      this.state.encoderResources.destroy();
    } catch {
      // buffers of a lost device may already be gone
    }
    this.state = null;
  }

  /** Run one batch (queued behind any batch in flight). */
  async run(batch: SequenceBatch, outputs: OutputSelection, opts: { profile?: boolean } = {}): Promise<RunResult> {
    // Validate before queueing so bad input fails fast and never touches the GPU.
    const packed = packBatch(batch, this.checkpoint.config);
    const next = this.queue.then(() => this.runWithRecovery(packed, outputs, opts));
    this.queue = next.catch(() => undefined);
    return await next;
  }

  private async runWithRecovery(
    packed: ReturnType<typeof packBatch>,
    outputs: OutputSelection,
    opts: { profile?: boolean },
  ): Promise<RunResult> {
    if (this.ctx.isLost) await this.ctx.recover();
    try {
      return await this.runOnce(packed, outputs, opts);
    } catch (err) {
      if (!(err instanceof DeviceLostError) && !this.ctx.isLost) throw err;
      this.logger.error({ err: String(err) }, 'device lost during a batch; rebuilding and retrying once');
      await this.ctx.recover();
      try {
        return await this.runOnce(packed, outputs, opts);
      } catch (retryErr) {
        throw new DeviceLostError(`batch failed again after device rebuild: ${String(retryErr)}`, { cause: retryErr });
      }
    }
  }

  private async runOnce(
    packed: ReturnType<typeof packBatch>,
    outputs: OutputSelection,
    opts: { profile?: boolean },
  ): Promise<RunResult> {
    const st = this.ensureDeviceState();
    const cfg = this.checkpoint.config;
    const H = cfg.hiddenSize;
    const L = this.numLabels;
    const { shape } = packed;
    const buffers = batchBuffers(st.arena, cfg, this.dtype, shape, L);
    const queue = this.ctx.device.queue;
    queue.writeBuffer(buffers.tokenTable, 0, packed.tokenTable);
    queue.writeBuffer(buffers.keyRange, 0, packed.keyRange);
    queue.writeBuffer(buffers.clsRows, 0, packed.clsRows);

    const enc = new BatchEncoder(st.encoderResources, { profile: opts.profile === true, label: 'bert-batch' });
    recordBertForward(enc, cfg, st.weights, buffers, shape, this.gemmVariant);
    const e = bytesPerElement(this.dtype);
    const hiddenIdx = outputs.lastHiddenState ? enc.readback(buffers.hidden, 0, shape.tokens * H * e) : -1;
    const pooledIdx = outputs.pooled ? enc.readback(buffers.pooled, 0, shape.sequences * H * e) : -1;
    const logitsIdx = outputs.logits && L > 0 ? enc.readback(buffers.logits, 0, shape.sequences * L * e) : -1;
    const { readbacks, phases } = await enc.submit();

    const toF32 = (raw: ArrayBuffer | undefined, n: number): Float32Array => {
      if (!raw) throw new Error('missing readback');
      return this.dtype === 'f16' ? f16ArrayToF32(new Uint16Array(raw, 0, n)) : new Float32Array(raw, 0, n);
    };
    let lastHiddenState: Float32Array[] | null = null;
    if (hiddenIdx >= 0) {
      const all = toF32(readbacks[hiddenIdx], shape.tokens * H);
      lastHiddenState = [];
      let row = 0;
      for (const len of packed.lengths) {
        lastHiddenState.push(all.slice(row * H, (row + len) * H));
        row += len;
      }
    }
    return {
      lastHiddenState,
      pooled: pooledIdx >= 0 ? toF32(readbacks[pooledIdx], shape.sequences * H) : null,
      logits: logitsIdx >= 0 ? toF32(readbacks[logitsIdx], shape.sequences * L) : null,
      phases,
    };
  }

  /** Release GPU memory (the context is owned and destroyed by the caller). */
  async dispose(): Promise<void> {
    await this.queue;
    this.releaseState();
  }
}
