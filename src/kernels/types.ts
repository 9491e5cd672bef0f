/** Element type of activations and weights on the GPU; accumulation is always f32. */
export type Dtype = 'f32' | 'f16';

export const bytesPerElement = (dtype: Dtype): number => (dtype === 'f16' ? 2 : 4);
