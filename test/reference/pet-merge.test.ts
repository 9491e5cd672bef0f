// Tests of the float64 PET merge reference: every kind merged into a tiny base,
// checked against expectations computed here by hand (explicit loops over plain
// arrays), so that the GPU PET kernels are checked against a reference that is
// itself known to follow docs/pet-format.md.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { add, layerNorm, matVec, rowOf, type Flat } from './inline-math.js';
import { tempDirs, writeRawSafetensors, type RawTensor } from './raw-safetensors.js';
import { loadRefBert, refBertForward } from './bert-f64.js';
import type { RefBert } from './bert-f64.js';
import { expectClose } from './compare.js';
import { refGeluErf, refLinear } from './ops-f64.js';
import { loadRefTask } from './pet-merge-f64.js';

// ---------------------------------------------------------------------------
// Files


function f32(name: string, shape: number[], values: ArrayLike<number>): RawTensor {
  return { name, dtype: 'F32', shape, bytes: new Uint8Array(Float32Array.from(values).buffer) };
}
function i32(name: string, values: number[]): RawTensor {
  return { name, dtype: 'I32', shape: [values.length], bytes: new Uint8Array(Int32Array.from(values).buffer) };
}
function i64(name: string, values: number[]): RawTensor {
  return {
    name,
    dtype: 'I64',
    shape: [values.length],
    bytes: new Uint8Array(BigInt64Array.from(values, BigInt).buffer),
  };
}

const temp = tempDirs('petserve-pet-ref-');
const makeTempDir = (): string => temp.make();
afterAll(() => temp.removeAll());

function writeBundle(manifest: Record<string, unknown>, tensors: RawTensor[]): string {
  const dir = makeTempDir();
  writeFileSync(join(dir, 'pet.json'), JSON.stringify({ format: 'petserve-pet', version: 1, ...manifest }));
  writeRawSafetensors(join(dir, 'pet.safetensors'), tensors);
  return dir;
}

function writePeft(config: Record<string, unknown>, tensors: RawTensor[]): string {
  const dir = makeTempDir();
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(config));
  writeRawSafetensors(join(dir, 'adapter_model.safetensors'), tensors);
  return dir;
}

/** Deterministic values in [center − scale, center + scale), rounded to f32 so files hold them exactly. */
function makeRandom(seed: number): (n: number, scale?: number, center?: number) => number[] {
  let state = seed >>> 0;
  const next = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  return (n, scale = 1, center = 0) => Array.from({ length: n }, () => Math.fround(center + scale * (2 * next() - 1)));
}

/** Multiples of 1/8 in [−1, 1]: products and sums of a few of them are exact in float64. */
function makeDyadic(seed: number): (n: number) => number[] {
  const rand = makeRandom(seed);
  return (n) => rand(n).map((v) => Math.round(v * 8) / 8);
}

// ---------------------------------------------------------------------------
// Tiny base: hidden 8, 2 heads, 2 layers, intermediate 16, vocab 20, 16 positions, 3 labels.

const H = 8;
const HEADS = 2;
const LAYERS = 2;
const I = 16;
const VOCAB = 20;
const MAX_POS = 16;
const TYPES = 2;
const LABELS = 3;
const EPS = 1e-12;

const baseConfig = {
  architectures: ['BertForSequenceClassification'],
  model_type: 'bert',
  hidden_size: H,
  num_hidden_layers: LAYERS,
  num_attention_heads: HEADS,
  intermediate_size: I,
  hidden_act: 'gelu',
  layer_norm_eps: EPS,
  max_position_embeddings: MAX_POS,
  type_vocab_size: TYPES,
  vocab_size: VOCAB,
};

/** Canonical name (no 'bert.') → [shape, values]. */
type Weights = Map<string, { shape: number[]; values: number[] }>;

function makeBaseWeights(): Weights {
  const rand = makeRandom(7);
  const w: Weights = new Map();
  const put = (name: string, shape: number[], scale: number, center = 0): void => {
    w.set(name, {
      shape,
      values: rand(
        shape.reduce((a, b) => a * b, 1),
        scale,
        center,
      ),
    });
  };
  put('embeddings.word_embeddings.weight', [VOCAB, H], 1);
  put('embeddings.position_embeddings.weight', [MAX_POS, H], 0.5);
  put('embeddings.token_type_embeddings.weight', [TYPES, H], 0.5);
  put('embeddings.LayerNorm.weight', [H], 0.2, 1);
  put('embeddings.LayerNorm.bias', [H], 0.1);
  for (let i = 0; i < LAYERS; i++) {
    const p = `encoder.layer.${i}.`;
    for (const proj of ['query', 'key', 'value']) {
      put(`${p}attention.self.${proj}.weight`, [H, H], 0.6);
      put(`${p}attention.self.${proj}.bias`, [H], 0.1);
    }
    put(`${p}attention.output.dense.weight`, [H, H], 0.6);
    put(`${p}attention.output.dense.bias`, [H], 0.1);
    put(`${p}attention.output.LayerNorm.weight`, [H], 0.2, 1);
    put(`${p}attention.output.LayerNorm.bias`, [H], 0.1);
    put(`${p}intermediate.dense.weight`, [I, H], 0.6);
    put(`${p}intermediate.dense.bias`, [I], 0.1);
    put(`${p}output.dense.weight`, [H, I], 0.4);
    put(`${p}output.dense.bias`, [H], 0.1);
    put(`${p}output.LayerNorm.weight`, [H], 0.2, 1);
    put(`${p}output.LayerNorm.bias`, [H], 0.1);
  }
  put('pooler.dense.weight', [H, H], 0.6);
  put('pooler.dense.bias', [H], 0.1);
  put('classifier.weight', [LABELS, H], 0.6);
  put('classifier.bias', [LABELS], 0.1);
  return w;
}

