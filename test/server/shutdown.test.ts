// Graceful shutdown of a real `petserve serve` process: on SIGTERM it stops
// accepting connections, answers what is in flight, drains, releases the GPU
// and exits 0; the drain is bounded by server.shutdownTimeoutMs.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHUTDOWN_EXIT_BOUND_MS } from '../../src/cli/serve-command.js';
import { makeTinyModel, testConfig, writeTasks } from './helpers.js';

let root: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-shutdown-'));
  const base = await makeTinyModel(join(root, 'model'));
  await writeTasks(base, join(root, 'tasks'), [{ id: 'sst', kind: 'lora' }]);
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await rm(root, { recursive: true, force: true });
});

interface LogLine {
  msg?: string;
  [k: string]: unknown;
}

interface Served {
  child: ChildProcess;
  url: string;
  logs: LogLine[];
  /** Resolves with the first log line matching `msg`. */
  waitFor(msg: string): Promise<LogLine>;
  exited: Promise<number | null>;
}

async function startServer(name: string, shutdownTimeoutMs: number): Promise<Served> {
  const config = testConfig(root, {
    'server.port': 0,
    'server.shutdownTimeoutMs': shutdownTimeoutMs,
    'log.level': 'info',
    // Queued requests must be finished by the drain, not expired by their SLO.
    'scheduler.defaultSloMs': 600_000,
  });
  const file = join(root, `${name}.yaml`);
  await writeFile(file, stringify(config));
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/server/fixtures/petserve-cli.ts', 'serve', '--config', file], {
    cwd: process.cwd(),
    env: process.env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  const logs: LogLine[] = [];
  const waiters: { msg: string; resolve: (l: LogLine) => void }[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    let parsed: LogLine;
    try {
      parsed = JSON.parse(line) as LogLine;
    } catch {
      parsed = { msg: line };
    }
    logs.push(parsed);
    for (const w of waiters.filter((w) => w.msg === parsed.msg)) w.resolve(parsed);
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const waitFor = (msg: string): Promise<LogLine> => {
    const seen = logs.find((l) => l.msg === msg);
    if (seen) return Promise.resolve(seen);
    return Promise.race([
      new Promise<LogLine>((resolve) => waiters.push({ msg, resolve })),
      exited.then((code) => {
        throw new Error(`server exited (${code}) before logging '${msg}': ${JSON.stringify(logs.slice(-5))}`);
      }),
    ]);
  };
  const listening = await waitFor('listening');
  return { child, url: String(listening['url']), logs, waitFor, exited };
}

/** A heavy predict request: 16 sequences of 64 tokens. */
const heavy = { input_ids: Array.from({ length: 16 }, (_, i) => [101, ...Array.from({ length: 62 }, (_, j) => 1000 + i * 64 + j), 102]) };

interface Answer {
  status: number;
  retryAfter: string | null;
  body: { outputs?: unknown[]; error?: { code: string } | string };
}

const postPredict = (url: string): Promise<Answer> =>
  fetch(`${url}/v1/tasks/sst/predict`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(heavy) }).then(
    async (r) => ({ status: r.status, retryAfter: r.headers.get('retry-after'), body: (await r.json()) as Answer['body'] }),
    (err: unknown) => ({ status: 0, retryAfter: null, body: { error: String(err) } }),
  );

/** A request on a brand-new TCP connection (no keep-alive pool), to see whether the server still accepts. */
function freshConnection(url: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request(`${url}/v2/health/live`, { agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    req.end();
  });
}

describe('petserve serve shutdown', () => {
  it('SIGTERM: refuses new connections, answers every in-flight request, releases the GPU, exits 0', async () => {
    // A timeout far above the work: on a loaded 2-core machine these requests can take a minute.
    const s = await startServer('graceful', 150_000);
    expect(await freshConnection(s.url)).toBe(200);
    const inFlight = Array.from({ length: 8 }, () => postPredict(s.url));
    // Let the requests reach the server and queue up behind each other.
    await new Promise((r) => setTimeout(r, 400));
    s.child.kill('SIGTERM');
    const shutting = await s.waitFor('shutting down: no new connections, finishing in-flight requests');
    // The signal found requests in flight, or the test proved nothing.
    expect(shutting['inFlight']).toBeGreaterThan(0);
    // Refused, or reset if it raced into the backlog while the listener closed: never served.
    expect(['ECONNREFUSED', 'ECONNRESET']).toContain(await freshConnection(s.url));

    const answers = await Promise.all(inFlight);
    for (const a of answers) {
      expect(a.status, JSON.stringify(a.body)).toBe(200);
      expect(a.body.outputs).toHaveLength(16);
    }
    expect(await s.exited).toBe(0);
    const msgs = s.logs.map((l) => l.msg);
    expect(msgs).toContain('GPU released');
    expect(s.logs.find((l) => l.msg === 'shutdown complete')?.['cutRequests']).toBe(0);
    expect(msgs.indexOf('GPU released')).toBeLessThan(msgs.indexOf('shutdown complete'));
  }, 240_000);

  it('SIGINT with work beyond shutdownTimeoutMs: every waiting request gets 503 SHUTTING_DOWN + Retry-After, and the process exits within the stated bound', async () => {
    const timeoutMs = 300;
    const s = await startServer('bounded', timeoutMs);
    const inFlight = Array.from({ length: 24 }, () => postPredict(s.url));
    await new Promise((r) => setTimeout(r, 400));
    s.child.kill('SIGINT');
    const shutting = await s.waitFor('shutting down: no new connections, finishing in-flight requests');
    const began = Number(shutting['time']);
    expect(await s.exited).toBe(0);
    // The contract (docs/operating.md): exit within shutdownTimeoutMs + SHUTDOWN_EXIT_BOUND_MS of the signal being
    // handled, even with a batch on the device. Counted from the server's own log of it: on a loaded machine the
    // signal itself may wait seconds for the event loop, which is not the shutdown's doing. The slack covers log piping and process exit on a loaded machine.
    const exitMs = Date.now() - began;
    const timeline = s.logs.map((l) => `${Number(l['time']) - began} ms ${l.msg}`).join('; ');
    expect(exitMs, timeline).toBeLessThan(timeoutMs + SHUTDOWN_EXIT_BOUND_MS + 3000);
    const done = s.logs.find((l) => l.msg === 'shutdown complete');
    expect(done?.['cutRequests']).toBeGreaterThan(0);
    const answers = await Promise.all(inFlight);
    // None the server had taken is left without an answer: finished ones got 200, the rest 503 SHUTTING_DOWN with
    // Retry-After. A request still in the kernel's backlog when the listener closed (the event loop was busy with the
    // batch) was never taken: its connection is refused or reset (status 0), as for any new connection.
    expect(answers.filter((a) => a.status === 200 || a.status === 503).length).toBeGreaterThanOrEqual(Number(shutting['inFlight']));
    expect(Number(shutting['inFlight'])).toBeGreaterThan(0);
    expect(answers.some((a) => a.status === 503)).toBe(true);
    for (const a of answers) {
      expect([0, 200, 503], JSON.stringify(a.body)).toContain(a.status);
      if (a.status === 503) {
        expect(a.body.error).toMatchObject({ code: 'SHUTTING_DOWN' });
        expect(Number(a.retryAfter)).toBeGreaterThan(0);
      }
    }
  });
});
