// Exports a PetServe BERT checkpoint to an ONNX model for the peer benchmark,
// built from the standard ops a PyTorch/optimum export of BertForSequenceClassification
// produces (Gather, LayerNormalization, MatMul + Add, Reshape/Transpose, Softmax,
// the erf form of GELU as Div/Erf/Add/Mul/Mul), so that ONNX Runtime's graph
// optimizer sees the patterns it normally fuses (GELU, LayerNorm, MatMul + bias).
// Messages are encoded by protobufjs from a subset of ONNX's own schema (onnx/onnx.proto).

import { readFileSync } from 'node:fs';
import protobuf from 'protobufjs';
import type { BertCheckpoint, LayerNormWeights, LinearWeights } from '../../src/model/checkpoint.js';
import { f32ArrayToF16 } from '../../src/util/f16.js';

export type OnnxFloat = 'f32' | 'f16';

/** Opset 17 is the first with LayerNormalization; IR version 8 goes with it. */
export const ONNX_OPSET = 17;
const IR_VERSION = 8;

export const ONNX_INPUTS = ['input_ids', 'attention_mask', 'token_type_ids'] as const;

export interface OnnxExport {
  bytes: Uint8Array;
  /** pooler_output [batch, hidden], then logits [batch, labels] when the checkpoint has a classifier. */
  outputNames: string[];
  dtype: OnnxFloat;
  nodeCount: number;
}

// HF's extended attention mask: (1 - mask) * large negative, added to the scores.
// -10000 (BERT's original value) rather than finfo.min so it stays finite in f16;
// exp(-10000 + O(10)) is 0 in both precisions.
const MASKED_SCORE = -10000;

const schemaText = readFileSync(new URL('./onnx/onnx.proto', import.meta.url), 'utf8');
// keepCase: field names stay as ONNX spells them (op_type, raw_data, ...).
const schema = protobuf.parse(schemaText, { keepCase: true }).root;
const ModelProto = schema.lookupType('onnx.ModelProto');
const DataType = schema.lookupEnum('onnx.TensorProto.DataType').values as Record<string, number>;
const AttributeType = schema.lookupEnum('onnx.AttributeProto.AttributeType').values as Record<string, number>;

type Attr = { float: number } | { int: number } | { ints: readonly number[] };

interface NodeMessage {
  name: string;
  op_type: string;
  input: string[];
  output: string[];
  attribute: Record<string, unknown>[];
}

interface TensorMessage {
  name: string;
  dims: number[];
  data_type: number;
  raw_data: Uint8Array;
}

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Collects nodes and initializers; every op gets a fresh, readable output name. */
class GraphBuilder {
  readonly nodes: NodeMessage[] = [];
  readonly initializers: TensorMessage[] = [];
  private nextId = 0;

  constructor(private readonly dtype: OnnxFloat) {}

  get floatType(): number {
    return this.dtype === 'f16' ? DataType.FLOAT16! : DataType.FLOAT!;
  }

  /** A float initializer stored in the model's precision. */
  float(name: string, data: Float32Array, dims: readonly number[]): string {
    const raw = this.dtype === 'f16' ? bytesOf(f32ArrayToF16(data)) : bytesOf(data);
    this.initializers.push({ name, dims: [...dims], data_type: this.floatType, raw_data: raw });
    return name;
  }

  scalar(name: string, value: number): string {
    return this.float(name, Float32Array.of(value), []);
  }

  int64(name: string, values: readonly number[], dims: readonly number[] = [values.length]): string {
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push({ name, dims: [...dims], data_type: DataType.INT64!, raw_data: bytesOf(data) });
    return name;
  }

  /** The graph output `output` as a copy of `from` (so outputs keep their ONNX names). */
  identity(from: string, output: string): void {
    this.nodes.push({ name: output, op_type: 'Identity', input: [from], output: [output], attribute: [] });
  }

  op(opType: string, inputs: readonly string[], attrs: Record<string, Attr> = {}, hint = opType.toLowerCase()): string {
    const output = `${hint}_${this.nextId++}`;
    const attribute = Object.entries(attrs).map(([name, a]) =>
      'float' in a
        ? { name, type: AttributeType.FLOAT, f: a.float }
        : 'int' in a
          ? { name, type: AttributeType.INT, i: a.int }
          : { name, type: AttributeType.INTS, ints: [...a.ints] },
    );
    this.nodes.push({ name: output, op_type: opType, input: [...inputs], output: [output], attribute });
    return output;
  }
}

