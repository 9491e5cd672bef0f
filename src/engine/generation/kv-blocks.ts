/**
 * Host-side bookkeeping of the paged KV cache (docs/decoders.md, "Paged KV cache" and
 * "Prefix caching, per task"): which block ids each sequence's table holds, which full
 * blocks are reusable prefix-cache entries, and which of those may be evicted. The GPU
 * pool is someone else's; this module only hands out block ids.
 *
 * Every block is in exactly one of three states at all times:
 * - referenced: refCount > 0, in the tables of one or more sequences;
 * - free: refCount 0, holds nothing findable, on `freeList`;
 * - cached-free: refCount 0, still a prefix-cache entry, in `evictable` (LRU order).
 *
 * A cache entry is keyed by (cacheKey, parent entry id, exact token ids of the block), so a
 * lookup can only match when every preceding block matched too, and no hash collision can
 * ever hand a sequence someone else's K/V. Entry ids are never reused (block ids are), so a
 * key naming an evicted parent can never be matched by a new parent living in the same block.
 */

export interface KvBlockStats {
  totalBlocks: number;
  usedBlocks: number;
  /** Evictable blocks holding a cached prefix. */
  cachedFreeBlocks: number;
  /** Prompt tokens looked up in the prefix cache (successful admissions only). */
  prefixQueries: number;
  /** Prompt tokens served from the prefix cache. */
  prefixHits: number;
}

export interface KvBlockManagerOptions {
  numBlocks: number;
  blockTokens: number;
  prefixCaching: boolean;
}

interface CacheEntry {
  /** Unique for the manager's lifetime; children's keys name their parent by it. */
  readonly id: number;
  readonly cacheKey: string;
  readonly mapKey: string;
  readonly block: number;
  readonly parent: CacheEntry | null;
  readonly children: Set<CacheEntry>;
  alive: boolean;
}

interface SequenceBlocks {
  readonly cacheKey: string;
  /** The cacheKey's epoch at admission: a sequence admitted before dropCacheKey never publishes after it. */
  readonly epoch: number;
  readonly table: number[];
  /**
   * Cache entries standing for the sequence's leading full computed blocks: chain[j] stands
   * for tokens [0, (j+1)*blockTokens). Usually chain[j] lives on table[j]; when another
   * sequence published the same content first, chain[j] is that sequence's block and
   * table[j] stays private (it is not swapped: the engine may hold this step's table).
   * chain[j+1].parent === chain[j], so dead entries are always a suffix.
   */
  readonly chain: CacheEntry[];
  /** Tokens whose K/V are written (or were served from the cache); blocks past it are written by this sequence only. */
  computedTokens: number;
}

const ROOT_ID = 0;

function entryKey(parent: CacheEntry | null, tokens: readonly number[], from: number, to: number): string {
  let key = `${parent === null ? ROOT_ID : parent.id}|`;
  for (let i = from; i < to; i++) key += i === from ? `${tokens[i]}` : `,${tokens[i]}`;
  return key;
}

function checkCount(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
  }
}

export class KvBlockManager {
  readonly numBlocks: number;
  readonly blockTokens: number;
  readonly prefixCaching: boolean;

  private readonly refCount: Int32Array;
  /** The live cache entry held by each block, or null. */
  private readonly entryOfBlock: (CacheEntry | null)[];
  /** Popped from the end; filled so that block 0 goes out first. */
  private readonly freeList: number[] = [];
  /**
   * Cached-free blocks, oldest release first (a Map iterates in insertion order). free()
   * releases a table back to front, so a chain's tail is evicted before its head: evicting
   * a head would orphan every block after it anyway.
   */
  private readonly evictable = new Map<number, true>();
  private readonly entriesByCacheKey = new Map<string, Map<string, CacheEntry>>();
  private readonly epochOfCacheKey = new Map<string, number>();
  private readonly sequences = new Map<number, SequenceBlocks>();
  private nextEntryId = ROOT_ID + 1;
  private prefixQueries = 0;
  private prefixHits = 0;

