// The peer benchmark's ONNX exporter (bench/lib/onnx-export.ts), checked by
// running its model in onnxruntime-node on the CPU against the float64
// reference of test/reference (which shares no code with src/ or bench/).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportBertOnnx, onnxOpTypes } from '../../bench/lib/onnx-export.js';
import { createOrtCpuEngine, padBatch, type PeerEngine } from '../../bench/lib/peer-engines.js';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { loadRefBert, refBertForward, type RefBertOutput } from '../reference/bert-f64.js';

const HIDDEN = 128; // bert-tiny
const LABELS = 3;

/** max |actual − expected| over every sequence's pooler output and logits. */
function maxAbsError(actual: { pooled: Float32Array; logits: Float32Array | null }, expected: RefBertOutput): number {
  let m = 0;
  expected.poolerOutput.forEach((row, s) => row.forEach((v, j) => (m = Math.max(m, Math.abs(actual.pooled[s * HIDDEN + j]! - v)))));
  expected.logits!.forEach((row, s) => row.forEach((v, j) => (m = Math.max(m, Math.abs(actual.logits![s * LABELS + j]! - v)))));
  return Number.isNaN(m) ? Infinity : m;
}

describe('ONNX export of a BERT checkpoint', () => {
  let dir: string;
  let checkpoint: BertCheckpoint;
  let reference: ReturnType<typeof loadRefBert>;
  // Ragged on purpose: the peer pads to 23 tokens and must mask the padding keys.
  const sequences = [5, 23, 1, 12].map((n, s) => Array.from({ length: n }, (_, t) => 1000 + ((s * 37 + t * 11) % 900)));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'petserve-onnx-'));
    await initModel({ preset: 'bert-tiny', outDir: dir, numLabels: LABELS, seed: 3, vocabSize: 2000, maxPositions: 64 });
    checkpoint = await loadCheckpoint(dir);
    reference = loadRefBert(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('uses only standard ONNX ops, with LayerNormalization and the erf form of GELU', () => {
    const ops = new Set(onnxOpTypes(exportBertOnnx(checkpoint, 'f32').bytes));
    for (const op of ['Gather', 'LayerNormalization', 'MatMul', 'Softmax', 'Erf', 'Tanh']) expect(ops).toContain(op);
    const standard = new Set(['Gather', 'Shape', 'Slice', 'Add', 'Sub', 'Mul', 'Div', 'LayerNormalization', 'Unsqueeze', 'Cast', 'MatMul', 'Reshape', 'Transpose', 'Softmax', 'Erf', 'Tanh', 'Identity']);
    expect([...ops].filter((op) => !standard.has(op))).toEqual([]);
  });

  describe.each([
    { dtype: 'f32' as const, bound: 1e-3 },
    // binary16 weights and activations: ~3 significant digits.
    { dtype: 'f16' as const, bound: 3e-2 },
  ])('$dtype model in onnxruntime-node', ({ dtype, bound }) => {
    let engine: PeerEngine;
    beforeAll(async () => {
      engine = await createOrtCpuEngine(exportBertOnnx(checkpoint, dtype).bytes);
    });
    afterAll(() => engine.dispose());

    it(`matches the float64 reference within ${bound} on a padded, ragged batch`, async () => {
      const out = await engine.run(padBatch(sequences));
      expect(out.pooled).toHaveLength(sequences.length * HIDDEN);
      expect(maxAbsError(out, refBertForward(reference, sequences))).toBeLessThanOrEqual(bound);
    });

    it('gives each sequence the same answer alone as inside the padded batch', async () => {
      const batch = await engine.run(padBatch(sequences));
      const alone = await engine.run(padBatch([sequences[2]!]));
      const row = batch.logits!.subarray(2 * LABELS, 3 * LABELS);
      for (let j = 0; j < LABELS; j++) expect(Math.abs(alone.logits![j]! - row[j]!)).toBeLessThanOrEqual(bound);
    });
  });
});
