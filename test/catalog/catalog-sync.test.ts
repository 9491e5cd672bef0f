import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DirectoryBlobStore } from '../../src/catalog/blob-store.js';
import { CatalogSync, type LocalTasks } from '../../src/catalog/catalog-sync.js';
import { hashDirectory } from '../../src/catalog/content-hash.js';
import { CatalogUnavailableError } from '../../src/catalog/errors.js';
import { TaskCatalog } from '../../src/catalog/task-catalog.js';
import { TaskExistsError, UnknownTaskError } from '../../src/pet/registry.js';
import { deletePrefix } from '../../src/queue/redis.js';
import { silentLogger } from '../../src/util/logger.js';

/**
 * The shared task catalog against a real Redis, with three "replicas" in one
 * process: each has its own connection, host cache and a stand-in registry
 * that records which directory it registered (the real registry's loading is
 * tested in test/pet). What is proven: publish once, served everywhere; replace
 * and delete reach every replica by event, and by the per-request version
 * check when an event is missed; Redis down keeps serving and refuses writes.
 */
const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const prefix = `pstest-catalog-${randomBytes(4).toString('hex')}`;

class FakeRegistry implements LocalTasks {
  readonly dirs = new Map<string, string>();
  async register(id: string, dir: string): Promise<{ kind: string }> {
    if (this.dirs.has(id)) throw new TaskExistsError(id);
    // Read the files now, as the real registry does: a half-fetched blob would fail here.
    await readFile(join(dir, 'adapter_config.json'));
    this.dirs.set(id, dir);
    return { kind: 'lora' };
  }
  async unregister(id: string): Promise<void> {
    if (!this.dirs.delete(id)) throw new UnknownTaskError(id);
  }
  has(id: string): boolean {
    return this.dirs.has(id);
  }
}

interface Replica {
  redis: Redis;
  registry: FakeRegistry;
  sync: CatalogSync;
}

let root = '';
let blobs: DirectoryBlobStore;
const replicas: Replica[] = [];

async function replica(name: string, subscribe = true): Promise<Replica> {
  const redis = new Redis(REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 1, enableOfflineQueue: true });
  const registry = new FakeRegistry();
  const sync = new CatalogSync(new TaskCatalog(redis, prefix), blobs, registry, {
    cacheDir: join(root, `cache-${name}`),
    baseModel: 'bert-mini',
    logger: silentLogger,
  });
  if (subscribe) await sync.start();
  const r = { redis, registry, sync };
  replicas.push(r);
  return r;
}

async function petDir(name: string, content: string): Promise<string> {
  const dir = join(root, 'src', name);
  await mkdir(join(dir, 'nested'), { recursive: true });
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({ content }));
  await writeFile(join(dir, 'nested', 'weights.bin'), Buffer.from(content.repeat(100)));
  return dir;
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await new Promise((ok) => setTimeout(ok, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-catalog-'));
  blobs = new DirectoryBlobStore(join(root, 'blobs'));
});

afterAll(async () => {
  for (const r of replicas) await r.sync.stop();
  const admin = new Redis(REDIS_URL);
  await deletePrefix(admin, prefix);
  admin.disconnect();
  for (const r of replicas) r.redis.disconnect();
  await rm(root, { recursive: true, force: true });
});

describe('content hash and blob store', () => {
  it('hashes paths and bytes, not timestamps; a changed byte changes it', async () => {
    const a = await petDir('h1', 'same');
    const b = await petDir('h2', 'same');
    expect((await hashDirectory(a)).hash).toBe((await hashDirectory(b)).hash);
    await writeFile(join(b, 'nested', 'weights.bin'), Buffer.from('x'));
    expect((await hashDirectory(a)).hash).not.toBe((await hashDirectory(b)).hash);
  });

  it('refuses locations it did not write (no path traversal from Redis)', async () => {
    for (const bad of ['../etc', 'a/../../b', '/abs/path', `t/${'0'.repeat(63)}`]) {
      await expect(blobs.fetch(bad, join(root, 'x'))).rejects.toThrow(/not a blob location/);
    }
  });
});

