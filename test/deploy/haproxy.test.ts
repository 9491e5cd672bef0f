import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/net.js';

/**
 * configs/haproxy/haproxy.cfg (+ replicas-env.cfg) run by Debian's haproxy (scripts/setup-system.sh
 * installs it) in front of three stand-in replicas: small HTTP servers that say
 * who they are, can be made unready, and can be made slow. What is tested is the
 * load balancer's configuration: task affinity, fall-back, health, bounded load.
 * (The replicas' own behaviour is tested against `petserve serve` elsewhere.)
 */
const CONFIG = ['-f', 'configs/haproxy/haproxy.cfg', '-f', 'configs/haproxy/replicas-env.cfg'];

interface Replica {
  name: string;
  server: Server;
  port: number;
  ready: boolean;
  delayMs: number;
  inFlight: number;
  maxInFlight: number;
}

async function startReplica(name: string): Promise<Replica> {
  const r: Replica = { name, server: createServer(), port: 0, ready: true, delayMs: 0, inFlight: 0, maxInFlight: 0 };
  r.server.on('request', (req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/v2/health/ready') {
        res.writeHead(r.ready ? 200 : 503).end();
        return;
      }
      r.inFlight++;
      r.maxInFlight = Math.max(r.maxInFlight, r.inFlight);
      setTimeout(() => {
        r.inFlight--;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ replica: name }));
      }, r.delayMs);
    });
  });
  await new Promise<void>((ok) => r.server.listen(0, '127.0.0.1', ok));
  r.port = (r.server.address() as AddressInfo).port;
  return r;
}

const CHECK_MS = 200;

/** Poll `cond` every CHECK_MS until it holds; fails the test after 50 checks (10 s). */
async function until(cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if (await cond()) return;
    await sleep(CHECK_MS);
  }
  throw new Error('haproxy did not reach the expected state within 50 health checks');
}
let replicas: Replica[] = [];
let lb: ChildProcess | undefined;
let base = '';
let lbLog = '';

/**
 * The replica that holds `path`'s task: up to three reads, the first that equals
 * `expected`, else the last. Bounded load (hash-balance-factor) may send a single
 * request to the next replica on the ring while HAProxy still counts the previous
 * request as in flight (seen on a loaded CI machine); a broken ring misroutes all three.
 */
async function settledReplicaFor(path: string, expected: string): Promise<string> {
  let last = '';
  for (let i = 0; i < 3; i++) {
    last = await replicaFor(path, { method: 'POST' });
    if (last === expected) break;
  }
  return last;
}

async function replicaFor(path: string, init?: RequestInit): Promise<string> {
  const res = await fetch(base + path, init);
  expect(res.status).toBe(200);
  const header = res.headers.get('x-petserve-replica');
  const body = (await res.json()) as { replica: string };
  expect(header).toBe(body.replica);
  return body.replica;
}

/** Round-robin (key-less) requests reach all three replicas. */
async function allReplicasServe(): Promise<boolean> {
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) seen.add(await replicaFor('/v1/status'));
  return seen.size === 3;
}

const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

