import { BatchEncoder, EncoderResources, type BufferRange, type PhaseTiming, type ProfileMode } from '../gpu/batch-encoder.js';
import { ActivationArena, alignUp } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import type { GemmVariant } from '../kernels/gemm.js';
import type { SegmentTables } from '../kernels/segmented.js';
import { tuning } from '../kernels/tuning.js';
import { bytesPerElement, type Dtype } from '../kernels/types.js';
import { batchBuffers, recordBertForward } from '../model/bert-graph.js';
import type { BertCheckpoint } from '../model/checkpoint.js';
import { uploadBertWeights, type GpuBertWeights } from '../model/gpu-weights.js';
import type { BertConfig } from '../model/bert-config.js';
import type { OperatorDecisions, PetGraphInput } from '../model/pet-graph-input.js';
import { PetGpuPool, type PoolStats, type ResidentPet } from '../pet/gpu-pool.js';
import type { PackedPet } from '../pet/packed-pet.js';
import type { TaskLease, TaskRegistry } from '../pet/registry.js';
import { ConfigError, DeviceLostError } from '../util/errors.js';
import { f16ArrayToF32 } from '../util/f16.js';
import type { Logger } from '../util/logger.js';
import { packBatch, type PackedBatch, type SequenceBatch } from './batch-input.js';
import { buildPetPlan, type PetPlan } from './pet-plan.js';

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

/** One row of a mixed batch: a task id (null = the base model) and its tokens. */
export interface TaskRow {
  task: string | null;
  inputIds: readonly number[];
  tokenTypeIds?: readonly number[] | undefined;
}

/** Per-row answer of a mixed batch, in the caller's row order. */
export interface TaskRowResult {
  /** [numLabels] of the row's task (base classifier for base rows), or null for embedding tasks. */
  logits: Float32Array | null;
  /** [hidden] pooled output (when requested). */
  pooled: Float32Array | null;
  /** [length × hidden] (when requested). */
  lastHiddenState: Float32Array | null;
}

export interface MixedRunResult {
  rows: TaskRowResult[];
  phases: PhaseTiming[] | null;
}

/**
 * Decides how one planned batch's PET operators are laid out (the operator
 * scheduler, src/scheduler/operator-scheduler.ts, passes one in; the engine only
 * applies the decisions).
 */
export type OperatorPlanner = (plan: PetPlan, cfg: BertConfig, dtypeBytes: number) => OperatorDecisions;

export interface RunTasksOptions {
  profile?: ProfileMode;
  operators?: OperatorPlanner | undefined;
}

export interface MemoryReport {
  baseModelBytes: number;
  activationArenaBytes: number;
  pool: PoolStats | null;
}

/** Memory of one registered task. */
export interface TaskMemory {
  id: string;
  kind: string;
  hostBytes: number;
  /** Bytes it takes in the GPU pool when resident (serving dtype, before page rounding). */
  gpuBytes: number;
  resident: boolean;
}

export interface RunnerOptions {
  dtype: Dtype;
  logger: Logger;
  gemmVariant?: GemmVariant;
  /** Tasks to serve (PETs); without it only the base model runs. */
  registry?: TaskRegistry;
  /** GPU PET pool budget (clamped to the adapter's largest storage binding). */
  poolBytes?: number;
  /** Benchmark baseline: one dispatch per task segment instead of one segmented dispatch per kind and site. */
  perTaskDispatch?: boolean;
}

interface DeviceState {
  generation: number;
  weights: GpuBertWeights;
  arena: ActivationArena;
  encoderResources: EncoderResources;
  pool: PetGpuPool | null;
}

const DEFAULT_POOL_BYTES = 256 * 1024 * 1024;

/**
 * Runs batches of one base model (and the PETs of registered tasks) on one GPU
 * context, one batch at a time. Owns the model's GPU state (weights, activation
 * arena, uniform/staging buffers, PET pool) and rebuilds it when the context
 * reports a new device generation (after a device loss); a batch that meets a
 * loss is retried once.
 */
export class ModelRunner {
  private state: DeviceState | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  readonly gemmVariant: GemmVariant;
  readonly dtype: Dtype;
  private readonly logger: Logger;
  readonly registry: TaskRegistry | null;

  private constructor(
    private readonly ctx: GpuContext,
    readonly checkpoint: BertCheckpoint,
    private readonly opts: RunnerOptions,
  ) {
    this.dtype = opts.dtype;
    this.logger = opts.logger;
    this.gemmVariant = opts.gemmVariant ?? tuning.gemmVariant;
    this.registry = opts.registry ?? null;
    this.registry?.onRemoved((id) => this.state?.pool?.drop(id));
  }

