import type { GpuContext } from '../gpu/context.js';
import type { Dtype } from '../kernels/types.js';
import type { Logger } from '../util/logger.js';
import { pagedBudget, PetGpuPool, poolFootprint, type PoolStats } from './gpu-pool.js';

/**
 * The one PET pool of a GPU device, shared by every model served on it: the
 * encoder's PETs and the decoder's adapters page through one budget
 * (`pets.poolBytes`) and one LRU, so a burst of one model's traffic evicts the
 * other model's idle entries; pins hold whichever model took them. Keys of the
 * two cannot meet (PetGpuPool, on the key space).
 *
 * A device loss takes the pool's buffer and everything paged into it: the pool
 * of each device generation is a new, empty PetGpuPool, and its users page in
 * again what they use next. A pin taken on an older generation's pool dies
 * with it (unpinning it there is harmless).
 */
export class DevicePetPool {
  /** The pool's size: pets.poolBytes clamped to the adapter's largest storage binding, in whole pages. */
  readonly budgetBytes: number;
  private pool: PetGpuPool | null = null;
  private generation = -1;

  constructor(
    private readonly ctx: GpuContext,
    readonly dtype: Dtype,
    wantedBytes: number,
    logger?: Logger,
  ) {
    const limit = ctx.capabilities.maxStorageBufferBindingSize;
    if (wantedBytes > limit) {
      logger?.warn({ wanted: wantedBytes, limit }, 'PET pool budget clamped to the largest storage binding of this adapter');
    }
    this.budgetBytes = pagedBudget(Math.min(wantedBytes, limit));
  }

  /** The pool of the current device generation, created empty on first use and after a device loss. */
  current(): PetGpuPool {
    const live = this.live();
    if (live) return live;
    this.release();
    this.pool = new PetGpuPool(this.ctx.device, this.dtype, this.budgetBytes);
    this.generation = this.ctx.generation;
    return this.pool;
  }

  /** Figures of the current generation's pool (zero use before the first page-in on it). */
  stats(): PoolStats {
    return this.live()?.stats() ?? { budgetBytes: this.budgetBytes, usedBytes: 0, residentTasks: 0, pageIns: 0, evictions: 0 };
  }

  isResident(key: string): boolean {
    return this.live()?.isResident(key) ?? false;
  }

  /** Pool bytes held by `key` now (whole pages), 0 when not resident. */
  residentBytes(key: string): number {
    return this.live()?.residentBytes(key) ?? 0;
  }

  /** Bytes a PET's blocks take in this pool when resident (before page rounding). */
  footprint(blocks: { floats: { length: number }; words: { length: number } }): number {
    return poolFootprint(this.dtype, blocks);
  }

  /** Drop `key`'s copy (its task went); false while it is pinned (it ages out of the LRU once unpinned). */
  drop(key: string): boolean {
    return this.live()?.drop(key) ?? true;
  }

  destroy(): void {
    this.release();
  }

  private live(): PetGpuPool | null {
    return this.pool !== null && this.generation === this.ctx.generation ? this.pool : null;
  }

  private release(): void {
    try {
      this.pool?.destroy();
    } catch {
      // the buffer of a lost device may already be gone
    }
    this.pool = null;
  }
}