const BASE = makeBaseWeights();
const BASE_DIR = ((): string => {
  const dir = makeTempDir();
  writeFileSync(join(dir, 'config.json'), JSON.stringify(baseConfig));
  const tensors = [...BASE].map(([name, t]) =>
    f32(name.startsWith('classifier.') ? name : `bert.${name}`, t.shape, t.values),
  );
  writeRawSafetensors(join(dir, 'model.safetensors'), tensors);
  return dir;
})();

function base(name: string): number[] {
  const t = BASE.get(name);
  if (t === undefined) throw new Error(`test base lacks ${name}`);
  return t.values;
}

function merged(model: RefBert, name: string): number[] {
  const t = model.tensors.get(name);
  if (t === undefined) throw new Error(`merged model lacks ${name}`);
  return Array.from(t.data);
}

/** Every base tensor not in `changed` is bit-identical in the merged model (classifier handled separately). */
function expectUntouchedExcept(model: RefBert, changed: string[]): void {
  for (const [name, t] of BASE) {
    if (changed.includes(name) || name.startsWith('classifier.')) continue;
    expect(merged(model, name), name).toEqual(t.values);
  }
}

/** W + s·B·A with explicit loops, W [out, in], A [r, in], B [out, r]. */
function loraMerged(w: number[], a: number[], b: number[], out: number, inDim: number, r: number, s: number): number[] {
  const result = [...w];
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inDim; i++) {
      let delta = 0;
      for (let k = 0; k < r; k++) delta += b[o * r + k]! * a[k * inDim + i]!;
      result[o * inDim + i] = w[o * inDim + i]! + s * delta;
    }
  }
  return result;
}

function transpose(m: number[], rows: number, cols: number): number[] {
  const t: number[] = [];
  for (let c = 0; c < cols; c++) for (let r = 0; r < rows; r++) t.push(m[r * cols + c]!);
  return t;
}

const Q0 = 'encoder.layer.0.attention.self.query';
const V0 = 'encoder.layer.0.attention.self.value';
const K0 = 'encoder.layer.0.attention.self.key';
const Q1 = 'encoder.layer.1.attention.self.query';
const V1 = 'encoder.layer.1.attention.self.value';
const K1 = 'encoder.layer.1.attention.self.key';
const AO0 = 'encoder.layer.0.attention.output.dense';
const INT1 = 'encoder.layer.1.intermediate.dense';
const OUT0 = 'encoder.layer.0.output.dense';
const OUT1 = 'encoder.layer.1.output.dense';

// ---------------------------------------------------------------------------

