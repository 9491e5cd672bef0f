import { EncoderResources } from '../gpu/batch-encoder.js';
import { ActivationArena } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import type { Dtype } from '../kernels/types.js';
import type { ModelCheckpoint } from '../model/checkpoint.js';
import type { GpuBertWeights } from '../model/families/bert.js';
import { DeviceLostError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

/** Everything one model holds on one device generation (the PET pool is the device's: DevicePetPool). */
export interface DeviceState {
  generation: number;
  weights: GpuBertWeights;
  arena: ActivationArena;
  encoderResources: EncoderResources;
}

const rebuilding = new WeakMap<GpuContext, Promise<void>>();

/**
 * Rebuild a lost device once, however many of its users (the encoder's
 * batches, the decoder's steps) meet the loss. `lostGeneration` is the
 * generation the caller's work ran on: when the context has moved past it,
 * another user has rebuilt the device already, and rebuilding again would
 * destroy a healthy device under that user's next batch.
 */
export function recoverLostDevice(ctx: GpuContext, lostGeneration: number): Promise<void> {
  const pending = rebuilding.get(ctx);
  if (pending) return pending;
  if (ctx.generation !== lostGeneration) return Promise.resolve();
  const rebuild = ctx.recover().finally(() => rebuilding.delete(ctx));
  rebuilding.set(ctx, rebuild);
  return rebuild;
}

/**
 * A model's GPU state (weights, activation arena, uniform/staging buffers) on
 * one context, rebuilt from the host copy when the context reports a new
 * device generation (after a device loss). A batch that meets a loss is
 * retried once on the rebuilt device.
 */
export class ModelDevice {
  private current: DeviceState | null = null;

  constructor(
    private readonly ctx: GpuContext,
    private readonly checkpoint: ModelCheckpoint,
    private readonly dtype: Dtype,
    private readonly logger: Logger,
  ) {}

  /** The state as it is (null before the first batch and after release), without rebuilding it. */
  get state(): DeviceState | null {
    return this.current;
  }

  /** The state of the current device generation, built (or rebuilt after a loss) on first use. */
  ensure(): DeviceState {
    if (this.current && this.current.generation === this.ctx.generation) return this.current;
    if (this.current) {
      this.logger.warn({ generation: this.ctx.generation }, 're-uploading model weights to the rebuilt device');
      this.release();
    }
    const device = this.ctx.device;
    this.current = {
      generation: this.ctx.generation,
      weights: this.checkpoint.family.uploadWeights(device, this.checkpoint.weights, this.dtype),
      arena: new ActivationArena(device),
      encoderResources: new EncoderResources(this.ctx),
    };
    return this.current;
  }

  release(): void {
    if (!this.current) return;
    try {
      this.current.weights.destroy();
      this.current.arena.destroy();
      this.current.encoderResources.destroy();
    } catch {
      // buffers of a lost device may already be gone
    }
    this.current = null;
  }

  /** Run `work`; on a device loss rebuild the device and run it once more. */
  async withRecovery<T>(work: () => Promise<T>): Promise<T> {
    if (this.ctx.isLost) await recoverLostDevice(this.ctx, this.ctx.generation);
    const generation = this.ctx.generation;
    try {
      return await work();
    } catch (err) {
      if (!(err instanceof DeviceLostError) && !this.ctx.isLost) throw err;
      this.logger.error({ err: String(err) }, 'device lost during a batch; rebuilding and retrying once');
      await recoverLostDevice(this.ctx, generation);
      try {
        return await work();
      } catch (retryErr) {
        throw new DeviceLostError(`batch failed again after device rebuild: ${String(retryErr)}`, { cause: retryErr });
      }
    }
  }
}
