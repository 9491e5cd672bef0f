import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BertCheckpoint } from '../../src/model/checkpoint.js';
import { DEMO_TASKS, ensureDemo } from '../../src/runtime/demo.js';
import { startRuntime } from '../../src/runtime/runtime.js';
import { ConfigError, PetFormatError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { makeTinyModel, testConfig, writeTasks } from '../server/helpers.js';

let root: string;
let base: BertCheckpoint;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-runtime-'));
  base = await makeTinyModel(join(root, 'model'));
  await writeTasks(base, join(root, 'tasks'), [
    { id: 'alpha', kind: 'lora' },
    { id: 'beta', kind: 'ia3', numLabels: 0 },
  ]);
  await writeTasks(base, join(root, 'uploads'), [{ id: 'uploaded', kind: 'adapter' }]);
  // A once-valid upload that no longer loads, and a staging leftover of an interrupted upload.
  await mkdir(join(root, 'uploads', 'stale'));
  await writeFile(join(root, 'uploads', 'stale', 'pet.json'), '{"kind": "nonsense"}');
  await mkdir(join(root, 'uploads', '.staging-abc'));
});
afterAll(async () => rm(root, { recursive: true, force: true }));

describe('startRuntime', () => {
  it('registers tasksDir and uploadDir subdirectories by name, runs them, and closes once', async () => {
    const rt = await startRuntime(testConfig(root), silentLogger);
    try {
      expect(rt.registry.list().map((t) => t.id).sort()).toEqual(['alpha', 'beta', 'uploaded']);
      expect(rt.demo).toBe(false);
      expect(rt.tokenizer).not.toBeNull();
      const ids = rt.tokenizer!.encode('hello world').inputIds;
      const [a, b] = await Promise.all([
        rt.scheduler.submit({ task: 'alpha', inputIds: ids }),
        rt.scheduler.submit({ task: 'beta', inputIds: ids, pooled: true }),
      ]);
      expect(a.logits).toHaveLength(2);
      expect(b.logits).toBeNull();
      expect(b.pooled).toHaveLength(base.config.hiddenSize);
    } finally {
      await rt.close();
      await rt.close();
    }
    await expect(rt.scheduler.submit({ task: 'alpha', inputIds: [101, 102] })).rejects.toThrow(/shutting down/);
  });

  it('refuses to start when a task of tasksDir is invalid, naming it', async () => {
    const tasksDir = join(root, 'bad-tasks');
    await mkdir(join(tasksDir, 'broken'), { recursive: true });
    await writeFile(join(tasksDir, 'broken', 'adapter_config.json'), '{"peft_type": "PREFIX_TUNING"}');
    const err = await startRuntime(testConfig(root, { 'server.tasksDir': tasksDir }), silentLogger).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PetFormatError);
    expect((err as Error).message).toMatch(/broken/);
  });
});

describe('demo default', () => {
  it('generates the demo model and tasks once, concurrently safe, and reuses them', async () => {
    const demoDir = join(root, 'demo');
    const [a, b] = await Promise.all([ensureDemo(demoDir, silentLogger), ensureDemo(demoDir, silentLogger)]);
    expect(a).toEqual(b);
    expect((await readdir(a.tasksDir)).sort()).toEqual(DEMO_TASKS.map((t) => t.id).sort());
    expect(await readdir(root)).not.toContainEqual(expect.stringMatching(/partial/));
    const before = (await stat(join(a.modelDir, 'model.safetensors'))).mtimeMs;
    await ensureDemo(demoDir, silentLogger);
    expect((await stat(join(a.modelDir, 'model.safetensors'))).mtimeMs).toBe(before);
  });

  it('refuses a demoDir that holds something else', async () => {
    const foreign = join(root, 'foreign');
    await mkdir(foreign);
    await writeFile(join(foreign, 'precious.txt'), 'keep me');
    await expect(ensureDemo(foreign, silentLogger)).rejects.toBeInstanceOf(ConfigError);
    expect(await readdir(foreign)).toEqual(['precious.txt']);
  });
});
