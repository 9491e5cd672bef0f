import { BatchEncoder, EncoderResources, type PhaseTiming, type ProfileMode } from '../../gpu/batch-encoder.js';
import { ActivationArena } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { tuning } from '../../kernels/tuning.js';
import { bytesPerElement, type Dtype } from '../../kernels/types.js';
import type { DecoderCheckpoint } from '../../model/decoder-checkpoint.js';
import { recordDecoderStep, stepActivations, type DecoderAdapterInput } from '../../model/families/decoder/graph.js';
import { uploadDecoderWeights } from '../../model/families/decoder/gpu-weights.js';
import type { GpuDecoderWeights, GpuKvCache } from '../../model/families/decoder/types.js';
import type { DecoderAdapter } from '../../pet/decoder-adapter.js';
import { PetGpuPool } from '../../pet/gpu-pool.js';
import { f16ArrayToF32 } from '../../util/f16.js';
import { uploadSegmentTables } from '../plan-upload.js';
import { createKvCache } from './kv-cache-gpu.js';
import { buildStepInputs, type StepSequence } from './step-inputs.js';

export interface DecoderRunnerOptions {
  dtype: Dtype;
  /** KV cache geometry (the host block manager must use the same). */
  numBlocks: number;
  blockTokens: number;
  /** Bytes of the adapter pool (shared PET GPU pool); 0 = base model only. */
  poolBytes: number;
}

export interface StepOutput {
  /** Logits per caller sequence (its row of the step), null where not wanted. */
  logits: (Float32Array | null)[];
  phases: PhaseTiming[] | null;
}

/**
 * Runs decoder steps on one device: the base weights once, the paged KV cache,
 * the adapter pool, and one recorded graph + one submit per step. It executes
 * what it is given; which sequences and tokens form a step is the step
 * scheduler's decision (src/scheduler/generation/).
 */
export class DecoderRunner {
  readonly weights: GpuDecoderWeights;
  readonly kv: GpuKvCache;
  readonly pool: PetGpuPool<DecoderAdapter>;
  private readonly arena: ActivationArena;
  private readonly resources: EncoderResources;

  constructor(
    private readonly ctx: GpuContext,
    readonly checkpoint: DecoderCheckpoint,
    readonly options: DecoderRunnerOptions,
  ) {
    const device = ctx.device;
    this.weights = uploadDecoderWeights(device, checkpoint.config, checkpoint.weights, options.dtype);
    this.kv = createKvCache(device, checkpoint.config, options.numBlocks, options.blockTokens, options.dtype);
    this.pool = new PetGpuPool<DecoderAdapter>(device, options.dtype, Math.max(4096, options.poolBytes));
    this.arena = new ActivationArena(device);
    this.resources = new EncoderResources(ctx);
  }

  get dtype(): Dtype {
    return this.options.dtype;
  }

  /** One step over `seqs` (any mix of prefill chunks and decode tokens, adapters and base). */
  async runStep(seqs: readonly StepSequence[], profile: ProfileMode = false): Promise<StepOutput> {
    const c = this.checkpoint.config;
    const device = this.ctx.device;
    const inputs = buildStepInputs(c, seqs);
    const shape = { tokens: inputs.tokenIds.length, sequences: seqs.length, logitRows: inputs.logitRows.length, maxBlocksPerSeq: inputs.maxBlocksPerSeq };
    if (shape.tokens === 0) return { logits: seqs.map(() => null), phases: null };
    const b = stepActivations(this.arena, c, this.dtype, shape);
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
        pool: this.pool.buffer,
        scratch: this.arena.get('dec.loraScratch', Math.max(1, inputs.lora.scratchElems) * e),
        sites: inputs.lora.sites,
        scales: inputs.lora.scales,
        taskEmbeds: inputs.lora.taskEmbeds,
        lmHead: inputs.lora.lmHead,
        taskHeads: inputs.lora.taskHeads,
        ranges: uploadSegmentTables(device, this.arena, inputs.lora.tables),
      };
    }
    const enc = new BatchEncoder(this.resources, { profile, label: 'decoder-step' });
    recordDecoderStep(enc, c, this.weights, this.kv, b, shape, tuning.gemmVariant, lora);
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

  destroy(): void {
    this.weights.destroy();
    this.kv.destroy();
    this.pool.destroy();
    this.arena.destroy();
    this.resources.destroy();
  }
}
