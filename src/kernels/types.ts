/** Element type of activations and weights on the GPU; accumulation is always f32. */
export type Dtype = 'f32' | 'f16';

/**
 * GEMM kernel: 'rb' register-blocked, no workgroup memory (needs K, ldx % 4 == 0); 'sgx': rb blocks whose
 * lanes share the X loads through subgroup shuffles (needs the `subgroups` feature and K, ldx % 4 == 0); 'tiled': workgroup-memory
 * tiles; 'subgroup': K split over the lanes of a subgroup and reduced with subgroupAdd (needs the `subgroups`
 * feature; meant for few rows, e.g. decode steps); 'naive': baseline.
 */
export type GemmVariant = 'rb' | 'sgx' | 'tiled' | 'subgroup' | 'naive';

/** One specialisation of a GEMM kernel: its variant and that variant's tile parameters. */
export type GemmChoice =
  | { variant: 'rb'; rowsPerInvocation: number; colsPerInvocation: 4 | 8 }
  | { variant: 'sgx'; rowsPerInvocation: number; colsPerInvocation: 4 | 8 }
  | { variant: 'tiled'; bk: number }
  | { variant: 'subgroup'; rowsPerWorkgroup: number }
  | { variant: 'naive' };

/**
 * Attention form: 'resident' keeps a query's scores for all keys in workgroup memory (fast for short
 * sequences, memory grows with the key count); 'online' streams keys in tiles with a running max and sum
 * (online softmax), so workgroup memory is fixed whatever the length; 'lanes' gives each invocation one query
 * and shares K/V rows across a subgroup by shuffles (online softmax, no workgroup memory or barriers; needs
 * `subgroups` with one subgroup size and head_dim % 4 == 0, else the host runs 'resident').
 */
export type AttentionForm = 'resident' | 'online' | 'lanes';

export interface AttentionChoice {
  form: AttentionForm;
  /** Invocations per (query, head) workgroup. */
  workgroupSize: number;
}

/**
 * The kernel specialisations a runner records with. The defaults live in tuning.ts; the self-tuner
 * (kernel-tuner.ts) measures alternatives on the device and model at hand and caches its pick per adapter.
 */
export interface KernelChoices {
  /** GEMMs with many rows (prefill, encoder batches). */
  gemm: GemmChoice;
  /** GEMMs with few rows (decode steps: at most `smallGemmMaxRows` rows). */
  smallGemm: GemmChoice;
  attention: AttentionChoice;
  /** Invocations per workgroup of row-wise kernels (LayerNorm, RMSNorm, softmax). */
  rowWorkgroupSize: number;
}

export const bytesPerElement = (dtype: Dtype): number => (dtype === 'f16' ? 2 : 4);