/** torch.nn.Linear as ONNX exports it: MatMul with the transposed weight [in, out], then Add bias. */
function linear(g: GraphBuilder, x: string, w: LinearWeights, name: string): string {
  const t = new Float32Array(w.inDim * w.outDim);
  for (let o = 0; o < w.outDim; o++) for (let i = 0; i < w.inDim; i++) t[i * w.outDim + o] = w.weight[o * w.inDim + i]!;
  const weight = g.float(`${name}.weight_t`, t, [w.inDim, w.outDim]);
  const bias = g.float(`${name}.bias`, w.bias, [w.outDim]);
  return g.op('Add', [g.op('MatMul', [x, weight], {}, `${name}.matmul`), bias], {}, name);
}

function layerNorm(g: GraphBuilder, x: string, w: LayerNormWeights, dim: number, eps: number, name: string): string {
  const gamma = g.float(`${name}.weight`, w.gamma, [dim]);
  const beta = g.float(`${name}.bias`, w.beta, [dim]);
  return g.op('LayerNormalization', [x, gamma, beta], { axis: { int: -1 }, epsilon: { float: eps } }, name);
}

/** GELU, erf form: x · 0.5 · (1 + erf(x / √2)), the node pattern ORT's GeluFusion matches. */
function gelu(g: GraphBuilder, x: string, consts: { sqrt2: string; one: string; half: string }): string {
  const erf = g.op('Erf', [g.op('Div', [x, consts.sqrt2])]);
  return g.op('Mul', [g.op('Mul', [x, g.op('Add', [erf, consts.one])]), consts.half], {}, 'gelu');
}

/**
 * The ONNX model of `checkpoint`: inputs input_ids, attention_mask, token_type_ids
 * (int64 [batch, sequence], both axes dynamic); outputs pooler_output and logits.
 * Padding positions are masked as keys, as in Hugging Face's BertModel.
 */