describe('loadRefTask: LoRA', () => {
  const dy = makeDyadic(11);
  const aQ = dy(2 * H);
  const bQ = dy(H * 2);
  const aI = dy(1 * H);
  const bI = dy(I * 1);

  it('bundle: W ← W + (alpha/r)·B·A per site, alpha_pattern overriding alpha, nothing else touched', () => {
    const dir = writeBundle({ kind: 'lora', lora: { alpha: 4, use_rslora: false, alpha_pattern: { [INT1]: 3 } } }, [
      f32(`${Q0}.lora_A.weight`, [2, H], aQ),
      f32(`${Q0}.lora_B.weight`, [H, 2], bQ),
      f32(`${INT1}.lora_A.weight`, [1, H], aI),
      f32(`${INT1}.lora_B.weight`, [I, 1], bI),
    ]);
    const model = loadRefTask(BASE_DIR, dir);
    // dyadic A and B make s·B·A exact, so the merge has one rounding: compare bit for bit
    expect(merged(model, `${Q0}.weight`)).toEqual(loraMerged(base(`${Q0}.weight`), aQ, bQ, H, H, 2, 4 / 2));
    expect(merged(model, `${INT1}.weight`)).toEqual(loraMerged(base(`${INT1}.weight`), aI, bI, I, H, 1, 3 / 1));
    expectUntouchedExcept(model, [`${Q0}.weight`, `${INT1}.weight`]);
    expect(model.adapters).toBeUndefined();
  });

  it('bundle with rsLoRA scales by alpha/√r', () => {
    const dir = writeBundle({ kind: 'lora', lora: { alpha: 4, use_rslora: true } }, [
      f32(`${Q0}.lora_A.weight`, [2, H], aQ),
      f32(`${Q0}.lora_B.weight`, [H, 2], bQ),
    ]);
    const model = loadRefTask(BASE_DIR, dir);
    expectClose(
      merged(model, `${Q0}.weight`),
      loraMerged(base(`${Q0}.weight`), aQ, bQ, H, H, 2, 4 / Math.SQRT2),
      1e-15,
      'rslora',
    );
  });

  it('PEFT: target_modules by suffix, layers_to_transform, rank_pattern, alpha_pattern, modules_to_save head', () => {
    const aV = dy(1 * H);
    const bV = dy(H * 1);
    const head = makeRandom(5)(2 * H);
    const headBias = [0.25, -0.5];
    const config = {
      peft_type: 'LORA',
      task_type: 'SEQ_CLS',
      r: 2,
      lora_alpha: 8,
      target_modules: ['query', 'value'],
      layers_to_transform: [1],
      rank_pattern: { value: 1 },
      alpha_pattern: { 'encoder.layer.1.attention.self.value': 5 },
      use_rslora: false,
      use_dora: false,
      bias: 'none',
      fan_in_fan_out: false,
      modules_to_save: ['classifier', 'score'],
    };
    const tensors = [
      f32(`base_model.model.bert.${Q1}.lora_A.weight`, [2, H], aQ),
      f32(`base_model.model.bert.${Q1}.lora_B.weight`, [H, 2], bQ),
      f32(`base_model.model.bert.${V1}.lora_A.weight`, [1, H], aV),
      f32(`base_model.model.bert.${V1}.lora_B.weight`, [H, 1], bV),
      f32('base_model.model.classifier.modules_to_save.weight', [2, H], head),
      f32('base_model.model.classifier.modules_to_save.bias', [2], headBias),
    ];
    const model = loadRefTask(BASE_DIR, writePeft(config, tensors));
    expect(merged(model, `${Q1}.weight`)).toEqual(loraMerged(base(`${Q1}.weight`), aQ, bQ, H, H, 2, 8 / 2));
    expect(merged(model, `${V1}.weight`)).toEqual(loraMerged(base(`${V1}.weight`), aV, bV, H, H, 1, 5 / 1));
    expectUntouchedExcept(model, [`${Q1}.weight`, `${V1}.weight`]);
    expect(model.numLabels).toBe(2);
    expect(merged(model, 'classifier.weight')).toEqual(head);
    expect(merged(model, 'classifier.bias')).toEqual(headBias);
    expect(model.id2label).toEqual(['LABEL_0', 'LABEL_1']);

    // layer 0 is not selected by layers_to_transform, so tensors for it are refused
    const stray = [
      ...tensors,
      f32(`base_model.model.bert.${Q0}.lora_A.weight`, [2, H], aQ),
      f32(`base_model.model.bert.${Q0}.lora_B.weight`, [H, 2], bQ),
    ];
    expect(() => loadRefTask(BASE_DIR, writePeft(config, stray))).toThrow(/target_modules does not select/);
  });

  it('PEFT: a regex target_modules is a full match, with rsLoRA and ".default" adapter-name infixes', () => {
    const aK = dy(2 * H);
    const bK = dy(H * 2);
    const config = {
      peft_type: 'LORA',
      r: 2,
      lora_alpha: 3,
      use_rslora: true,
      target_modules: '.*layer\\.0\\.attention\\.self\\.(query|key)',
      modules_to_save: ['classifier'],
    };
    const head = makeRandom(6)(LABELS * H);
    const model = loadRefTask(
      BASE_DIR,
      writePeft(config, [
        f32(`base_model.model.bert.${Q0}.lora_A.default.weight`, [2, H], aQ),
        f32(`base_model.model.bert.${Q0}.lora_B.default.weight`, [H, 2], bQ),
        f32(`base_model.model.bert.${K0}.lora_A.weight`, [2, H], aK),
        f32(`base_model.model.bert.${K0}.lora_B.weight`, [H, 2], bK),
        f32('base_model.model.classifier.modules_to_save.default.weight', [LABELS, H], head),
        f32('base_model.model.classifier.modules_to_save.default.bias', [LABELS], [0, 0, 0]),
      ]),
    );
    const s = 3 / Math.SQRT2;
    expectClose(merged(model, `${Q0}.weight`), loraMerged(base(`${Q0}.weight`), aQ, bQ, H, H, 2, s), 1e-15, 'query');
    expectClose(merged(model, `${K0}.weight`), loraMerged(base(`${K0}.weight`), aK, bK, H, H, 2, s), 1e-15, 'key');
    expectUntouchedExcept(model, [`${Q0}.weight`, `${K0}.weight`]);
    expect(merged(model, 'classifier.weight')).toEqual(head);
  });

  it('PEFT and bundle forms of the same LoRA merge to the same model', () => {
    const bundle = loadRefTask(
      BASE_DIR,
      writeBundle({ kind: 'lora', lora: { alpha: 16 } }, [
        f32(`${V0}.lora_A.weight`, [2, H], aQ),
        f32(`${V0}.lora_B.weight`, [H, 2], bQ),
      ]),
    );
    const peft = loadRefTask(
      BASE_DIR,
      writePeft({ peft_type: 'LORA', r: 2, lora_alpha: 16, target_modules: [V0] }, [
        f32(`base_model.model.${V0}.lora_A.weight`, [2, H], aQ),
        f32(`base_model.model.${V0}.lora_B.weight`, [H, 2], bQ),
      ]),
    );
    expect(peft.tensors).toEqual(bundle.tensors);
    expect(merged(peft, `${V0}.weight`)).not.toEqual(base(`${V0}.weight`));
  });

  it('PEFT fan_in_fan_out: nn.Linear-shaped tensors read as stored, transposed tensors transposed back', () => {
    const plain = loadRefTask(
      BASE_DIR,
      writePeft({ peft_type: 'LORA', r: 1, lora_alpha: 2, target_modules: ['intermediate.dense'] }, [
        f32(`base_model.model.bert.encoder.layer.0.intermediate.dense.lora_A.weight`, [1, H], aI),
        f32(`base_model.model.bert.encoder.layer.0.intermediate.dense.lora_B.weight`, [I, 1], bI),
        f32(`base_model.model.bert.${INT1}.lora_A.weight`, [1, H], aI),
        f32(`base_model.model.bert.${INT1}.lora_B.weight`, [I, 1], bI),
      ]),
    );
    const fanConfig = {
      peft_type: 'LORA',
      r: 1,
      lora_alpha: 2,
      target_modules: ['intermediate.dense'],
      fan_in_fan_out: true,
    };
    const sameShapes = loadRefTask(
      BASE_DIR,
      writePeft(fanConfig, [
        f32(`base_model.model.bert.encoder.layer.0.intermediate.dense.lora_A.weight`, [1, H], aI),
        f32(`base_model.model.bert.encoder.layer.0.intermediate.dense.lora_B.weight`, [I, 1], bI),
        f32(`base_model.model.bert.${INT1}.lora_A.weight`, [1, H], aI),
        f32(`base_model.model.bert.${INT1}.lora_B.weight`, [I, 1], bI),
      ]),
    );
    const transposed = loadRefTask(
      BASE_DIR,
      writePeft(fanConfig, [
        f32(`base_model.model.bert.encoder.layer.0.intermediate.dense.lora_A.weight`, [H, 1], transpose(aI, 1, H)),
        f32(`base_model.model.bert.encoder.layer.0.intermediate.dense.lora_B.weight`, [1, I], transpose(bI, I, 1)),
        f32(`base_model.model.bert.${INT1}.lora_A.weight`, [H, 1], transpose(aI, 1, H)),
        f32(`base_model.model.bert.${INT1}.lora_B.weight`, [1, I], transpose(bI, I, 1)),
      ]),
    );
    expect(merged(plain, `${INT1}.weight`)).toEqual(loraMerged(base(`${INT1}.weight`), aI, bI, I, H, 1, 2));
    expect(sameShapes.tensors).toEqual(plain.tensors);
    expect(transposed.tensors).toEqual(plain.tensors);
  });

  it('refuses DoRA, LoRA biases, targets outside the Sites table, unknown peft types and missing tensors', () => {
    const tensors = [
      f32(`base_model.model.bert.${Q0}.lora_A.weight`, [2, H], aQ),
      f32(`base_model.model.bert.${Q0}.lora_B.weight`, [H, 2], bQ),
    ];
    const ok = { peft_type: 'LORA', r: 2, lora_alpha: 2, target_modules: [Q0] };
    expect(() => loadRefTask(BASE_DIR, writePeft(ok, tensors))).not.toThrow();
    expect(() => loadRefTask(BASE_DIR, writePeft({ ...ok, use_dora: true }, tensors))).toThrow(/use_dora/);
    expect(() => loadRefTask(BASE_DIR, writePeft({ ...ok, bias: 'all' }, tensors))).toThrow(/bias/);
    expect(() => loadRefTask(BASE_DIR, writePeft({ ...ok, target_modules: [Q0, 'word_embeddings'] }, tensors))).toThrow(
      /word_embeddings.*outside the Sites table/,
    );
    expect(() => loadRefTask(BASE_DIR, writePeft({ ...ok, peft_type: 'LOHA' }, tensors))).toThrow(/LOHA/);
    expect(() => loadRefTask(BASE_DIR, writePeft({ ...ok, target_modules: [Q0, K0] }, tensors))).toThrow(/key lacks/);
    expect(() => loadRefTask(BASE_DIR, writePeft({ ...ok, r: 4 }, tensors))).toThrow(/do not fit rank 4/);
    expect(() =>
      loadRefTask(
        BASE_DIR,
        writeBundle(
          { kind: 'lora', lora: { alpha: 2 } },
          [tensors[0]!].map((t) => ({ ...t, name: `${Q0}.lora_A.weight` })),
        ),
      ),
    ).toThrow(/lora_B/);
  });
});

