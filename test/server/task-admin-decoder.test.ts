// TaskAdmin with a decoder beside the encoder and a shared catalog, on stand-ins
// (the real registries and catalog are tested in test/pet, test/runtime,
// test/catalog and over HTTP in openai-generation.test.ts): which base a
// registration goes to, what the catalog is told, and that a refusal by the
// catalog leaves nothing registered.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DecoderTaskInfo } from '../../src/pet/decoder-registry.js';
import { TaskExistsError, UnknownTaskError } from '../../src/pet/registry.js';
import { RequestValidationError } from '../../src/server/errors.js';
import { TaskAdmin, type DecoderTasks, type SharedCatalog } from '../../src/server/task-admin.js';
import { silentLogger } from '../../src/util/logger.js';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-admin-decoder-'));
  await mkdir(join(root, 'register-root', 'adapter-a'), { recursive: true });
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

function stand(opts: { catalogRefuses?: boolean } = {}) {
  const calls: string[] = [];
  const adapters = new Map<string, DecoderTaskInfo>();
  const decoder: DecoderTasks = {
    baseModelId: 'llama-chat',
    uploadDir: join(root, 'uploads', '.generation'),
    get: (id) => adapters.get(id),
    checkNewId: (id) => {
      if (adapters.has(id) || id === 'enc-task') throw new TaskExistsError(id);
    },
    register: async (id, dir) => {
      decoder.checkNewId(id); // as DecoderTaskRegistry.register does
      calls.push(`decoder.register ${id}`);
      const info: DecoderTaskInfo = { taskId: id, dir, kind: 'lora', bytes: 8, maxRank: 4, touchesKv: true, registeredAt: new Date().toISOString() };
      adapters.set(id, info);
      return info;
    },
    unregister: (id) => {
      calls.push(`decoder.unregister ${id}`);
      if (!adapters.delete(id)) throw new UnknownTaskError(id);
    },
    list: () => [...adapters.values()].map((a) => ({ ...a, gpuBytes: 8, resident: false })),
  };
  const catalog: SharedCatalog = {
    publish: async (id, _dir, kind, o) => {
      calls.push(`catalog.publish ${id} ${kind} ${o?.baseModel ?? '(encoder)'}`);
      if (opts.catalogRefuses) throw new TaskExistsError(id, 'is registered on another replica');
    },
    withdraw: async (id) => {
      calls.push(`catalog.withdraw ${id}`);
    },
  };
  const encoder = {
    baseModelId: 'bert',
    checkNewId: () => undefined,
    get: () => undefined,
    register: async () => {
      throw new Error('the encoder must not be asked');
    },
  };
  const admin = new TaskAdmin(encoder as never, {
    uploadDir: join(root, 'uploads'),
    registerRoot: join(root, 'register-root'),
    maxUploadBytes: 1 << 20,
    logger: silentLogger,
    catalog,
    decoder,
  });
  return { admin, calls, adapters };
}

describe('TaskAdmin with a decoder and a shared catalog', () => {
  it("registers for the decoder when `model` names it, publishing under the decoder's id; DELETE withdraws it and unregisters it", async () => {
    const { admin, calls, adapters } = stand();
    const task = await admin.registerPath('adapter-a', 'adapter-a', 'llama-chat');
    expect(task).toMatchObject({ model: 'decoder', info: { taskId: 'adapter-a', kind: 'lora' } });
    expect(calls).toEqual(['decoder.register adapter-a', 'catalog.publish adapter-a lora llama-chat']);
    await admin.unregister('adapter-a');
    expect(calls.slice(2)).toEqual(['catalog.withdraw adapter-a', 'decoder.unregister adapter-a']);
    expect(adapters.size).toBe(0);
  });

  it('a catalog refusal undoes the decoder registration, so nothing is half-registered', async () => {
    const { admin, calls, adapters } = stand({ catalogRefuses: true });
    await expect(admin.registerPath('adapter-a', 'adapter-a', 'llama-chat')).rejects.toBeInstanceOf(TaskExistsError);
    expect(calls).toEqual(['decoder.register adapter-a', 'catalog.publish adapter-a lora llama-chat', 'decoder.unregister adapter-a']);
    expect(adapters.size).toBe(0);
  });

  it('refuses a `model` that is no base here, an id another model holds, and deleting either base', async () => {
    const { admin, calls } = stand();
    await expect(admin.registerPath('adapter-a', 'adapter-a', 'adapter-b')).rejects.toBeInstanceOf(RequestValidationError);
    await expect(admin.registerPath('enc-task', 'adapter-a', 'llama-chat')).rejects.toBeInstanceOf(TaskExistsError);
    await expect(admin.unregister('llama-chat')).rejects.toThrow(/base model/);
    await expect(admin.unregister('bert')).rejects.toThrow(/base model/);
    expect(calls).toEqual([]);
  });
});
