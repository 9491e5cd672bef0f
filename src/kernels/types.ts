/** Element type of activations and weights on the GPU; accumulation is always f32. */
export type Dtype = 'f32' | 'f16';

/** GEMM kernel: 'rb' register-blocked, no workgroup memory (needs K, ldx % 4 == 0); 'tiled': workgroup-memory tiles; 'naive': baseline. */
export type GemmVariant = 'rb' | 'tiled' | 'naive';

export const bytesPerElement = (dtype: Dtype): number => (dtype === 'f16' ? 2 : 4);