describe('loadRefTask: diff', () => {
  it('scatters ΔW at flat indices row·in + col and adds Δb', () => {
    const keyIdx = [0, 9, 10, 63];
    const keyVals = [0.5, -0.25, 1.5, -2];
    const outIdx = [3, 17, 100];
    const outVals = [0.125, 4, -0.75];
    const biasDelta = makeRandom(3)(H);
    const dir = writeBundle(
      { kind: 'diff', base_model: { hidden_size: H, num_hidden_layers: LAYERS, intermediate_size: I } },
      [
        i64(`${K0}.weight.diff_indices`, keyIdx),
        f32(`${K0}.weight.diff_values`, [4], keyVals),
        i32(`${OUT1}.weight.diff_indices`, outIdx),
        f32(`${OUT1}.weight.diff_values`, [3], outVals),
        f32(`${OUT1}.bias.diff`, [H], biasDelta),
      ],
    );
    const model = loadRefTask(BASE_DIR, dir);
    const wantKey = [...base(`${K0}.weight`)];
    keyIdx.forEach((idx, k) => (wantKey[idx] = wantKey[idx]! + keyVals[k]!));
    const wantOut = [...base(`${OUT1}.weight`)];
    outIdx.forEach((idx, k) => (wantOut[idx] = wantOut[idx]! + outVals[k]!));
    expect(merged(model, `${K0}.weight`)).toEqual(wantKey);
    // flat index 17 of a [H, I] weight is row 1, column 1
    expect(merged(model, `${OUT1}.weight`)[1 * I + 1]).toBe(base(`${OUT1}.weight`)[17]! + 4);
    expect(merged(model, `${OUT1}.weight`)).toEqual(wantOut);
    expect(merged(model, `${OUT1}.bias`)).toEqual(base(`${OUT1}.bias`).map((b, o) => b + biasDelta[o]!));
    expectUntouchedExcept(model, [`${K0}.weight`, `${OUT1}.weight`, `${OUT1}.bias`]);
  });

  it('refuses unsorted, repeated or out-of-range indices, float indices and density above 0.5', () => {
    const diff = (indices: RawTensor, values: number[]): string =>
      writeBundle({ kind: 'diff' }, [indices, f32(`${K0}.weight.diff_values`, [values.length], values)]);
    expect(() => loadRefTask(BASE_DIR, diff(i32(`${K0}.weight.diff_indices`, [1, 2]), [1, 1]))).not.toThrow();
    expect(() => loadRefTask(BASE_DIR, diff(i32(`${K0}.weight.diff_indices`, [2, 1]), [1, 1]))).toThrow(
      /strictly increasing/,
    );
    expect(() => loadRefTask(BASE_DIR, diff(i32(`${K0}.weight.diff_indices`, [2, 2]), [1, 1]))).toThrow(
      /strictly increasing/,
    );
    expect(() => loadRefTask(BASE_DIR, diff(i32(`${K0}.weight.diff_indices`, [1, H * H]), [1, 1]))).toThrow(/outside/);
    expect(() => loadRefTask(BASE_DIR, diff(f32(`${K0}.weight.diff_indices`, [2], [1, 2]), [1, 1]))).toThrow(
      /I32 or I64/,
    );
    const dense = Array.from({ length: (H * H) / 2 + 1 }, (_, k) => k);
    expect(() =>
      loadRefTask(
        BASE_DIR,
        diff(
          i32(`${K0}.weight.diff_indices`, dense),
          dense.map(() => 1),
        ),
      ),
    ).toThrow(/density/);
    expect(() => loadRefTask(BASE_DIR, diff(i32(`${K0}.weight.diff_indices`, [1, 2]), [1]))).toThrow(/shape/);
  });
});