  constructor(opts: KvBlockManagerOptions) {
    if (!Number.isInteger(opts.numBlocks) || opts.numBlocks < 1) {
      throw new RangeError(`numBlocks must be a positive integer, got ${opts.numBlocks}`);
    }
    if (!Number.isInteger(opts.blockTokens) || opts.blockTokens < 1) {
      throw new RangeError(`blockTokens must be a positive integer, got ${opts.blockTokens}`);
    }
    this.numBlocks = opts.numBlocks;
    this.blockTokens = opts.blockTokens;
    this.prefixCaching = opts.prefixCaching;
    this.refCount = new Int32Array(opts.numBlocks);
    this.entryOfBlock = new Array<CacheEntry | null>(opts.numBlocks).fill(null);
    for (let b = opts.numBlocks - 1; b >= 0; b--) this.freeList.push(b);
  }

  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockTokens);
  }

  /** Blocks that allocate() could hand out now (free + evictable cached). */
  get availableBlocks(): number {
    return this.freeList.length + this.evictable.size;
  }

  /**
   * Admit `seqId` with prompt `tokens` for task `cacheKey` ('' = base model). Reuses the
   * longest chain of cached full blocks of the same cacheKey matching the prompt, never the
   * block of the last prompt token (its logits must be computed), then allocates the rest
   * of the prompt plus `extraTokens`. Null, with nothing changed, when blocks are short.
   */
  allocate(
    seqId: number,
    cacheKey: string,
    tokens: readonly number[],
    extraTokens: number,
  ): { cachedTokens: number } | null {
    if (this.sequences.has(seqId)) throw new Error(`KV blocks: sequence ${seqId} is already allocated`);
    checkCount('extraTokens', extraTokens);
    const hits = this.prefixCaching ? this.lookup(cacheKey, tokens) : [];
    const totalBlocks = this.blocksFor(tokens.length + extraTokens);
    const newBlocks = totalBlocks - hits.length;
    let hitsEvictable = 0;
    for (const e of hits) if (this.refCount[e.block] === 0) hitsEvictable++;
    if (newBlocks > this.availableBlocks - hitsEvictable) return null;

    // Take the hits first so that making room for the new blocks cannot evict them.
    const table: number[] = [];
    for (const e of hits) {
      this.retain(e.block);
      table.push(e.block);
    }
    for (let i = 0; i < newBlocks; i++) table.push(this.takeBlock());
    const cachedTokens = hits.length * this.blockTokens;
    this.sequences.set(seqId, {
      cacheKey,
      epoch: this.epochOfCacheKey.get(cacheKey) ?? 0,
      table,
      chain: hits,
      computedTokens: cachedTokens,
    });
    if (this.prefixCaching) {
      this.prefixQueries += tokens.length;
      this.prefixHits += cachedTokens;
    }
    return { cachedTokens };
  }

  /** Grow `seqId` so it holds `totalTokens` tokens; false and nothing changed when blocks are short. */
  ensureCapacity(seqId: number, totalTokens: number): boolean {
    const seq = this.sequence(seqId);
    checkCount('totalTokens', totalTokens);
    const missing = this.blocksFor(totalTokens) - seq.table.length;
    if (missing <= 0) return true;
    if (missing > this.availableBlocks) return false;
    for (let i = 0; i < missing; i++) seq.table.push(this.takeBlock());
    return true;
  }

  /**
   * Tokens [0, computedTokens) of `seqId` have their K/V written: its full blocks among them
   * become prefix-cache entries. `tokens` is the sequence's whole token list so far.
   */
  markComputed(seqId: number, tokens: readonly number[], computedTokens: number): void {
    const seq = this.sequence(seqId);
    checkCount('computedTokens', computedTokens);
    if (computedTokens > tokens.length) {
      throw new RangeError(`KV blocks: computedTokens ${computedTokens} exceeds the ${tokens.length} tokens given`);
    }
    const capacity = seq.table.length * this.blockTokens;
    if (computedTokens > capacity) {
      throw new RangeError(
        `KV blocks: computedTokens ${computedTokens} exceeds sequence ${seqId}'s capacity of ${capacity} tokens`,
      );
    }
    seq.computedTokens = Math.max(seq.computedTokens, computedTokens);
    if (!this.prefixCaching || seq.epoch !== (this.epochOfCacheKey.get(seq.cacheKey) ?? 0)) return;

    // An evicted ancestor kills the chain's tail; republish from the first dead entry.
    while (seq.chain.length > 0 && !seq.chain[seq.chain.length - 1]!.alive) seq.chain.pop();
    const fullBlocks = Math.floor(computedTokens / this.blockTokens);
    if (seq.chain.length >= fullBlocks) return;
    let entries = this.entriesByCacheKey.get(seq.cacheKey);
    if (entries === undefined) {
      entries = new Map();
      this.entriesByCacheKey.set(seq.cacheKey, entries);
    }
    for (let j = seq.chain.length; j < fullBlocks; j++) {
      const parent = j === 0 ? null : seq.chain[j - 1]!;
      const mapKey = entryKey(parent, tokens, j * this.blockTokens, (j + 1) * this.blockTokens);
      let entry = entries.get(mapKey);
      if (entry === undefined) {
        const block = seq.table[j]!;
        // Unreachable while the invariants hold: a block stands for one prefix only.
        if (this.entryOfBlock[block] !== null) break;
        entry = { id: this.nextEntryId++, cacheKey: seq.cacheKey, mapKey, block, parent, children: new Set(), alive: true };
        entries.set(mapKey, entry);
        parent?.children.add(entry);
        this.entryOfBlock[block] = entry;
      }
      seq.chain.push(entry);
    }
  }

  /** The sequence's block ids, a live view: ensureCapacity appends to it. */
  blockTable(seqId: number): readonly number[] {
    return this.sequence(seqId).table;
  }

  /** Cache slot (block * blockTokens + offset) of token index `i` of the sequence. */
  slot(seqId: number, i: number): number {
    const table = this.sequence(seqId).table;
    const capacity = table.length * this.blockTokens;
    if (!Number.isInteger(i) || i < 0 || i >= capacity) {
      throw new RangeError(`KV blocks: token index ${i} is outside sequence ${seqId}'s ${capacity} allocated tokens`);
    }
    return table[Math.floor(i / this.blockTokens)]! * this.blockTokens + (i % this.blockTokens);
  }

  /** Release the sequence's blocks; cache entries stay as evictable LRU entries, the rest go back to the free list. */
  free(seqId: number): void {
    const seq = this.sequences.get(seqId);
    if (seq === undefined) return;
    this.sequences.delete(seqId);
    for (let j = seq.table.length - 1; j >= 0; j--) {
      const block = seq.table[j]!;
      const left = --this.refCount[block]!;
      if (left > 0) continue;
      if (this.entryOfBlock[block] !== null) this.evictable.set(block, true);
      else this.freeList.push(block);
    }
  }

  has(seqId: number): boolean {
    return this.sequences.has(seqId);
  }

  stats(): KvBlockStats {
    return {
      totalBlocks: this.numBlocks,
      usedBlocks: this.numBlocks - this.freeList.length - this.evictable.size,
      cachedFreeBlocks: this.evictable.size,
      prefixQueries: this.prefixQueries,
      prefixHits: this.prefixHits,
    };
  }

  /**
   * Forget every cache entry of `cacheKey` (e.g. its adapter was unloaded). Unreferenced
   * blocks go back to the free list; blocks still referenced stay with their sequences but
   * are no longer findable, and those sequences never publish again, so a task re-registered
   * under the same key with new weights never meets K/V computed under the old ones.
   */
  dropCacheKey(cacheKey: string): void {
    this.epochOfCacheKey.set(cacheKey, (this.epochOfCacheKey.get(cacheKey) ?? 0) + 1);
    const entries = this.entriesByCacheKey.get(cacheKey);
    if (entries === undefined) return;
    for (const entry of [...entries.values()]) if (entry.alive) this.unpublish(entry);
    this.entriesByCacheKey.delete(cacheKey);
  }

  /**
   * The device lost the cache's contents (a device loss): no cached prefix may be served
   * again. Every cache key is dropped as dropCacheKey does; sequences still holding blocks
   * never publish them (their K/V is recomputed by whoever restarts them).
   */
  forgetAllPrefixes(): void {
    const keys = new Set([...this.entriesByCacheKey.keys(), ...[...this.sequences.values()].map((seq) => seq.cacheKey)]);
    for (const cacheKey of keys) this.dropCacheKey(cacheKey);
  }

  /**
   * Throws on the first broken invariant; for tests (O(total blocks + table entries)).
   * Checks: refCount[b] = occurrences of b in all tables; each block is exactly one of
   * referenced / free / cached-free; free blocks hold no entry and cached-free ones a live
   * one; the cache maps hold exactly the live entries, each with a live parent; a block a
   * sequence may still write (past its computed tokens) is neither shared nor cached.
   */
  checkInvariants(): void {
    const fail = (why: string): never => {
      throw new Error(`KV blocks invariant broken: ${why}`);
    };
    const counted = new Int32Array(this.numBlocks);
    for (const [seqId, seq] of this.sequences) {
      const seen = new Set<number>();
      seq.table.forEach((block, j) => {
        if (!Number.isInteger(block) || block < 0 || block >= this.numBlocks) fail(`sequence ${seqId} holds bad block ${block}`);
        if (seen.has(block)) fail(`sequence ${seqId} holds block ${block} twice`);
        seen.add(block);
        counted[block]!++;
        // A block holding a token at or past computedTokens is still to be written.
        const writable = (j + 1) * this.blockTokens > seq.computedTokens;
        if (writable && this.entryOfBlock[block] !== null) fail(`sequence ${seqId} may write cached block ${block}`);
      });
      if (seq.chain.length > seq.table.length) fail(`sequence ${seqId} chain longer than its table`);
      seq.chain.forEach((e, j) => {
        if (e.parent !== (j === 0 ? null : seq.chain[j - 1])) fail(`sequence ${seqId} chain entry ${j} has the wrong parent`);
      });
    }
    for (const seq of this.sequences.values()) {
      seq.table.forEach((block, j) => {
        if ((j + 1) * this.blockTokens > seq.computedTokens && counted[block] !== 1) {
          fail(`block ${block} is still written by a sequence but shared ${counted[block]} ways`);
        }
      });
    }
    const inFree = new Uint8Array(this.numBlocks);
    for (const block of this.freeList) {
      if (inFree[block]) fail(`block ${block} is on the free list twice`);
      inFree[block] = 1;
    }
    let liveEntries = 0;
    for (let b = 0; b < this.numBlocks; b++) {
      if (counted[b] !== this.refCount[b]) fail(`block ${b} refCount ${this.refCount[b]} but ${counted[b]} holders`);
      const entry = this.entryOfBlock[b]!;
      const states = (this.refCount[b]! > 0 ? 1 : 0) + inFree[b]! + (this.evictable.has(b) ? 1 : 0);
      if (states !== 1) fail(`block ${b} is in ${states} of referenced/free/cached-free`);
      if (inFree[b] && entry !== null) fail(`free block ${b} still holds a cache entry`);
      if (this.evictable.has(b) && entry === null) fail(`cached-free block ${b} holds no cache entry`);
      if (entry !== null) {
        liveEntries++;
        if (!entry.alive || entry.block !== b) fail(`block ${b} points at a dead or foreign entry`);
        if (this.entriesByCacheKey.get(entry.cacheKey)?.get(entry.mapKey) !== entry) fail(`entry on block ${b} is not findable`);
        if (entry.parent !== null && (!entry.parent.alive || !entry.parent.children.has(entry))) {
          fail(`entry on block ${b} has a dead or unlinked parent`);
        }
        for (const child of entry.children) if (!child.alive || child.parent !== entry) fail(`entry on block ${b} lists a bad child`);
      }
    }
    let mapped = 0;
    for (const entries of this.entriesByCacheKey.values()) mapped += entries.size;
    if (mapped !== liveEntries) fail(`${mapped} entries in the cache maps but ${liveEntries} on blocks`);
    const used = this.stats().usedBlocks;
    if (used + this.freeList.length + this.evictable.size !== this.numBlocks) fail('used + free + cachedFree != total');
    if (!this.prefixCaching && liveEntries > 0) fail('cache entries exist with prefix caching off');
  }

  private sequence(seqId: number): SequenceBlocks {
    const seq = this.sequences.get(seqId);
    if (seq === undefined) throw new Error(`KV blocks: unknown sequence ${seqId}`);
    return seq;
  }

  /** The longest chain of live entries matching the prompt, stopping before the last token's block. */
  private lookup(cacheKey: string, tokens: readonly number[]): CacheEntry[] {
    const hits: CacheEntry[] = [];
    const entries = this.entriesByCacheKey.get(cacheKey);
    if (entries === undefined) return hits;
    const maxBlocks = Math.floor(Math.max(0, tokens.length - 1) / this.blockTokens);
    let parent: CacheEntry | null = null;
    for (let j = 0; j < maxBlocks; j++) {
      const entry = entries.get(entryKey(parent, tokens, j * this.blockTokens, (j + 1) * this.blockTokens));
      if (entry === undefined) break;
      hits.push(entry);
      parent = entry;
    }
    return hits;
  }

  private retain(block: number): void {
    if (this.refCount[block]!++ === 0) this.evictable.delete(block);
  }

  /** A block for a new owner: a free one, else the least recently released cached one. Callers check availability first. */
  private takeBlock(): number {
    let block = this.freeList.pop();
    if (block === undefined) {
      const oldest = this.evictable.keys().next();
      if (oldest.done === true) throw new Error('KV blocks: takeBlock with no block available');
      block = oldest.value;
      this.evictable.delete(block);
      this.unpublish(this.entryOfBlock[block]!);
    }
    this.refCount[block] = 1;
    return block;
  }

  /**
   * Remove `entry` and its descendants from the cache: descendants' keys name it, so they
   * could never be found again. Unreferenced descendants go back to the free list.
   */
  private unpublish(entry: CacheEntry): void {
    entry.parent?.children.delete(entry);
    const stack = [entry];
    for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
      e.alive = false;
      this.entriesByCacheKey.get(e.cacheKey)?.delete(e.mapKey);
      this.entryOfBlock[e.block] = null;
      if (this.evictable.delete(e.block)) this.freeList.push(e.block);
      for (const child of e.children) stack.push(child);
      e.children.clear();
    }
  }
}