beforeAll(async () => {
  replicas = await Promise.all(['r1', 'r2', 'r3'].map(startReplica));
  const lbPort = await freePort();
  const env = {
    ...process.env,
    PETSERVE_LB_BIND: `127.0.0.1:${lbPort}`,
    PETSERVE_REPLICA_1: `127.0.0.1:${replicas[0]!.port}`,
    PETSERVE_REPLICA_2: `127.0.0.1:${replicas[1]!.port}`,
    PETSERVE_REPLICA_3: `127.0.0.1:${replicas[2]!.port}`,
    PETSERVE_LB_CHECK_MS: String(CHECK_MS),
  };
  const check = spawnSync('haproxy', ['-c', ...CONFIG], { env, encoding: 'utf8' });
  expect(check.error, 'haproxy is not installed: run scripts/setup-system.sh').toBeUndefined();
  expect(check.status, check.stderr + check.stdout).toBe(0);
  lb = spawn('haproxy', ['-db', ...CONFIG], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  // HAProxy's own log (server state changes), shown with a failed expectation.
  for (const stream of [lb.stdout, lb.stderr]) stream?.on('data', (chunk: Buffer) => (lbLog += chunk.toString()));
  base = `http://127.0.0.1:${lbPort}`;
  for (let i = 0; ; i++) {
    try {
      await fetch(base + '/v2/health/live');
      break;
    } catch (err) {
      if (i > 100) throw err;
      await sleep(50);
    }
  }
  // Until every replica has passed its first checks (rise 2): a replica coming up
  // later would take over part of the hash ring in the middle of a test.
  await until(allReplicasServe);
});

afterAll(async () => {
  lb?.kill('SIGTERM');
  await Promise.all(replicas.map((r) => new Promise((ok) => r.server.close(ok))));
});

describe('haproxy task-affinity configuration', () => {
  it('sends every request of a task to one replica, whichever route names it', async () => {
    for (const task of ['sentiment', 'ner-7', 'topic.v2']) {
      const seen = new Set<string>();
      for (let i = 0; i < 5; i++) {
        seen.add(await replicaFor(`/v1/tasks/${task}/predict`, { method: 'POST' }));
        seen.add(await replicaFor(`/v2/models/${task}/infer`, { method: 'POST' }));
        seen.add(
          await replicaFor('/v1/chat/completions', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(i * 500) }], model: task }),
          }),
        );
      }
      expect([...seen], task).toHaveLength(1);
    }
  });

  it('spreads many tasks over all replicas', async () => {
    const counts = new Map<string, number>();
    for (let t = 0; t < 48; t++) {
      const r = await replicaFor(`/v1/tasks/task-${t}/predict`, { method: 'POST' });
      counts.set(r, (counts.get(r) ?? 0) + 1);
    }
    expect(counts.size).toBe(3);
    for (const n of counts.values()) expect(n).toBeGreaterThanOrEqual(6);
  });

  it('round-robins requests that name no task', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 9; i++) seen.add(await replicaFor('/v1/status'));
    expect(seen.size).toBe(3);
  });

  it('moves the tasks of an unready replica elsewhere and no request fails once the check notices', async () => {
    const tasks = Array.from({ length: 24 }, (_, i) => `move-${i}`);
    const before = new Map<string, string>();
    for (const t of tasks) before.set(t, await replicaFor(`/v1/tasks/${t}/predict`, { method: 'POST' }));
    const victim = replicas.find((r) => [...before.values()].includes(r.name))!;
    const victimTask = tasks.find((t) => before.get(t) === victim.name)!;
    victim.ready = false;
    try {
      // The check notices after fall 3 (≈ 3 × CHECK_MS); under a loaded CI machine later, so wait for it rather than a fixed time.
      await until(async () => (await replicaFor(`/v1/tasks/${victimTask}/predict`, { method: 'POST' })) !== victim.name);
      for (const t of tasks) {
        const was = before.get(t)!;
        const now = await settledReplicaFor(`/v1/tasks/${t}/predict`, was);
        expect(now, `${t}\n${lbLog}`).not.toBe(victim.name);
        // Consistent hashing: tasks of the other replicas stay where they were.
        if (was !== victim.name) expect(now, `${t}\n${lbLog}`).toBe(was);
      }
    } finally {
      // Restored even when an expectation fails, so the next test starts with three replicas.
      victim.ready = true;
    }
    await until(async () => (await replicaFor(`/v1/tasks/${victimTask}/predict`, { method: 'POST' })) === victim.name); // rise 2
    for (const t of tasks) {
      const was = before.get(t)!;
      expect(await settledReplicaFor(`/v1/tasks/${t}/predict`, was), `${t}\n${lbLog}`).toBe(was);
    }
  });

  it('spills a hot task to another replica instead of piling it on one (bounded load)', async () => {
    // Three replicas up (a replica still rising would change the bound).
    await until(allReplicasServe);
    for (const r of replicas) {
      r.delayMs = 300;
      r.maxInFlight = 0;
    }
    const answers = await Promise.all(Array.from({ length: 30 }, () => replicaFor('/v1/tasks/hot/predict', { method: 'POST' })));
    for (const r of replicas) r.delayMs = 0;
    const byReplica = new Map<string, number>();
    for (const a of answers) byReplica.set(a, (byReplica.get(a) ?? 0) + 1);
    expect(byReplica.size).toBeGreaterThanOrEqual(2);
    // hash-balance-factor 250: no replica holds more than 2.5x the mean in flight (+1 for rounding), so 30 at once spill.
    for (const r of replicas) expect(r.maxInFlight, r.name).toBeLessThanOrEqual(Math.ceil((2.5 * 30) / 3) + 1);
  });
});
