import { describe, expect, it } from 'vitest';

import {
  bf16ArrayToF32,
  bf16BitsToF32,
  f16ArrayToF32,
  f16BitsToF32,
  f32ArrayToBf16,
  f32ArrayToF16,
  f32ToBf16Bits,
  f32ToF16Bits,
} from '../../src/util/f16.js';
import { Rng } from '../../src/util/random.js';

const isF16NaN = (h: number): boolean => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
const isBf16NaN = (h: number): boolean => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;

function f32FromBits(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0]!;
}

// Reference rounding by search over all finite f16 values, in float64 (exact
// for differences between a float32 and a float16).
const positiveF16Values = Array.from({ length: 0x7c00 }, (_, h) => f16BitsToF32(h));
function referenceF32ToF16Bits(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const magnitude = Math.abs(x);
  // Halfway between 65504 and the next step (65536) rounds to even: infinity.
  if (magnitude >= 65520) return sign | 0x7c00;
  let lo = 0;
  let hi = positiveF16Values.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (positiveF16Values[mid]! <= magnitude) lo = mid;
    else hi = mid;
  }
  const below = magnitude - positiveF16Values[lo]!;
  const above = positiveF16Values[hi]! - magnitude;
  if (below < above) return sign | lo;
  if (above < below) return sign | hi;
  return sign | (lo % 2 === 0 ? lo : hi);
}

describe('f32ToF16Bits', () => {
  it('encodes known values to their exact bit patterns', () => {
    const cases: Array<[number, number]> = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.5, 0x3800],
      [65504, 0x7bff],
      [0.1, 0x2e66],
      [1 / 3, 0x3555],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [1023 * 2 ** -24, 0x03ff], // largest subnormal
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
    ];
    for (const [value, bits] of cases) {
      expect(f32ToF16Bits(value), `value ${value}`).toBe(bits);
    }
  });

  it('rounds ties to even in the normal range', () => {
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // halfway 1 and 1+2^-10 -> even (1)
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // halfway odd 0x3c01 and 0x3c02 -> even
    expect(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just above halfway
    expect(f32ToF16Bits(1 + 2 ** -11 - 2 ** -20)).toBe(0x3c00); // just below halfway
    expect(f32ToF16Bits(-(1 + 3 * 2 ** -11))).toBe(0xbc02);
  });

  it('rounds ties to even in the subnormal range and into the normal range', () => {
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // half the smallest subnormal -> 0 (even)
    expect(f32ToF16Bits(2 ** -25 + 2 ** -40)).toBe(0x0001);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // 1.5 units -> 2
    expect(f32ToF16Bits(5 * 2 ** -25)).toBe(0x0002); // 2.5 units -> 2
    expect(f32ToF16Bits(1023.5 * 2 ** -24)).toBe(0x0400); // carries into the smallest normal
    expect(f32ToF16Bits(-(2 ** -26))).toBe(0x8000); // underflow keeps the sign
    expect(f32ToF16Bits(1e-40)).toBe(0x0000); // float32 subnormal input
  });

  it('overflows to infinity exactly at the rounding boundary', () => {
    expect(f32ToF16Bits(65519)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(-1e6)).toBe(0xfc00);
  });

  it('keeps NaN a NaN, including payloads that only use low mantissa bits', () => {
    expect(isF16NaN(f32ToF16Bits(NaN))).toBe(true);
    expect(isF16NaN(f32ToF16Bits(f32FromBits(0x7f800001)))).toBe(true);
    const converted = f32ArrayToF16(new Float32Array(new Uint32Array([0x7f800001, 0xff800001]).buffer));
    expect(isF16NaN(converted[0]!)).toBe(true);
    expect(isF16NaN(converted[1]!)).toBe(true);
    expect(converted[1]! & 0x8000).toBe(0x8000);
  });

  it('matches a search-based nearest-even reference at every tie between adjacent f16 values', () => {
    // Midpoints of adjacent f16 values need one more mantissa bit: exact in float32.
    const ties = new Float32Array(2 * (positiveF16Values.length - 1));
    for (let h = 0; h + 1 < positiveF16Values.length; h++) {
      const midpoint = (positiveF16Values[h]! + positiveF16Values[h + 1]!) / 2;
      ties[2 * h] = midpoint;
      ties[2 * h + 1] = -midpoint;
    }
    const converted = f32ArrayToF16(ties);
    for (let i = 0; i < ties.length; i++) {
      const expected = referenceF32ToF16Bits(ties[i]!);
      if (converted[i] !== expected || f32ToF16Bits(ties[i]!) !== expected) {
        expect({ value: ties[i], got: converted[i], scalar: f32ToF16Bits(ties[i]!) }).toEqual({
          value: ties[i],
          got: expected,
          scalar: expected,
        });
      }
    }
  });

  it('matches a search-based nearest-even reference on random float32 bit patterns', () => {
    const rng = new Rng(7);
    const bits = new Uint32Array(200_000);
    for (let i = 0; i < bits.length; i++) {
      // Bias exponents towards the f16 range so every code path is hit often.
      const exponent = rng.int(100, 145);
      bits[i] = ((rng.int(0, 2) << 31) | (exponent << 23) | (rng.nextUint32() & 0x7fffff)) >>> 0;
    }
    const values = new Float32Array(bits.buffer);
    const converted = f32ArrayToF16(values);
    for (let i = 0; i < values.length; i++) {
      const expected = referenceF32ToF16Bits(values[i]!);
      if (converted[i] !== expected || f32ToF16Bits(values[i]!) !== expected) {
        expect({ value: values[i], got: converted[i], scalar: f32ToF16Bits(values[i]!) }).toEqual({
          value: values[i],
          got: expected,
          scalar: expected,
        });
      }
    }
  });
});

