import { afterAll, describe, expect, it } from 'vitest';
import type { BatchEncoder } from '../../src/gpu/batch-encoder.js';
import type { KernelSpec } from '../../src/gpu/pipeline-cache.js';
import { gemmCandidates, gemmChoiceName, smallGemmCandidates } from '../../src/kernels/candidates.js';
import { gemm, type GemmActivation } from '../../src/kernels/gemm.js';
import { SlotField, SlotTable, slotSiteBase } from '../../src/kernels/slot-record.js';
import type { Dtype, GemmChoice } from '../../src/kernels/types.js';
import {
  createTestGpu,
  poisoned,
  randomArray,
  roundToDtype,
  runAndRead,
  toDevice,
  u32ToDevice,
  type TestGpu,
} from '../helpers/gpu.js';
import { expectClose } from '../reference/compare.js';
import { refGeluErf, refGeluTanh, refLinear, refTanh } from '../reference/ops-f64.js';

// Created at collection time: tests skip (it.skipIf) on what the adapter lacks.
const gpu: TestGpu = await createTestGpu();
afterAll(() => gpu.destroy());

const TOL: Record<Dtype, number> = { f32: 1e-4, f16: 2e-2 };

async function check(
  dtype: Dtype,
  variant: GemmChoice,
  M: number,
  N: number,
  K: number,
  act: GemmActivation,
  withBias: boolean,
  withResidual: boolean,
  xScale = 1,
): Promise<void> {
  const x = roundToDtype(randomArray(M * K, xScale), dtype);
  const w = roundToDtype(randomArray(N * K, 0.5), dtype);
  const b = roundToDtype(randomArray(N), dtype);
  const r = roundToDtype(randomArray(M * N), dtype);
  let expected = refLinear(x, M, K, w, withBias ? b : null, N);
  if (act === 'gelu') expected = refGeluErf(expected);
  if (act === 'gelu_tanh') expected = refGeluTanh(expected);
  if (act === 'tanh') expected = refTanh(expected);
  if (withResidual) expected = expected.map((v, i) => v + r[i]!);

  const y = poisoned(gpu, M * N, dtype);
  const got = await runAndRead(
    gpu,
    (enc) =>
      gemm(
        enc,
        dtype,
        {
          x: toDevice(gpu, x, dtype),
          w: toDevice(gpu, w, dtype),
          y,
          bias: withBias ? toDevice(gpu, b, dtype) : null,
          residual: withResidual ? toDevice(gpu, r, dtype) : null,
          M,
          N,
          K,
          act,
        },
        'gemm-test',
        variant,
      ),
    y,
    M * N,
    dtype,
  );
  expectClose(got, expected, TOL[dtype], `${gemmChoiceName(variant)} ${dtype} ${M}x${N}x${K} ${act}`);
}

// Every variant the self-tuner may pick (src/kernels/candidates.ts), plus the naive baseline.
const VARIANTS: GemmChoice[] = [{ variant: 'naive' }];
for (const c of [...gemmCandidates(gpu.ctx.capabilities), ...smallGemmCandidates(gpu.ctx.capabilities)]) {
  if (!VARIANTS.some((v) => gemmChoiceName(v) === gemmChoiceName(c))) VARIANTS.push(c);
}
const RB: GemmChoice = { variant: 'rb', rowsPerInvocation: 4, colsPerInvocation: 8 };