describe('loadRefTask: mask', () => {
  it('zeroes exactly the listed weights and nothing else', () => {
    const removed = [0, 5, 6, 7, 40, 127];
    const dir = writeBundle({ kind: 'mask' }, [i64(`${INT1}.weight.mask_removed`, removed)]);
    const model = loadRefTask(BASE_DIR, dir);
    const got = merged(model, `${INT1}.weight`);
    const want = base(`${INT1}.weight`);
    got.forEach((v, idx) => expect(v).toBe(removed.includes(idx) ? 0 : want[idx]));
    expect(want.filter((v) => v === 0)).toHaveLength(0); // so each zero above came from the mask
    expect(merged(model, `${INT1}.bias`)).toEqual(base(`${INT1}.bias`));
    expectUntouchedExcept(model, [`${INT1}.weight`]);
  });

  it('refuses masks on LayerNorms and unknown tensor names', () => {
    expect(() =>
      loadRefTask(BASE_DIR, writeBundle({ kind: 'mask' }, [i32('embeddings.LayerNorm.weight.mask_removed', [0])])),
    ).toThrow(/not a linear site/);
    expect(() => loadRefTask(BASE_DIR, writeBundle({ kind: 'mask' }, [i32(`${Q0}.weight.mask_keep`, [0])]))).toThrow(
      /not understood for kind mask/,
    );
  });
});

describe('loadRefTask: bitfit', () => {
  it('replaces the given biases and LayerNorm gains/biases, embeddings LayerNorm and pooler bias included', () => {
    const rand = makeRandom(9);
    const given: [string, number[]][] = [
      [`${Q0}.bias`, rand(H)],
      [`${INT1}.bias`, rand(I)],
      ['encoder.layer.1.output.LayerNorm.weight', rand(H, 0.1, 1)],
      ['encoder.layer.1.output.LayerNorm.bias', rand(H)],
      ['encoder.layer.0.attention.output.LayerNorm.bias', rand(H)],
      ['embeddings.LayerNorm.bias', rand(H)],
      ['pooler.dense.bias', rand(H)],
    ];
    const model = loadRefTask(
      BASE_DIR,
      writeBundle(
        { kind: 'bitfit' },
        given.map(([name, v]) => f32(name, [v.length], v)),
      ),
    );
    for (const [name, values] of given) expect(merged(model, name), name).toEqual(values);
    expectUntouchedExcept(
      model,
      given.map(([name]) => name),
    );
  });

  it('refuses weight matrices and wrongly sized vectors', () => {
    expect(() =>
      loadRefTask(
        BASE_DIR,
        writeBundle({ kind: 'bitfit' }, [f32(`${Q0}.weight`, [H, H], new Array<number>(H * H).fill(0))]),
      ),
    ).toThrow(/not understood for kind bitfit/);
    expect(() =>
      loadRefTask(BASE_DIR, writeBundle({ kind: 'bitfit' }, [f32(`${INT1}.bias`, [H], new Array<number>(H).fill(0))])),
    ).toThrow(/shape/);
  });
});

/** Y = X·Wᵀ + b with explicit loops over rows of X [rows, inDim]. */
function linearLoops(x: number[], rows: number, inDim: number, w: number[], b: number[], out: number): number[] {
  const y: number[] = [];
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < out; o++) {
      let s = b[o]!;
      for (let i = 0; i < inDim; i++) s += x[r * inDim + i]! * w[o * inDim + i]!;
      y.push(s);
    }
  }
  return y;
}

/** The unmerged IA³ computation for one module: output mode Y ⊙ l, input mode (X ⊙ l)·Wᵀ + b. */
function ia3Unmerged(
  module: string,
  mode: 'output' | 'input',
  l: number[],
  x: number[],
  rows: number,
  out: number,
  inDim: number,
): number[] {
  const w = base(`${module}.weight`);
  const b = base(`${module}.bias`);
  if (mode === 'input') {
    const scaled = x.map((v, idx) => v * l[idx % inDim]!);
    return linearLoops(scaled, rows, inDim, w, b, out);
  }
  return linearLoops(x, rows, inDim, w, b, out).map((v, idx) => v * l[idx % out]!);
}

function mergedLinear(
  model: RefBert,
  module: string,
  x: number[],
  rows: number,
  inDim: number,
  out: number,
): Float64Array {
  return refLinear(x, rows, inDim, merged(model, `${module}.weight`), merged(model, `${module}.bias`), out);
}

