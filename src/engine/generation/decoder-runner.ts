import { BatchEncoder, EncoderResources, type PhaseTiming, type ProfileMode } from '../../gpu/batch-encoder.js';
import { ActivationArena } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { defaultKernelChoices } from '../../kernels/tuning.js';
import { bytesPerElement, type Dtype, type KernelChoices } from '../../kernels/types.js';
import type { TuneWorkload } from '../../kernels/tuner/tune-workload.js';
import type { DecoderCheckpoint } from '../../model/decoder-checkpoint.js';
import { recordDecoderStep, stepActivations, type DecoderAdapterInput } from '../../model/families/decoder/graph.js';
import { uploadDecoderWeights } from '../../model/families/decoder/gpu-weights.js';
import type { GpuDecoderWeights, GpuKvCache } from '../../model/families/decoder/types.js';
import { DevicePetPool } from '../../pet/device-pool.js';
import { ConfigError, DeviceLostError } from '../../util/errors.js';
import { f16ArrayToF32 } from '../../util/f16.js';
import { recoverLostDevice } from '../device-state.js';
import { uploadSegmentTables } from '../plan-upload.js';
import { createKvCache } from './kv-cache-gpu.js';
import { buildStepInputs, type StepSequence } from './step-inputs.js';

export interface DecoderRunnerOptions {
  dtype: Dtype;
  /** KV cache geometry (the host block manager must use the same). */
  numBlocks: number;
  blockTokens: number;
  /**
   * The device's PET pool, shared with the encoder served beside (one budget,
   * one LRU); the runner does not destroy it. It must hold `dtype`.
   */
  pool?: DevicePetPool;
  /** Without `pool`: the budget of a pool of the runner's own (0 = base model only: one page). */
  poolBytes?: number;
}

/** What the runner holds on one device generation; all of it goes with a device loss. */
interface DecoderDeviceState {
  generation: number;
  weights: GpuDecoderWeights;
  kv: GpuKvCache;
  arena: ActivationArena;
  resources: EncoderResources;
}

export interface StepOutput {
  /** Logits per caller sequence (its row of the step), null where not wanted. */
  logits: (Float32Array | null)[];
  phases: PhaseTiming[] | null;
}

/**
 * Runs decoder steps on one device: the base weights once, the paged KV cache,
 * the adapter pool (the device's, shared with the encoder), and one recorded
 * graph + one submit per step. It executes what it is given; which sequences
 * and tokens form a step is the step scheduler's decision
 * (src/scheduler/generation/).
 *
 * After a device loss `recoverDevice()` rebuilds the device and
 * `deviceGeneration()` this runner's state on it (weights from the host copy,
 * an empty KV cache); the KV contents and the pool's copies are gone, so the
 * scheduler restarts its sequences from their tokens (step-scheduler.ts,
 * followDevice).
 */
export class DecoderRunner {
  /** Read at every step's recording, so a tuned set takes effect from the next step on. */
  kernels: KernelChoices = defaultKernelChoices;
  private stepQueue: Promise<unknown> = Promise.resolve();
  readonly pool: DevicePetPool;
  private readonly ownsPool: boolean;
  private state: DecoderDeviceState | null = null;

  constructor(
    private readonly ctx: GpuContext,
    readonly checkpoint: DecoderCheckpoint,
    readonly options: DecoderRunnerOptions,
  ) {
    if (options.pool && options.pool.dtype !== options.dtype) {
      throw new ConfigError(`the device's PET pool holds ${options.pool.dtype} but the decoder serves ${options.dtype}: every model sharing a pool serves one dtype`);
    }
    this.ownsPool = options.pool === undefined;
    this.pool = options.pool ?? new DevicePetPool(ctx, options.dtype, options.poolBytes ?? 0);
    this.ensure();
  }

  get dtype(): Dtype {
    return this.options.dtype;
  }

  get weights(): GpuDecoderWeights {
    return this.ensure().weights;
  }

  get kv(): GpuKvCache {
    return this.ensure().kv;
  }

  /** The device is lost and not rebuilt yet (recoverDevice). */
  get deviceLost(): boolean {
    return this.ctx.isLost;
  }

  /** Rebuild the lost device: once, whoever of its users (this runner, the encoder's) meets the loss first. */
  recoverDevice(): Promise<void> {
    return recoverLostDevice(this.ctx, this.ctx.generation);
  }

  /**
   * The device generation steps run on now, this runner's state re-created
   * on it first when the device was replaced. A generation other than the one
   * a sequence's KV blocks and pool pin were made on means both are gone.
   */
  deviceGeneration(): number {
    return this.ensure().generation;
  }

  private ensure(): DecoderDeviceState {
    if (this.state && this.state.generation === this.ctx.generation) return this.state;
    this.release();
    const { config, weights } = this.checkpoint;
    const { dtype, numBlocks, blockTokens } = this.options;
    const device = this.ctx.device;
    this.state = {
      generation: this.ctx.generation,
      weights: uploadDecoderWeights(device, config, weights, dtype),
      kv: createKvCache(device, config, numBlocks, blockTokens, dtype),
      arena: new ActivationArena(device),
      resources: new EncoderResources(this.ctx),
    };
    return this.state;
  }