describe('gemm Y = act(X·Wᵀ + b) + R matches the float64 reference', () => {
  // Shapes straddle the tile sizes (64x64 tiles, 32x(8·RM) blocks, BK 16, vec4 K). The decode shapes (M <= 16)
  // have K that is not a multiple of 4 (scalar loads) or of any subgroup size, K past one 64-lane stride
  // of the subgroup kernel (300, 261), and N and M not multiples of its 4-column, 4-row blocks.
  const shapes: [number, number, number][] = [
    [1, 1, 4],
    [1, 5, 7],
    [3, 37, 52],
    [16, 33, 44],
    [5, 21, 300],
    [2, 6, 261],
    [7, 13, 20],
    [65, 130, 68],
    [129, 67, 132],
    [33, 257, 100],
  ];
  for (const dtype of ['f32', 'f16'] as const) {
    for (const variant of VARIANTS) {
      it.skipIf(dtype === 'f16' && !gpu.ctx.capabilities.shaderF16)(`${gemmChoiceName(variant)} ${dtype}: plain, bias, gelu, gelu_tanh, tanh, residual on ragged shapes`, async () => {
        for (const [M, N, K] of shapes) await check(dtype, variant, M, N, K, 'none', false, false);
        await check(dtype, variant, 70, 45, 36, 'none', true, false);
        await check(dtype, variant, 70, 45, 36, 'gelu', true, false);
        await check(dtype, variant, 70, 45, 36, 'gelu_tanh', true, false);
        await check(dtype, variant, 70, 45, 36, 'tanh', true, false);
        await check(dtype, variant, 70, 45, 36, 'none', true, true);
        // Decode shapes through the epilogue, in specialisations compiled above: lavapipe compiles at the first
        // dispatch, and one more rb8x8 f16 specialisation measured 17-30 s of that on a loaded 2-core host.
        await check(dtype, variant, 3, 37, 52, 'gelu', true, false);
        await check(dtype, variant, 5, 11, 7, 'none', true, true);
      }, 300_000); // cold lavapipe shader compiles of a whole variant (several specialisations) can take minutes
    }
  }

  it('gelu_tanh saturates to x and 0 without NaN for pre-activations in the hundreds', async () => {
    for (const variant of VARIANTS) await check('f32', variant, 9, 11, 20, 'gelu_tanh', true, false, 100);
  });

  it('K not divisible by 4 falls back from rb and stays correct', async () => {
    await check('f32', RB, 19, 23, 37, 'gelu', true, true);
  });

  it('row strides: reads a column slice of X and writes into a wider Y', async () => {
    const [M, N, K, ldx, ldy] = [9, 10, 12, 20, 16];
    const x = roundToDtype(randomArray(M * ldx), 'f32');
    const w = roundToDtype(randomArray(N * K), 'f32');
    const y = poisoned(gpu, M * ldy);
    const got = await runAndRead(
      gpu,
      (enc) => gemm(enc, 'f32', { x: toDevice(gpu, x), w: toDevice(gpu, w), y, M, N, K, ldx, ldy }, 'strided'),
      y,
      M * ldy,
    );
    const xs = new Float64Array(M * K);
    for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) xs[m * K + k] = x[m * ldx + k]!;
    const expected = refLinear(xs, M, K, w, null, N);
    const written = new Float64Array(M * N);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) written[m * N + n] = got[m * ldy + n]!;
    expectClose(written, expected, 1e-4, 'strided gemm');
    // Columns past N stay untouched (still poisoned).
    expect(Number.isNaN(got[ldy - 1]!)).toBe(true);
  });
});

describe('gemm per-task epilogue (TASKS) matches the float64 reference', () => {
  // Rows of three slots: slot 0 the base model, slot 1 overrides the bias, scales before the activation and
  // adds deltas in column blocks 0 and 2, slot 2 scales after the activation and adds deltas in block 1.
  // Site 0 holds decoy offsets, so a kernel that ignores site_base reads the wrong vectors.
  const [M, N, deltaBlock, deltaRow0] = [6, 20, 8, 1];
  const deltaLd = N + 3;
  const rowSlot = [0, 1, 2, 1, 0, 2];

  async function checkTasks(choice: GemmChoice, K: number): Promise<void> {
    const numSlots = 3;
    const site = 1;
    const table = new SlotTable(2, numSlots);
    const [biasOff, preOff, postOff] = [N, 2 * N, 3 * N];
    for (const field of [SlotField.bias, SlotField.preScale, SlotField.postScale]) table.set(0, 1, field, 0);
    table.set(0, 2, SlotField.postScale, 0);
    table.set(site, 1, SlotField.bias, biasOff);
    table.set(site, 1, SlotField.preScale, preOff);
    table.flagDeltaBlock(site, 1, 0);
    table.flagDeltaBlock(site, 1, 2);
    table.set(site, 2, SlotField.postScale, postOff);
    table.flagDeltaBlock(site, 2, 1);

    const x = roundToDtype(randomArray(M * K), 'f32');
    const w = roundToDtype(randomArray(N * K, 0.5), 'f32');
    const b = roundToDtype(randomArray(N), 'f32');
    const r = roundToDtype(randomArray(M * N), 'f32');
    const pool = roundToDtype(randomArray(4 * N, 2), 'f32');
    const delta = roundToDtype(randomArray((M - deltaRow0) * deltaLd), 'f32');

    const acc = refLinear(x, M, K, w, null, N);
    const pre = new Float64Array(M * N);
    for (let m = 0; m < M; m++) {
      const slot = rowSlot[m]!;
      for (let n = 0; n < N; n++) {
        let v = acc[m * N + n]! + (slot === 1 ? pool[biasOff + n]! : b[n]!);
        const block = Math.floor(n / deltaBlock);
        if ((slot === 1 && (block === 0 || block === 2)) || (slot === 2 && block === 1)) v += delta[(m - deltaRow0) * deltaLd + n]!;
        if (slot === 1) v *= pool[preOff + n]!;
        pre[m * N + n] = v;
      }
    }
    const expected = refGeluErf(pre);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        if (rowSlot[m] === 2) expected[m * N + n]! *= pool[postOff + n]!;
        expected[m * N + n]! += r[m * N + n]!;
      }
    }

    const y = poisoned(gpu, M * N);
    const got = await runAndRead(
      gpu,
      (enc) =>
        gemm(
          enc,
          'f32',
          {
            x: toDevice(gpu, x),
            w: toDevice(gpu, w),
            y,
            bias: toDevice(gpu, b),
            residual: toDevice(gpu, r),
            M,
            N,
            K,
            act: 'gelu',
            tasks: {
              rowSlot: u32ToDevice(gpu, rowSlot),
              slotTable: u32ToDevice(gpu, table.words),
              siteBase: slotSiteBase(site, numSlots),
              pool: toDevice(gpu, pool),
              delta: toDevice(gpu, delta),
              deltaRow0,
              deltaLd,
              deltaBlock,
            },
          },
          'gemm-tasks-test',
          choice,
        ),
      y,
      M * N,
    );
    expectClose(got, expected, TOL.f32, `${gemmChoiceName(choice)} TASKS K=${K}`);
  }

  // The epilogue is shared code; what differs per kernel is which (m, n) reach it. Swept on the decode kernels
  // (subgroup and rb1x8, its fallback without subgroups), the sgx blocks and naive: rb's larger blocks inline the
  // TASKS epilogue RM·CN times, and on a loaded 2-core host lavapipe took 25-120 s per such rb test, nearly all
  // compiling (sgx stores through a loop instead: 2-12 s cold).
  const taskVariants = VARIANTS.filter((v) => v.variant !== 'tiled' && (v.variant !== 'rb' || gemmChoiceName(v) === 'rb1x8'));
  for (const variant of taskVariants) {
    it(`${gemmChoiceName(variant)}: per-row bias override, deltas by column block, pre/post scales`, async () => {
      await checkTasks(variant, 36);
      // K % 4 != 0: rb falls back to the tiled kernel, the subgroup kernel reads scalars.
      await checkTasks(variant, 39);
    });
  }
});

