import { DeviceLostError } from '../util/errors.js';
import { alignUp, GrowableBuffer } from './buffers.js';
import type { GpuCapabilities, GpuContext } from './context.js';
import type { KernelSpec } from './pipeline-cache.js';
import type { Uniforms } from './uniforms.js';

export interface BufferRange {
  buffer: GPUBuffer;
  offset?: number;
  size?: number;
}
/** Storage bindings in binding order (binding 1, 2, ...); null = binding absent in this specialisation. */
export type Bindings = (GPUBuffer | BufferRange | null)[];

interface DispatchOp {
  kind: 'dispatch';
  label: string;
  spec: KernelSpec;
  bindings: Bindings;
  uniformOffset: number;
  uniformSize: number;
  workgroups: [number, number, number];
}
interface CopyOp {
  kind: 'copy';
  src: GPUBuffer;
  srcOffset: number;
  dst: GPUBuffer;
  dstOffset: number;
  bytes: number;
}
interface PhaseOp {
  kind: 'phase';
  name: string;
}
type Op = DispatchOp | CopyOp | PhaseOp;

/** Timestamp profiling: off, one timed pass per phase, or one per dispatch (named by its label). */
export type ProfileMode = boolean | 'dispatches';

export interface PhaseTiming {
  name: string;
  ms: number;
}

export interface BatchResult {
  /** One ArrayBuffer per `readback()` call, in call order. */
  readbacks: ArrayBuffer[];
  /** Device time per phase, when the batch was built with `profile: true`. */
  phases: PhaseTiming[] | null;
}

/**
 * Per-context reusable resources for batch encoding: the uniform slot buffer
 * and the readback staging buffer. Owned by whoever runs batches serially.
 */
export class EncoderResources {
  readonly uniforms: GrowableBuffer;
  readonly staging: GrowableBuffer;
  readonly generation: number;

  constructor(readonly ctx: GpuContext) {
    const d = ctx.device;
    this.generation = ctx.generation;
    this.uniforms = new GrowableBuffer(d, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, 'uniform-slots');
    this.staging = new GrowableBuffer(d, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'readback-staging');
  }

  destroy(): void {
    this.uniforms.destroy();
    this.staging.destroy();
  }
}

const UNIFORM_ALIGN = 256; // minUniformBufferOffsetAlignment's guaranteed maximum

/**
 * Records a whole batch (all layers, all dispatches), then encodes it into ONE
 * command encoder, submits once and maps one staging buffer at the end: no
 * readback until the batch is done.
 *
 * Every dispatch gets its own 256-byte-aligned slot in one uniform buffer,
 * written with a single writeBuffer before submit (uniform contents cannot
 * change between dispatches of one command buffer otherwise).
 */
export class BatchEncoder {
  private readonly ops: Op[] = [];
  private uniformBytes: Uint8Array[] = [];
  private uniformCursor = 0;
  private readonly readbackRanges: { src: GPUBuffer; offset: number; bytes: number; stagingOffset: number }[] = [];
  private stagingCursor = 0;

  constructor(
    private readonly res: EncoderResources,
    private readonly opts: { profile?: ProfileMode; label?: string } = {},
  ) {}

  /** What the device allows, for kernels that pick a specialisation by its limits (e.g. workgroup memory). */
  get capabilities(): GpuCapabilities {
    return this.res.ctx.capabilities;
  }

  /** Start a named phase; with profiling on, each phase is its own timed compute pass. */
  phase(name: string): this {
    this.ops.push({ kind: 'phase', name });
    return this;
  }

