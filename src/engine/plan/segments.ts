import { NONE, segGemmTables, segSparseTables, type SegGemmSegment, type SegSparseSegment } from '../../kernels/segmented.js';
import type { BertConfig, BertGemm } from '../../model/families/bert.js';
import type { AnyModelFamily } from '../../model/families/index.js';
import { siteKey, type SiteDeltaWork, type SiteKey } from '../../model/pet-graph-input.js';
import type { ResidentPet } from '../../pet/gpu-pool.js';
import type { AdapterOp, LowRankDelta, SparseDelta } from '../../pet/packed-pet.js';
import type { SlotRows } from './rows.js';

/** Segments of all tasks at one GEMM site, by kind, while the plan collects them. */
interface SiteSegments {
  layer: number;
  gemm: BertGemm;
  shrink: SegGemmSegment[];
  expand: SegGemmSegment[];
  sparse: SegSparseSegment[];
  adapterDown: SegGemmSegment[];
  adapterUp: SegGemmSegment[];
  /** U scratch elements handed out so far (low-rank and adapter intermediates). */
  scratchElems: number;
}

/**
 * Per GEMM site and PET kind, ONE segment table covering every task's rows
 * (SGMV-style: widths and ranks differ per segment, never padded). Slots are
 * added in slot order, so segment order and scratch offsets follow it.
 */
export class SegmentPlanner {
  private readonly sites = new Map<SiteKey, SiteSegments>();

  constructor(
    private readonly cfg: BertConfig,
    private readonly family: AnyModelFamily['sites'],
    /** First row of the delta region: delta rows are stored from there. */
    private readonly deltaRow0: number,
  ) {}

  private at(layer: number, gemm: BertGemm): SiteSegments {
    const key = siteKey(layer, gemm);
    let s = this.sites.get(key);
    if (!s) {
      s = { layer, gemm, shrink: [], expand: [], sparse: [], adapterDown: [], adapterUp: [], scratchElems: 0 };
      this.sites.set(key, s);
    }
    return s;
  }

  /** Scratch for `elems` U elements at a site; returns its offset. */
  private scratch(s: SiteSegments, elems: number): number {
    const off = s.scratchElems;
    s.scratchElems += elems;
    return off;
  }

  addSlot(task: ResidentPet, rows: SlotRows): void {
    const p = task.packed;
    for (const d of p.lowRank) this.lowRank(task, rows, d);
    for (const d of p.sparse) this.sparseDelta(task, rows, d);
    for (const a of p.adapters) this.adapter(task, rows, a);
  }

  /** LoRA: shrink U = X·Aᵀ into scratch, expand delta += s·U·Bᵀ into the site's column block. */
  private lowRank(task: ResidentPet, rows: SlotRows, d: LowRankDelta): void {
    const gemm = d.gemm as BertGemm;
    const s = this.at(d.layer, gemm);
    const { N, K } = this.family.gemmShape(this.cfg, gemm);
    const uOff = this.scratch(s, rows.tokens * d.rank);
    s.shrink.push({
      rows: rows.tokens, K: d.K, N: d.rank, wOff: task.floatBase + d.aOff, bOff: NONE,
      inOff: rows.tokenStart * K, ldIn: K, outOff: uOff, ldOut: d.rank, scale: 1, act: 'none',
    });
    s.expand.push({
      rows: rows.tokens, K: d.rank, N: d.N, wOff: task.floatBase + d.bOff, bOff: NONE,
      inOff: uOff, ldIn: d.rank, outOff: (rows.tokenStart - this.deltaRow0) * N + d.colOffset, ldOut: N,
      scale: d.scale, act: 'none',
    });
  }

  /** diff / mask: delta = X·ΔWᵀ from CSR (values, or −W for a mask). */
  private sparseDelta(task: ResidentPet, rows: SlotRows, d: SparseDelta): void {
    const gemm = d.gemm as BertGemm;
    const s = this.at(d.layer, gemm);
    const { N, K } = this.family.gemmShape(this.cfg, gemm);
    s.sparse.push({
      rows: rows.tokens, K: d.K, N: d.N, ptrOff: task.wordBase + d.ptrOff, idxOff: task.wordBase + d.idxOff,
      valOff: d.valOff === null ? NONE : task.floatBase + d.valOff, wOff: d.colOffset * d.K,
      inOff: rows.tokenStart * K, ldIn: K, outOff: (rows.tokenStart - this.deltaRow0) * N + d.colOffset, ldOut: N,
      nnz: d.nnz,
    });
  }

  /** Adapter on the GEMM output Z (width H): U = act(Z·W_dᵀ + b_d), Z += U·W_uᵀ + b_u. */
  private adapter(task: ResidentPet, rows: SlotRows, a: AdapterOp): void {
    const s = this.at(a.layer, a.gemm);
    const H = this.family.gemmShape(this.cfg, a.gemm).N;
    const f = (rel: number): number => task.floatBase + rel;
    const uOff = this.scratch(s, rows.tokens * a.bottleneck);
    s.adapterDown.push({
      rows: rows.tokens, K: H, N: a.bottleneck, wOff: f(a.downW), bOff: f(a.downB),
      inOff: rows.tokenStart * H, ldIn: H, outOff: uOff, ldOut: a.bottleneck, scale: 1, act: a.activation,
    });
    s.adapterUp.push({
      rows: rows.tokens, K: a.bottleneck, N: H, wOff: f(a.upW), bOff: f(a.upB),
      inOff: uOff, ldIn: a.bottleneck, outOff: rows.tokenStart * H, ldOut: H, scale: 1, act: 'none',
    });
  }

  finish(): Map<SiteKey, SiteDeltaWork> {
    const gemmTables = (list: SegGemmSegment[]) => (list.length > 0 ? segGemmTables(list) : null);
    const work = new Map<SiteKey, SiteDeltaWork>();
    for (const [key, s] of this.sites) {
      work.set(key, {
        layer: s.layer,
        gemm: s.gemm,
        shrink: gemmTables(s.shrink),
        expand: gemmTables(s.expand),
        sparse: s.sparse.length > 0 ? segSparseTables(s.sparse) : null,
        adapterDown: gemmTables(s.adapterDown),
        adapterUp: gemmTables(s.adapterUp),
        scratchElems: s.scratchElems,
      });
    }
    return work;
  }
}
