import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { loadCheckpoint, type BertCheckpoint } from '../../src/model/checkpoint.js';
import { initModel } from '../../src/model/init-model.js';
import { generatePet } from '../../src/pet/init-pet.js';
import { TaskRegistry, UnknownTaskError } from '../../src/pet/registry.js';
import type { ItemEngine } from '../../src/queue/answer.js';
import type { BatchQueueSettings } from '../../src/queue/settings.js';
import { DeviceLostError } from '../../src/util/errors.js';
import {
  OverloadError,
  ShuttingDownError,
  type InferenceRequest,
  type InferenceResult,
  type InferenceService,
  type SchedulerStats,
} from '../../src/scheduler/types.js';
import { InferenceGateway } from '../../src/gateway/gateway.js';
import { TextTokenizer } from '../../src/tokenizer/text-tokenizer.js';

export const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';

/** A fresh key prefix per test, so concurrent tests (and other engineers' runs) never share keys. */
export function testPrefix(name: string): string {
  return `pstest-${name}-${randomBytes(4).toString('hex')}`;
}

export function testSettings(prefix: string, over: Partial<BatchQueueSettings> = {}): BatchQueueSettings {
  return { redisUrl: REDIS_URL, prefix, chunkSize: 4, resultsTtlSeconds: 600, attempts: 3, maxItems: 10_000, retryBackoffMs: 50, ...over };
}

export { deletePrefix } from '../../src/queue/redis.js';

/** Kill the Redis connections of one test's clients only (named `${prefix}:...`), never anyone else's. */
export async function killClientsOf(admin: Redis, prefix: string): Promise<number> {
  const list = (await admin.client('LIST')) as string;
  let killed = 0;
  for (const line of list.split('\n')) {
    const id = /\bid=(\d+)/.exec(line)?.[1];
    const name = /\bname=(\S*)/.exec(line)?.[1] ?? '';
    if (id && name.startsWith(`${prefix}:`)) {
      killed += Number(await admin.client('KILL', 'ID', id));
    }
  }
  return killed;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 30_000, everyMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** bert-tiny (random weights, its own tokenizer.json) with tasks registered in memory; no GPU involved. */
export interface TinyModel {
  root: string;
  modelDir: string;
  checkpoint: BertCheckpoint;
  registry: TaskRegistry;
  tokenizer: TextTokenizer;
  dispose(): Promise<void>;
}

export async function tinyModel(tasks: { id: string; numLabels: number }[]): Promise<TinyModel> {
  const root = await mkdtemp(join(tmpdir(), 'petserve-queue-'));
  const modelDir = join(root, 'model');
  await initModel({ preset: 'bert-tiny', outDir: modelDir, numLabels: 2, vocabSize: 300, maxPositions: 32 });
  const checkpoint = await loadCheckpoint(modelDir);
  const registry = new TaskRegistry(checkpoint);
  tasks.forEach((t, i) => registry.registerBundle(t.id, generatePet({ model: checkpoint, kind: 'bitfit', seed: i + 1, numLabels: t.numLabels })));
  const tokenizer = (await TextTokenizer.load(modelDir))!;
  return { root, modelDir, checkpoint, registry, tokenizer, dispose: () => rm(root, { recursive: true, force: true }) };
}

/**
 * A deterministic stand-in for the scheduler: answers from the token ids alone
 * (same ids → same logits), after `delayMs`, and can be made to fail or to
 * hold answers back. Records every request it got.
 */
export class FakeService implements InferenceService {
  readonly requests: InferenceRequest[] = [];
  delayMs = 0;
  /** Return an error to throw for this request (counted per call). */
  fault: ((req: InferenceRequest, call: number) => Error | null) | null = null;
  private gate: Promise<void> | null = null;
  private openGate: (() => void) | null = null;
  private calls = 0;

  constructor(private readonly registry: TaskRegistry) {}

  hold(): void {
    this.gate = new Promise((resolve) => (this.openGate = resolve));
  }

  release(): void {
    this.openGate?.();
    this.gate = null;
  }

  async submit(req: InferenceRequest): Promise<InferenceResult> {
    const call = this.calls++;
    this.requests.push(req);
    if (req.task !== null && !this.registry.has(req.task)) throw new UnknownTaskError(req.task);
    if (this.gate) await this.gate;
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const err = this.fault?.(req, call);
    if (err) throw err;
    return fakeResult(req, this.registry.get(req.task!)?.numLabels ?? 2);
  }

  stats(): SchedulerStats {
    return { policy: 'fake', queued: 0, queuedOnline: 0, queuedOffline: 0, inFlightBatches: 0, maxQueue: 1, batchesRun: 0, requestsDone: this.calls };
  }

  async drain(): Promise<void> {}
}

export function fakeResult(req: InferenceRequest, numLabels: number): InferenceResult {
  const sum = req.inputIds.reduce((s, v, i) => s + v * (i + 1), 0);
  const logits = numLabels > 0 ? Float32Array.from({ length: numLabels }, (_, k) => ((sum * (k + 3)) % 17) / 4 - 2) : null;
  const pooled = req.pooled ? Float32Array.from({ length: 4 }, (_, k) => ((sum + k) % 11) / 10) : null;
  return { logits, pooled, queueWaitMs: 0, latencyMs: 0, batchRows: 1 };
}

export function itemEngine(model: TinyModel, service: InferenceService): ItemEngine {
  return {
    gateway: new InferenceGateway({
      service,
      registry: model.registry,
      tokenizer: model.tokenizer,
      modelConfig: model.checkpoint.config,
      maxInputsPerRequest: 64,
    }),
  };
}

export { DeviceLostError, OverloadError, ShuttingDownError };

/** A `petserve worker` process started from source (node --import tsx), as an operator would run it. */
export interface WorkerProcess {
  child: ChildProcess;
  pid: number;
  /** Everything it logged (JSON lines on stderr), for assertions and failure reports. */
  log(): string;
  /** Resolves once it waits for chunks. */
  ready: Promise<void>;
  exited: Promise<number | null>;
}

export function spawnWorkerProcess(configFile: string, flags: string[] = []): WorkerProcess {
  const env: NodeJS.ProcessEnv = {};
  // Only the GPU choice comes from the caller's environment; everything else is in the config file.
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PETSERVE_') && k !== 'REDIS_URL') env[k] = v;
  if (process.env['PETSERVE_GPU_ADAPTER']) env['PETSERVE_GPU_ADAPTER'] = process.env['PETSERVE_GPU_ADAPTER'];
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/run-from-source.ts', 'worker', '--config', configFile, ...flags], {
    cwd: process.cwd(),
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<void>((resolve, reject) => {
    const check = (): void => {
      if (out.includes('batch worker started')) resolve();
    };
    child.stdout!.on('data', check);
    child.stderr!.on('data', check);
    void exited.then((code) => reject(new Error(`worker exited (${code}) before it was ready:\n${out.slice(-3000)}`)));
  });
  ready.catch(() => undefined);
  return { child, pid: child.pid!, log: () => out, ready, exited };
}