describe('loadRefTask: IA³', () => {
  const rand = makeRandom(21);
  const ROWS = 3;
  const xH = rand(ROWS * H, 2);
  const xI = rand(ROWS * I, 2);

  it('PEFT: non-feedforward modules scale the output (after bias), feedforward modules scale the input', () => {
    const lK = rand(H, 0.5, 1);
    const lV = rand(H, 0.5, 1);
    const lAo = rand(H, 0.5, 1);
    const lOut = rand(I, 0.5, 1);
    // PEFT's BERT defaults. feedforward_modules matches by a plain endswith, so
    // "output.dense" also makes attention.output.dense input-scaled ([1, H]).
    const config = {
      peft_type: 'IA3',
      target_modules: ['key', 'value', 'output.dense'],
      feedforward_modules: ['output.dense'],
      layers_to_transform: 0,
    };
    const model = loadRefTask(
      BASE_DIR,
      writePeft(config, [
        f32(`base_model.model.${K0}.ia3_l`, [H, 1], lK),
        f32(`base_model.model.${V0}.ia3_l`, [H, 1], lV),
        f32(`base_model.model.${AO0}.ia3_l`, [1, H], lAo),
        f32(`base_model.model.${OUT0}.ia3_l`, [1, I], lOut),
      ]),
    );
    expectClose(mergedLinear(model, K0, xH, ROWS, H, H), ia3Unmerged(K0, 'output', lK, xH, ROWS, H, H), 1e-14, 'key');
    expectClose(mergedLinear(model, V0, xH, ROWS, H, H), ia3Unmerged(V0, 'output', lV, xH, ROWS, H, H), 1e-14, 'value');
    expectClose(
      mergedLinear(model, AO0, xH, ROWS, H, H),
      ia3Unmerged(AO0, 'input', lAo, xH, ROWS, H, H),
      1e-14,
      'attn out',
    );
    expectClose(
      mergedLinear(model, OUT0, xI, ROWS, I, H),
      ia3Unmerged(OUT0, 'input', lOut, xI, ROWS, H, I),
      1e-14,
      'output',
    );
    // input scaling leaves the bias alone, output scaling scales it
    expect(merged(model, `${OUT0}.bias`)).toEqual(base(`${OUT0}.bias`));
    expect(merged(model, `${K0}.bias`)).toEqual(base(`${K0}.bias`).map((b, o) => b * lK[o]!));
    expectUntouchedExcept(
      model,
      [K0, V0, AO0, OUT0].flatMap((m) => [`${m}.weight`, `${m}.bias`]),
    );
    expect(model.numLabels).toBe(0);

    // an output-shaped [H, 1] vector where PEFT's matching makes the module feedforward is refused
    const wrong = writePeft(config, [
      f32(`base_model.model.${K0}.ia3_l`, [H, 1], lK),
      f32(`base_model.model.${V0}.ia3_l`, [H, 1], lV),
      f32(`base_model.model.${AO0}.ia3_l`, [H, 1], lAo),
      f32(`base_model.model.${OUT0}.ia3_l`, [1, I], lOut),
    ]);
    expect(() => loadRefTask(BASE_DIR, wrong)).toThrow(
      /attention\.output\.dense\.ia3_l has shape \[8,1\], expected \[1,8\]/,
    );
  });

  it('bundle: feedforward_modules lists the input-scaled modules; same merge as the PEFT form', () => {
    const lQ = rand(H, 0.5, 1);
    const lPool = rand(H, 0.5, 1);
    const lOut = rand(I, 0.5, 1);
    const bundle = loadRefTask(
      BASE_DIR,
      writeBundle({ kind: 'ia3', ia3: { feedforward_modules: [OUT1] } }, [
        f32(`${Q1}.ia3_l`, [H, 1], lQ),
        f32(`${OUT1}.ia3_l`, [1, I], lOut),
        f32('pooler.dense.ia3_l', [H, 1], lPool),
      ]),
    );
    expectClose(
      mergedLinear(bundle, Q1, xH, ROWS, H, H),
      ia3Unmerged(Q1, 'output', lQ, xH, ROWS, H, H),
      1e-14,
      'query',
    );
    expectClose(
      mergedLinear(bundle, OUT1, xI, ROWS, I, H),
      ia3Unmerged(OUT1, 'input', lOut, xI, ROWS, H, I),
      1e-14,
      'output',
    );
    expectClose(
      mergedLinear(bundle, 'pooler.dense', xH, ROWS, H, H),
      ia3Unmerged('pooler.dense', 'output', lPool, xH, ROWS, H, H),
      1e-14,
      'pooler',
    );
    const peft = loadRefTask(
      BASE_DIR,
      writePeft({ peft_type: 'IA3', target_modules: [Q1, OUT1, 'pooler.dense'], feedforward_modules: [OUT1] }, [
        f32(`base_model.model.bert.${Q1}.ia3_l`, [H, 1], lQ),
        f32(`base_model.model.bert.${OUT1}.ia3_l`, [1, I], lOut),
        f32('base_model.model.bert.pooler.dense.ia3_l', [H, 1], lPool),
      ]),
    );
    expect(peft.tensors).toEqual(bundle.tensors);
    // an input-shaped vector for a module not listed as feedforward is refused
    expect(() =>
      loadRefTask(
        BASE_DIR,
        writeBundle({ kind: 'ia3', ia3: { feedforward_modules: [] } }, [f32(`${OUT1}.ia3_l`, [1, I], lOut)]),
      ),
    ).toThrow(/expected \[8,1\]/);
  });
});

// ---------------------------------------------------------------------------
// Explicit forward of the tiny base for a one-token sequence (attention over one key is v),
// with optional adapters, written out with plain loops.


interface TestAdapter {
  m: number;
  act: 'relu' | 'gelu';
  down: Flat;
  downBias: Flat;
  up: Flat;
  upBias: Flat;
}

function adapterStep(h: Flat, a: TestAdapter): Flat {
  const z = matVec(a.down, a.m, H, h, a.downBias).map((v) => (a.act === 'relu' ? Math.max(0, v) : refGeluErf(v)));
  const u = matVec(a.up, H, a.m, z, a.upBias);
  return add(h, u);
}

function explicitOneToken(
  id: number,
  adapters: Map<string, TestAdapter>,
): { hidden: Flat[]; pooled: Flat; logits: Flat } {
  const w = base;
  let x = layerNorm(
    add(
      add(
        rowOf(w('embeddings.word_embeddings.weight'), id, H),
        rowOf(w('embeddings.position_embeddings.weight'), 0, H),
      ),
      rowOf(w('embeddings.token_type_embeddings.weight'), 0, H),
    ),
    w('embeddings.LayerNorm.weight'),
    w('embeddings.LayerNorm.bias'),
  );
  const hidden = [x];
  for (let i = 0; i < LAYERS; i++) {
    const p = `encoder.layer.${i}.`;
    const context = matVec(w(`${p}attention.self.value.weight`), H, H, x, w(`${p}attention.self.value.bias`));
    let attn = matVec(w(`${p}attention.output.dense.weight`), H, H, context, w(`${p}attention.output.dense.bias`));
    const a1 = adapters.get(`${p}attention.output`);
    if (a1 !== undefined) attn = adapterStep(attn, a1);
    const h1 = layerNorm(
      add(attn, x),
      w(`${p}attention.output.LayerNorm.weight`),
      w(`${p}attention.output.LayerNorm.bias`),
    );
    const inter = matVec(w(`${p}intermediate.dense.weight`), I, H, h1, w(`${p}intermediate.dense.bias`)).map((v) =>
      refGeluErf(v),
    );
    let ffn = matVec(w(`${p}output.dense.weight`), H, I, inter, w(`${p}output.dense.bias`));
    const a2 = adapters.get(`${p}output`);
    if (a2 !== undefined) ffn = adapterStep(ffn, a2);
    x = layerNorm(add(ffn, h1), w(`${p}output.LayerNorm.weight`), w(`${p}output.LayerNorm.bias`));
    hidden.push(x);
  }
  const pooled = matVec(w('pooler.dense.weight'), H, H, x, w('pooler.dense.bias')).map(Math.tanh);
  return { hidden, pooled, logits: matVec(w('classifier.weight'), LABELS, H, pooled, w('classifier.bias')) };
}

