import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initPet } from '../../src/pet/init-pet.js';
import { UnknownTaskError } from '../../src/pet/registry.js';
import { answerItem } from '../../src/queue/answer.js';
import { WorkerTaskSync } from '../../src/queue/task-sync.js';
import { silentLogger } from '../../src/util/logger.js';
import { FakeService, itemEngine, tinyModel, type TinyModel } from './helpers.js';

let model: TinyModel;
let uploads: string;

beforeAll(async () => {
  model = await tinyModel([{ id: 'static', numLabels: 2 }]);
  uploads = join(model.root, 'uploads');
  await mkdir(uploads, { recursive: true });
});
afterAll(async () => model.dispose());

describe('worker task sync', () => {
  it('registers a task uploaded after the worker started, and drops it once its directory is deleted', async () => {
    const sync = new WorkerTaskSync(model.registry, [null, uploads], silentLogger, 0);
    const engine = { ...itemEngine(model, new FakeService(model.registry)), syncTask: (id: string) => sync.sync(id) };
    const item = { i: 0, t: 'late', ids: [101, 5, 102] };
    await expect(answerItem(engine, item)).rejects.toBeInstanceOf(UnknownTaskError);

    await initPet({ model: model.checkpoint, kind: 'lora', outDir: join(uploads, 'late'), seed: 3, numLabels: 2 });
    expect(await answerItem(engine, item)).toMatchObject({ label: expect.any(String), score: expect.any(Number) });
    expect(model.registry.get('late')?.source).toBe(join(uploads, 'late'));

    await rm(join(uploads, 'late'), { recursive: true });
    await expect(answerItem(engine, item)).rejects.toBeInstanceOf(UnknownTaskError);
    expect(model.registry.has('late')).toBe(false);
  });

  it('leaves tasks registered from elsewhere alone and never turns an odd id into a path', async () => {
    const sync = new WorkerTaskSync(model.registry, [uploads], silentLogger, 0);
    await sync.sync('static');
    expect(model.registry.has('static')).toBe(true);
    await sync.sync('../uploads');
    await sync.sync('.hidden');
    expect(model.registry.list().map((t) => t.id)).toEqual(['static']);
  });

  it('checks a task at most once per interval, and concurrent items share one registration', async () => {
    const sync = new WorkerTaskSync(model.registry, [uploads], silentLogger, 60_000);
    await initPet({ model: model.checkpoint, kind: 'bitfit', outDir: join(uploads, 'burst'), seed: 4, numLabels: 2 });
    await Promise.all(Array.from({ length: 8 }, () => sync.sync('burst')));
    expect(model.registry.has('burst')).toBe(true);
    await rm(join(uploads, 'burst'), { recursive: true });
    await sync.sync('burst'); // within the interval: not looked at again
    expect(model.registry.has('burst')).toBe(true);
  });
});
