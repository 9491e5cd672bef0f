import { describe, expect, it } from 'vitest';
import { KvBlockManager } from '../../../src/engine/generation/kv-blocks.js';

const BT = 4;

function manager(numBlocks: number, prefixCaching = true): KvBlockManager {
  return new KvBlockManager({ numBlocks, blockTokens: BT, prefixCaching });
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

/** Admit, mark the whole prompt computed, check invariants; returns cachedTokens. */
function admitComputed(m: KvBlockManager, seqId: number, key: string, tokens: number[], extra = 0): number {
  const got = m.allocate(seqId, key, tokens, extra);
  if (got === null) throw new Error(`test setup: sequence ${seqId} not admitted`);
  m.markComputed(seqId, tokens, tokens.length);
  m.checkInvariants();
  return got.cachedTokens;
}

let probeId = 1_000_000;
/** cachedTokens a prompt would get now; the probe publishes nothing and is freed again. */
function probe(m: KvBlockManager, key: string, tokens: number[]): number {
  const id = probeId++;
  const got = m.allocate(id, key, tokens, 0);
  if (got === null) throw new Error('test setup: probe not admitted');
  m.free(id);
  m.checkInvariants();
  return got.cachedTokens;
}

describe('KvBlockManager allocation', () => {
  it('blocksFor rounds up to whole blocks', () => {
    const m = manager(8);
    expect([0, 1, 4, 5, 8, 9].map((t) => m.blocksFor(t))).toEqual([0, 1, 1, 2, 2, 3]);
  });

  it('returns every block after allocate/free round trips, with and without prefix caching', () => {
    for (const caching of [true, false]) {
      const m = manager(10, caching);
      expect(m.allocate(1, '', range(0, 9), 3)).toEqual({ cachedTokens: 0 }); // 12 tokens: 3 blocks
      expect(m.allocate(2, 'a', range(0, 5), 0)).toEqual({ cachedTokens: 0 }); // 2 blocks
      expect(m.stats().usedBlocks).toBe(5);
      m.markComputed(1, range(0, 9), 9);
      m.markComputed(2, range(0, 5), 5);
      m.checkInvariants();
      m.free(1);
      m.free(2);
      m.free(2); // idempotent
      m.free(99);
      m.checkInvariants();
      const s = m.stats();
      expect(s.usedBlocks).toBe(0);
      expect(m.availableBlocks).toBe(10);
      // Two full computed blocks of seq 1 and one of seq 2 stay as cache entries.
      expect(s.cachedFreeBlocks).toBe(caching ? 3 : 0);
      expect(m.has(1) || m.has(2)).toBe(false);
    }
  });

  it('is all-or-nothing: a refused admission changes no block, hit or counter', () => {
    const m = manager(4);
    admitComputed(m, 1, '', range(0, 9)); // 3 blocks, 2 published
    m.free(1);
    const before = m.stats();
    // Would reuse 2 cached blocks but needs 3 more (20 tokens = 5 blocks): only 2 exist.
    expect(m.allocate(2, '', range(0, 9), 11)).toBeNull();
    expect(m.has(2)).toBe(false);
    expect(m.stats()).toEqual(before);
    m.checkInvariants();
    // The same prompt with less room fits, and still finds both cached blocks.
    expect(m.allocate(2, '', range(0, 9), 7)).toEqual({ cachedTokens: 8 });
    m.checkInvariants();
    expect(m.stats().usedBlocks).toBe(4);
  });

  it('throws on a second allocate for a live sequence and on bad arguments', () => {
    const m = manager(4);
    m.allocate(1, '', [1, 2], 0);
    expect(() => m.allocate(1, '', [1, 2], 0)).toThrow(/already allocated/);
    expect(() => m.allocate(2, '', [1, 2], -1)).toThrow(RangeError);
    expect(() => m.ensureCapacity(7, 4)).toThrow(/unknown sequence 7/);
    expect(() => m.markComputed(1, [1, 2], 3)).toThrow(RangeError);
    expect(() => new KvBlockManager({ numBlocks: 0, blockTokens: 4, prefixCaching: true })).toThrow(RangeError);
  });
});

describe('KvBlockManager prefix caching', () => {
  it('reuses cached blocks across sequences of the same cacheKey, refcounted, and never across cacheKeys', () => {
    const m = manager(16);
    const prompt = range(100, 110); // 10 tokens: blocks [100..103] [104..107] [108,109]
    expect(admitComputed(m, 1, 'task-a', prompt, 2)).toBe(0);
    expect(admitComputed(m, 2, 'task-a', prompt, 2)).toBe(8);
    expect(m.blockTable(2).slice(0, 2)).toEqual(m.blockTable(1).slice(0, 2));
    expect(m.blockTable(2)[2]).not.toBe(m.blockTable(1)[2]);
    expect(admitComputed(m, 3, 'task-b', prompt, 2)).toBe(0);
    expect(admitComputed(m, 4, '', prompt, 2)).toBe(0);
    expect(m.blockTable(3).some((b) => m.blockTable(1).includes(b))).toBe(false);

    // A shared block outlives the sequence that computed it.
    const shared = m.blockTable(1).slice(0, 2);
    m.free(1);
    m.checkInvariants();
    expect(m.blockTable(2).slice(0, 2)).toEqual(shared);
    expect(m.stats().cachedFreeBlocks).toBe(0);
    m.free(2);
    expect(m.stats().cachedFreeBlocks).toBe(2);
    expect(admitComputed(m, 5, 'task-a', prompt, 0)).toBe(8);
    expect(m.blockTable(5).slice(0, 2)).toEqual(shared);
  });

  it('never reuses the block holding the last prompt token', () => {
    const m = manager(16);
    admitComputed(m, 1, '', range(0, 12)); // 3 full blocks published
    expect(admitComputed(m, 2, '', range(0, 8))).toBe(4); // exactly 2 full blocks: reuses 1
    expect(admitComputed(m, 3, '', range(0, 9))).toBe(8);
    expect(admitComputed(m, 4, '', range(0, 4))).toBe(0);
    expect(admitComputed(m, 5, '', range(0, 1))).toBe(0);
  });

  it('stops the chain at the first block with a divergent token, even if later blocks match', () => {
    const m = manager(16);
    const base = range(0, 13);
    admitComputed(m, 1, '', base);
    const divergent = [...base];
    divergent[5] = 999; // inside block 2
    expect(admitComputed(m, 2, '', divergent)).toBe(4);
    // Block 3 of `divergent` equals block 3 of `base`, but its parent differs.
    expect(m.blockTable(2)[2]).not.toBe(m.blockTable(1)[2]);
  });

  it('publishes only full computed blocks under chunked prefill', () => {
    const m = manager(16);
    const prompt = range(0, 11);
    m.allocate(1, '', prompt, 1);
    m.markComputed(1, prompt, 3);
    expect(probe(m, '', prompt)).toBe(0);
    m.markComputed(1, prompt, 6); // block 0 full, block 1 half
    m.checkInvariants();
    expect(probe(m, '', prompt)).toBe(4);
    m.markComputed(1, prompt, 11);
    m.checkInvariants();
    expect(probe(m, '', prompt)).toBe(8);
    // Decode: generated tokens complete block 2, which becomes reusable too.
    const grown = [...prompt, 50];
    expect(m.ensureCapacity(1, grown.length)).toBe(true);
    m.markComputed(1, grown, grown.length);
    m.checkInvariants();
    expect(probe(m, '', [...grown, 51])).toBe(12);
  });

  it('keeps sequences of identical prompts admitted together private, and chains their later blocks on the first publisher', () => {
    const m = manager(16);
    const prompt = range(0, 9);
    m.allocate(1, '', prompt, 4);
    m.allocate(2, '', prompt, 4);
    m.markComputed(1, prompt, 9);
    m.markComputed(2, prompt, 9); // same content: seq 2's blocks stay private
    m.checkInvariants();
    const grown = [...prompt, 7, 7, 7];
    m.markComputed(2, grown, 12); // block 2 of seq 2 published under seq 1's chain
    m.checkInvariants();
    expect(admitComputed(m, 3, '', [...grown, 1])).toBe(12);
    expect(m.blockTable(3).slice(0, 3)).toEqual([...m.blockTable(1).slice(0, 2), m.blockTable(2)[2]]);
  });

  it('prefixCaching false never reuses and returns blocks straight to the free list', () => {
    const m = manager(8, false);
    expect(admitComputed(m, 1, '', range(0, 9))).toBe(0);
    expect(admitComputed(m, 2, '', range(0, 9))).toBe(0);
    m.free(1);
    m.free(2);
    expect(m.stats()).toEqual({ totalBlocks: 8, usedBlocks: 0, cachedFreeBlocks: 0, prefixQueries: 0, prefixHits: 0 });
  });

  it('counts prompt tokens looked up and served, for admitted sequences only', () => {
    const m = manager(6);
    admitComputed(m, 1, '', range(0, 9)); // 9 queried, 0 hit
    admitComputed(m, 2, '', range(0, 9)); // 9 queried, 8 hit
    admitComputed(m, 3, 'x', range(0, 5)); // 5 queried, 0 hit
    expect(m.allocate(4, '', range(0, 9), 100)).toBeNull();
    expect(m.stats()).toMatchObject({ prefixQueries: 23, prefixHits: 8, usedBlocks: 6 });
  });
});

describe('KvBlockManager eviction', () => {
  it('evicts unreferenced cached blocks least recently released first', () => {
    const m = manager(4);
    // Three one-block chains A, B, C (each prompt: one full block + 1 token).
    const prompts = { A: [1, 1, 1, 1, 0], B: [2, 2, 2, 2, 0], C: [3, 3, 3, 3, 0] };
    admitComputed(m, 1, '', prompts.A);
    m.free(1);
    admitComputed(m, 2, '', prompts.B);
    m.free(2);
    admitComputed(m, 3, '', prompts.C);
    m.free(3);
    // Touch A again: it becomes the most recently used.
    expect(admitComputed(m, 4, '', prompts.A)).toBe(4);
    m.free(4);
    expect(m.stats()).toMatchObject({ usedBlocks: 0, cachedFreeBlocks: 3 });
    // One free block, then one eviction: B (oldest) goes, C and A stay.
    expect(m.allocate(5, 'other', range(0, 8), 0)).not.toBeNull();
    m.checkInvariants();
    m.free(5);
    expect(probe(m, '', prompts.B)).toBe(0);
    expect(probe(m, '', prompts.C)).toBe(4);
    expect(probe(m, '', prompts.A)).toBe(4);
  });

  it('evicts a chain tail before its head, so the head stays reusable', () => {
    const m = manager(4);
    const prompt = range(0, 9); // blocks: P, C published; third block private
    admitComputed(m, 1, '', prompt);
    m.free(1);
    expect(m.stats().cachedFreeBlocks).toBe(2);
    expect(m.allocate(2, 'other', range(0, 12), 0)).not.toBeNull(); // 3 blocks: 2 free + 1 eviction
    m.checkInvariants();
    m.free(2);
    expect(admitComputed(m, 3, '', prompt)).toBe(4);
  });

  it('evicting a parent invalidates its descendants, which go to the free list once released', () => {
    const m = manager(10);
    const prompt = range(0, 9);
    m.allocate(1, '', prompt, 3);
    m.allocate(2, '', prompt, 3);
    m.markComputed(1, prompt, 9); // P1, C1 published
    m.markComputed(2, prompt, 9); // duplicates: seq 2 keeps private copies
    const grown = [...prompt, 5, 5, 5];
    m.markComputed(2, grown, 12); // D2 published on seq 2's block, child of C1
    m.free(1); // seq 1's private tail to the free list; C1 then P1 become evictable
    m.checkInvariants();
    expect(m.stats()).toMatchObject({ usedBlocks: 3, cachedFreeBlocks: 2 });
    expect(m.availableBlocks).toBe(7);

    // 5 free + 1 eviction: C1 goes (released before P1), and D2 with it.
    m.allocate(3, 'other', range(0, 24), 0);
    m.checkInvariants();
    expect(m.stats().cachedFreeBlocks).toBe(1); // only P1
    m.free(3);
    expect(probe(m, '', [...grown, 1])).toBe(4);
    m.free(2); // D2 is no cache entry anymore: its block returns to the free list
    m.checkInvariants();
    expect(m.stats().cachedFreeBlocks).toBe(1);
  });

  it('a sequence whose chain was evicted republishes its blocks on the next markComputed', () => {
    const m = manager(8);
    const prompt = range(0, 9);
    m.allocate(1, '', prompt, 3);
    m.allocate(2, '', prompt, 3);
    m.markComputed(1, prompt, 9);
    m.markComputed(2, prompt, 9);
    const grown = [...prompt, 5, 5, 5];
    m.markComputed(2, grown, 12);
    m.free(1);
    m.allocate(3, 'other', range(0, 20), 0); // evicts everything seq 1 left behind
    m.checkInvariants();
    m.markComputed(2, grown, 12);
    m.checkInvariants();
    m.free(3);
    expect(admitComputed(m, 4, '', [...grown, 1])).toBe(12);
    expect(m.blockTable(4).slice(0, 3)).toEqual(m.blockTable(2).slice(0, 3));
  });

  it('dropCacheKey frees that key\'s unreferenced entries, unpublishes referenced ones, and keeps other keys', () => {
    const m = manager(12);
    const prompt = range(0, 9);
    admitComputed(m, 1, 'a', prompt);
    admitComputed(m, 2, 'b', prompt);
    admitComputed(m, 3, 'a', range(50, 59));
    m.free(1);
    m.free(2);
    expect(m.stats().cachedFreeBlocks).toBe(4);
    m.dropCacheKey('a');
    m.checkInvariants();
    expect(m.stats().cachedFreeBlocks).toBe(2); // b's entries only
    // Seq 3 (admitted under the old 'a') neither shares nor republishes.
    m.markComputed(3, range(50, 59), 9);
    expect(admitComputed(m, 4, 'a', range(50, 59))).toBe(0);
    expect(admitComputed(m, 5, 'a', prompt)).toBe(0);
    expect(admitComputed(m, 6, 'b', prompt)).toBe(8);
    m.free(3);
    m.checkInvariants();
    // Sequences admitted after the drop publish under 'a' again.
    expect(admitComputed(m, 7, 'a', range(50, 59))).toBe(8);
    m.dropCacheKey('never-used');
    m.checkInvariants();
  });

  it('forgetAllPrefixes (the device lost the cache) serves no prefix of any key again, and a sequence holding blocks never publishes them', () => {
    const m = manager(12);
    const prompt = range(0, 9);
    admitComputed(m, 1, 'a', prompt);
    admitComputed(m, 2, 'b', prompt);
    const held = m.allocate(3, 'c', range(20, 29), 0)!;
    expect(held.cachedTokens).toBe(0);
    m.free(1);
    m.free(2);
    m.forgetAllPrefixes();
    m.checkInvariants();
    expect(m.stats().cachedFreeBlocks).toBe(0);
    m.markComputed(3, range(20, 29), 9);
    m.free(3);
    for (const [key, tokens] of [['a', prompt], ['b', prompt], ['c', range(20, 29)]] as const) expect(probe(m, key, [...tokens])).toBe(0);
    // Sequences admitted after it publish again.
    admitComputed(m, 4, 'a', prompt);
    expect(probe(m, 'a', prompt)).toBe(8);
  });
});

describe('KvBlockManager capacity and slots', () => {
  it('ensureCapacity grows across block boundaries and refuses without changes when short', () => {
    const m = manager(4);
    m.allocate(1, '', range(0, 4), 0);
    expect(m.blockTable(1)).toHaveLength(1);
    expect(m.ensureCapacity(1, 4)).toBe(true);
    expect(m.blockTable(1)).toHaveLength(1);
    expect(m.ensureCapacity(1, 5)).toBe(true);
    expect(m.blockTable(1)).toHaveLength(2);
    expect(m.ensureCapacity(1, 12)).toBe(true);
    expect(m.blockTable(1)).toHaveLength(3);
    m.allocate(2, '', [9], 0);
    expect(m.ensureCapacity(1, 13)).toBe(false);
    expect(m.blockTable(1)).toHaveLength(3);
    expect(m.ensureCapacity(1, 3)).toBe(true); // never shrinks
    expect(m.blockTable(1)).toHaveLength(3);
    m.checkInvariants();
  });

  it('ensureCapacity may evict cached blocks', () => {
    const m = manager(3);
    admitComputed(m, 1, '', range(0, 9));
    m.free(1);
    m.allocate(2, 'x', [1], 0);
    expect(m.ensureCapacity(2, 12)).toBe(true);
    m.checkInvariants();
    expect(m.stats()).toMatchObject({ usedBlocks: 3, cachedFreeBlocks: 0 });
  });

  it('slot maps a token index to block * blockTokens + offset and rejects indices outside the table', () => {
    const m = manager(8);
    m.allocate(1, '', [0], 0); // block 0
    m.allocate(2, '', range(0, 6), 0); // blocks 1, 2
    m.free(1); // block 0 back on the free list
    expect(m.ensureCapacity(2, 9)).toBe(true); // block 0
    expect(m.blockTable(2)).toEqual([1, 2, 0]);
    expect(range(0, 12).map((i) => m.slot(2, i))).toEqual([4, 5, 6, 7, 8, 9, 10, 11, 0, 1, 2, 3]);
    expect(() => m.slot(2, 12)).toThrow(RangeError);
    expect(() => m.slot(2, -1)).toThrow(RangeError);
    expect(() => m.slot(2, 1.5)).toThrow(RangeError);
    expect(() => m.slot(1, 0)).toThrow(/unknown sequence 1/);
  });
});

/** mulberry32: a small seeded PRNG so the stress test replays exactly. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('KvBlockManager under random load', () => {
  it('keeps its invariants and never serves or overwrites wrong K/V over thousands of random operations', () => {
    const random = rng(20240611);
    const int = (n: number): number => Math.floor(random() * n);
    const m = manager(24);
    const keys = ['', 'a', 'b'];
    const version = new Map<string, number>(keys.map((k) => [k, 0]));
    const bases = range(0, 4).map(() => range(0, 12).map(() => int(2)));
    interface Sim {
      key: string;
      version: number;
      tokens: number[];
      computed: number;
    }
    const live = new Map<number, Sim>();
    // What the GPU pool would hold: per slot, the (task version, prefix) whose K/V was written there.
    const written = new Map<number, string>();
    const signature = (s: Pick<Sim, 'key' | 'version' | 'tokens'>, i: number): string =>
      `${s.key}@${s.version}|${s.tokens.slice(0, i + 1).join(',')}`;
    let nextId = 0;
    let admitted = 0;
    let refused = 0;
    let hitTokens = 0;

    for (let op = 0; op < 6000; op++) {
      const roll = random();
      const ids = [...live.keys()];
      const pick = ids.length > 0 ? ids[int(ids.length)]! : -1;
      if (roll < 0.3 || ids.length === 0) {
        const key = keys[int(keys.length)]!;
        const tokens = [...bases[int(bases.length)]!.slice(0, int(13)), ...range(0, 1 + int(10)).map(() => int(3))];
        const extra = int(6);
        const before = m.stats();
        const id = nextId++;
        const got = m.allocate(id, key, tokens, extra);
        if (got === null) {
          refused++;
          expect(m.stats()).toEqual(before);
          expect(m.has(id)).toBe(false);
        } else {
          admitted++;
          const sim: Sim = { key, version: version.get(key)!, tokens, computed: got.cachedTokens };
          expect(got.cachedTokens % BT).toBe(0);
          expect(got.cachedTokens).toBeLessThanOrEqual(tokens.length - 1);
          expect(m.blockTable(id).length).toBe(m.blocksFor(tokens.length + extra));
          for (let i = 0; i < got.cachedTokens; i++) expect(written.get(m.slot(id, i))).toBe(signature(sim, i));
          hitTokens += got.cachedTokens;
          live.set(id, sim);
        }
      } else if (roll < 0.5) {
        const sim = live.get(pick)!;
        const want = sim.tokens.length + 1 + int(6);
        const table = m.blockTable(pick).length;
        const ok = m.ensureCapacity(pick, want);
        if (ok) {
          while (sim.tokens.length < want) sim.tokens.push(int(3));
        } else {
          expect(m.blockTable(pick).length).toBe(table);
        }
      } else if (roll < 0.85) {
        const sim = live.get(pick)!;
        const upTo = Math.min(sim.tokens.length, sim.computed + 1 + int(8));
        for (let i = sim.computed; i < upTo; i++) {
          const slot = m.slot(pick, i);
          const block = Math.floor(slot / BT);
          for (const [other] of live) {
            if (other !== pick) expect(m.blockTable(other)).not.toContain(block);
          }
          written.set(slot, signature(sim, i));
        }
        sim.computed = Math.max(sim.computed, upTo);
        m.markComputed(pick, sim.tokens, upTo);
      } else if (roll < 0.99) {
        m.free(pick);
        live.delete(pick);
        m.free(pick);
      } else {
        const key = keys[int(keys.length)]!;
        m.dropCacheKey(key);
        version.set(key, version.get(key)! + 1);
      }
      m.checkInvariants();
      const distinct = new Set<number>();
      for (const id of live.keys()) for (const b of m.blockTable(id)) distinct.add(b);
      const s = m.stats();
      expect(s.usedBlocks).toBe(distinct.size);
      expect(m.availableBlocks).toBe(s.totalBlocks - s.usedBlocks);
      expect(s.prefixHits).toBe(hitTokens);
    }
    // The load must actually exercise sharing, refusals and eviction.
    expect(admitted).toBeGreaterThan(500);
    expect(refused).toBeGreaterThan(50);
    expect(hitTokens).toBeGreaterThan(500);

    for (const id of live.keys()) m.free(id);
    m.checkInvariants();
    expect(m.stats().usedBlocks).toBe(0);
    expect(m.availableBlocks).toBe(24);
  });
});
