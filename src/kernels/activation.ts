import type { BatchEncoder } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import type { Dtype } from './types.js';

/** x = act(x) in place over `rows` rows of `width` columns (row stride `ld`, default width). */
export function activationInPlace(
  enc: BatchEncoder,
  dtype: Dtype,
  a: { x: GPUBuffer; rows: number; width: number; ld?: number; act: 'gelu_tanh' },
  label = 'activation',
): void {
  const spec = { shader: 'activation', params: { DTYPE: dtype, ACT: a.act } };
  const y = Math.min(a.rows, 65535);
  enc.dispatch(label, spec, new Uniforms().u32(a.rows).u32(a.width).u32(a.ld ?? a.width), [a.x], [
    Math.ceil(a.width / 64),
    y,
    Math.ceil(a.rows / 65535),
  ]);
}
