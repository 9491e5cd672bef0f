/**
 * Device time of one profiled batch, ms (the shape of `BatchReport.deviceMs`).
 * `pet` is keyed by PET op class as the scheduler splits dispatches
 * (src/scheduler/device-time.ts): 'lora', 'adapter', 'sparse' (diff and mask
 * share one kernel), 'task_heads'; element-wise kinds (BitFit, IA³) live in
 * the shared GEMM epilogues and have no op of their own.
 */
export interface DeviceSplitMs {
  shared: number;
  pet: Readonly<Record<string, number | undefined>>;
}

export interface PetOverhead {
  /** Σ PET-op time / Σ shared-op time: the device time PETs add on top of the base model. */
  ratio: number;
  /** The same ratio for each op class alone (classes absent from the window are left out). */
  byKind: Record<string, number>;
  /** Profiled batches the ratio is taken over. */
  batches: number;
}

/**
 * PET overhead over the last `capacity` profiled batches. A count window rather
 * than a time window because only every Nth batch is profiled: at low traffic a
 * time window would often be empty, at high traffic a count window still
 * reflects the current mix within seconds.
 */
export class PetOverheadWindow {
  private readonly ring: (DeviceSplitMs | null)[];
  private next = 0;

  constructor(readonly capacity = 64) {
    this.ring = new Array<DeviceSplitMs | null>(capacity).fill(null);
  }

  record(split: DeviceSplitMs): void {
    this.ring[this.next] = { shared: split.shared, pet: { ...split.pet } };
    this.next = (this.next + 1) % this.capacity;
  }

  /** null until a profiled batch with shared time has been seen. */
  overhead(): PetOverhead | null {
    let shared = 0;
    let batches = 0;
    const pet = new Map<string, number>();
    for (const s of this.ring) {
      if (!s) continue;
      batches += 1;
      shared += s.shared;
      for (const [cls, ms] of Object.entries(s.pet)) {
        if (ms !== undefined && Number.isFinite(ms)) pet.set(cls, (pet.get(cls) ?? 0) + ms);
      }
    }
    if (batches === 0 || shared <= 0) return null;
    let petTotal = 0;
    const byKind: Record<string, number> = {};
    for (const [cls, ms] of pet) {
      petTotal += ms;
      byKind[cls] = ms / shared;
    }
    return { ratio: petTotal / shared, byKind, batches };
  }
}
