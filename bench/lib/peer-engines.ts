// The two ONNX Runtime peers of the peer benchmark, each behind one interface:
// onnxruntime-web's WebGPU execution provider on a Dawn device (the `webgpu`
// package, the same Dawn PetServe runs on) and onnxruntime-node on the CPU.
// Both get padded batches with an attention mask, as a user of ONNX Runtime would send.

import { create, globals } from 'webgpu';
import type * as OrtCommon from 'onnxruntime-common';

/** One padded batch: `sequences` rows of `paddedLength` tokens, mask 1 on real tokens. */
export interface PaddedBatch {
  sequences: number;
  paddedLength: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  tokenTypeIds: BigInt64Array;
}

export interface PeerOutputs {
  /** [sequences × hidden] as f32. */
  pooled: Float32Array;
  /** [sequences × labels] as f32, or null without a classifier. */
  logits: Float32Array | null;
}

export interface PeerEngine {
  readonly name: string;
  run(batch: PaddedBatch): Promise<PeerOutputs>;
  dispose(): Promise<void>;
}

export function padBatch(sequences: readonly (readonly number[])[]): PaddedBatch {
  const paddedLength = Math.max(...sequences.map((s) => s.length));
  const n = sequences.length * paddedLength;
  const inputIds = new BigInt64Array(n);
  const attentionMask = new BigInt64Array(n);
  sequences.forEach((seq, b) => {
    seq.forEach((id, t) => {
      inputIds[b * paddedLength + t] = BigInt(id);
      attentionMask[b * paddedLength + t] = 1n;
    });
  });
  return { sequences: sequences.length, paddedLength, inputIds, attentionMask, tokenTypeIds: new BigInt64Array(n) };
}

type Ort = typeof OrtCommon;

async function runSession(ort: Ort, session: OrtCommon.InferenceSession, batch: PaddedBatch): Promise<PeerOutputs> {
  const dims = [batch.sequences, batch.paddedLength];
  const out = await session.run({
    input_ids: new ort.Tensor('int64', batch.inputIds, dims),
    attention_mask: new ort.Tensor('int64', batch.attentionMask, dims),
    token_type_ids: new ort.Tensor('int64', batch.tokenTypeIds, dims),
  });
  const pooled = out['pooler_output'];
  if (!pooled) throw new Error('the ONNX session returned no pooler_output');
  const logits = out['logits'];
  return { pooled: await tensorToF32(pooled), logits: logits ? await tensorToF32(logits) : null };
}

async function tensorToF32(t: OrtCommon.Tensor): Promise<Float32Array> {
  const data = await t.getData();
  if (data instanceof Float32Array) return Float32Array.from(data);
  if (data instanceof Uint16Array) return f16BitsToF32(data);
  throw new Error(`unexpected ONNX output type ${t.type}`);
}

// ORT hands float16 outputs back as raw binary16 bits in a Uint16Array.
function f16BitsToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i]!;
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    out[i] =
      exponent === 0
        ? sign * mantissa * 2 ** -24
        : exponent === 0x1f
          ? mantissa === 0
            ? sign * Infinity
            : NaN
          : sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  return out;
}

