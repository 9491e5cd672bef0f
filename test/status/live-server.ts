import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { Registry } from 'prom-client';
import { f32Config } from '../helpers/config.js';
import { httpMetricsMiddleware } from '../../src/metrics/http.js';
import { GenerationMetrics } from '../../src/metrics/generation.js';
import { createMetrics, type PetServeMetrics } from '../../src/metrics/metrics.js';
import { loadCheckpoint } from '../../src/model/checkpoint.js';
import { initDecoderModel } from '../../src/model/init-decoder.js';
import { initModel } from '../../src/model/init-model.js';
import { writeRandomPeftLora } from '../../src/pet/formats/peft-writer.js';
import { generatePet, initPet } from '../../src/pet/init-pet.js';
import { TaskRegistry } from '../../src/pet/registry.js';
import type { PetKind } from '../../src/pet/types.js';
import { startRuntime, type Runtime } from '../../src/runtime/runtime.js';
import { startServedGeneration, type ServedGeneration } from '../../src/runtime/served-generation.js';
import { createApp } from '../../src/server/app.js';
import { createStatusRouter } from '../../src/server/routes/status.js';
import { silentLogger } from '../../src/util/logger.js';

export interface LiveTask {
  id: string;
  kind: PetKind;
  /** 0 = embedding task. */
  numLabels?: number;
  rank?: number;
  bottleneck?: number;
  density?: number;
}

export interface LiveServer {
  url: string;
  registry: Registry;
  metrics: PetServeMetrics;
  runtime: Runtime;
  tasks: LiveTask[];
  /** The decoder and its metrics, with `decoderTasks`. */
  generation: { served: ServedGeneration; metrics: GenerationMetrics } | null;
  close(): Promise<void>;
}

export interface LiveServerOptions {
  tightPoolFor?: number;
  perTaskTopK?: number;
  /** Also serve a random llama-tiny decoder with these LoRA adapters (as `serve --generation-model`). */
  decoderTasks?: readonly string[];
}

/**
 * The real stack on lavapipe: a bert-tiny checkpoint and PET task directories
 * on disk, `startRuntime` (GPU, registry, runner, profiled scheduler) and
 * `createApp`, wired to the metrics exactly as docs/operating.md tells the
 * server to: one Registry, the metrics' observer handed to the scheduler, the
 * runner and scheduler bound as collectors, the status router mounted, and the
 * HTTP middleware in front of everything.
 *
 * `tightPoolFor`: size the GPU PET pool to hold only the largest N tasks at
 * once (N = the most distinct tasks one batch can carry, i.e. the number of
 * concurrent clients), so a workload over all tasks must page PETs in and
 * evict others. Throws if the tasks would all fit anyway.
 */
