// Several replicas as shipped: three `petserve serve` processes over one Redis
// and one shared blob directory, HAProxy (configs/haproxy/haproxy.cfg) in front.
// A task uploaded through one replica is served by all; deleted through another,
// it is refused by all; a killed replica's tasks move to the others.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';
import { stringify } from 'yaml';
import { initPet } from '../../src/pet/init-pet.js';
import { deletePrefix } from '../../src/queue/redis.js';
import { admin, call, makeTinyModel, testConfig, type JsonResponse } from './helpers.js';
import { dirEntries, tarBuffer } from './tar-fixture.js';

const prefix = `pstest-cluster-${process.pid}`;
const CHECK_MS = 300;
let root = '';
const replicas: { name: string; url: string; port: number; child: ChildProcess }[] = [];
let lb: ChildProcess | null = null;
let lbUrl = '';

async function startReplica(name: string, port: number): Promise<void> {
  const config = testConfig(join(root, name), {
    'model.dir': join(root, 'model'),
    'server.tasksDir': null,
    'server.port': port,
    'log.level': 'info',
    'batches.prefix': prefix,
    'catalog.blobDir': join(root, 'shared-blobs'),
    'catalog.cacheDir': join(root, name, 'catalog-cache'),
    'catalog.prefix': prefix,
  });
  const file = join(root, `${name}.yaml`);
  await writeFile(file, stringify(config));
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/server/fixtures/petserve-cli.ts', 'serve', '--config', file], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    const lines: string[] = [];
    createInterface({ input: child.stderr! }).on('line', (line) => {
      lines.push(line);
      if (line.includes('"msg":"listening"')) resolve((JSON.parse(line) as { url: string }).url);
    });
    child.on('exit', (code) => reject(new Error(`${name} exited ${code}: ${lines.slice(-5).join('\n')}`)));
  });
  replicas.push({ name, url, port, child });
}

const predict = (url: string, task: string): Promise<JsonResponse> => call(`${url}/v1/tasks/${task}/predict`, { json: { input_ids: [[101, 2000, 2001, 102]] } });
const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-cluster-'));
  await makeTinyModel(join(root, 'model'));
  const ports = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  // One at a time: three GPU start-ups at once would crowd two cores.
  for (const [i, name] of ['a', 'b', 'c'].entries()) await startReplica(name, ports[i]!);
  const env = {
    ...process.env,
    PETSERVE_LB_BIND: `127.0.0.1:${ports[3]}`,
    PETSERVE_REPLICA_1: `127.0.0.1:${ports[0]}`,
    PETSERVE_REPLICA_2: `127.0.0.1:${ports[1]}`,
    PETSERVE_REPLICA_3: `127.0.0.1:${ports[2]}`,
    PETSERVE_LB_CHECK_MS: String(CHECK_MS),
  };
  const check = spawnSync('haproxy', ['-c', '-f', 'configs/haproxy/haproxy.cfg', '-f', 'configs/haproxy/replicas-env.cfg'], { env, encoding: 'utf8' });
  expect(check.status, check.stderr).toBe(0);
  lb = spawn('haproxy', ['-db', '-f', 'configs/haproxy/haproxy.cfg', '-f', 'configs/haproxy/replicas-env.cfg'], { env, stdio: 'ignore' });
  lbUrl = `http://127.0.0.1:${ports[3]}`;
  await sleep(4 * CHECK_MS);
}, 600_000);

afterAll(async () => {
  lb?.kill('SIGTERM');
  for (const r of replicas) {
    if (r.child.exitCode === null && r.child.signalCode === null) {
      r.child.kill('SIGTERM');
      await new Promise((ok) => r.child.on('exit', ok));
    }
  }
  const redis = new Redis('redis://127.0.0.1:6379');
  await deletePrefix(redis, prefix);
  redis.disconnect();
  await rm(root, { recursive: true, force: true });
});