  dispatch(
    label: string,
    spec: KernelSpec,
    uniforms: Uniforms | null,
    bindings: Bindings,
    workgroups: [number, number?, number?],
  ): this {
    const [x, y = 1, z = 1] = workgroups;
    if (x === 0 || y === 0 || z === 0) return this; // empty work: nothing to launch
    const max = this.res.ctx.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new RangeError(`${label}: dispatch ${x}x${y}x${z} exceeds ${max} workgroups per dimension`);
    }
    let uniformOffset = -1;
    let uniformSize = 0;
    if (uniforms) {
      const bytes = uniforms.toBytes();
      uniformOffset = this.uniformCursor;
      uniformSize = bytes.byteLength;
      this.uniformBytes.push(bytes);
      this.uniformCursor += alignUp(bytes.byteLength, UNIFORM_ALIGN);
    }
    this.ops.push({ kind: 'dispatch', label, spec, bindings, uniformOffset, uniformSize, workgroups: [x, y, z] });
    return this;
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): this {
    this.ops.push({ kind: 'copy', src, srcOffset, dst, dstOffset, bytes });
    return this;
  }

  /** Schedule `bytes` of `src` to be read back after the batch; returns its index in `readbacks`. */
  readback(src: GPUBuffer, offset: number, bytes: number): number {
    const stagingOffset = this.stagingCursor;
    this.readbackRanges.push({ src, offset, bytes: alignUp(bytes, 4), stagingOffset });
    this.stagingCursor += alignUp(bytes, 256);
    return this.readbackRanges.length - 1;
  }

  /** Encode the batch into one command encoder, submit it once, and map the readbacks (and timestamps). */
  async submit(): Promise<BatchResult> {
    const ctx = this.res.ctx;
    if (ctx.isLost || ctx.generation !== this.res.generation) throw new DeviceLostError('GPU device lost before submit');
    const device = ctx.device;
    const uniformBuffer = this.uploadUniforms(device);
    const profile = this.opts.profile !== undefined && this.opts.profile !== false && ctx.capabilities.timestampQuery;
    const phaseNames = profile ? this.timedPhases() : [];
    const querySet = profile ? device.createQuerySet({ type: 'timestamp', count: phaseNames.length * 2 }) : null;

    const encoder = device.createCommandEncoder({ label: this.opts.label ?? 'batch' });
    this.encodeOps(encoder, uniformBuffer, querySet);
    const readTotal = this.stagingCursor + (querySet ? phaseNames.length * 16 : 0);
    const staging = readTotal > 0 ? this.res.staging.get(readTotal) : null;
    const resolveBuffer = this.encodeReadbacks(encoder, staging, querySet, phaseNames.length);
    device.queue.submit([encoder.finish()]);

    try {
      return await this.readBack(staging, readTotal, querySet ? phaseNames : null);
    } finally {
      querySet?.destroy();
      resolveBuffer?.destroy();
    }
  }

  /** One uniform upload for the whole batch. */
  private uploadUniforms(device: GPUDevice): GPUBuffer | null {
    if (this.uniformCursor === 0) return null;
    const uniformBuffer = this.res.uniforms.get(this.uniformCursor);
    const all = new Uint8Array(this.uniformCursor);
    let off = 0;
    for (const b of this.uniformBytes) {
      all.set(b, off);
      off += alignUp(b.byteLength, UNIFORM_ALIGN);
    }
    device.queue.writeBuffer(uniformBuffer, 0, all);
    return uniformBuffer;
  }

  /** Phases to time (each its own pass): as recorded, or one per dispatch named by its label. */
  private timedPhases(): string[] {
    if (this.opts.profile === 'dispatches') {
      const split: Op[] = [];
      for (const op of this.ops) {
        if (op.kind === 'phase') continue;
        if (op.kind === 'dispatch') split.push({ kind: 'phase', name: op.label });
        split.push(op);
      }
      this.ops.splice(0, this.ops.length, ...split);
    }
    if (this.ops[0]?.kind !== 'phase') this.ops.unshift({ kind: 'phase', name: 'batch' });
    const phaseNames: string[] = [];
    for (const op of this.ops) if (op.kind === 'phase') phaseNames.push(op.name);
    return phaseNames;
  }

  /** All recorded ops: dispatches in one compute pass (one per phase when timed), copies between passes. */
  private encodeOps(encoder: GPUCommandEncoder, uniformBuffer: GPUBuffer | null, querySet: GPUQuerySet | null): void {
    const ctx = this.res.ctx;
    const device = ctx.device;
    let pass: GPUComputePassEncoder | null = null;
    let phaseIndex = -1;
    let phaseBegun = false;
    const beginPass = (): GPUComputePassEncoder => {
      const desc: GPUComputePassDescriptor = {};
      if (querySet && phaseIndex >= 0) {
        // A phase split by a copy spans several passes: begin stamp on its first, end stamp on each.
        desc.timestampWrites = phaseBegun
          ? { querySet, endOfPassWriteIndex: phaseIndex * 2 + 1 }
          : { querySet, beginningOfPassWriteIndex: phaseIndex * 2, endOfPassWriteIndex: phaseIndex * 2 + 1 };
        phaseBegun = true;
      }
      return encoder.beginComputePass(desc);
    };
    const endPass = (): void => {
      pass?.end();
      pass = null;
    };

    for (const op of this.ops) {
      if (op.kind === 'phase') {
        if (querySet) {
          endPass();
          phaseIndex += 1;
          phaseBegun = false;
        }
        continue;
      }
      if (op.kind === 'copy') {
        endPass();
        encoder.copyBufferToBuffer(op.src, op.srcOffset, op.dst, op.dstOffset, op.bytes);
        continue;
      }
      pass ??= beginPass();
      const pipeline = ctx.pipelines.get(op.spec);
      const entries: GPUBindGroupEntry[] = [];
      if (op.uniformOffset >= 0 && uniformBuffer) {
        entries.push({ binding: 0, resource: { buffer: uniformBuffer, offset: op.uniformOffset, size: op.uniformSize } });
      }
      op.bindings.forEach((b, i) => {
        if (b === null) return;
        const range = 'buffer' in b ? b : { buffer: b };
        entries.push({ binding: i + 1, resource: range });
      });
      const bindGroup = device.createBindGroup({ label: op.label, layout: pipeline.getBindGroupLayout(0), entries });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...op.workgroups);
    }
    endPass();
  }

  /** Copies of the readback ranges (and resolved timestamps, after them) into staging; returns the resolve buffer. */
  private encodeReadbacks(
    encoder: GPUCommandEncoder,
    staging: GPUBuffer | null,
    querySet: GPUQuerySet | null,
    phaseCount: number,
  ): GPUBuffer | null {
    for (const r of this.readbackRanges) {
      encoder.copyBufferToBuffer(r.src, r.offset, staging!, r.stagingOffset, r.bytes);
    }
    if (!querySet) return null;
    const resolveBuffer = this.res.ctx.device.createBuffer({
      size: phaseCount * 16,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    encoder.resolveQuerySet(querySet, 0, phaseCount * 2, resolveBuffer, 0);
    encoder.copyBufferToBuffer(resolveBuffer, 0, staging!, this.stagingCursor, phaseCount * 16);
    return resolveBuffer;
  }

  /** Wait for the batch, then copy every readback (and the phase times) out of the mapped staging buffer. */
  private async readBack(staging: GPUBuffer | null, readTotal: number, phaseNames: string[] | null): Promise<BatchResult> {
    const ctx = this.res.ctx;
    if (!staging) {
      await raceDeviceLoss(ctx, ctx.device.queue.onSubmittedWorkDone());
      return { readbacks: [], phases: null };
    }
    await raceDeviceLoss(ctx, staging.mapAsync(GPUMapMode.READ, 0, readTotal));
    const mapped = staging.getMappedRange(0, readTotal);
    const readbacks = this.readbackRanges.map((r) => mapped.slice(r.stagingOffset, r.stagingOffset + r.bytes));
    let phases: PhaseTiming[] | null = null;
    if (phaseNames) {
      const ts = new BigUint64Array(mapped.slice(this.stagingCursor, this.stagingCursor + phaseNames.length * 16));
      phases = phaseNames.map((name, i) => ({ name, ms: Number((ts[2 * i + 1] ?? 0n) - (ts[2 * i] ?? 0n)) / 1e6 }));
    }
    staging.unmap();
    return { readbacks, phases };
  }
}

/** Fail fast with DeviceLostError when the device dies while we wait on it. */
async function raceDeviceLoss<T>(ctx: GpuContext, work: Promise<T>): Promise<T> {
  // The loss promise resolves (never rejects) so it cannot become an unhandled rejection later.
  const lost = ctx.lostPromise().then((info) => ({ lost: info }));
  let outcome: { done: T } | { lost: GPUDeviceLostInfo };
  try {
    outcome = await Promise.race([work.then((done) => ({ done })), lost]);
  } catch (err) {
    if (ctx.isLost) throw new DeviceLostError('GPU device lost during batch', { cause: err });
    throw err;
  }
  if ('lost' in outcome) {
    throw new DeviceLostError(`GPU device lost during batch: ${outcome.lost.message || outcome.lost.reason}`);
  }
  return outcome.done;
}
