/**
 * GPU memory owners. Weights are uploaded once (`uploadStorage`); activations
 * come from an `ActivationArena` whose named buffers are reused across batches
 * and only grow (sized by the largest batch seen); readbacks use a reusable
 * staging buffer.
 */

const ALIGN = 256;
export const alignUp = (n: number, a: number = ALIGN): number => Math.ceil(n / a) * a;

/** Upload `data` into a new STORAGE buffer (size rounded up to 4 bytes as WebGPU requires). */
export function uploadStorage(device: GPUDevice, data: ArrayBufferView, label: string, extraUsage = 0): GPUBuffer {
  const size = Math.max(4, alignUp(data.byteLength, 4));
  const buffer = device.createBuffer({
    label,
    size,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC | extraUsage,
    mappedAtCreation: true,
  });
  new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  buffer.unmap();
  return buffer;
}

export class ActivationArena {
  private readonly buffers = new Map<string, GPUBuffer>();
  private allocatedBytes = 0;

  constructor(private readonly device: GPUDevice) {}

  /** Bytes currently held by the arena. */
  get bytes(): number {
    return this.allocatedBytes;
  }

  /**
   * A storage buffer named `name` of at least `bytes`. Reused when big enough;
   * otherwise replaced by one 1.5x larger so a slowly growing batch size does
   * not reallocate every time. Contents are NOT preserved across growth.
   */
  get(name: string, bytes: number): GPUBuffer {
    const need = Math.max(ALIGN, alignUp(bytes));
    const cur = this.buffers.get(name);
    if (cur && cur.size >= need) return cur;
    const size = cur ? Math.max(need, alignUp(Math.ceil(cur.size * 1.5))) : need;
    if (cur) {
      this.allocatedBytes -= cur.size;
      cur.destroy();
    }
    const buffer = this.device.createBuffer({
      label: `arena:${name}`,
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
    this.buffers.set(name, buffer);
    this.allocatedBytes += size;
    return buffer;
  }

  destroy(): void {
    for (const b of this.buffers.values()) b.destroy();
    this.buffers.clear();
    this.allocatedBytes = 0;
  }
}

/** A buffer of a given usage that grows on demand (uniform slots, staging). */
export class GrowableBuffer {
  private buffer: GPUBuffer | null = null;

  constructor(
    private readonly device: GPUDevice,
    private readonly usage: number,
    private readonly label: string,
  ) {}

  get(bytes: number): GPUBuffer {
    const need = Math.max(ALIGN, alignUp(bytes));
    if (this.buffer && this.buffer.size >= need) return this.buffer;
    const size = this.buffer ? Math.max(need, alignUp(Math.ceil(this.buffer.size * 1.5))) : need;
    this.buffer?.destroy();
    this.buffer = this.device.createBuffer({ label: this.label, size, usage: this.usage });
    return this.buffer;
  }

  destroy(): void {
    this.buffer?.destroy();
    this.buffer = null;
  }
}
