import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Express } from 'express';
import { Registry } from 'prom-client';
import { loadConfig, type PetServeConfig } from '../../src/config/config.js';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { initPet } from '../../src/pet/init-pet.js';
import type { PetKind } from '../../src/pet/types.js';
import { startRuntime, type Runtime } from '../../src/runtime/runtime.js';
import { createApp, type AppDeps } from '../../src/server/app.js';
import { silentLogger } from '../../src/util/logger.js';

export interface TestTask {
  id: string;
  kind: PetKind;
  /** 0 = embedding task; default 2. */
  numLabels?: number;
  seed?: number;
}

export const ADMIN_TOKEN = 'test-admin-token-0123456789';
/** Small enough that "too long" inputs are cheap to build. */
export const MAX_POSITIONS = 64;
/**
 * Profiled cost models are keyed by (adapter, model config, dtype); every test
 * file uses the same tiny model, so they share one cache and only the first
 * run on a machine pays for the profile.
 */
const COST_CACHE_DIR = join(tmpdir(), 'petserve-test-cost-model');

/** A bert-tiny checkpoint (with tokenizer) in `dir`. */
export async function makeTinyModel(dir: string): Promise<BertCheckpoint> {
  await initModel({ preset: 'bert-tiny', outDir: dir, numLabels: 2, seed: 11, maxPositions: MAX_POSITIONS });
  return loadCheckpoint(dir);
}

export async function writeTasks(base: BertCheckpoint, dir: string, tasks: readonly TestTask[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [i, t] of tasks.entries()) {
    await initPet({ model: base, kind: t.kind, outDir: join(dir, t.id), seed: t.seed ?? 100 + i, numLabels: t.numLabels ?? 2 });
  }
}

export function testConfig(root: string, overrides: Record<string, unknown> = {}): PetServeConfig {
  return loadConfig({
    overrides: {
      'model.dir': join(root, 'model'),
      'server.tasksDir': join(root, 'tasks'),
      'server.uploadDir': join(root, 'uploads'),
      'server.demoDir': join(root, 'demo'),
      'server.adminToken': ADMIN_TOKEN,
      'gpu.adapter': process.env['PETSERVE_GPU_ADAPTER'],
      'scheduler.costCacheDir': COST_CACHE_DIR,
      // Small batch budget: a short start-up profile on lavapipe.
      'scheduler.maxBatchTokens': 512,
      // Functional tests, not latency tests: on a loaded 2-core machine a 2 s objective would turn
      // answers into 429 DEADLINE_UNREACHABLE / 504 at random. Deadline tests set deadline_ms themselves.
      'scheduler.defaultSloMs': 600_000,
      'scheduler.maxBatchRows': 32,
      // f32: answers are compared with float64 references at f32 tolerances ('auto' may pick f16).
      'model.dtype': 'f32',
      // Background kernel tuning would compete with the tests for the two cores; its own tests turn it on.
      'kernels.autotune': false,
      'log.level': 'silent',
      ...overrides,
    },
  });
}

export interface TestStack {
  root: string;
  base: BertCheckpoint;
  config: PetServeConfig;
  runtime: Runtime;
  close(): Promise<void>;
}

/** Model + task directories on disk, then the real runtime (one GPU device) over them. */
export async function startTestStack(tasks: readonly TestTask[], overrides: Record<string, unknown> = {}): Promise<TestStack> {
  const root = await mkdtemp(join(tmpdir(), 'petserve-server-'));
  const base = await makeTinyModel(join(root, 'model'));
  await writeTasks(base, join(root, 'tasks'), tasks);
  const config = testConfig(root, overrides);
  const runtime = await startRuntime(config, silentLogger);
  return {
    root,
    base,
    config,
    runtime,
    close: async () => {
      await runtime.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

export interface Listening {
  url: string;
  server: Server;
  close(): Promise<void>;
}

export async function listenOn(app: Express): Promise<Listening> {
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** createApp over a test stack, listening on a free port. */
export async function serveStack(stack: TestStack, deps: Partial<AppDeps> = {}): Promise<Listening> {
  const app = createApp({ runtime: stack.runtime, config: stack.config, logger: silentLogger, metricsRegistry: new Registry(), ...deps });
  return listenOn(app);
}

// Response bodies are untyped JSON that the tests inspect with assertions.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface JsonResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

/** fetch with a JSON body (or a raw one), answering the parsed JSON body. */
// Response bodies are untyped JSON that the tests inspect with assertions.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function call<T = any>(
  url: string,
  init: { method?: string; json?: unknown; body?: RequestInit["body"]; headers?: Record<string, string> } = {},
): Promise<JsonResponse<T>> {
  const headers: Record<string, string> = { ...(init.headers ?? {}) };
  let body = init.body;
  if (init.json !== undefined) {
    headers['Content-Type'] ??= 'application/json';
    body = JSON.stringify(init.json);
  }
  const res = await fetch(url, { method: init.method ?? (body === undefined ? 'GET' : 'POST'), headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON (e.g. /metrics)
  }
  return { status: res.status, headers: res.headers, body: parsed as T };
}

export const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };

/** Largest |a - b| over two equally long vectors. */
export function maxAbsDiff(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
