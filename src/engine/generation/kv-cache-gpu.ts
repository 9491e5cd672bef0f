import { bytesPerElement, type Dtype } from '../../kernels/types.js';
import type { DecoderConfig, GpuKvCache } from '../../model/families/decoder/types.js';

/** Bytes one cache block takes over all layers (K and V). */
export function kvBlockBytes(c: DecoderConfig, blockTokens: number, dtype: Dtype): number {
  return 2 * c.numHiddenLayers * blockTokens * c.numKeyValueHeads * c.headDim * bytesPerElement(dtype);
}

/**
 * Blocks a KV cache of `budgetBytes` holds, also capped so one layer's K (or V)
 * buffer fits the adapter's largest storage binding; 0 when not even one fits.
 */
export function kvCacheBlocks(c: DecoderConfig, blockTokens: number, dtype: Dtype, budgetBytes: number, maxBindingBytes: number): number {
  const perBlock = kvBlockBytes(c, blockTokens, dtype);
  const perLayerBuffer = perBlock / (2 * c.numHiddenLayers);
  return Math.min(Math.floor(budgetBytes / perBlock), Math.floor(maxBindingBytes / perLayerBuffer));
}

/**
 * The paged KV cache's GPU memory: per layer one K and one V buffer of
 * [numBlocks·blockTokens, kvWidth] (token-major inside a block, vLLM's layout).
 * Which block belongs to which sequence is host bookkeeping (kv-blocks.ts).
 */
export function createKvCache(device: GPUDevice, c: DecoderConfig, numBlocks: number, blockTokens: number, dtype: Dtype): GpuKvCache {
  const layerBytes = numBlocks * blockTokens * c.numKeyValueHeads * c.headDim * bytesPerElement(dtype);
  const make = (label: string): GPUBuffer =>
    device.createBuffer({ label, size: Math.max(256, Math.ceil(layerBytes / 4) * 4), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const k: GPUBuffer[] = [];
  const v: GPUBuffer[] = [];
  for (let l = 0; l < c.numHiddenLayers; l++) {
    k.push(make(`kv.k${l}`));
    v.push(make(`kv.v${l}`));
  }
  return {
    k,
    v,
    numBlocks,
    blockTokens,
    dtype,
    bytes: 2 * c.numHiddenLayers * layerBytes,
    destroy() {
      for (const b of [...k, ...v]) b.destroy();
    },
  };
}
