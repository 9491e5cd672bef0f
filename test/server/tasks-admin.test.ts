// Task management over HTTP on the real engine: auth, registration from
// uploads and confined paths, refusal of invalid bundles without leftovers,
// and unregistering while a request of the task is running.

import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initModel } from '../../src/model/init-model.js';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import { initPet } from '../../src/pet/init-pet.js';
import { admin, ADMIN_TOKEN, call, maxAbsDiff, serveStack, startTestStack, type JsonResponse, type Listening, type TestStack } from './helpers.js';
import { dirEntries, tarBuffer } from './tar-fixture.js';

let stack: TestStack;
let api: Listening;
let registerRoot: string;
let uploadDir: string;
const extra: Listening[] = [];

beforeAll(async () => {
  stack = await startTestStack([{ id: 'base-lora', kind: 'lora' }]);
  registerRoot = join(stack.root, 'register-root');
  uploadDir = stack.config.server.uploadDir;
  await mkdir(registerRoot, { recursive: true });
  const config = { ...stack.config, server: { ...stack.config.server, registerRoot } };
  api = await serveStack(stack, { config });
});

afterAll(async () => {
  for (const l of extra) await l.close();
  await api?.close();
  await stack?.close();
});

const predict = (task: string, inputs: unknown) => call(`${api.url}/v1/tasks/${task}/predict`, { json: { inputs, options: { return_logits: true } } });

/** A fresh PET directory for the test base, returned as its path. */
async function petDir(name: string, kind: 'lora' | 'diff' | 'mask', seed: number): Promise<string> {
  const dir = join(stack.root, 'pets', name);
  await initPet({ model: stack.base, kind, outDir: dir, seed });
  return dir;
}

async function uploadMultipart(url: string, id: string, archive: Buffer, headers: Record<string, string> = admin): Promise<JsonResponse> {
  const form = new FormData();
  form.set('id', id);
  form.set('bundle', new Blob([new Uint8Array(archive)], { type: 'application/gzip' }), `${id}.tar.gz`);
  return call(`${url}/v1/tasks`, { body: form, headers });
}

/** What is left in uploadDir apart from the (empty) incoming area. */
async function uploadLeftovers(): Promise<string[]> {
  const entries = await readdir(uploadDir).catch(() => [] as string[]);
  const incoming = entries.includes('.incoming') ? await readdir(join(uploadDir, '.incoming')) : [];
  return [...entries.filter((e) => e !== '.incoming'), ...incoming.map((f) => `.incoming/${f}`)];
}

function expectError(res: JsonResponse, status: number, code: string, message?: RegExp): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body.error.code).toBe(code);
  if (message) expect(res.body.error.message).toMatch(message);
}

