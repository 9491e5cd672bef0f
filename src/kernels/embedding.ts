import type { BatchEncoder } from '../gpu/batch-encoder.js';
import { Uniforms } from '../gpu/uniforms.js';
import type { Dtype } from './types.js';

export interface EmbeddingArgs {
  /** u32 [tokens, 3]: (token id, position id, token type id) per token. */
  tokenTable: GPUBuffer;
  word: GPUBuffer;
  position: GPUBuffer;
  tokenType: GPUBuffer;
  y: GPUBuffer;
  tokens: number;
  hidden: number;
}

/** y = word[id] + position[pos] + tokenType[type] (LayerNorm follows as its own kernel). */
export function embeddingSum(enc: BatchEncoder, dtype: Dtype, a: EmbeddingArgs, label = 'embedding'): void {
  const spec = { shader: 'embedding', params: { DTYPE: dtype } };
  const yz = a.tokens <= 65535 ? [a.tokens, 1] : [65535, Math.ceil(a.tokens / 65535)];
  enc.dispatch(
    label,
    spec,
    new Uniforms().u32(a.tokens).u32(a.hidden),
    [a.tokenTable, a.word, a.position, a.tokenType, a.y],
    [Math.ceil(a.hidden / 64), yz[0], yz[1]],
  );
}
