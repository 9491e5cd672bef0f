/**
 * The kernel variants the self-tuner may pick from, in one place: every entry here is swept by the kernel
 * tests against the float64 reference (test/kernels/), so a pick can never be an untested kernel.
 */
import type { AttentionChoice, GemmChoice, KernelChoices } from './types.js';

export interface CandidateFeatures {
  /** The adapter has the `subgroups` feature (subgroupAdd in WGSL). */
  subgroups: boolean;
  /** Its one subgroup size, null where it has none or several (the 'lanes' attention form needs one). */
  subgroupSize?: number | null;
}

/**
 * GEMM specialisations for GEMMs with many rows: register-blocked shapes, workgroup-tiled K slices, and
 * where subgroups exist register blocks that share X through subgroup shuffles (taller blocks: each lane
 * loads only 1/subgroup_size of its rows' X; 2.5-4x the rb GFLOP/s on lavapipe, bench/results/kernels-*).
 */
export function gemmCandidates(f: CandidateFeatures): GemmChoice[] {
  const out: GemmChoice[] = [];
  // No 8x8 block: lavapipe compiles it at first dispatch in 17-30 s (f16) on two cores, and it never won a tuning run there.
  for (const [rowsPerInvocation, colsPerInvocation] of [[2, 4], [2, 8], [4, 4], [4, 8], [8, 4]] as const) {
    out.push({ variant: 'rb', rowsPerInvocation, colsPerInvocation });
  }
  for (const bk of [8, 16, 32]) out.push({ variant: 'tiled', bk });
  if (f.subgroups) for (const rowsPerInvocation of [8, 16, 32]) out.push({ variant: 'sgx', rowsPerInvocation, colsPerInvocation: 4 });
  return out;
}

/** GEMM specialisations for GEMMs with few rows (decode steps): the above plus subgroup reductions where present. */
export function smallGemmCandidates(f: CandidateFeatures): GemmChoice[] {
  const out: GemmChoice[] = [
    { variant: 'rb', rowsPerInvocation: 1, colsPerInvocation: 4 },
    { variant: 'rb', rowsPerInvocation: 1, colsPerInvocation: 8 },
    { variant: 'rb', rowsPerInvocation: 2, colsPerInvocation: 8 },
    { variant: 'rb', rowsPerInvocation: 4, colsPerInvocation: 8 },
  ];
  if (f.subgroups) for (const rowsPerWorkgroup of [1, 4]) out.push({ variant: 'subgroup', rowsPerWorkgroup });
  return out;
}

/** Attention forms and workgroup sizes ('lanes' only where the adapter has one subgroup size; its workgroup is 64). */
export function attentionCandidates(f: CandidateFeatures): AttentionChoice[] {
  const out: AttentionChoice[] = [];
  for (const workgroupSize of [32, 64, 128]) {
    out.push({ form: 'resident', workgroupSize });
    out.push({ form: 'online', workgroupSize });
  }
  if (f.subgroups && f.subgroupSize) out.push({ form: 'lanes', workgroupSize: LANES_WORKGROUP });
  return out;
}

/** Invocations (queries) per workgroup of the 'lanes' attention form (shaders/attention_lanes.wgsl). */
export const LANES_WORKGROUP = 64;

/** Workgroup sizes of the row-wise kernels (LayerNorm, RMSNorm, softmax); powers of two for their tree reductions. */
export const rowWorkgroupCandidates: readonly number[] = [32, 64, 128, 256];

/** A stable, readable name for a choice (tables, cache files, logs). */
export function gemmChoiceName(c: GemmChoice): string {
  switch (c.variant) {
    case 'rb':
      return `rb${c.rowsPerInvocation}x${c.colsPerInvocation}`;
    case 'sgx':
      return `sgx${c.rowsPerInvocation}x${c.colsPerInvocation}`;
    case 'tiled':
      return `tiled-bk${c.bk}`;
    case 'subgroup':
      return `subgroup-r${c.rowsPerWorkgroup}`;
    case 'naive':
      return 'naive';
  }
}

export function attentionChoiceName(c: AttentionChoice): string {
  return `${c.form}-wg${c.workgroupSize}`;
}

export function rowWorkgroupName(workgroupSize: number): string {
  return `wg${workgroupSize}`;
}

/** The kernel classes the tuner picks for, one per field of KernelChoices. */
export type KernelClass = 'gemm' | 'smallGemm' | 'attention' | 'norm';

/** The name of each class's choice in `c`, as tuning timings and status name candidates. */
export function choiceNames(c: KernelChoices): Record<KernelClass, string> {
  return {
    gemm: gemmChoiceName(c.gemm),
    smallGemm: gemmChoiceName(c.smallGemm),
    attention: attentionChoiceName(c.attention),
    norm: rowWorkgroupName(c.rowWorkgroupSize),
  };
}
