// Seeded, deterministic pseudo-random numbers. Checkpoints and test inputs
// are generated from a seed so that every run (and every machine) produces
// byte-identical files; Math.random() cannot give that.
//
// Generator: xoshiro128** (Blackman & Vigna), state seeded by splitmix32.
// All arithmetic is 32-bit integer (Math.imul, >>> 0), so results do not
// depend on the host's floating point.

const TWO_POW_32 = 4294967296;

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  // Box-Muller yields normals in pairs; the second is kept for the next call.
  private spareNormal: number | undefined;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`Rng seed must be a safe integer, got ${seed}`);
    }
    // Fold the high word in so that seeds above 2^32 (and negative seeds)
    // do not collide with their low 32 bits.
    const low = seed >>> 0;
    const high = Math.floor(seed / TWO_POW_32) >>> 0;
    let mixState = (low ^ Math.imul(high, 0x9e3779b9)) >>> 0;
    // splitmix32 spreads one word over the four state words; its outputs are
    // a bijection of a counter, so four consecutive outputs are never all zero
    // (an all-zero state would make xoshiro emit zeros forever).
    const splitmix32 = (): number => {
      mixState = (mixState + 0x9e3779b9) >>> 0;
      let z = mixState;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = splitmix32();
    this.s1 = splitmix32();
    this.s2 = splitmix32();
    this.s3 = splitmix32();
    this.spareNormal = undefined;
  }

  /** Next raw 32-bit unsigned output. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1), 32 bits of resolution. */
  next(): number {
    return this.nextUint32() / TWO_POW_32;
  }

  /** Uniform integer in [lo, hiExclusive). */
  int(lo: number, hiExclusive: number): number {
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hiExclusive) || hiExclusive <= lo) {
      throw new RangeError(`Rng.int needs integers lo < hiExclusive, got [${lo}, ${hiExclusive})`);
    }
    const span = hiExclusive - lo;
    if (span > TWO_POW_32) {
      throw new RangeError(`Rng.int range ${span} exceeds 2^32`);
    }
    // Multiply-shift instead of modulo: the bias is below span / 2^32, which
    // is negligible for the index-sized ranges this is used for.
    return lo + Math.floor(this.next() * span);
  }

  /** Normal(mean, std) via Box-Muller. */
  normal(mean = 0, std = 1): number {
    if (this.spareNormal !== undefined) {
      const z = this.spareNormal;
      this.spareNormal = undefined;
      return mean + std * z;
    }
    const [z0, z1] = this.standardNormalPair();
    this.spareNormal = z1;
    return mean + std * z0;
  }

  /** Fills arr with Normal(mean, std) samples and returns it. */
  fillNormal(arr: Float32Array, mean = 0, std = 1): Float32Array {
    // Written as one loop over pairs rather than calls to normal(): this
    // fills ~100M weights for bert-base and the spare bookkeeping shows up.
    const n = arr.length;
    let i = 0;
    for (; i + 1 < n; i += 2) {
      // 1 - next() lies in (0, 1], so the log is finite.
      const radius = Math.sqrt(-2 * Math.log(1 - this.next()));
      const angle = 2 * Math.PI * this.next();
      arr[i] = mean + std * radius * Math.cos(angle);
      arr[i + 1] = mean + std * radius * Math.sin(angle);
    }
    if (i < n) {
      arr[i] = mean + std * this.standardNormalPair()[0];
    }
    return arr;
  }

  private standardNormalPair(): [number, number] {
    const radius = Math.sqrt(-2 * Math.log(1 - this.next()));
    const angle = 2 * Math.PI * this.next();
    return [radius * Math.cos(angle), radius * Math.sin(angle)];
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