describe('gemm variant fallbacks', () => {
  it('a subgroup choice on a device without the subgroups feature records the rb 1x8 kernel', () => {
    const recorded: { spec: KernelSpec; workgroups: [number, number?, number?] }[] = [];
    const enc = {
      capabilities: { ...gpu.ctx.capabilities, subgroups: false },
      dispatch(_label: string, spec: KernelSpec, _u: unknown, _b: unknown, workgroups: [number, number?, number?]): void {
        recorded.push({ spec, workgroups });
      },
    } as unknown as BatchEncoder;
    const buf = {} as GPUBuffer;
    gemm(enc, 'f32', { x: buf, w: buf, y: buf, M: 3, N: 100, K: 64 }, 'fallback', { variant: 'subgroup', rowsPerWorkgroup: 4 });
    expect(recorded).toHaveLength(1);
    expect(recorded[0]!.spec.shader).toBe('gemm_rb');
    expect(recorded[0]!.spec.params).toMatchObject({ RM: 1, CN: 8 });
    expect(recorded[0]!.workgroups).toEqual([2, 1]);
  });

  it('an sgx choice records rb 4x8 without the subgroups feature, and the tiled kernel where K is not a multiple of 4', () => {
    const recorded: KernelSpec[] = [];
    const enc = (subgroups: boolean): BatchEncoder =>
      ({
        capabilities: { ...gpu.ctx.capabilities, subgroups },
        dispatch(_label: string, spec: KernelSpec): void {
          recorded.push(spec);
        },
      }) as unknown as BatchEncoder;
    const buf = {} as GPUBuffer;
    const sgx: GemmChoice = { variant: 'sgx', rowsPerInvocation: 16, colsPerInvocation: 4 };
    gemm(enc(false), 'f32', { x: buf, w: buf, y: buf, M: 40, N: 100, K: 64 }, 'no subgroups', sgx);
    gemm(enc(true), 'f32', { x: buf, w: buf, y: buf, M: 40, N: 100, K: 63 }, 'odd K', sgx);
    gemm(enc(true), 'f32', { x: buf, w: buf, y: buf, M: 40, N: 100, K: 64 }, 'sgx', sgx);
    expect(recorded.map((s) => s.shader)).toEqual(['gemm_rb', 'gemm', 'gemm_sgx']);
    expect(recorded[0]!.params).toMatchObject({ RM: 4, CN: 8 });
    expect(recorded[2]!.params).toMatchObject({ RM: 16, CN: 4 });
  });

  it.skipIf(!gpu.ctx.capabilities.subgroups)('the subgroup kernel reads vec4 where K and ldx allow, scalars otherwise', () => {
    const specs: KernelSpec[] = [];
    const enc = {
      capabilities: gpu.ctx.capabilities,
      dispatch(_label: string, spec: KernelSpec): void {
        specs.push(spec);
      },
    } as unknown as BatchEncoder;
    const buf = {} as GPUBuffer;
    const sg: GemmChoice = { variant: 'subgroup', rowsPerWorkgroup: 1 };
    gemm(enc, 'f32', { x: buf, w: buf, y: buf, M: 1, N: 8, K: 64 }, 'vec4', sg);
    gemm(enc, 'f32', { x: buf, w: buf, y: buf, M: 1, N: 8, K: 63 }, 'odd K', sg);
    gemm(enc, 'f32', { x: buf, w: buf, y: buf, M: 1, N: 8, K: 64, ldx: 66 }, 'odd ldx', sg);
    expect(specs.map((s) => [s.shader, s.params['VEC']])).toEqual([
      ['gemm_sg', 4],
      ['gemm_sg', 1],
      ['gemm_sg', 1],
    ]);
  });
});
