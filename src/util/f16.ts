// Conversions between float32 and the two 16-bit float formats found in
// checkpoints: IEEE binary16 ("F16") and bfloat16 ("BF16").
//
// Bit casts go through one shared Float32Array/Uint32Array pair (scalars) or
// through typed-array views over the caller's buffer (arrays), so converting
// a 100M-element checkpoint allocates only the output array.
// All conversions from float32 round to nearest, ties to even, like the
// hardware conversions (and PyTorch's .half() / .bfloat16()).

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

// ---------------------------------------------------------------- binary16

/** Converts float32 bits (as an unsigned 32-bit integer) to binary16 bits. */
export function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;

  if (exponent === 0xff) {
    // Keep NaN a NaN: force the quiet bit, since the payload's top 10 bits
    // may be zero and would otherwise turn it into infinity.
    return mantissa === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mantissa >>> 13);
  }
  // Exponent rebiased from 127 to 15.
  const halfExponent = exponent - 112;
  if (halfExponent >= 0x1f) {
    return sign | 0x7c00;
  }
  if (halfExponent <= 0) {
    // Result is subnormal (or zero): value / 2^-24 with the implicit bit made
    // explicit, shifted right by 14 - halfExponent and rounded.
    const shift = 14 - halfExponent;
    if (shift > 24) {
      // Below half the smallest subnormal (2^-25): rounds to signed zero.
      return sign;
    }
    const significand = mantissa | 0x800000;
    let halfMantissa = significand >>> shift;
    const remainder = significand & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && (halfMantissa & 1) === 1)) {
      // May carry into 0x400, which is exactly the smallest normal: correct.
      halfMantissa += 1;
    }
    return sign | halfMantissa;
  }
  let half = sign | (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && (half & 1) === 1)) {
    // A carry out of the mantissa increments the exponent; from the largest
    // finite value it lands on 0x7c00 = infinity, as rounding requires.
    half += 1;
  }
  return half;
}

/**
 * Converts a number to binary16 bits. The number is first rounded to float32
 * (the name is literal: this converts a float32 value), so a float64 input
 * that sits just off an f16 tie can round differently than a direct
 * float64 -> f16 conversion would.
 */
export function f32ToF16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToF16Bits(scratchU32[0]!);
}

// All 65536 binary16 values widened to float32 bits. 256 KiB once beats
// per-element branching when decoding large tensors, and storing bits (not
// floats) keeps NaN payloads intact through the array conversion.
let f16ToF32BitsTable: Uint32Array | undefined;

function getF16ToF32BitsTable(): Uint32Array {
  if (f16ToF32BitsTable !== undefined) {
    return f16ToF32BitsTable;
  }
  const table = new Uint32Array(65536);
  for (let half = 0; half < 65536; half++) {
    const sign = (half & 0x8000) << 16;
    const exponent = (half >>> 10) & 0x1f;
    const mantissa = half & 0x3ff;
    let bits: number;
    if (exponent === 0) {
      // Zero or subnormal: m * 2^-24 is exact in float32.
      scratchF32[0] = mantissa * 2 ** -24;
      bits = scratchU32[0]!;
    } else if (exponent === 0x1f) {
      bits = 0x7f800000 | (mantissa << 13);
    } else {
      bits = ((exponent + 112) << 23) | (mantissa << 13);
    }
    table[half] = (sign | bits) >>> 0;
  }
  f16ToF32BitsTable = table;
  return table;
}

/** Converts binary16 bits to the float32 value they encode. */
export function f16BitsToF32(h: number): number {
  scratchU32[0] = getF16ToF32BitsTable()[h & 0xffff]!;
  return scratchF32[0]!;
}

export function f32ArrayToF16(src: Float32Array): Uint16Array {
  const srcBits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < out.length; i++) {
    out[i] = f32BitsToF16Bits(srcBits[i]!);
  }
  return out;
}

export function f16ArrayToF32(src: Uint16Array): Float32Array {
  const table = getF16ToF32BitsTable();
  const out = new Float32Array(src.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) {
    outBits[i] = table[src[i]!]!;
  }
  return out;
}

// ---------------------------------------------------------------- bfloat16

/** Converts float32 bits (as an unsigned 32-bit integer) to bfloat16 bits. */
export function f32BitsToBf16Bits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) {
    // NaN: truncating could leave an all-zero mantissa (infinity); set the
    // quiet bit instead of rounding.
    return ((bits >>> 16) | 0x40) & 0xffff;
  }
  // bfloat16 is the top half of float32; adding 0x7fff plus the lowest kept
  // bit rounds to nearest even, and overflow carries correctly into infinity.
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Converts a number (rounded to float32 first) to bfloat16 bits. */
export function f32ToBf16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToBf16Bits(scratchU32[0]!);
}

export function bf16BitsToF32(h: number): number {
  scratchU32[0] = (h & 0xffff) << 16;
  return scratchF32[0]!;
}

export function f32ArrayToBf16(src: Float32Array): Uint16Array {
  const srcBits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < out.length; i++) {
    out[i] = f32BitsToBf16Bits(srcBits[i]!);
  }
  return out;
}

export function bf16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) {
    // Uint32Array stores modulo 2^32, so the sign bit survives the int32 shift.
    outBits[i] = src[i]! << 16;
  }
  return out;
}
