// With Dawn's robustness off (gpu.dawnToggles.enable: [disable_robustness])
// nothing on the device clamps an index any more: a token id past the
// vocabulary would read past the embedding table instead of a clamped row.
// So the host checks are the only guard. These tests prove the option reaches
// the device, that the checks still refuse bad ids and unknown tasks with a
// typed error before any GPU work, that the device stays usable, and that
// valid batches answer as they do with Dawn's defaults (no kernel leaned on a clamp).
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { InferenceGateway } from '../../src/gateway/gateway.js';
import { dawnToggleFlags } from '../../src/gpu/dawn-toggles.js';
import { UnknownTaskError } from '../../src/pet/registry.js';
import { InvalidInputError } from '../../src/util/errors.js';
import { startTestStack, type TestStack } from '../server/helpers.js';

let robustnessOff: TestStack;
let defaults: TestStack;

// One storage type for both stacks, so their answers can be compared.
const F32 = { 'model.dtype': 'f32' };

beforeAll(async () => {
  robustnessOff = await startTestStack([{ id: 'alpha', kind: 'lora' }], { ...F32, 'gpu.dawnToggles.enable': ['disable_robustness'] });
  defaults = await startTestStack([{ id: 'alpha', kind: 'lora' }], F32);
});
afterAll(async () => {
  await robustnessOff?.close();
  await defaults?.close();
});

/**
 * Read element 8 of a 4-element workgroup array holding 11, 22, 33, 44. Dawn's
 * robustness transform clamps the index to 3 (44); without it the read is
 * undefined behaviour (0 on lavapipe), anything but a clamp.
 */
async function readPastWorkgroupArray(device: GPUDevice): Promise<number> {
  const code = `
    @group(0) @binding(0) var<storage, read_write> io: array<u32, 2>;
    var<workgroup> w: array<u32, 4>;
    @compute @workgroup_size(1) fn main() {
      w[0] = 11u; w[1] = 22u; w[2] = 33u; w[3] = 44u;
      workgroupBarrier();
      io[1] = w[io[0]];
    }`;
  const pipeline = await device.createComputePipelineAsync({
    layout: 'auto',
    compute: { module: device.createShaderModule({ code }), entryPoint: 'main' },
  });
  const io = device.createBuffer({ size: 8, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
  const readback = device.createBuffer({ size: 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  try {
    device.queue.writeBuffer(io, 0, Uint32Array.of(8, 0));
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: io } }] }));
    pass.dispatchWorkgroups(1);
    pass.end();
    enc.copyBufferToBuffer(io, 0, readback, 0, 8);
    device.queue.submit([enc.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    return new Uint32Array(readback.getMappedRange())[1]!;
  } finally {
    io.destroy();
    readback.destroy();
  }
}

describe('dawnToggleFlags', () => {
  it('gives one flag per direction (dawn.node keeps only the last enable-dawn-features=) and none without toggles', () => {
    expect(dawnToggleFlags({ enable: ['disable_robustness', 'dump_shaders'], disable: ['disable_workgroup_init'] })).toEqual([
      'enable-dawn-features=disable_robustness,dump_shaders',
      'disable-dawn-features=disable_workgroup_init',
    ]);
    expect(dawnToggleFlags({ enable: [], disable: [] })).toEqual([]);
  });
});