function adapterTensors(adapters: Map<string, TestAdapter>): RawTensor[] {
  return [...adapters].flatMap(([module, a]) => [
    f32(`${module}.adapter.down.weight`, [a.m, H], a.down),
    f32(`${module}.adapter.down.bias`, [a.m], a.downBias),
    f32(`${module}.adapter.up.weight`, [H, a.m], a.up),
    f32(`${module}.adapter.up.bias`, [H], a.upBias),
  ]);
}

function makeAdapters(seed: number, m: number, act: 'relu' | 'gelu', zeroUp: boolean): Map<string, TestAdapter> {
  const rand = makeRandom(seed);
  const adapters = new Map<string, TestAdapter>();
  for (let i = 0; i < LAYERS; i++) {
    for (const module of [`encoder.layer.${i}.attention.output`, `encoder.layer.${i}.output`]) {
      adapters.set(module, {
        m,
        act,
        down: rand(m * H, 0.8),
        downBias: rand(m, 0.3),
        up: zeroUp ? new Array<number>(H * m).fill(0) : rand(H * m, 0.8),
        upBias: zeroUp ? new Array<number>(H).fill(0) : rand(H, 0.3),
      });
    }
  }
  return adapters;
}

const baseHead = (): RawTensor[] => [
  f32('classifier.weight', [LABELS, H], base('classifier.weight')),
  f32('classifier.bias', [LABELS], base('classifier.bias')),
];

describe('loadRefTask: adapter', () => {
  const inputIds = [[3, 17, 4, 9], [12]];
  const tokenTypes = [[0, 0, 1, 1], [1]];

  it('with zero up weights and bias is the identity: same outputs as the base model', () => {
    const baseModel = loadRefBert(BASE_DIR);
    const want = refBertForward(baseModel, inputIds, tokenTypes);
    for (const act of ['relu', 'gelu'] as const) {
      const adapters = makeAdapters(31, 3, act, true);
      const dir = writeBundle({ kind: 'adapter', adapter: { bottleneck: 3, activation: act } }, [
        ...adapterTensors(adapters),
        ...baseHead(),
      ]);
      const task = loadRefTask(BASE_DIR, dir);
      expect(task.adapters?.size).toBe(2 * LAYERS);
      expectUntouchedExcept(task, []);
      const got = refBertForward(task, inputIds, tokenTypes);
      expect(got.hiddenStates).toEqual(want.hiddenStates);
      expect(got.poolerOutput).toEqual(want.poolerOutput);
      expect(got.logits).toEqual(want.logits);
    }
  });

  it('with non-zero weights matches the adapter inserted step by step, for relu and gelu', () => {
    for (const act of ['relu', 'gelu'] as const) {
      const adapters = makeAdapters(act === 'relu' ? 41 : 42, 4, act, false);
      const dir = writeBundle(
        { kind: 'adapter', adapter: { bottleneck: 4, activation: act }, head: { id2label: ['a', 'b', 'c'] } },
        [...adapterTensors(adapters), ...baseHead()],
      );
      const task = loadRefTask(BASE_DIR, dir);
      expect(task.id2label).toEqual(['a', 'b', 'c']);
      for (const id of [2, 15]) {
        const want = explicitOneToken(id, adapters);
        const got = refBertForward(task, [[id]]);
        want.hidden.forEach((h, layer) =>
          expectClose(got.hiddenStates[layer]![0]![0]!, h, 1e-13, `${act} layer ${layer}`),
        );
        expectClose(got.poolerOutput[0]!, want.pooled, 1e-13, `${act} pooled`);
        expectClose(got.logits![0]!, want.logits, 1e-13, `${act} logits`);
      }
      // the adapters really change the output, and the no-adapter explicit path equals the base model
      const plain = explicitOneToken(2, new Map());
      expectClose(refBertForward(loadRefBert(BASE_DIR), [[2]]).logits![0]!, plain.logits, 1e-13, 'base');
      expect(Math.abs(plain.logits[0]! - explicitOneToken(2, adapters).logits[0]!)).toBeGreaterThan(1e-3);
    }
  });

  it('refuses missing adapter tensors, bad bottlenecks and activations; the forward refuses unknown adapter keys', () => {
    const adapters = makeAdapters(51, 2, 'relu', false);
    const tensors = adapterTensors(adapters);
    const adapter = (section: Record<string, unknown>, list: RawTensor[]): string =>
      writeBundle({ kind: 'adapter', adapter: section }, list);
    expect(() => loadRefTask(BASE_DIR, adapter({ bottleneck: 2, activation: 'relu' }, tensors.slice(0, -1)))).toThrow(
      /missing tensor encoder\.layer\.1\.output\.adapter\.up\.bias/,
    );
    expect(() => loadRefTask(BASE_DIR, adapter({ bottleneck: 3, activation: 'relu' }, tensors))).toThrow(/shape/);
    expect(() => loadRefTask(BASE_DIR, adapter({ bottleneck: H + 1, activation: 'relu' }, tensors))).toThrow(
      /bottleneck/,
    );
    expect(() => loadRefTask(BASE_DIR, adapter({ bottleneck: 2, activation: 'swish' }, tensors))).toThrow(/activation/);
    const task = loadRefTask(BASE_DIR, adapter({ bottleneck: 2, activation: 'relu' }, tensors));
    task.adapters!.set('encoder.layer.2.output', task.adapters!.get('encoder.layer.1.output')!);
    expect(() => refBertForward(task, [[1]])).toThrow(/adapter key/);
  });
});