/** onnxruntime-node on the CPU, with its default threading (one intra-op thread per core). */
export async function createOrtCpuEngine(modelBytes: Uint8Array): Promise<PeerEngine> {
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(modelBytes, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
  return {
    name: 'ort-node cpu',
    run: (batch) => runSession(ort as unknown as Ort, session, batch),
    dispose: () => session.release(),
  };
}

let webGpuReady: Promise<{ ort: Ort; adapterName: string }> | null = null;

/**
 * Makes onnxruntime-web's WebGPU EP run in Node on Dawn. Three gaps between
 * Dawn's Node bindings and a browser, each closed once per process:
 *  - there is no `navigator.gpu`: give it the `webgpu` package's GPU;
 *  - Dawn's GPUSupportedFeatures has has/keys/size but no `forEach`, which ORT
 *    calls to list the adapter's features: add one to the prototype;
 *  - GPUQueue.writeBuffer refuses views on a SharedArrayBuffer (ORT's threaded
 *    WASM heap is one): copy such a view to an ordinary buffer first.
 * `adapterFilter` picks the adapter whose description contains it (PetServe's),
 * so both engines run on the same Dawn adapter.
 */
function initOrtWebGpu(adapterFilter: string): Promise<{ ort: Ort; adapterName: string }> {
  webGpuReady ??= (async () => {
    Object.assign(globalThis, globals);
    const gpu = create([]);
    if (!('navigator' in globalThis) || !(globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu) {
      Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
    }
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error('no WebGPU adapter for onnxruntime-web');
    // Named as src/gpu/context.ts names PetServe's adapter.
    const adapterName = adapter.info.description || adapter.info.device || adapter.info.vendor || 'unknown adapter';
    if (adapterFilter && !adapterName.toLowerCase().includes(adapterFilter.toLowerCase())) {
      throw new Error(`onnxruntime-web got adapter '${adapterName}', PetServe runs on '${adapterFilter}'`);
    }
    const featuresProto = Object.getPrototypeOf(adapter.features) as { forEach?: unknown };
    if (typeof featuresProto.forEach !== 'function') {
      featuresProto.forEach = function (this: ReadonlySet<string>, cb: (v: string, k: string, set: ReadonlySet<string>) => void, thisArg?: unknown) {
        for (const f of this) cb.call(thisArg, f, f, this);
      };
    }
    const queueProto = (globalThis as unknown as { GPUQueue: { prototype: GPUQueue } }).GPUQueue.prototype;
    const writeBuffer = queueProto.writeBuffer;
    queueProto.writeBuffer = function (this: GPUQueue, buffer, offset, data, dataOffset?, size?) {
      // A typed array's slice() copies into a fresh, unshared ArrayBuffer of the same element type,
      // so dataOffset/size (counted in elements) keep their meaning.
      const unshared =
        ArrayBuffer.isView(data) && data.buffer instanceof SharedArrayBuffer
          ? data instanceof DataView
            ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice()
            : (data as unknown as Uint8Array).slice()
          : data;
      return writeBuffer.call(this, buffer, offset, unshared, dataOffset, size);
    };
    const ort = (await import('onnxruntime-web/webgpu')) as unknown as Ort & { env: OrtCommon.Env };
    ort.env.logLevel = 'error';
    // The WebGPU EP computes on the GPU; WASM worker threads would only idle-spin
    // on the CPU cores that lavapipe, PetServe and onnxruntime-node need.
    ort.env.wasm.numThreads = 1;
    ort.env.webgpu.adapter = adapter as unknown as OrtCommon.Env.WebGpuFlags['adapter'];
    return { ort, adapterName };
  })();
  return webGpuReady;
}

/** onnxruntime-web's WebGPU EP on the Dawn adapter named by `adapterFilter`. */
export async function createOrtWebGpuEngine(modelBytes: Uint8Array, adapterFilter: string): Promise<PeerEngine & { adapterName: string }> {
  const { ort, adapterName } = await initOrtWebGpu(adapterFilter);
  // Bytes, not a path: onnxruntime-web would fetch() a path.
  const session = await ort.InferenceSession.create(modelBytes, { executionProviders: ['webgpu'], graphOptimizationLevel: 'all' });
  return {
    name: 'ort-web webgpu',
    adapterName,
    run: (batch) => runSession(ort, session, batch),
    dispose: () => session.release(),
  };
}

/** Versions of the peers as loaded (for the report). */
export async function peerVersions(): Promise<{ onnxruntimeWeb: string | null; onnxruntimeNode: string | null }> {
  const web = webGpuReady ? (await webGpuReady).ort.env.versions.web ?? null : null;
  const node = (await import('onnxruntime-node')).env.versions.node ?? null;
  return { onnxruntimeWeb: web, onnxruntimeNode: node };
}
