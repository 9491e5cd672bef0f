import { BatchEncoder, type PhaseTiming, type ProfileMode } from '../gpu/batch-encoder.js';
import type { GpuContext } from '../gpu/context.js';
import { defaultKernelChoices } from '../kernels/tuning.js';
import { bytesPerElement, type Dtype, type KernelChoices } from '../kernels/types.js';
import type { TuneWorkload } from '../kernels/tuner/tune-workload.js';
import type { BertCheckpoint } from '../model/checkpoint.js';
import type { BertConfig } from '../model/families/bert.js';
import type { OperatorDecisions } from '../model/pet-graph-input.js';
import { DevicePetPool } from '../pet/device-pool.js';
import type { PetGpuPool, PoolStats } from '../pet/gpu-pool.js';
import type { PackedPet } from '../pet/packed-pet.js';
import type { TaskRegistry } from '../pet/registry.js';
import { ConfigError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { packBatch, validateSequence, type PackedBatch, type SequenceBatch } from './batch-input.js';
import { ModelDevice } from './device-state.js';
import { buildPetPlan, type PetPlan } from './pet-plan.js';
import { uploadPlan } from './plan-upload.js';
import { BatchReadback, resultRow, type OutputSelection, type RunResult, type TaskRowResult } from './readback.js';
import { withPinnedTasks, withTaskLeases } from './task-leases.js';

export type { OutputSelection, RunResult, TaskRowResult } from './readback.js';

/** One row of a mixed batch: a task id (null = the base model) and its tokens. */
export interface TaskRow {
  task: string | null;
  inputIds: readonly number[];
  tokenTypeIds?: readonly number[] | undefined;
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
  /**
   * Every row passed the serving path's checks (src/gateway: ids, segment ids,
   * length) and is not checked again. Direct callers (the CLI, benchmarks) leave
   * it unset and get the runner's own check, which names the caller's row.
   */
  rowsChecked?: boolean;
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
  /** Kernel specialisations to start with (default: tuning.ts); the self-tuner may replace them later. */
  kernels?: KernelChoices;
  /** Tasks to serve (PETs); without it only the base model runs. */
  registry?: TaskRegistry | undefined;
  /**
   * The device's PET pool, shared with any other model served on the device (a
   * decoder's adapters page through it too); the runner does not destroy it.
   */
  pool?: DevicePetPool | undefined;
  /**
   * Without `pool`: the budget of a pool of the runner's own (config `pets.poolBytes`;
   * clamped to the adapter's largest storage binding). A registry needs one of the two.
   */
  poolBytes?: number;
  /** Benchmark baseline: one dispatch per task segment instead of one segmented dispatch per kind and site. */
  perTaskDispatch?: boolean;
}

/**
 * Runs batches of one base model (and the PETs of registered tasks) on one GPU
 * context, one batch at a time (queued). Its parts: the model's device state
 * and loss recovery (device-state.ts), task leases and pool pins
 * (task-leases.ts), the batch's PET plan (pet-plan.ts) and its upload
 * (plan-upload.ts), the readbacks (readback.ts).
 */
export class ModelRunner {
  private readonly device: ModelDevice;
  /** Null for a runner without tasks. */
  private readonly pool: DevicePetPool | null;
  private readonly ownsPool: boolean;
  private queue: Promise<unknown> = Promise.resolve();
  /** Read at every batch's recording, so a tuned set takes effect from the next batch on. */
  kernels: KernelChoices;
  readonly dtype: Dtype;
  readonly registry: TaskRegistry | null;

  private constructor(
    private readonly ctx: GpuContext,
    readonly checkpoint: BertCheckpoint,
    private readonly opts: RunnerOptions,
  ) {
    this.dtype = opts.dtype;
    this.kernels = opts.kernels ?? defaultKernelChoices;
    this.registry = opts.registry ?? null;
    this.device = new ModelDevice(ctx, checkpoint, opts.dtype, opts.logger);
    this.ownsPool = opts.pool === undefined && opts.registry !== undefined;
    this.pool = opts.pool ?? (opts.registry ? new DevicePetPool(ctx, opts.dtype, opts.poolBytes!, opts.logger) : null);
    this.registry?.onRemoved((id) => this.pool?.drop(id));
  }

  static async create(ctx: GpuContext, checkpoint: BertCheckpoint, opts: RunnerOptions): Promise<ModelRunner> {
    if (opts.dtype === 'f16' && !ctx.capabilities.shaderF16) {
      throw new ConfigError(
        `dtype f16 needs the shader-f16 feature, which adapter '${ctx.capabilities.adapterName}' lacks; use dtype f32`,
      );
    }
    if (opts.registry && opts.pool === undefined && opts.poolBytes === undefined) {
      throw new ConfigError('a runner with a task registry needs a PET pool: the device\'s shared pool, or poolBytes (config pets.poolBytes)');
    }
    if (opts.pool && opts.pool.dtype !== opts.dtype) {
      throw new ConfigError(`the device's PET pool holds ${opts.pool.dtype} but this runner serves ${opts.dtype}: every model sharing a pool serves one dtype`);
    }
    const runner = new ModelRunner(ctx, checkpoint, opts);
    runner.device.ensure();
    // Warm-up: compile the base pipelines and size the arena with a small batch.
    await runner.run({ inputIds: [[0]] }, { lastHiddenState: true, pooled: true, logits: true });
    return runner;
  }

  get numLabels(): number {
    return this.checkpoint.numLabels;
  }

  memory(): MemoryReport {
    const st = this.device.state;
    return {
      baseModelBytes: st?.weights.bytes ?? 0,
      activationArenaBytes: st?.arena.bytes ?? 0,
      pool: this.pool?.stats() ?? null,
    };
  }

  /** Per-task memory: host bytes, GPU pool bytes, residency. */
  taskMemory(): TaskMemory[] {
    const pool = this.pool;
    return (this.registry?.list() ?? []).map((t) => ({
      id: t.id,
      kind: t.kind,
      hostBytes: t.hostBytes,
      gpuBytes: pool?.footprint({ floats: { length: t.packedFloats }, words: { length: t.packedWords } }) ?? 0,
      resident: pool?.isResident(t.id) ?? false,
    }));
  }

  /** Serialise batches: one in flight at a time. */
  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(() => this.device.withRecovery(work));
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Run `work` with the device to itself, queued between batches like one (the self-tuner's trials).
   * Unlike a batch it is not retried after a device loss: the caller sees the DeviceLostError.
   */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The hot kernels of this model at its typical shapes, for the self-tuner. */
  tuneWorkload(): TuneWorkload {
    const c = this.checkpoint.config;
    const H = c.hiddenSize;
    const I = c.intermediateSize;
    // A batch like the scheduler forms them: a few sequences of mixed length (~300 tokens).
    const seqLengths = [128, 64, 48, 32, 16, 16].map((n) => Math.min(n, c.maxPositionEmbeddings));
    return {
      dtype: this.dtype,
      linears: [
        { N: 3 * H, K: H },
        { N: H, K: H },
        { N: I, K: H },
        { N: H, K: I },
      ],
      largeRows: seqLengths.reduce((a, b) => a + b, 0),
      smallRows: null,
      attention: { seqLengths, heads: c.numAttentionHeads, headDim: H / c.numAttentionHeads },
      norm: { kind: 'layernorm', dim: H },
    };
  }

  /** Run one base-model batch (queued behind any batch in flight). */
  async run(batch: SequenceBatch, outputs: OutputSelection, opts: { profile?: ProfileMode } = {}): Promise<RunResult> {
    // Validate before queueing so bad input fails fast and never touches the GPU.
    const packed = packBatch(batch, this.checkpoint.config);
    return this.enqueue(() => this.execute(packed, null, outputs, opts));
  }

  /**
   * Run a mixed batch: rows of many tasks (and base rows) in one pass. Answers
   * come back in the caller's row order.
   */
  async runTasks(rows: readonly TaskRow[], outputs: OutputSelection, opts: RunTasksOptions = {}): Promise<MixedRunResult> {
    const registry = this.registry;
    if (!registry && rows.some((r) => r.task !== null)) {
      throw new ConfigError('this runner has no task registry; only base rows (task null) can run');
    }
    if (!registry || rows.every((r) => r.task === null)) {
      // Base rows only: the plain graph, no PET tables, rows in caller order (packing validates them unless rowsChecked).
      const packedRows = packBatch({ inputIds: rows.map((r) => r.inputIds), tokenTypeIds: tokenTypes(rows) }, this.checkpoint.config, {
        alreadyValidated: opts.rowsChecked === true,
      });
      const r = await this.enqueue(() => this.execute(packedRows, null, outputs, opts));
      const H = this.checkpoint.config.hiddenSize;
      const L = this.numLabels;
      return { rows: rows.map((_, i) => resultRow(r, i, H, i * L, L)), phases: r.phases };
    }
    // Validate in caller order, so an error names the caller's row; the batch is packed
    // once, after the plan has ordered its rows.
    if (opts.rowsChecked !== true) rows.forEach((r, i) => validateSequence(r.inputIds, r.tokenTypeIds, this.checkpoint.config, i));
    const taskIds = rows.flatMap((r) => (r.task === null ? [] : [r.task]));
    return withTaskLeases(registry, taskIds, (packedById) => this.enqueue(() => this.executeTasks(rows, packedById, outputs, opts)));
  }

  private async executeTasks(
    rows: readonly TaskRow[],
    packedById: ReadonlyMap<string, PackedPet>,
    outputs: OutputSelection,
    opts: RunTasksOptions,
  ): Promise<MixedRunResult> {
    const { config, family } = this.checkpoint;
    // The pool of this device generation: the batch pins in it and binds it (a loss makes both a new one on the retry).
    const pool = this.pool!.current();
    return withPinnedTasks(pool, packedById, async (resident) => {
      const plan = buildPetPlan(
        config,
        family,
        rows.map((r) => ({ task: r.task === null ? null : resident.get(r.task)!, inputIds: r.inputIds, tokenTypeIds: r.tokenTypeIds })),
        this.numLabels,
      );
      const packed = packBatch({ inputIds: plan.inputIds, tokenTypeIds: plan.tokenTypeIds }, config, { alreadyValidated: true });
      const operators = opts.operators?.(plan, config, bytesPerElement(this.dtype));
      const r = await this.execute(packed, { plan, pool, operators }, outputs, opts);
      const H = config.hiddenSize;
      const result = new Array<TaskRowResult>(rows.length);
      plan.order.forEach((callerRow, i) => (result[callerRow] = resultRow(r, i, H, plan.logitsOffset[i]!, plan.logitsWidth[i]!)));
      return { rows: result, phases: r.phases };
    });
  }

  private async execute(
    packed: PackedBatch,
    tasks: { plan: PetPlan; pool: PetGpuPool; operators: OperatorDecisions | undefined } | null,
    outputs: OutputSelection,
    opts: { profile?: ProfileMode },
  ): Promise<RunResult> {
    const st = this.device.ensure();
    const plan = tasks?.plan ?? null;
    const { config, family } = this.checkpoint;
    const { shape } = packed;
    const e = bytesPerElement(this.dtype);
    const logitsElems = plan ? plan.logitsElems : shape.sequences * this.numLabels;
    const buffers = family.batchBuffers(st.arena, config, this.dtype, shape, logitsElems);
    const device = this.ctx.device;
    device.queue.writeBuffer(buffers.tokenTable, 0, packed.tokenTable);
    device.queue.writeBuffer(buffers.keyRange, 0, packed.keyRange);
    device.queue.writeBuffer(buffers.clsRows, 0, packed.clsRows);
    const pet = tasks
      ? {
          ...uploadPlan(device, st.arena, tasks.pool.buffer, tasks.plan, this.checkpoint, e, this.opts.perTaskDispatch === true),
          operators: tasks.operators,
        }
      : null;

    const enc = new BatchEncoder(st.encoderResources, { profile: opts.profile ?? false, label: `${family.name}-batch` });
    family.recordForward(enc, config, st.weights, buffers, shape, this.kernels, pet);
    const readback = new BatchReadback(this.dtype, config.hiddenSize, shape, logitsElems);
    readback.request(enc, buffers, outputs);
    const { readbacks, phases } = await enc.submit();
    return readback.decode(readbacks, packed.lengths, phases);
  }

  /** Release GPU memory (the context is owned and destroyed by the caller; a shared pool by whoever made it). */
  async dispose(): Promise<void> {
    await this.queue;
    this.device.release();
    if (this.ownsPool) this.pool?.destroy();
  }
}

function tokenTypes(rows: readonly TaskRow[]): (readonly number[])[] | undefined {
  return rows.some((r) => r.tokenTypeIds) ? rows.map((r) => r.tokenTypeIds ?? r.inputIds.map(() => 0)) : undefined;
}