describe('gpu.dawnToggles with robustness off', () => {
  it('reaches the device: a read past a workgroup array is clamped with the defaults and not with disable_robustness', async () => {
    expect(robustnessOff.runtime.ctx.capabilities.dawnToggles).toBe('enable: disable_robustness');
    expect(defaults.runtime.ctx.capabilities.dawnToggles).toBe('none');
    expect(await readPastWorkgroupArray(defaults.runtime.ctx.device)).toBe(44);
    expect(await readPastWorkgroupArray(robustnessOff.runtime.ctx.device)).not.toBe(44);
  });

  it('out-of-range token and segment ids are refused with InvalidInputError before anything reaches the scheduler or the GPU', async () => {
    const rt = robustnessOff.runtime;
    const { vocabSize, typeVocabSize } = rt.checkpoint.config;
    const gateway = InferenceGateway.forRuntime(rt, 8);
    const submit = vi.spyOn(rt.scheduler, 'submit');
    const runTasks = vi.spyOn(rt.runner, 'runTasks');
    try {
      const badRows: [string, number[][], number[][] | undefined][] = [
        ['the first id past the vocabulary', [[101, vocabSize, 102]], undefined],
        ['a negative id', [[101, -1, 102]], undefined],
        // 2^32 would wrap to id 0 in the u32 token table: the check sees the number before it is packed.
        ['2^32', [[2 ** 32]], undefined],
        ['a fractional id', [[1.5]], undefined],
        ['a segment id past the segment vocabulary', [[101, 102]], [[0, typeVocabSize]]],
      ];
      for (const [what, rows, types] of badRows) {
        expect(() => gateway.checkIds('input_ids', rows, types, false), what).toThrow(InvalidInputError);
      }
      // Direct callers of the runner (CLI, benchmarks) get the runner's own check, also before the device.
      await expect(rt.runner.run({ inputIds: [[101, vocabSize]] }, { logits: true })).rejects.toBeInstanceOf(InvalidInputError);
      expect(submit).not.toHaveBeenCalled();
      expect(runTasks).not.toHaveBeenCalled();
    } finally {
      submit.mockRestore();
      runTasks.mockRestore();
    }
    expect(rt.ctx.isLost).toBe(false);
  });

  it('unknown task ids are refused with UnknownTaskError at the gateway and at the scheduler, before any GPU work', async () => {
    const rt = robustnessOff.runtime;
    const gateway = InferenceGateway.forRuntime(rt, 8);
    const runTasks = vi.spyOn(rt.runner, 'runTasks');
    try {
      await expect(gateway.modelFor('no-such-task')).rejects.toBeInstanceOf(UnknownTaskError);
      await expect(rt.scheduler.submit({ task: 'no-such-task', inputIds: [101, 102] })).rejects.toBeInstanceOf(UnknownTaskError);
      expect(runTasks).not.toHaveBeenCalled();
    } finally {
      runTasks.mockRestore();
    }
    expect(rt.ctx.isLost).toBe(false);
  });

  // A mixed batch per stack compiles the PET pipelines first: minutes on a loaded 2-core lavapipe.
  it('valid batches answer as with Dawn defaults, base and task rows, after the refusals (the device was not lost)', { timeout: 600_000 }, async () => {
    const last = robustnessOff.base.config.vocabSize - 1;
    // The edges of both tables: the last token id, the last segment id, the longest sequence.
    const longest = Array.from({ length: robustnessOff.base.config.maxPositionEmbeddings }, (_, i) => (i * 37) % (last + 1));
    const rows = [[101, last, 102], [101, 7, 8, 9, 102], longest];
    const types = [[0, 1, 1], [0, 0, 0, 1, 1], longest.map((_, i) => i % 2)];
    const models = [robustnessOff.runtime.registry.baseModelId, 'alpha'];
    // Both models at once: the scheduler runs them as one mixed batch per stack.
    const answers = async (stack: TestStack): Promise<number[][][]> => {
      const gateway = InferenceGateway.forRuntime(stack.runtime, 8);
      return Promise.all(
        models.map(async (model) => {
          const results = await gateway.run(gateway.model(model), gateway.checkIds('input_ids', rows, types, false), {});
          return results.map((r) => Array.from(r.logits!));
        }),
      );
    };
    const [off, on] = [await answers(robustnessOff), await answers(defaults)];
    models.forEach((model, m) => {
      off[m]!.forEach((row, i) => {
        expect(row.every(Number.isFinite), `${model} row ${i} finite`).toBe(true);
        row.forEach((v, j) => expect(v, `${model} row ${i} logit ${j}`).toBeCloseTo(on[m]![i]![j]!, 4));
      });
    });
    expect(robustnessOff.runtime.ctx.isLost).toBe(false);
  });
});
