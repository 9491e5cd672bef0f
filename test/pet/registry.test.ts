import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { initPet } from '../../src/pet/init-pet.js';
import { TaskExistsError, TaskRegistry, UnknownTaskError } from '../../src/pet/registry.js';
import { PetFormatError } from '../../src/util/errors.js';

let root: string;
let base: BertCheckpoint;
let loraDir: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-registry-'));
  await initModel({ preset: 'bert-tiny', outDir: join(root, 'base'), numLabels: 2, vocabSize: 200, maxPositions: 16 });
  base = await loadCheckpoint(join(root, 'base'));
  loraDir = join(root, 'lora');
  await initPet({ model: base, kind: 'lora', outDir: loraDir, seed: 1 });
});
afterAll(async () => rm(root, { recursive: true, force: true }));

describe('task registry', () => {
  it('registers, lists, and refuses duplicate or malformed ids', async () => {
    const r = new TaskRegistry(base);
    const info = await r.register('sentiment', loraDir);
    expect(info).toMatchObject({ id: 'sentiment', kind: 'lora', format: 'peft', numLabels: 2 });
    expect(r.list().map((t) => t.id)).toEqual(['sentiment']);
    await expect(r.register('sentiment', loraDir)).rejects.toBeInstanceOf(TaskExistsError);
    await expect(r.register('../etc', loraDir)).rejects.toThrow(/task id/);
    await expect(r.register('', loraDir)).rejects.toThrow(/task id/);
  });

  it('a refused PET leaves nothing behind', async () => {
    const r = new TaskRegistry(base);
    const bad = join(root, 'bad');
    await mkdir(bad, { recursive: true });
    await writeFile(join(bad, 'adapter_config.json'), JSON.stringify({ peft_type: 'PREFIX_TUNING' }));
    await expect(r.register('bad', bad)).rejects.toBeInstanceOf(PetFormatError);
    expect(r.has('bad')).toBe(false);
    expect(r.list()).toHaveLength(0);
    expect(r.memory().hostTotalBytes).toBe(0);
    // The id is still free afterwards.
    await r.register('bad', loraDir);
    expect(r.has('bad')).toBe(true);
  });

  it('unregister hides the task at once but completes only after in-flight batches release it', async () => {
    const r = new TaskRegistry(base);
    await r.register('t', loraDir);
    const removed: string[] = [];
    r.onRemoved((id) => removed.push(id));
    const lease = r.acquire('t');
    let done = false;
    const pending = r.unregister('t').then(() => (done = true));
    expect(r.has('t')).toBe(false);
    expect(() => r.acquire('t')).toThrow(UnknownTaskError);
    await new Promise((res) => setTimeout(res, 20));
    expect(done).toBe(false);
    expect(removed).toEqual([]);
    expect((await lease.packed()).floats.length).toBeGreaterThan(0); // the in-flight batch still has its PET
    lease.release();
    await pending;
    expect(done).toBe(true);
    expect(removed).toEqual(['t']);
    await expect(r.unregister('t')).rejects.toBeInstanceOf(UnknownTaskError);
  });

  it('host cache drops packed copies beyond its budget and reloads them from disk', async () => {
    const r = new TaskRegistry(base, { hostCacheBytes: 1 });
    await r.register('a', loraDir);
    await r.register('b', loraDir);
    expect(r.memory().hostCachedBytes).toBeLessThan(r.memory().hostTotalBytes);
    const lease = r.acquire('a');
    const packed = await lease.packed();
    expect(packed.lowRank.length).toBeGreaterThan(0);
    lease.release();
  });
});
