import { bytesPerElement, type Dtype } from '../kernels/types.js';
import { f32ArrayToF16 } from '../util/f16.js';
import { PetServeError } from '../util/errors.js';
import type { PackedPet } from './packed-pet.js';

/**
 * Why a page-in failed: the PET is larger than the whole budget ('budget', it
 * never fits), or the space it needs is held by pinned PETs ('pinned', it fits
 * once one of them is unpinned).
 */
export type PoolShortage = 'budget' | 'pinned';

/** The pool cannot hold a PET even after evicting every unpinned one. */
export class PoolExhaustedError extends PetServeError {
  constructor(
    message: string,
    readonly shortage: PoolShortage = 'pinned',
  ) {
    super('POOL_EXHAUSTED', message);
  }
}

/** What the pool stores of a PET: one float block and one u32 block (encoder PETs and decoder adapters alike). */
export interface PoolBlocks {
  floats: Float32Array;
  words: Uint32Array;
}

/** A PET resident in the pool: its blocks' element offsets inside the pool buffer. */
export interface ResidentPet<P extends PoolBlocks = PackedPet> {
  /** Its pool key (see PetGpuPool on the key space). */
  taskId: string;
  packed: P;
  /** Offset of the float block, in elements of the pool dtype. */
  floatBase: number;
  /** Offset of the u32 block, in u32 words. */
  wordBase: number;
  bytes: number;
  firstPage: number;
  pageCount: number;
  pins: number;
  lastUsed: number;
}

export interface PoolStats {
  budgetBytes: number;
  usedBytes: number;
  residentTasks: number;
  pageIns: number;
  evictions: number;
}

export const POOL_PAGE_BYTES = 4096;

/** The budget a pool of `wantedBytes` really has: whole pages, at least one. */
export function pagedBudget(wantedBytes: number, pageBytes = POOL_PAGE_BYTES): number {
  return Math.max(1, Math.floor(wantedBytes / pageBytes)) * pageBytes;
}

/** Bytes a PET's blocks occupy in a pool of `dtype` (before page rounding). */
export function poolFootprint(dtype: Dtype, blocks: { floats: { length: number }; words: { length: number } }): number {
  const floatBytes = Math.ceil((blocks.floats.length * bytesPerElement(dtype)) / 4) * 4;
  return floatBytes + blocks.words.length * 4;
}

/**
 * GPU memory for PETs: ONE storage buffer of a fixed byte budget, carved into
 * pages. A resident PET owns a contiguous run of pages (kernels address it by
 * offset, so one binding serves every task of a batch). PETs page in on demand;
 * when no run fits, the least recently used *unpinned* PETs are evicted (a PET
 * used by the batch being built or in flight is pinned and never evicted).
 *
 * One pool serves every model of a device (DevicePetPool): encoder PETs and
 * decoder adapters share its budget and its LRU. Keys are the key space that
 * keeps them apart: an encoder task's id (TASK_ID: letters, digits, '.', '_',
 * '-') and a decoder registration's `taskId@n` (DecoderTaskRegistry), which no
 * task id can spell. A key always names blocks of one kind, so `pin` hands a
 * hit back as the type its caller loads.
 */
export class PetGpuPool {
  readonly buffer: GPUBuffer;
  readonly budgetBytes: number;
  private readonly pageOwner: (string | null)[];
  private readonly resident = new Map<string, ResidentPet<PoolBlocks>>();
  private unpinWaiters: (() => void)[] = [];
  private clock = 0;
  private pageIns = 0;
  private evictions = 0;

