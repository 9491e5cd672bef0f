/**
 * Builds one dispatch's uniform block as 32-bit words. WGSL structs of
 * u32/i32/f32 scalars have 4-byte members, so fields are written in
 * declaration order; the block is padded to 16 bytes (uniform struct size rule).
 */
export class Uniforms {
  private readonly words: number[] = [];
  private readonly kinds: ('u' | 'i' | 'f')[] = [];

  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`u32 uniform out of range: ${v}`);
    this.words.push(v);
    this.kinds.push('u');
    return this;
  }

  i32(v: number): this {
    this.words.push(v | 0);
    this.kinds.push('i');
    return this;
  }

  f32(v: number): this {
    this.words.push(v);
    this.kinds.push('f');
    return this;
  }

  toBytes(): Uint8Array {
    const n = Math.max(4, Math.ceil(this.words.length / 4) * 4);
    const buf = new ArrayBuffer(n * 4);
    const view = new DataView(buf);
    this.words.forEach((w, i) => {
      const kind = this.kinds[i];
      if (kind === 'f') view.setFloat32(i * 4, w, true);
      else if (kind === 'i') view.setInt32(i * 4, w, true);
      else view.setUint32(i * 4, w, true);
    });
    return new Uint8Array(buf);
  }
}