describe('admin authentication', () => {
  it('needs the bearer token: missing or wrong is 401, right is 200', async () => {
    const missing = await call(`${api.url}/v1/tasks`);
    expectError(missing, 401, 'UNAUTHORIZED');
    expect(missing.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expectError(await call(`${api.url}/v1/tasks`, { headers: { Authorization: 'Bearer wrong-token-of-some-length' } }), 401, 'UNAUTHORIZED');
    expectError(await call(`${api.url}/v1/tasks`, { headers: { Authorization: `Basic ${ADMIN_TOKEN}` } }), 401, 'UNAUTHORIZED');
    expect((await call(`${api.url}/v1/tasks`, { headers: admin })).status).toBe(200);
  });

  it('without a configured token every admin route is disabled (403), never open', async () => {
    const config = { ...stack.config, server: { ...stack.config.server, adminToken: null } };
    const off = await serveStack(stack, { config });
    extra.push(off);
    for (const [method, path] of [
      ['GET', '/v1/tasks'],
      ['POST', '/v1/tasks'],
      ['GET', '/v1/tasks/base-lora'],
      ['DELETE', '/v1/tasks/base-lora'],
    ] as const) {
      expectError(await call(`${off.url}${path}`, { method, headers: admin }), 403, 'DISABLED', /adminToken/);
    }
    expect(stack.runtime.registry.has('base-lora')).toBe(true);
  });
});

describe('task registration and removal', () => {
  it('upload (multipart .tar.gz) → predict → list → delete round trip', async () => {
    const dir = await petDir('round-trip', 'lora', 7);
    const archive = tarBuffer(await dirEntries(dir, 'my-adapter'), { gzip: true });
    const created = await uploadMultipart(api.url, 'uploaded-lora', archive);
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.headers.get('location')).toBe('/v1/tasks/uploaded-lora');
    expect(created.body).toMatchObject({ id: 'uploaded-lora', kind: 'lora', format: 'peft', type: 'classification' });
    // Unpacked under uploadDir/<id>, the wrapping directory dropped.
    expect(await readFile(join(uploadDir, 'uploaded-lora', 'adapter_config.json'), 'utf8')).toBe(
      await readFile(join(dir, 'adapter_config.json'), 'utf8'),
    );

    const answer = await predict('uploaded-lora', ['one', 'two']);
    expect(answer.status).toBe(200);
    expect(answer.body.outputs).toHaveLength(2);

    const list = await call(`${api.url}/v1/tasks`, { headers: admin });
    const entry = list.body.tasks.find((t: { id: string }) => t.id === 'uploaded-lora');
    expect(entry).toMatchObject({ kind: 'lora', resident: true, requests: { requests: 1, inputs: 2, errors: 0 } });
    expect(entry.sizeBytes).toBeGreaterThan(0);
    expect(entry.gpuBytes).toBeGreaterThan(0);
    expect((await call(`${api.url}/v1/tasks/uploaded-lora`, { headers: admin })).body.id).toBe('uploaded-lora');

    const deleted = await call(`${api.url}/v1/tasks/uploaded-lora`, { method: 'DELETE', headers: admin });
    expect(deleted).toMatchObject({ status: 200, body: { id: 'uploaded-lora', deleted: true } });
    expect(await uploadLeftovers()).toEqual([]);
    expectError(await predict('uploaded-lora', 'x'), 404, 'TASK_NOT_FOUND');
    expectError(await call(`${api.url}/v1/tasks/uploaded-lora`, { headers: admin }), 404, 'TASK_NOT_FOUND');
    expectError(await call(`${api.url}/v1/tasks/uploaded-lora`, { method: 'DELETE', headers: admin }), 404, 'TASK_NOT_FOUND');
  });

  it('a raw gzip body (?id=) and a server path register the same PET with the same answers', async () => {
    const dir = await petDir('raw-diff', 'diff', 8);
    const raw = await call(`${api.url}/v1/tasks?id=raw-diff`, {
      body: new Uint8Array(tarBuffer(await dirEntries(dir), { gzip: true })),
      headers: { ...admin, 'Content-Type': 'application/gzip' },
    });
    expect(raw.status, JSON.stringify(raw.body)).toBe(201);
    expect(raw.body).toMatchObject({ id: 'raw-diff', kind: 'diff', format: 'bundle' });

    const inRoot = join(registerRoot, 'diff-copy');
    await mkdir(inRoot);
    for (const f of await readdir(dir)) await writeFile(join(inRoot, f), await readFile(join(dir, f)));
    const byPath = await call(`${api.url}/v1/tasks`, { json: { id: 'path-diff', path: 'diff-copy' }, headers: admin });
    expect(byPath.status, JSON.stringify(byPath.body)).toBe(201);

    const [a, b] = await Promise.all([predict('raw-diff', 'same text'), predict('path-diff', 'same text')]);
    expect(maxAbsDiff(a.body.outputs[0].logits, b.body.outputs[0].logits)).toBeLessThan(1e-5);

    // A path registration is not ours: deleting it leaves the directory.
    expect((await call(`${api.url}/v1/tasks/path-diff`, { method: 'DELETE', headers: admin })).status).toBe(200);
    expect(await readdir(inRoot)).toContain('pet.json');
    expect((await call(`${api.url}/v1/tasks/raw-diff`, { method: 'DELETE', headers: admin })).status).toBe(200);
  });

  it('refuses paths that escape server.registerRoot (422) and path registration when no root is set (403)', async () => {
    const outside = await petDir('outside-root', 'mask', 9);
    const register = (path: string, url = api.url) => call(`${url}/v1/tasks`, { json: { id: 'escape', path }, headers: admin });
    expectError(await register('../pets/outside-root'), 422, 'PATH_OUTSIDE_ROOT');
    expectError(await register(outside), 422, 'PATH_OUTSIDE_ROOT');
    await symlink(outside, join(registerRoot, 'sneaky-link'));
    expectError(await register('sneaky-link'), 422, 'PATH_OUTSIDE_ROOT');
    expectError(await register('does-not-exist'), 422, 'PET_INVALID', /does not exist/);
    expect(stack.runtime.registry.has('escape')).toBe(false);

    const noRoot = await serveStack(stack);
    extra.push(noRoot);
    expectError(await register('anything', noRoot.url), 403, 'DISABLED', /registerRoot/);
  });

  it('refuses invalid bundles and archives with 422, registering nothing and leaving no files', async () => {
    // NaN in a tensor: corrupt the first f32 of the bundle's safetensors.
    const nanDir = await petDir('nan', 'diff', 10);
    const st = await readFile(join(nanDir, 'pet.safetensors'));
    const headerLength = Number(st.readBigUInt64LE(0));
    const header = JSON.parse(st.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype?: string; data_offsets?: [number, number] }>;
    const f32 = Object.values(header).find((t) => t.dtype === 'F32')!;
    st.writeFloatLE(Number.NaN, 8 + headerLength + f32.data_offsets![0]);
    await writeFile(join(nanDir, 'pet.safetensors'), st);
    // Shapes of another base model (bert-mini: hidden 256).
    const otherBase = join(stack.root, 'other-base');
    await initModel({ preset: 'bert-mini', outDir: otherBase, numLabels: 2, vocabSize: 200, maxPositions: 16 });
    const mismatch = join(stack.root, 'pets', 'mismatch');
    await initPet({ model: await loadCheckpoint(otherBase), kind: 'lora', outDir: mismatch, seed: 1 });

    const cases: [string, Buffer, RegExp][] = [
      ['nan', tarBuffer(await dirEntries(nanDir), { gzip: true }), /non-finite value \(NaN\)/],
      ['mismatch', tarBuffer(await dirEntries(mismatch), { gzip: true }), /shape|layer|size/i],
      ['junk', Buffer.from('definitely not an archive'.repeat(40)), /not a readable/],
      ['traversal', tarBuffer([{ path: 'pet.json', data: '{}' }, { path: '../../escaped', data: 'x' }]), /contains '\.\.'/],
      ['linked', tarBuffer([{ path: 'pet.json', data: '{}' }, { path: 'pet.safetensors', type: 'symlink', linkpath: '/etc/passwd' }]), /SymbolicLink/],
      ['no-manifest', tarBuffer([{ path: 'weights.bin', data: 'x' }]), /holds no PET/],
    ];
    for (const [id, archive, message] of cases) {
      const res = await uploadMultipart(api.url, id, archive);
      expect(res.status, `${id}: ${JSON.stringify(res.body)}`).toBe(422);
      expect(res.body.error.message, id).toMatch(message);
      expect(stack.runtime.registry.has(id), id).toBe(false);
      expect(await uploadLeftovers(), id).toEqual([]);
    }
    expect(await readdir(join(stack.root))).not.toContain('escaped');
  });

  it('refuses an oversize upload (413), a duplicate id (409), a bad id (400) and an unknown body type (415)', async () => {
    const dir = await petDir('dup', 'lora', 11);
    const archive = tarBuffer(await dirEntries(dir), { gzip: true });
    const config = { ...stack.config, server: { ...stack.config.server, maxUploadBytes: 4096 } };
    const small = await serveStack(stack, { config });
    extra.push(small);
    expect(archive.length).toBeGreaterThan(4096);
    expectError(await uploadMultipart(small.url, 'too-big', archive), 413, 'PAYLOAD_TOO_LARGE');
    const rawBig = await call(`${small.url}/v1/tasks?id=too-big`, { body: new Uint8Array(archive), headers: { ...admin, 'Content-Type': 'application/gzip' } });
    expectError(rawBig, 413, 'PAYLOAD_TOO_LARGE');
    expect(await uploadLeftovers()).toEqual([]);

    expectError(await uploadMultipart(api.url, 'base-lora', archive), 409, 'TASK_EXISTS');
    expectError(await uploadMultipart(api.url, '../etc', archive), 400, 'INVALID_REQUEST', /id/);
    expectError(
      await call(`${api.url}/v1/tasks`, { body: 'x', headers: { ...admin, 'Content-Type': 'text/plain' } }),
      415,
      'UNSUPPORTED_MEDIA_TYPE',
    );
    expect(await uploadLeftovers()).toEqual([]);
  });

  it('DELETE waits for the batch that is running the task, which still answers', async () => {
    const dir = await petDir('busy', 'mask', 12);
    expect((await call(`${api.url}/v1/tasks`, { json: { id: 'busy', path: await copyIntoRoot(dir, 'busy') }, headers: admin })).status).toBe(201);
    // Deterministic interleaving: the batch takes its lease on the task, then
    // (before touching the GPU) waits until DELETE has hidden the task.
    const registry = stack.runtime.registry;
    const acquire = registry.acquire.bind(registry);
    const events: string[] = [];
    registry.acquire = (id) => {
      const lease = acquire(id);
      if (id !== 'busy') return lease;
      return {
        taskId: lease.taskId,
        release: () => {
          events.push('lease released');
          lease.release();
        },
        packed: async () => {
          while (registry.has('busy')) await new Promise((r) => setTimeout(r, 2));
          return lease.packed();
        },
      };
    };
    try {
      const running = call(`${api.url}/v1/tasks/busy/predict`, { json: { inputs: 'still answered' } });
      while (stack.runtime.scheduler.stats().inFlightBatches === 0) await new Promise((r) => setTimeout(r, 2));
      const deleting = call(`${api.url}/v1/tasks/busy`, { method: 'DELETE', headers: admin }).then((r) => (events.push('delete answered'), r));
      const [answer, deleted] = await Promise.all([running, deleting]);
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      expect(answer.body.outputs).toHaveLength(1);
      expect(deleted.status).toBe(200);
      expect(events).toEqual(['lease released', 'delete answered']);
      expect(registry.has('busy')).toBe(false);
      expectError(await predict('busy', 'gone'), 404, 'TASK_NOT_FOUND');
    } finally {
      registry.acquire = acquire;
    }
  });
});

async function copyIntoRoot(dir: string, name: string): Promise<string> {
  const target = join(registerRoot, name);
  await mkdir(target);
  for (const f of await readdir(dir)) await writeFile(join(target, f), await readFile(join(dir, f)));
  return name;
}