  static async create(ctx: GpuContext, checkpoint: BertCheckpoint, opts: RunnerOptions): Promise<ModelRunner> {
    if (opts.dtype === 'f16' && !ctx.capabilities.shaderF16) {
      throw new ConfigError(
        `dtype f16 needs the shader-f16 feature, which adapter '${ctx.capabilities.adapterName}' lacks; use dtype f32`,
      );
    }
    const runner = new ModelRunner(ctx, checkpoint, opts);
    runner.ensureDeviceState();
    // Warm-up: compile the base pipelines and size the arena with a small batch.
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
      pool: this.state?.pool?.stats() ?? null,
    };
  }

  /** Per-task memory: host bytes, GPU pool bytes, residency. */
  taskMemory(): TaskMemory[] {
    const pool = this.state?.pool ?? null;
    const e = bytesPerElement(this.dtype);
    return (this.registry?.list() ?? []).map((t) => ({
      id: t.id,
      kind: t.kind,
      hostBytes: t.hostBytes,
      gpuBytes: Math.ceil((t.packedFloats * e) / 4) * 4 + t.packedWords * 4,
      resident: pool?.isResident(t.id) ?? false,
    }));
  }

  private ensureDeviceState(): DeviceState {
    if (this.state && this.state.generation === this.ctx.generation) return this.state;
    if (this.state) {
      this.logger.warn({ generation: this.ctx.generation }, 're-uploading model weights to the rebuilt device');
      this.releaseState();
    }
    const device = this.ctx.device;
    let pool: PetGpuPool | null = null;
    if (this.registry) {
      const limit = this.ctx.capabilities.maxStorageBufferBindingSize;
      const wanted = this.opts.poolBytes ?? DEFAULT_POOL_BYTES;
      if (wanted > limit) {
        this.logger.warn({ wanted, limit }, 'PET pool budget clamped to the largest storage binding of this adapter');
      }
      pool = new PetGpuPool(device, this.dtype, Math.min(wanted, limit));
    }
    this.state = {
      generation: this.ctx.generation,
      weights: uploadBertWeights(device, this.checkpoint.weights, this.dtype),
      arena: new ActivationArena(device),
      encoderResources: new EncoderResources(this.ctx),
      pool,
    };
    return this.state;
  }

  private releaseState(): void {
    if (!this.state) return;
    try {
      this.state.weights.destroy();
      this.state.arena.destroy();
      this.state.encoderResources.destroy();
      this.state.pool?.destroy();
    } catch {
      // buffers of a lost device may already be gone
    }
    this.state = null;
  }

  /** Serialise batches: one in flight at a time. */
  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async withRecovery<T>(work: () => Promise<T>): Promise<T> {
    if (this.ctx.isLost) await this.ctx.recover();
    try {
      return await work();
    } catch (err) {
      if (!(err instanceof DeviceLostError) && !this.ctx.isLost) throw err;
      this.logger.error({ err: String(err) }, 'device lost during a batch; rebuilding and retrying once');
      await this.ctx.recover();
      try {
        return await work();
      } catch (retryErr) {
        throw new DeviceLostError(`batch failed again after device rebuild: ${String(retryErr)}`, { cause: retryErr });
      }
    }
  }

  /** Run one base-model batch (queued behind any batch in flight). */
  async run(batch: SequenceBatch, outputs: OutputSelection, opts: { profile?: ProfileMode } = {}): Promise<RunResult> {
    // Validate before queueing so bad input fails fast and never touches the GPU.
    const packed = packBatch(batch, this.checkpoint.config);
    return this.enqueue(() => this.withRecovery(() => this.execute(packed, null, outputs, opts)));
  }

  /**
   * Run a mixed batch: rows of many tasks (and base rows) in one pass. Answers
   * come back in the caller's row order.
   */
  async runTasks(rows: readonly TaskRow[], outputs: OutputSelection, opts: RunTasksOptions = {}): Promise<MixedRunResult> {
    if (!this.registry && rows.some((r) => r.task !== null)) {
      throw new ConfigError('this runner has no task registry; only base rows (task null) can run');
    }
    // Validate token ids up front (caller order) so errors name the caller's row.
    const packedRows = packBatch({ inputIds: rows.map((r) => r.inputIds), tokenTypeIds: tokenTypes(rows) }, this.checkpoint.config);
    if (rows.every((r) => r.task === null)) {
      // Base rows only: the plain graph, no PET tables.
      const r = await this.enqueue(() => this.withRecovery(() => this.execute(packedRows, null, outputs, opts)));
      const H = this.checkpoint.config.hiddenSize;
      const L = this.numLabels;
      return {
        rows: rows.map((_, i) => ({
          logits: r.logits && L > 0 ? r.logits.slice(i * L, (i + 1) * L) : null,
          pooled: r.pooled ? r.pooled.slice(i * H, (i + 1) * H) : null,
          lastHiddenState: r.lastHiddenState?.[i] ?? null,
        })),
        phases: r.phases,
      };
    }
    const leases = new Map<string, TaskLease>();
    try {
      for (const r of rows) if (r.task !== null && !leases.has(r.task)) leases.set(r.task, this.registry!.acquire(r.task));
      // Host copies of the PETs (may read from disk) before taking the GPU queue.
      const packedById = new Map(await Promise.all([...leases].map(async ([id, l]) => [id, await l.packed()] as const)));
      return await this.enqueue(() => this.withRecovery(() => this.executeTasks(rows, packedById, outputs, opts)));
    } finally {
      for (const l of leases.values()) l.release();
    }
  }

  private async executeTasks(
    rows: readonly TaskRow[],
    packedById: ReadonlyMap<string, PackedPet>,
    outputs: OutputSelection,
    opts: RunTasksOptions,
  ): Promise<MixedRunResult> {
    const st = this.ensureDeviceState();
    const pool = st.pool;
    const pinned: string[] = [];
    try {
      const resident = new Map<string, ResidentPet>();
      for (const [id, packed] of packedById) {
        resident.set(id, pool!.pin(id, () => packed));
        pinned.push(id);
      }
      const plan = buildPetPlan(
        this.checkpoint.config,
        rows.map((r) => ({ task: r.task === null ? null : resident.get(r.task)!, inputIds: r.inputIds, tokenTypeIds: r.tokenTypeIds })),
        this.numLabels,
      );
      const packed = packBatch({ inputIds: plan.inputIds, tokenTypeIds: plan.tokenTypeIds }, this.checkpoint.config);
      const operators = opts.operators?.(plan, this.checkpoint.config, bytesPerElement(this.dtype));
      const r = await this.execute(packed, plan, outputs, opts, operators);
      const H = this.checkpoint.config.hiddenSize;
      const byPlanRow = plan.order.map((_, i): TaskRowResult => ({
        logits: r.logits && plan.logitsWidth[i]! > 0 ? r.logits.slice(plan.logitsOffset[i]!, plan.logitsOffset[i]! + plan.logitsWidth[i]!) : null,
        pooled: r.pooled ? r.pooled.slice(i * H, (i + 1) * H) : null,
        lastHiddenState: r.lastHiddenState?.[i] ?? null,
      }));
      const result = new Array<TaskRowResult>(rows.length);
      plan.order.forEach((callerRow, i) => (result[callerRow] = byPlanRow[i]!));
      return { rows: result, phases: r.phases };
    } finally {
      for (const id of pinned) pool?.unpin(id);
    }
  }

  private async execute(
    packed: PackedBatch,
    plan: PetPlan | null,
    outputs: OutputSelection,
    opts: { profile?: ProfileMode },
    operators?: OperatorDecisions,
  ): Promise<RunResult> {
    const st = this.ensureDeviceState();
    const cfg = this.checkpoint.config;
    const H = cfg.hiddenSize;
    const L = this.numLabels;
    const { shape } = packed;
    const e = bytesPerElement(this.dtype);
    const logitsElems = plan ? plan.logitsElems : shape.sequences * L;
    const buffers = batchBuffers(st.arena, cfg, this.dtype, shape, logitsElems);
    const queue = this.ctx.device.queue;
    queue.writeBuffer(buffers.tokenTable, 0, packed.tokenTable);
    queue.writeBuffer(buffers.keyRange, 0, packed.keyRange);
    queue.writeBuffer(buffers.clsRows, 0, packed.clsRows);
    const pet = plan ? { ...this.uploadPlan(st, plan, e), operators } : null;

    const enc = new BatchEncoder(st.encoderResources, { profile: opts.profile ?? false, label: 'bert-batch' });
    recordBertForward(enc, cfg, st.weights, buffers, shape, this.gemmVariant, pet);
    const hiddenIdx = outputs.lastHiddenState ? enc.readback(buffers.hidden, 0, shape.tokens * H * e) : -1;
    const pooledIdx = outputs.pooled ? enc.readback(buffers.pooled, 0, shape.sequences * H * e) : -1;
    const logitsIdx = outputs.logits && logitsElems > 0 ? enc.readback(buffers.logits, 0, logitsElems * e) : -1;
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
      logits: logitsIdx >= 0 ? toF32(readbacks[logitsIdx], logitsElems) : null,
      phases,
    };
  }

  /** Upload a plan's slot and segment tables into arena buffers (one write each). */
  private uploadPlan(st: DeviceState, plan: PetPlan, e: number): PetGraphInput {
    const device = this.ctx.device;
    const arena = st.arena;
    const cfg = this.checkpoint.config;
    const tokenSlot = arena.get('petTokenSlot', plan.tokenSlot.byteLength);
    const seqSlot = arena.get('petSeqSlot', plan.seqSlot.byteLength);
    const slotTable = arena.get('petSlotTable', plan.slotTable.byteLength);
    device.queue.writeBuffer(tokenSlot, 0, plan.tokenSlot);
    device.queue.writeBuffer(seqSlot, 0, plan.seqSlot);
    device.queue.writeBuffer(slotTable, 0, plan.slotTable);

    // All segment tables in one blob, each section 256-byte aligned (storage binding offsets).
    const all: SegmentTables[] = [];
    let scratchElems = 0;
    let maxDeltaN = 0;
    for (const [key, s] of plan.sites) {
      for (const t of [s.shrink, s.expand, s.sparse, s.adapterDown, s.adapterUp]) if (t) all.push(t);
      scratchElems = Math.max(scratchElems, s.scratchElems);
      if (s.shrink || s.sparse) {
        const gemm = key.split(':')[1];
        maxDeltaN = Math.max(maxDeltaN, gemm === 'qkv' ? 3 * cfg.hiddenSize : gemm === 'intermediate' ? cfg.intermediateSize : cfg.hiddenSize);
      }
    }
    if (plan.taskHeads) all.push(plan.taskHeads);
    let bytes = 0;
    const placed = new Map<SegmentTables, { records: number; tiles: number }>();
    for (const t of all) {
      const records = bytes;
      bytes = alignUp(bytes + t.records.byteLength);
      const tiles = bytes;
      bytes = alignUp(bytes + t.tiles.byteLength);
      placed.set(t, { records, tiles });
    }
    const blob = new Uint8Array(Math.max(bytes, 256));
    for (const t of all) {
      const at = placed.get(t)!;
      blob.set(new Uint8Array(t.records.buffer, t.records.byteOffset, t.records.byteLength), at.records);
      blob.set(new Uint8Array(t.tiles.buffer, t.tiles.byteOffset, t.tiles.byteLength), at.tiles);
    }
    const tablesBuffer = arena.get('petTables', blob.byteLength);
    device.queue.writeBuffer(tablesBuffer, 0, blob);
    const range = (offset: number, size: number): BufferRange => ({ buffer: tablesBuffer, offset, size: Math.max(4, size) });

    return {
      numSlots: plan.numSlots,
      tokenSlot,
      seqSlot,
      slotTable,
      pool: st.pool!.buffer,
      delta: arena.get('petDelta', Math.max(1, plan.deltaRows * maxDeltaN) * e),
      deltaRow0: plan.deltaRow0,
      deltaRows: plan.deltaRows,
      scratch: arena.get('petScratch', Math.max(1, scratchElems) * e),
      sites: plan.sites,
      perTaskDispatch: this.opts.perTaskDispatch === true,
      baseHeadRows: plan.baseHeadRows,
      taskHeads: plan.taskHeads,
      ranges: (t) => {
        const at = placed.get(t);
        if (!at) throw new Error('segment table was not uploaded');
        return { records: range(at.records, t.records.byteLength), tiles: range(at.tiles, t.tiles.byteLength) };
      },
    };
  }

  /** Release GPU memory (the context is owned and destroyed by the caller). */
  async dispose(): Promise<void> {
    await this.queue;
    this.releaseState();
  }
}

function tokenTypes(rows: readonly TaskRow[]): (readonly number[])[] | undefined {
  return rows.some((r) => r.tokenTypeIds) ? rows.map((r) => r.tokenTypeIds ?? r.inputIds.map(() => 0)) : undefined;
}