describe('several replicas with a shared task catalog behind haproxy', () => {
  it('a task uploaded through A is served through haproxy and by B and C, with the same answer', async () => {
    const [a, b, c] = replicas as [(typeof replicas)[0], (typeof replicas)[0], (typeof replicas)[0]];
    const { loadCheckpoint } = await import('../../src/model/checkpoint.js');
    const petDir = join(root, 'pet-src');
    await initPet({ model: await loadCheckpoint(join(root, 'model')), kind: 'lora', outDir: petDir, seed: 5, numLabels: 2 });
    const form = new FormData();
    form.set('id', 'shared-lora');
    form.set('bundle', new Blob([new Uint8Array(tarBuffer(await dirEntries(petDir, 'shared-lora'), { gzip: true }))], { type: 'application/gzip' }), 'p.tar.gz');
    const created = await call(`${a.url}/v1/tasks`, { body: form, headers: admin });
    expect(created.status, JSON.stringify(created.body)).toBe(201);

    const viaA = await predict(a.url, 'shared-lora');
    expect(viaA.status).toBe(200);
    for (const url of [b.url, c.url, lbUrl]) {
      const r = await predict(url, 'shared-lora');
      expect(r.status, `${url}: ${JSON.stringify(r.body)}`).toBe(200);
      expect(r.body.outputs).toEqual(viaA.body.outputs);
    }
    // The same id cannot be registered again through another replica.
    const again = await call(`${b.url}/v1/tasks`, { body: form, headers: admin });
    expect(again.status).toBe(409);
  });

  it('a task deleted through C is refused by every replica at once', async () => {
    const [a, b, c] = replicas as [(typeof replicas)[0], (typeof replicas)[0], (typeof replicas)[0]];
    const del = await call(`${c.url}/v1/tasks/shared-lora`, { method: 'DELETE', headers: admin });
    expect(del.status, JSON.stringify(del.body)).toBe(200);
    for (const url of [a.url, b.url, c.url, lbUrl]) {
      const r = await predict(url, 'shared-lora');
      expect(r.status, url).toBe(404);
      expect(r.body.error.code).toBe('TASK_NOT_FOUND');
    }
  });

  it("a killed replica's tasks move to the others and no request fails once the check notices", async () => {
    const { loadCheckpoint } = await import('../../src/model/checkpoint.js');
    const base = await loadCheckpoint(join(root, 'model'));
    const ids = ['t0', 't1', 't2', 't3', 't4', 't5'];
    for (const [i, id] of ids.entries()) {
      const dir = join(root, `src-${id}`);
      await initPet({ model: base, kind: i % 2 ? 'bitfit' : 'lora', outDir: dir, seed: 20 + i, numLabels: 2 });
      const form = new FormData();
      form.set('id', id);
      form.set('bundle', new Blob([new Uint8Array(tarBuffer(await dirEntries(dir, id), { gzip: true }))], { type: 'application/gzip' }), 'p.tar.gz');
      expect((await call(`${lbUrl}/v1/tasks`, { body: form, headers: admin })).status).toBe(201);
    }
    const owner = new Map<string, string | null>();
    for (const id of ids) {
      const r = await fetch(`${lbUrl}/v1/tasks/${id}/predict`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ input_ids: [[101, 7, 102]] }) });
      expect(r.status).toBe(200);
      owner.set(id, r.headers.get('x-petserve-replica'));
    }
    // Kill the replica that owns t0 outright (no graceful shutdown).
    const victimName = owner.get('t0')!;
    const victim = replicas[Number(victimName.slice(1)) - 1]!;
    victim.child.kill('SIGKILL');
    await sleep(5 * CHECK_MS); // fall 3
    for (const id of ids) {
      const r = await fetch(`${lbUrl}/v1/tasks/${id}/predict`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ input_ids: [[101, 7, 102]] }) });
      expect(r.status, id).toBe(200);
      expect(r.headers.get('x-petserve-replica')).not.toBe(victimName);
    }
  });
});
