import type { PetGpuPool, ResidentPet } from '../pet/gpu-pool.js';
import type { PackedPet } from '../pet/packed-pet.js';
import type { TaskLease, TaskRegistry } from '../pet/registry.js';

/**
 * Hold a registry lease on every task of a batch while `work` runs, so none can
 * be unregistered under it. Host copies of the PETs (which may be read from
 * disk) are loaded here, before the batch takes the GPU queue.
 */
export async function withTaskLeases<T>(
  registry: TaskRegistry,
  taskIds: Iterable<string>,
  work: (packedById: ReadonlyMap<string, PackedPet>) => Promise<T>,
): Promise<T> {
  const leases = new Map<string, TaskLease>();
  try {
    for (const id of taskIds) if (!leases.has(id)) leases.set(id, registry.acquire(id));
    const packedById = new Map(await Promise.all([...leases].map(async ([id, l]) => [id, await l.packed()] as const)));
    return await work(packedById);
  } finally {
    for (const l of leases.values()) l.release();
  }
}

/** Make every task of a batch resident in the pool and pinned while `work` runs (LRU eviction skips pinned PETs). */
export async function withPinnedTasks<T>(
  pool: PetGpuPool,
  packedById: ReadonlyMap<string, PackedPet>,
  work: (resident: ReadonlyMap<string, ResidentPet>) => Promise<T>,
): Promise<T> {
  const resident = new Map<string, ResidentPet>();
  try {
    for (const [id, packed] of packedById) resident.set(id, pool.pin(id, () => packed));
    return await work(resident);
  } finally {
    for (const id of resident.keys()) pool.unpin(id);
  }
}