describe('f16BitsToF32', () => {
  it('decodes known bit patterns', () => {
    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f16BitsToF32(0xc000)).toBe(-2);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16BitsToF32(0x0400)).toBe(2 ** -14);
    expect(f16BitsToF32(0x3555)).toBe(0.333251953125);
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
    expect(f16BitsToF32(0x7c00)).toBe(Infinity);
    expect(f16BitsToF32(0xfc00)).toBe(-Infinity);
    expect(f16BitsToF32(0x7e00)).toBeNaN();
  });

  it('round-trips every non-NaN f16 bit pattern through float32', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const widened = f16ArrayToF32(all);
    const narrowed = f32ArrayToF16(widened);
    for (let h = 0; h < 65536; h++) {
      if (isF16NaN(h)) {
        expect(isF16NaN(narrowed[h]!)).toBe(true);
        continue;
      }
      if (narrowed[h] !== h || f32ToF16Bits(f16BitsToF32(h)) !== h) {
        expect(narrowed[h]).toBe(h);
      }
      if (!Object.is(widened[h], f16BitsToF32(h))) {
        expect(widened[h]).toBe(f16BitsToF32(h));
      }
    }
  });

  it('keeps NaN payload bits when widening arrays', () => {
    const widened = f16ArrayToF32(new Uint16Array([0x7c01, 0xfe00]));
    const bits = new Uint32Array(widened.buffer);
    expect(bits[0]).toBe(0x7f802000);
    expect(bits[1]).toBe(0xffc00000);
  });
});

describe('bfloat16', () => {
  it('encodes known values and rounds ties to even', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(-2)).toBe(0xc000);
    expect(f32ToBf16Bits(0.1)).toBe(0x3dcd);
    expect(f32ToBf16Bits(-0)).toBe(0x8000);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // halfway, even stays
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // halfway from odd 0x3f81 -> even
    expect(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    expect(f32ToBf16Bits(3.4028234663852886e38)).toBe(0x7f80); // max float32 rounds up to infinity
    expect(f32ToBf16Bits(1e-40)).toBe(0x0001); // float32 subnormal stays subnormal
  });

  it('keeps NaN a NaN, including payloads only in the low half', () => {
    expect(isBf16NaN(f32ToBf16Bits(NaN))).toBe(true);
    const converted = f32ArrayToBf16(new Float32Array(new Uint32Array([0x7f800001, 0xffffffff]).buffer));
    expect(isBf16NaN(converted[0]!)).toBe(true);
    expect(isBf16NaN(converted[1]!)).toBe(true);
  });

  it('decodes bit patterns and round-trips every non-NaN one', () => {
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(bf16BitsToF32(0xc000)).toBe(-2);
    expect(bf16BitsToF32(0xff80)).toBe(-Infinity);
    const all = new Uint16Array(65536).map((_, i) => i);
    const widened = bf16ArrayToF32(all);
    const narrowed = f32ArrayToBf16(widened);
    for (let h = 0; h < 65536; h++) {
      if (isBf16NaN(h)) continue;
      if (narrowed[h] !== h || !Object.is(widened[h], bf16BitsToF32(h))) {
        expect([narrowed[h], widened[h]]).toEqual([h, bf16BitsToF32(h)]);
      }
    }
  });

  it('array conversion agrees with the scalar one', () => {
    const values = new Rng(3).fillNormal(new Float32Array(10_001), 0, 100);
    const converted = f32ArrayToBf16(values);
    for (let i = 0; i < values.length; i++) {
      if (converted[i] !== f32ToBf16Bits(values[i]!)) {
        expect(converted[i]).toBe(f32ToBf16Bits(values[i]!));
      }
    }
  });
});

describe('array conversion of a subarray view', () => {
  it('reads only the viewed elements', () => {
    const backing = new Float32Array([9, 1, 2, 9]);
    expect([...f32ArrayToF16(backing.subarray(1, 3))]).toEqual([0x3c00, 0x4000]);
    expect([...f32ArrayToBf16(backing.subarray(1, 3))]).toEqual([0x3f80, 0x4000]);
  });
});