export async function startLiveServer(tasks: LiveTask[], opts: LiveServerOptions = {}): Promise<LiveServer> {
  const root = await mkdtemp(join(tmpdir(), 'petserve-live-'));
  const modelDir = join(root, 'model');
  const tasksDir = join(root, 'tasks');
  await initModel({ preset: 'bert-tiny', outDir: modelDir, numLabels: 2, seed: 11, maxPositions: 128 });
  const base = await loadCheckpoint(modelDir);
  await mkdir(tasksDir);
  for (const [i, t] of tasks.entries()) {
    const { rank, bottleneck, density } = t;
    await initPet({ model: base, kind: t.kind, outDir: join(tasksDir, t.id), seed: 100 + i, numLabels: t.numLabels ?? 2, rank, bottleneck, density });
  }

  const decoderDir = join(root, 'decoder');
  const decoderTasksDir = join(root, 'decoder-tasks');
  if (opts.decoderTasks) {
    await initDecoderModel({ preset: 'llama-tiny', outDir: decoderDir, seed: 7 });
    for (const [i, id] of opts.decoderTasks.entries()) {
      await writeRandomPeftLora(join(decoderTasksDir, id), { modelDir: decoderDir, targetModules: ['q_proj', 'v_proj'], rank: 4, seed: 200 + i });
    }
  }

  let poolBytes: number | undefined;
  if (opts.tightPoolFor !== undefined) {
    // Packed sizes as the runner pages them, measured on a throwaway registry.
    const probe = new TaskRegistry(base);
    const pages = (id: string): number => {
      const t = probe.get(id)!;
      return Math.ceil((t.packedFloats * 4 + t.packedWords * 4) / 4096);
    };
    for (const t of tasks) await probe.register(t.id, join(tasksDir, t.id));
    const sizes = tasks.map((t) => pages(t.id)).sort((a, b) => b - a);
    // The start-up cost profile (src/scheduler/cost-profiler.ts) runs one batch
    // over 8 default LoRA tasks at once: the pool must hold those too.
    probe.registerBundle('profile-lora', generatePet({ model: base, kind: 'lora', seed: 1 }));
    const profilerPages = 8 * pages('profile-lora') + 8;
    const poolPages = Math.max(profilerPages, sizes.slice(0, opts.tightPoolFor).reduce((a, b) => a + b, 0) + 8);
    const totalPages = sizes.reduce((a, b) => a + b, 0);
    if (totalPages <= poolPages) throw new Error(`tasks take ${totalPages} pages, the pool ${poolPages}: nothing would be evicted; add or enlarge tasks`);
    poolBytes = poolPages * 4096;
  }

  const config = f32Config({
    overrides: {
      'model.dir': modelDir,
      'server.tasksDir': tasksDir,
      'server.uploadDir': join(root, 'uploads'),
      'server.demoDir': join(root, 'demo'),
      'server.host': '127.0.0.1',
      'server.port': 0,
      'gpu.adapter': process.env['PETSERVE_GPU_ADAPTER'],
      'scheduler.costCacheDir': join(root, 'cost'),
      // Small batches keep the start-up cost profile short on lavapipe.
      'scheduler.maxBatchTokens': 512,
      'scheduler.maxBatchRows': 32,
      // Every other batch timed per dispatch, so device-time metrics appear quickly.
      'scheduler.profileEveryBatches': 2,
      // The page is what is tested, not kernel tuning (it would share the two cores with the requests).
      'kernels.autotune': false,
      'pets.poolBytes': poolBytes,
      'metrics.perTaskTopK': opts.perTaskTopK ?? 0,
      // The page's task table is per-task detail, shown without credentials only when the operator says so (issue 16).
      'server.publicStatus': true,
      ...(opts.decoderTasks
        ? {
            'generation.modelDir': decoderDir,
            'generation.tasksDir': decoderTasksDir,
            'generation.kvCacheBytes': 8 * 1024 * 1024,
            // Every other step timed per dispatch, so the LoRA device share appears after a few requests.
            'generation.profileEverySteps': 2,
          }
        : {}),
    },
  });

  // --- the wiring the server should do (docs/operating.md, "Wiring") ---
  const registry = new Registry();
  const metrics = createMetrics(registry, { perTaskTopK: config.metrics.perTaskTopK });
  const runtime = await startRuntime(config, silentLogger, { observer: metrics.observer });
  metrics.bindRuntime(runtime);
  let generation: LiveServer['generation'] = null;
  if (opts.decoderTasks) {
    const genMetrics = new GenerationMetrics(registry);
    const served = await startServedGeneration(runtime, config, {
      logger: silentLogger,
      isEncoderModel: (id) => runtime.registry.has(id),
      observer: genMetrics.observer,
      onStep: genMetrics.onStep,
    });
    if (!served) throw new Error('generation.modelDir is set but no decoder started');
    genMetrics.bind(served.runtime);
    generation = { served, metrics: genMetrics };
  }
  const gen = generation;
  const status = createStatusRouter({
    metrics,
    memory: runtime.runner,
    scheduler: runtime.scheduler,
    generation: gen ? { status: (seconds) => gen.metrics.status(gen.served.completions.tasks(), seconds) } : null,
    info: () => ({
      model: 'bert-tiny',
      dtype: config.model.dtype,
      adapter: runtime.ctx.capabilities.adapterName,
      policy: config.scheduler.policy,
    }),
  });
  const app = createApp({ runtime, config, logger: silentLogger, metricsRegistry: registry, routers: [status], completions: gen?.served.completions ?? null });
  // createApp has no hook for middleware that must run before its routes, so
  // the metrics middleware wraps the app (a server could equally app.use() it first).
  const outer = express();
  outer.use(httpMetricsMiddleware(metrics, { tasks: runtime.registry }));
  outer.use(app);
  // ---

  const server: Server = await new Promise((resolve) => {
    const s = outer.listen(0, '127.0.0.1', () => resolve(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    registry,
    metrics,
    runtime,
    tasks,
    generation,
    close: async () => {
      await new Promise((r) => server.close(r));
      await runtime.scheduler.drain(5000).catch(() => undefined);
      await gen?.served.close();
      await runtime.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** Deterministic pseudo-random source for request mixes (same mix every run). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ['the', 'model', 'serves', 'many', 'tasks', 'over', 'one', 'shared', 'encoder', 'with', 'small', 'deltas', 'fast', 'and', 'cheap', 'batch'];

/** One predict call with a text of `words` words; resolves with the HTTP status. */
export async function predict(url: string, task: string, words: number, rand: () => number): Promise<number> {
  const text = Array.from({ length: words }, () => WORDS[Math.floor(rand() * WORDS.length)]!).join(' ');
  const res = await fetch(`${url}/v1/tasks/${task}/predict`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: text }),
  });
  await res.arrayBuffer();
  return res.status;
}
