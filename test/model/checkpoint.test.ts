import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelRunner } from '../../src/engine/model-runner.js';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/model/safetensors.js';
import { CheckpointError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { createTestGpu, type TestGpu } from '../helpers/gpu.js';
import { loadRefBert, refBertForward } from '../reference/bert-f64.js';
import { expectClose, flattenNested } from '../reference/compare.js';

let root: string;
let gpu: TestGpu;
const small = { preset: 'bert-tiny' as const, vocabSize: 300, maxPositions: 64, seed: 3 };

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-ckpt-'));
  gpu = await createTestGpu();
});
afterAll(async () => {
  gpu?.destroy();
  await rm(root, { recursive: true, force: true });
});

/** Copy a checkpoint, letting `edit` rename/reshape/drop tensors. */
async function rewrite(
  src: string,
  dst: string,
  edit: (tensors: Record<string, TensorToWrite>) => void,
  editConfig?: (c: Record<string, unknown>) => void,
): Promise<void> {
  const file = await SafetensorsFile.open(join(src, 'model.safetensors'));
  const tensors: Record<string, TensorToWrite> = {};
  for (const name of file.names()) tensors[name] = { dtype: 'F32', shape: file.info(name)!.shape, data: file.readFloat32(name) };
  edit(tensors);
  await initModel({ ...small, outDir: dst }); // tokenizer + config scaffolding
  await writeSafetensors(join(dst, 'model.safetensors'), tensors);
  const config = JSON.parse(await readFile(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  editConfig?.(config);
  await writeFile(join(dst, 'config.json'), JSON.stringify(config));
}

describe('loadCheckpoint reads Hugging Face BERT checkpoints', () => {
  it('BertModel layout (no prefix) has no classifier; classification layout has bert. prefix and labels', async () => {
    const bare = join(root, 'bare');
    const cls = join(root, 'cls');
    await initModel({ ...small, outDir: bare });
    await initModel({ ...small, outDir: cls, numLabels: 4 });
    const a = await loadCheckpoint(bare);
    const b = await loadCheckpoint(cls);
    expect(a.numLabels).toBe(0);
    expect(a.weights.classifier).toBeNull();
    expect(b.numLabels).toBe(4);
    expect(b.config.id2label).toEqual(['LABEL_0', 'LABEL_1', 'LABEL_2', 'LABEL_3']);
    expect(b.weights.layers).toHaveLength(2);
  });

  it('old gamma/beta LayerNorm names load to the same weights', async () => {
    const src = join(root, 'cls');
    const dst = join(root, 'gamma');
    await rewrite(src, dst, (t) => {
      for (const name of Object.keys(t)) {
        const renamed = name.replace(/LayerNorm\.weight$/, 'LayerNorm.gamma').replace(/LayerNorm\.bias$/, 'LayerNorm.beta');
        if (renamed !== name) {
          t[renamed] = t[name]!;
          delete t[name];
        }
      }
    });
    const a = await loadCheckpoint(src);
    const b = await loadCheckpoint(dst);
    expect(Array.from(b.weights.layers[1]!.outputLayerNorm.beta)).toEqual(Array.from(a.weights.layers[1]!.outputLayerNorm.beta));
  });

  it('a missing tensor is an error naming it and its expected shape', async () => {
    const dst = join(root, 'missing');
    await rewrite(join(root, 'cls'), dst, (t) => delete t['bert.encoder.layer.1.attention.self.key.bias']);
    await expect(loadCheckpoint(dst)).rejects.toThrow(/missing tensor 'bert\.encoder\.layer\.1\.attention\.self\.key\.bias' \(expected shape \[128\]\)/);
  });

  it('a mis-shaped tensor is an error naming it and both shapes', async () => {
    const dst = join(root, 'misshaped');
    await rewrite(join(root, 'cls'), dst, (t) => {
      t['bert.encoder.layer.0.intermediate.dense.weight'] = { dtype: 'F32', shape: [500, 128], data: new Float32Array(500 * 128) };
    });
    const err = await loadCheckpoint(dst).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(String(err)).toMatch(/'bert\.encoder\.layer\.0\.intermediate\.dense\.weight' has shape \[500, 128\], expected \[512, 128\]/);
  });

  it('non-finite weights, unsupported activations and missing files are refused', async () => {
    const nan = join(root, 'nan');
    await rewrite(join(root, 'cls'), nan, (t) => {
      t['bert.pooler.dense.bias']!.data[5] = Number.NaN;
    });
    await expect(loadCheckpoint(nan)).rejects.toThrow(/bert\.pooler\.dense\.bias' contains a non-finite value at index 5/);
    const act = join(root, 'act');
    await rewrite(join(root, 'cls'), act, () => {}, (c) => (c['hidden_act'] = 'gelu_new'));
    await expect(loadCheckpoint(act)).rejects.toThrow(/hidden_act 'gelu_new' is not supported/);
    await expect(loadCheckpoint(join(root, 'nowhere'))).rejects.toThrow(CheckpointError);
  });

  for (const dtype of ['f16', 'bf16'] as const) {
    it(`${dtype} tensors on disk run on the GPU and match the float64 reference of the same file`, async () => {
      const dir = join(root, `disk-${dtype}`);
      await initModel({ ...small, outDir: dir, numLabels: 2, dtype });
      const runner = await ModelRunner.create(gpu.ctx, await loadCheckpoint(dir), { dtype: 'f32', logger: silentLogger });
      try {
        const ids = [[101, 7, 250, 102], [101, 3, 102]];
        const got = await runner.run({ inputIds: ids }, { logits: true, pooled: true });
        const want = refBertForward(loadRefBert(dir), ids);
        expectClose(got.logits!, flattenNested(want.logits!), 1e-4, `${dtype} logits`);
        expectClose(got.pooled!, flattenNested(want.poolerOutput), 1e-4, `${dtype} pooled`);
      } finally {
        await runner.dispose();
      }
    });
  }
});