describe('shared task catalog', () => {
  it('a task published through one replica is served by the others, fetched lazily into their cache', async () => {
    const [a, b, c] = [await replica('a'), await replica('b'), await replica('c', false)];
    const dir = await petDir('sentiment', 'v1');
    await a.registry.register('sentiment', dir);
    const entry = await a.sync.publish('sentiment', dir, 'lora');
    expect(entry).toMatchObject({ id: 'sentiment', kind: 'lora', baseModel: 'bert-mini', sizeBytes: 2 + 200 + 14 });
    // b learns by event; c (not subscribed) on its first request.
    await until(() => b.registry.has('sentiment'), 'b to register by event');
    expect(c.registry.has('sentiment')).toBe(false);
    await c.sync.ensure('sentiment');
    expect(c.registry.has('sentiment')).toBe(true);
    const cDir = c.registry.dirs.get('sentiment')!;
    expect(cDir).toContain('cache-c');
    expect(await readFile(join(cDir, 'nested', 'weights.bin'), 'utf8')).toBe('v1'.repeat(100));
    expect(c.sync.heldVersion('sentiment')).toBe(entry.version);
  });

  it('refuses a second registration of an id anywhere', async () => {
    const [, b] = replicas;
    const dir = await petDir('sentiment-dup', 'other');
    await expect(b!.sync.publish('sentiment', dir, 'lora')).rejects.toBeInstanceOf(TaskExistsError);
  });

  it('a new version replaces the old one everywhere, by event or by the per-request check', async () => {
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    const oldDir = c.registry.dirs.get('sentiment')!;
    const dir = await petDir('sentiment-v2', 'v2');
    const entry = await a.sync.publish('sentiment', dir, 'lora', { mode: 'replace' });
    await until(() => b.sync.heldVersion('sentiment') === entry.version, 'b to take v2');
    await c.sync.ensure('sentiment');
    expect(c.sync.heldVersion('sentiment')).toBe(entry.version);
    expect(await readFile(join(c.registry.dirs.get('sentiment')!, 'adapter_config.json'), 'utf8')).toContain('v2');
    // The old copy left the host cache.
    expect((await readdir(join(oldDir, '..'))).some((n) => join(oldDir, '..', n) === oldDir)).toBe(false);
  });

  it('a task deleted through one replica stops being served by all, even one that missed the event', async () => {
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    const removed = await c.sync.withdraw('sentiment');
    expect(removed.id).toBe('sentiment');
    await until(() => !b.registry.has('sentiment'), 'b to drop it by event');
    // c is not subscribed: the version check before its next request drops it.
    expect(c.registry.has('sentiment')).toBe(true);
    await c.sync.ensure('sentiment');
    expect(c.registry.has('sentiment')).toBe(false);
    await a.sync.ensure('sentiment');
    expect(a.registry.has('sentiment')).toBe(false);
    await expect(c.sync.withdraw('sentiment')).rejects.toBeInstanceOf(UnknownTaskError);
    // Its blob is gone from the shared store.
    await expect(readdir(join(root, 'blobs', 'sentiment'))).resolves.toEqual([]);
  });

  it('a process serving two bases (encoder and decoder) puts each catalog task in the registry of the base it names', async () => {
    const withDecoder = async (name: string): Promise<Replica & { decoder: FakeRegistry }> => {
      const r = await replica(name, false);
      const decoder = new FakeRegistry();
      r.sync.addBase('llama-chat', decoder);
      await r.sync.start();
      return { ...r, decoder };
    };
    const [a, b] = [await withDecoder('two-a'), await withDecoder('two-b')];
    const encoderOnly = await replica('two-c');
    const dir = await petDir('chat-lora', 'adapter');
    await a.decoder.register('chat-lora', dir);
    expect(await a.sync.publish('chat-lora', dir, 'lora', { baseModel: 'llama-chat' })).toMatchObject({ baseModel: 'llama-chat' });
    await b.sync.ensure('chat-lora');
    expect(b.decoder.has('chat-lora')).toBe(true);
    expect(b.registry.has('chat-lora')).toBe(false);
    // A replica without that decoder does not serve it (and does not put it in its encoder).
    await encoderOnly.sync.ensure('chat-lora');
    expect(encoderOnly.registry.has('chat-lora')).toBe(false);
    // A base this process does not serve cannot be published to.
    await expect(a.sync.publish('x', dir, 'lora', { baseModel: 'gpt2-other' })).rejects.toThrow(/not served here/);
    // Deleted through A: B drops it from its decoder registry (by event).
    await a.sync.withdraw('chat-lora');
    await until(() => !b.decoder.has('chat-lora'), 'B to drop the decoder adapter');
  });

  it("leaves a replica's own tasks alone when the catalog has none of that id", async () => {
    const [a] = replicas as [Replica];
    await a.registry.register('local-only', await petDir('local-only', 'mine'));
    await a.sync.ensure('local-only');
    expect(a.registry.has('local-only')).toBe(true);
  });

  it('with Redis down, keeps serving what it holds and refuses registration with CATALOG_UNAVAILABLE', async () => {
    const a = replicas[0]!;
    const dir = await petDir('kept', 'k');
    await a.registry.register('kept', dir);
    await a.sync.publish('kept', dir, 'lora');
    const b = await replica('down', false);
    await b.sync.ensure('kept');
    expect(b.registry.has('kept')).toBe(true);
    b.redis.disconnect(); // as if Redis went away (no reconnect: offline queue off below)
    b.redis.options.enableOfflineQueue = false;
    await b.sync.ensure('kept');
    expect(b.registry.has('kept')).toBe(true);
    const err = await b.sync.publish('new-one', await petDir('new-one', 'n'), 'lora').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CatalogUnavailableError);
    expect((err as CatalogUnavailableError).code).toBe('CATALOG_UNAVAILABLE');
  });
});