  /** One step over `seqs` (any mix of prefill chunks and decode tokens, adapters and base), queued behind any exclusive work. */
  runStep(seqs: readonly StepSequence[], profile: ProfileMode = false): Promise<StepOutput> {
    const next = this.stepQueue.then(() => this.recordAndRunStep(seqs, profile));
    this.stepQueue = next.catch(() => undefined);
    return next;
  }

  private async recordAndRunStep(seqs: readonly StepSequence[], profile: ProfileMode): Promise<StepOutput> {
    const st = this.state;
    // The step's KV slots and adapter offsets were planned on the generation deviceGeneration() reported:
    // on any other device they name nothing, so a device that moved on is a loss for this step.
    if (st === null || st.generation !== this.ctx.generation || this.ctx.isLost) {
      throw new DeviceLostError('GPU device lost before the decoder step');
    }
    const c = this.checkpoint.config;
    const device = this.ctx.device;
    const inputs = buildStepInputs(c, seqs);
    const shape = { tokens: inputs.tokenIds.length, sequences: seqs.length, logitRows: inputs.logitRows.length, maxBlocksPerSeq: inputs.maxBlocksPerSeq };
    if (shape.tokens === 0) return { logits: seqs.map(() => null), phases: null };
    const b = stepActivations(st.arena, c, this.dtype, shape);
    const q = device.queue;
    q.writeBuffer(b.tokenIds, 0, inputs.tokenIds);
    q.writeBuffer(b.tokenTable, 0, inputs.tokenTable);
    q.writeBuffer(b.positions, 0, inputs.positions);
    q.writeBuffer(b.slotMapping, 0, inputs.slotMapping);
    q.writeBuffer(b.rowInfo, 0, inputs.rowInfo);
    q.writeBuffer(b.blockTables, 0, inputs.blockTables);
    if (inputs.logitRows.length > 0) q.writeBuffer(b.logitRows, 0, inputs.logitRows);

    let lora: DecoderAdapterInput | null = null;
    if (inputs.lora) {
      const e = bytesPerElement(this.dtype);
      lora = {
        pool: this.pool.current().buffer,
        scratch: st.arena.get('dec.loraScratch', Math.max(1, inputs.lora.scratchElems) * e),
        sites: inputs.lora.sites,
        scales: inputs.lora.scales,
        taskEmbeds: inputs.lora.taskEmbeds,
        lmHead: inputs.lora.lmHead,
        taskHeads: inputs.lora.taskHeads,
        ranges: uploadSegmentTables(device, st.arena, inputs.lora.tables),
      };
    }
    const enc = new BatchEncoder(st.resources, { profile, label: 'decoder-step' });
    recordDecoderStep(enc, c, st.weights, st.kv, b, shape, this.kernels, lora);
    const V = c.vocabSize;
    const L = shape.logitRows;
    if (L > 0) enc.readback(b.logits, 0, L * V * bytesPerElement(this.dtype));
    const result = await enc.submit();
    const logits: (Float32Array | null)[] = seqs.map(() => null);
    if (L > 0) {
      const raw = result.readbacks[0]!;
      const all = this.dtype === 'f16' ? f16ArrayToF32(new Uint16Array(raw, 0, L * V)) : new Float32Array(raw, 0, L * V);
      inputs.logitSeqs.forEach((seq, i) => (logits[seq] = all.slice(i * V, (i + 1) * V)));
    }
    return { logits, phases: result.phases };
  }

  /** Run `work` with the device to itself, between steps (the self-tuner's trials); steps queue behind it. */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const next = this.stepQueue.then(work);
    this.stepQueue = next.catch(() => undefined);
    return next;
  }

  /** The hot kernels of this model at its typical shapes, for the self-tuner. */
  tuneWorkload(): TuneWorkload {
    const c = this.checkpoint.config;
    const H = c.hiddenSize;
    const qkv = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * c.headDim;
    const I = c.intermediateSize;
    const linears = [
      { N: qkv, K: H },
      { N: H, K: c.numAttentionHeads * c.headDim },
      // SwiGLU's gate and up are one fused GEMM.
      { N: c.mlp === 'swiglu' ? 2 * I : I, K: H },
      { N: H, K: I },
    ];
    return {
      dtype: this.dtype,
      linears,
      // A prefill chunk, and a decode step of a few sequences.
      largeRows: 256,
      smallRows: 8,
      attention: null,
      norm: { kind: c.norm === 'rms' ? 'rmsnorm' : 'layernorm', dim: H },
    };
  }

  destroy(): void {
    this.release();
    if (this.ownsPool) this.pool.destroy();
  }

  private release(): void {
    const st = this.state;
    this.state = null;
    if (!st) return;
    try {
      st.weights.destroy();
      st.kv.destroy();
      st.arena.destroy();
      st.resources.destroy();
    } catch {
      // buffers of a lost device may already be gone
    }
  }
}