export function exportBertOnnx(checkpoint: BertCheckpoint, dtype: OnnxFloat): OnnxExport {
  const cfg = checkpoint.config;
  const w = checkpoint.weights;
  const H = cfg.hiddenSize;
  const heads = cfg.numAttentionHeads;
  const headDim = H / heads;
  const g = new GraphBuilder(dtype);
  const consts = {
    sqrt2: g.scalar('const.sqrt2', Math.SQRT2),
    one: g.scalar('const.one', 1),
    half: g.scalar('const.half', 0.5),
  };

  // Embeddings: word + position (rows 0..T-1) + token type, then LayerNorm.
  const word = g.op('Gather', [g.float('embeddings.word', w.wordEmbeddings, [cfg.vocabSize, H]), 'input_ids'], { axis: { int: 0 } });
  const seqLen = g.op('Shape', ['input_ids'], { start: { int: 1 }, end: { int: 2 } }, 'seq_len');
  const positionTable = g.float('embeddings.position', w.positionEmbeddings, [cfg.maxPositionEmbeddings, H]);
  const positions = g.op('Slice', [positionTable, g.int64('const.zero_1d', [0]), seqLen, g.int64('const.axis0', [0])], {}, 'positions');
  const types = g.op(
    'Gather',
    [g.float('embeddings.token_type', w.tokenTypeEmbeddings, [cfg.typeVocabSize, H]), 'token_type_ids'],
    { axis: { int: 0 } },
  );
  const embedded = g.op('Add', [g.op('Add', [word, positions]), types], {}, 'embeddings');
  let hidden = layerNorm(g, embedded, w.embeddingLayerNorm, H, cfg.layerNormEps, 'embeddings.ln');

  // [batch, sequence] 0/1 mask -> [batch, 1, 1, sequence] additive mask.
  const mask4 = g.op('Unsqueeze', ['attention_mask', g.int64('const.axes12', [1, 2])]);
  const maskFloat = g.op('Cast', [mask4], { to: { int: g.floatType } });
  const scoreBias = g.op('Mul', [g.op('Sub', [consts.one, maskFloat]), g.scalar('const.masked_score', MASKED_SCORE)], {}, 'score_bias');

  const splitHeads = g.int64('const.split_heads', [0, 0, heads, headDim]);
  const mergeHeads = g.int64('const.merge_heads', [0, 0, H]);
  const scoreScale = g.scalar('const.sqrt_head_dim', Math.sqrt(headDim));

  w.layers.forEach((l, i) => {
    const p = `layer${i}`;
    const toHeads = (x: string, perm: number[]): string => g.op('Transpose', [g.op('Reshape', [x, splitHeads])], { perm: { ints: perm } });
    const q = toHeads(linear(g, hidden, l.query, `${p}.query`), [0, 2, 1, 3]); // [B, h, T, d]
    const kT = toHeads(linear(g, hidden, l.key, `${p}.key`), [0, 2, 3, 1]); // [B, h, d, T]
    const v = toHeads(linear(g, hidden, l.value, `${p}.value`), [0, 2, 1, 3]);
    const scores = g.op('Add', [g.op('Div', [g.op('MatMul', [q, kT]), scoreScale]), scoreBias], {}, `${p}.scores`);
    const probs = g.op('Softmax', [scores], { axis: { int: -1 } }, `${p}.probs`);
    const context = g.op(
      'Reshape',
      [g.op('Transpose', [g.op('MatMul', [probs, v])], { perm: { ints: [0, 2, 1, 3] } }), mergeHeads],
      {},
      `${p}.context`,
    );
    const attnOut = linear(g, context, l.attentionOutput, `${p}.attention_output`);
    const mid = layerNorm(g, g.op('Add', [attnOut, hidden]), l.attentionLayerNorm, H, cfg.layerNormEps, `${p}.attention_ln`);
    const inter = gelu(g, linear(g, mid, l.intermediate, `${p}.intermediate`), consts);
    const out = linear(g, inter, l.output, `${p}.output`);
    hidden = layerNorm(g, g.op('Add', [out, mid]), l.outputLayerNorm, H, cfg.layerNormEps, `${p}.output_ln`);
  });

  // Pooler on each sequence's first token ([CLS]), then the classifier.
  const cls = g.op('Gather', [hidden, g.int64('const.first_token', [0], [])], { axis: { int: 1 } }, 'cls');
  const pooled = g.op('Tanh', [linear(g, cls, w.pooler, 'pooler')], {}, 'pooled');
  const outputs: { name: string; from: string; dims: (number | string)[] }[] = [{ name: 'pooler_output', from: pooled, dims: ['batch', H] }];
  if (w.classifier) {
    outputs.push({ name: 'logits', from: linear(g, pooled, w.classifier, 'classifier'), dims: ['batch', w.classifier.outDim] });
  }
  for (const o of outputs) g.identity(o.from, o.name);

  const valueInfo = (name: string, elemType: number, dims: readonly (number | string)[]): Record<string, unknown> => ({
    name,
    type: {
      tensor_type: {
        elem_type: elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) },
      },
    },
  });
  const model = {
    ir_version: IR_VERSION,
    opset_import: [{ domain: '', version: ONNX_OPSET }],
    producer_name: 'petserve-bench',
    producer_version: '1',
    graph: {
      name: 'bert',
      node: g.nodes,
      initializer: g.initializers,
      input: ONNX_INPUTS.map((n) => valueInfo(n, DataType.INT64!, ['batch', 'sequence'])),
      output: outputs.map((o) => valueInfo(o.name, g.floatType, o.dims)),
    },
  };
  const err = ModelProto.verify(model);
  if (err) throw new Error(`ONNX export built an invalid ModelProto: ${err}`);
  return {
    bytes: ModelProto.encode(ModelProto.fromObject(model)).finish(),
    outputNames: outputs.map((o) => o.name),
    dtype,
    nodeCount: g.nodes.length,
  };
}

/** Op types of an encoded model, in node order (for tests and the report). */
export function onnxOpTypes(bytes: Uint8Array): string[] {
  const decoded = ModelProto.toObject(ModelProto.decode(bytes), { defaults: false }) as { graph?: { node?: { op_type: string }[] } };
  return (decoded.graph?.node ?? []).map((n) => n.op_type);
}