  constructor(
    private readonly device: GPUDevice,
    readonly dtype: Dtype,
    budgetBytes: number,
    readonly pageBytes = POOL_PAGE_BYTES,
  ) {
    this.budgetBytes = pagedBudget(budgetBytes, pageBytes);
    this.pageOwner = new Array<string | null>(this.budgetBytes / pageBytes).fill(null);
    this.buffer = device.createBuffer({
      label: 'pet-pool',
      size: this.budgetBytes,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
  }

  stats(): PoolStats {
    let used = 0;
    for (const r of this.resident.values()) used += r.pageCount * this.pageBytes;
    return {
      budgetBytes: this.budgetBytes,
      usedBytes: used,
      residentTasks: this.resident.size,
      pageIns: this.pageIns,
      evictions: this.evictions,
    };
  }

  isResident(taskId: string): boolean {
    return this.resident.has(taskId);
  }

  /** Bytes a packed PET occupies in this pool (before page rounding). */
  footprint(packed: { floats: { length: number }; words: { length: number } }): number {
    return poolFootprint(this.dtype, packed);
  }

  /** Pool bytes held by a resident task (whole pages), 0 when not resident. */
  residentBytes(taskId: string): number {
    const r = this.resident.get(taskId);
    return r ? r.pageCount * this.pageBytes : 0;
  }

  /** Make `taskId` resident (paging it in if needed) and pin it until `unpin`. */
  pin<P extends PoolBlocks>(taskId: string, load: () => P): ResidentPet<P> {
    const hit = this.resident.get(taskId);
    if (hit) {
      hit.pins += 1;
      hit.lastUsed = ++this.clock;
      // The key space (class comment) keeps one kind of blocks per key.
      return hit as ResidentPet<P>;
    }
    const packed = load();
    const bytes = this.footprint(packed);
    const pageCount = Math.max(1, Math.ceil(bytes / this.pageBytes));
    if (pageCount > this.pageOwner.length) {
      throw new PoolExhaustedError(
        `task '${taskId}' needs ${bytes} bytes of GPU pool but the pool budget is ${this.budgetBytes} bytes`,
        'budget',
      );
    }
    let first = this.findRun(pageCount);
    while (first < 0) {
      if (!this.evictOne()) {
        throw new PoolExhaustedError(
          `GPU pool full: ${pageCount} pages needed for task '${taskId}', every resident PET is pinned by a batch or sequence in flight`,
          'pinned',
        );
      }
      first = this.findRun(pageCount);
    }
    const e = bytesPerElement(this.dtype);
    const byteOffset = first * this.pageBytes;
    const floatBytes = Math.ceil((packed.floats.length * e) / 4) * 4;
    if (packed.floats.length > 0) {
      const data = this.dtype === 'f16' ? f32ArrayToF16(packed.floats) : packed.floats;
      const padded = new Uint8Array(floatBytes);
      padded.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      this.device.queue.writeBuffer(this.buffer, byteOffset, padded);
    }
    if (packed.words.length > 0) this.device.queue.writeBuffer(this.buffer, byteOffset + floatBytes, packed.words);
    for (let p = first; p < first + pageCount; p++) this.pageOwner[p] = taskId;
    const r: ResidentPet<P> = {
      taskId,
      packed,
      floatBase: byteOffset / e,
      wordBase: (byteOffset + floatBytes) / 4,
      bytes,
      firstPage: first,
      pageCount,
      pins: 1,
      lastUsed: ++this.clock,
    };
    this.resident.set(taskId, r);
    this.pageIns += 1;
    return r;
  }

  unpin(taskId: string): void {
    const r = this.resident.get(taskId);
    if (!r || r.pins === 0) return;
    r.pins -= 1;
    if (r.pins === 0) this.wakeUnpinWaiters();
  }

  /**
   * Resolves when a pinned PET next becomes evictable (or the pool is
   * destroyed): a page-in refused for 'pinned' space may then fit. The other
   * model of a shared pool waits on it instead of failing its request.
   */
  nextUnpin(): Promise<void> {
    return new Promise((resolve) => this.unpinWaiters.push(resolve));
  }

  private wakeUnpinWaiters(): void {
    const waiters = this.unpinWaiters;
    this.unpinWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Drop a PET (task unregistered). Pinned PETs cannot be dropped. */
  drop(taskId: string): boolean {
    const r = this.resident.get(taskId);
    if (!r) return true;
    if (r.pins > 0) return false;
    this.release(r);
    return true;
  }

  private release(r: ResidentPet<PoolBlocks>): void {
    for (let p = r.firstPage; p < r.firstPage + r.pageCount; p++) this.pageOwner[p] = null;
    this.resident.delete(r.taskId);
  }

  private evictOne(): boolean {
    let victim: ResidentPet<PoolBlocks> | null = null;
    for (const r of this.resident.values()) {
      if (r.pins === 0 && (!victim || r.lastUsed < victim.lastUsed)) victim = r;
    }
    if (!victim) return false;
    this.release(victim);
    this.evictions += 1;
    return true;
  }

  /** First run of `count` free pages, or -1. */
  private findRun(count: number): number {
    let run = 0;
    for (let p = 0; p < this.pageOwner.length; p++) {
      run = this.pageOwner[p] === null ? run + 1 : 0;
      if (run === count) return p - count + 1;
    }
    return -1;
  }

  destroy(): void {
    this.resident.clear();
    this.wakeUnpinWaiters();
    this.buffer.destroy();
  }
}