describe('loadRefTask: task head', () => {
  it('a PET without a classifier gives an embedding task: logits null although the base has a classifier', () => {
    const baseModel = loadRefBert(BASE_DIR);
    expect(baseModel.numLabels).toBe(LABELS);
    const task = loadRefTask(
      BASE_DIR,
      writeBundle({ kind: 'bitfit' }, [f32('pooler.dense.bias', [H], base('pooler.dense.bias'))]),
    );
    expect(task.numLabels).toBe(0);
    expect(task.tensors.has('classifier.weight')).toBe(false);
    const got = refBertForward(task, [[1, 2, 3]]);
    expect(got.logits).toBeNull();
    expect(got.poolerOutput).toEqual(refBertForward(baseModel, [[1, 2, 3]]).poolerOutput);
  });

  it("the PET's own classifier replaces the base's, with its own number of labels", () => {
    const headW = makeRandom(61)(2 * H);
    const headB = [0.5, -0.5];
    const task = loadRefTask(
      BASE_DIR,
      writeBundle({ kind: 'mask', head: { id2label: ['neg', 'pos'] } }, [
        i32(`${Q0}.weight.mask_removed`, [1]),
        f32('classifier.weight', [2, H], headW),
        f32('classifier.bias', [2], headB),
      ]),
    );
    expect(task.numLabels).toBe(2);
    expect(task.id2label).toEqual(['neg', 'pos']);
    const out = refBertForward(task, [[4, 5]]);
    expectClose(out.logits![0]!, linearLoops(out.poolerOutput[0]!, 1, H, headW, headB, 2), 1e-15, 'logits');
  });

  it('reads PEFT heads under every accepted name; refuses a half head and a label count mismatch', () => {
    const headW = makeRandom(62)(LABELS * H);
    const headB = [1, 2, 3];
    for (const stem of ['classifier', 'classifier.modules_to_save', 'classifier.modules_to_save.default']) {
      const task = loadRefTask(
        BASE_DIR,
        writePeft(
          { peft_type: 'IA3', target_modules: [K1], feedforward_modules: [], modules_to_save: ['classifier'] },
          [
            f32(`base_model.model.bert.${K1}.ia3_l`, [H, 1], new Array<number>(H).fill(1)),
            f32(`base_model.model.${stem}.weight`, [LABELS, H], headW),
            f32(`base_model.model.${stem}.bias`, [LABELS], headB),
          ],
        ),
      );
      expect(task.numLabels, stem).toBe(LABELS);
      expect(merged(task, 'classifier.weight')).toEqual(headW);
      expectUntouchedExcept(task, []); // ia3_l of ones is the identity
    }
    expect(() =>
      loadRefTask(BASE_DIR, writeBundle({ kind: 'bitfit' }, [f32('classifier.weight', [2, H], headW.slice(0, 2 * H))])),
    ).toThrow(/classifier\.bias/);
    expect(() =>
      loadRefTask(
        BASE_DIR,
        writeBundle({ kind: 'bitfit', head: { id2label: ['x'] } }, [
          f32('classifier.weight', [2, H], headW.slice(0, 2 * H)),
          f32('classifier.bias', [2], [0, 0]),
        ]),
      ),
    ).toThrow(/id2label has 1 labels/);
  });
});

describe('loadRefTask: bundle and directory validation', () => {
  const tensors = [f32('pooler.dense.bias', [H], new Array<number>(H).fill(0))];
  it('refuses wrong format, version, kind, base_model mismatch, unknown keys, non-finite values and ambiguous directories', () => {
    expect(() => loadRefTask(BASE_DIR, writeBundle({ kind: 'bitfit' }, tensors))).not.toThrow();
    expect(() => loadRefTask(BASE_DIR, writeBundle({ kind: 'bitfit', format: 'other' }, tensors))).toThrow(/format/);
    expect(() => loadRefTask(BASE_DIR, writeBundle({ kind: 'bitfit', version: 2 }, tensors))).toThrow(/version/);
    expect(() => loadRefTask(BASE_DIR, writeBundle({ kind: 'prefix' }, tensors))).toThrow(/kind "prefix"/);
    expect(() =>
      loadRefTask(BASE_DIR, writeBundle({ kind: 'bitfit', base_model: { hidden_size: 16 } }, tensors)),
    ).toThrow(/base_model\.hidden_size = 16/);
    expect(() => loadRefTask(BASE_DIR, writeBundle({ kind: 'bitfit', lora: { alpha: 1 } }, tensors))).toThrow(
      /unknown key "lora"/,
    );
    expect(() => loadRefTask(BASE_DIR, writeBundle({ kind: 'lora', lora: { alpha: 1, dropout: 0.1 } }, []))).toThrow(
      /dropout/,
    );
    expect(() =>
      loadRefTask(
        BASE_DIR,
        writeBundle({ kind: 'bitfit' }, [f32('pooler.dense.bias', [H], [0, 0, 0, NaN, 0, 0, 0, 0])]),
      ),
    ).toThrow(/non-finite/);
    expect(() =>
      loadRefTask(
        BASE_DIR,
        writeBundle({ kind: 'bitfit' }, [f32('encoder.layer.2.output.dense.bias', [H], new Array<number>(H).fill(0))]),
      ),
    ).toThrow(/not understood/);
    const both = writeBundle({ kind: 'bitfit' }, tensors);
    writeFileSync(join(both, 'adapter_config.json'), '{}');
    expect(() => loadRefTask(BASE_DIR, both)).toThrow(/both/);
    expect(() => loadRefTask(BASE_DIR, makeTempDir())).toThrow(/neither/);
  });
});
