/**
 * Offline batch benchmark (issue 6): N short items over 64 tasks (every PET
 * kind) through Redis with 1 and 2 `petserve worker` processes, against the
 * same items answered by the engine in this process the way a worker does
 * (checks, scheduler at offline priority, formatting; `concurrency` chunks of
 * `chunkSize` at a time) but without Redis, BullMQ or another process —
 * measured before and after the queue runs, as the machine's speed drifts.
 * queue items/s ÷ mean in-process items/s is what the queue costs (or, with
 * several worker processes on a machine with spare cores, gains).
 *
 *   npm run bench -- batch [--items 4000] [--tasks 64] [--workers 1,2] [--chunk-size 256]
 *                          [--concurrency 2] [--min-len 8] [--max-len 24] [--redis-url URL] [--out bench/results]
 *   node --import tsx bench/batch.ts --items 100000      # the size; hours on a CPU adapter
 *
 * Worker start-up (pipeline compilation, task loading) and a warm-up batch
 * that compiles every PET kind's pipelines in every worker are not timed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { stringify as toYaml } from 'yaml';
import type { Progress } from '../src/cli/progress.js';
import { loadConfig, type PetServeConfig } from '../src/config/config.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { initModel } from '../src/model/init-model.js';
import { initPet } from '../src/pet/init-pet.js';
import { PET_KINDS } from '../src/pet/types.js';
import { answerItem } from '../src/queue/answer.js';
import { parseJsonItems } from '../src/queue/items.js';
import { BatchService } from '../src/queue/producer.js';
import { batchQueueSettings } from '../src/queue/settings.js';
import type { BatchItemInput, StoredItem } from '../src/queue/types.js';
import { deletePrefix } from '../src/queue/redis.js';
import { startRuntime } from '../src/runtime/runtime.js';
import { InferenceGateway } from '../src/gateway/gateway.js';
import { silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import { flag, intFlag } from './lib/args.js';
import { benchProgress } from './lib/progress.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReport, type Table } from './lib/report.js';

const items = intFlag('--items', 4000);
const taskCount = intFlag('--tasks', 64);
const chunkSize = intFlag('--chunk-size', 256);
const concurrency = intFlag('--concurrency', 2);
const minLen = intFlag('--min-len', 8, 3);
const maxLen = intFlag('--max-len', 24, minLen);
const workerCounts = (flag('--workers') ?? '1,2').split(',').map((s) => Number(s));
if (workerCounts.some((n) => !Number.isSafeInteger(n) || n < 1)) throw new Error(`--workers must list worker counts, e.g. 1,2`);
const redisUrl = flag('--redis-url') ?? 'redis://127.0.0.1:6379';
const outDir = flag('--out') ?? 'bench/results';
const VOCAB = 4000;

/** The batch: item k for task k mod T (every kind present), random short ids. */
function makeItems(n: number, seed: number): BatchItemInput[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, k) => {
    const len = rng.int(minLen, maxLen + 1);
    const ids = [101, ...Array.from({ length: len - 2 }, () => rng.int(1000, VOCAB)), 102];
    return { task: `t${k % taskCount}`, input_ids: ids, custom_id: String(k) };
  });
}

interface WorkerProc {
  child: ChildProcess;
  ready: Promise<void>;
  exited: Promise<void>;
}

function spawnWorker(configFile: string): WorkerProc {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PETSERVE_') && k !== 'REDIS_URL') env[k] = v;
  if (process.env['PETSERVE_GPU_ADAPTER']) env['PETSERVE_GPU_ADAPTER'] = process.env['PETSERVE_GPU_ADAPTER'];
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/run-from-source.ts', 'worker', '--config', configFile], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      log = (log + d.toString()).slice(-20_000);
      if (log.includes('batch worker started')) resolve();
    });
    void exited.then(() => reject(new Error(`worker exited before it was ready:\n${log.slice(-3000)}`)));
  });
  return { child, ready, exited };
}

async function runBatch(batches: BatchService, list: BatchItemInput[], label: string): Promise<{ submitMs: number; wallMs: number; failed: number }> {
  const progress = benchProgress(label, list.length, 'items');
  try {
    const t0 = performance.now();
    const { batch } = await batches.submit(await parseJsonItems(list));
    const submitMs = performance.now() - t0;
    for (;;) {
      const b = await batches.get(batch.id);
      progress.update({ done: b.counts.done, failed: b.counts.failed });
      if (b.finished_at !== null) return { submitMs, wallMs: performance.now() - t0, failed: b.counts.failed };
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    progress.stop();
  }
}

/** What happens between the results: stderr, so stdout holds only the table. */
const note = (msg: string): void => void process.stderr.write(`${msg}\n`);

async function main(): Promise<void> {
  const started = new Date();
  const root = await mkdtemp(join(tmpdir(), 'petserve-bench-batch-'));
  const prefix = `petserve-bench-${randomBytes(4).toString('hex')}`;
  const admin = new Redis(redisUrl);
  try {
    note(`setting up bert-tiny and ${taskCount} tasks in ${root}`);
    const modelDir = join(root, 'model');
    await initModel({ preset: 'bert-tiny', outDir: modelDir, numLabels: 2, vocabSize: VOCAB, maxPositions: 128, seed: 1 });
    const base = await loadCheckpoint(modelDir);
    for (let t = 0; t < taskCount; t++) {
      await initPet({ model: base, kind: PET_KINDS[t % PET_KINDS.length]!, outDir: join(root, 'tasks', `t${t}`), seed: 100 + t, numLabels: t % 8 === 7 ? 0 : 2 });
    }
    const configFile = join(root, 'config.yaml');
    await writeFile(
      configFile,
      toYaml({
        model: { dir: modelDir },
        server: { tasksDir: join(root, 'tasks'), uploadDir: join(root, 'uploads') },
        redis: { url: redisUrl },
        batches: { prefix, chunkSize, workerConcurrency: concurrency },
        // info: the worker's 'batch worker started' line tells that it is ready.
        log: { level: 'info' },
      }),
    );
    const config: PetServeConfig = loadConfig({ file: configFile, env: { PETSERVE_GPU_ADAPTER: process.env['PETSERVE_GPU_ADAPTER'] } });
    const list = makeItems(items, 7);
    const stored: StoredItem[] = (await parseJsonItems(list)).map((p) => {
      if (!p.ok) throw new Error(p.rejected.error.message);
      return p.item;
    });

    // In-process: the worker's per-item path and access pattern (`concurrency` chunks of
    // `chunkSize` items at a time) without Redis, BullMQ or a second process. Measured
    // before and after the queue runs: on a shared machine throughput drifts, and the
    // mean of the two is the fairer reference.
    let adapter = 'unknown';
    const inProcessRun = async (label: string): Promise<{ wallMs: number; itemsPerSec: number }> => {
      note(`in-process engine (${label}) ...`);
      const runtime = await startRuntime(config, silentLogger);
      adapter = runtime.ctx.capabilities.adapterName;
      try {
        const engine = { gateway: InferenceGateway.forRuntime(runtime, 64) };
        const runChunked = async (xs: StoredItem[], progress: Progress): Promise<number> => {
          const t0 = performance.now();
          let next = 0;
          await Promise.all(
            Array.from({ length: concurrency }, async () => {
              while (next < xs.length) {
                const chunk = xs.slice(next, next + chunkSize);
                next += chunkSize;
                await Promise.all(chunk.map((it) => answerItem(engine, it).then(() => progress.increment())));
              }
            }),
          );
          return performance.now() - t0;
        };
        // Warm-up as long as the workers' (every kind's pipelines, the PET pool filled).
        const warmUp = (await parseJsonItems(makeItems(taskCount * 4, 11))).map((p) => (p as { ok: true; item: StoredItem }).item);
        const measured = async (xs: StoredItem[], what: string): Promise<number> => {
          const progress = benchProgress(`batch: in-process ${what}`, xs.length, 'items');
          try {
            return await runChunked(xs, progress);
          } finally {
            progress.stop();
          }
        };
        await measured(warmUp, 'warm-up');
        const wallMs = await measured(stored, `(${label})`);
        const r = { wallMs, itemsPerSec: (items / wallMs) * 1000 };
        note(`  ${fmt(r.itemsPerSec, 1)} items/s`);
        return r;
      } finally {
        await runtime.close();
      }
    };
    const inProcessBefore = await inProcessRun('before the queue runs');

    const settings = batchQueueSettings(config);
    const batches = BatchService.open(settings, silentLogger);
    // Warm-up batches use small chunks so every worker gets some of every kind.
    const warmBatches = BatchService.open({ ...settings, chunkSize: Math.max(1, Math.ceil(taskCount / 2)) }, silentLogger);
    await batches.waitReady(10_000);
    await warmBatches.waitReady(10_000);
    const queueRuns: { workers: number; submitMs: number; wallMs: number; itemsPerSec: number; ratio: number }[] = [];
    try {
      for (const w of workerCounts) {
        note(`queue with ${w} worker process(es): starting ...`);
        const procs = Array.from({ length: w }, () => spawnWorker(configFile));
        try {
          await Promise.all(procs.map((p) => p.ready));
          await runBatch(warmBatches, makeItems(taskCount * 4 * w, 11), `batch: queue warm-up, ${w} worker(s)`);
          const r = await runBatch(batches, list, `batch: queue, ${w} worker(s)`);
          if (r.failed > 0) throw new Error(`${r.failed} items failed in the queue run`);
          const itemsPerSec = (items / r.wallMs) * 1000;
          queueRuns.push({ workers: w, submitMs: r.submitMs, wallMs: r.wallMs, itemsPerSec, ratio: 0 });
          note(`  ${fmt(itemsPerSec, 1)} items/s (submit ${fmt(r.submitMs, 0)} ms)`);
        } finally {
          for (const p of procs) p.child.kill('SIGTERM');
          await Promise.all(procs.map((p) => p.exited));
        }
      }
    } finally {
      await batches.close();
      await warmBatches.close();
    }
    const inProcessAfter = await inProcessRun('after the queue runs');
    const inProcessItemsPerSec = (inProcessBefore.itemsPerSec + inProcessAfter.itemsPerSec) / 2;
    for (const q of queueRuns) q.ratio = q.itemsPerSec / inProcessItemsPerSec;

    const table: Table = {
      title: `Offline batches: ${items} items over ${taskCount} tasks (${minLen}-${maxLen} tokens), chunk ${chunkSize}, ${concurrency} chunks per worker`,
      headers: ['mode', 'wall s', 'items/s', 'vs in-process mean', 'submit ms'],
      rows: [
        ['in-process engine, before', fmt(inProcessBefore.wallMs / 1000, 1), fmt(inProcessBefore.itemsPerSec, 1), fmt(inProcessBefore.itemsPerSec / inProcessItemsPerSec, 2), '-'],
        ['in-process engine, after', fmt(inProcessAfter.wallMs / 1000, 1), fmt(inProcessAfter.itemsPerSec, 1), fmt(inProcessAfter.itemsPerSec / inProcessItemsPerSec, 2), '-'],
        ...queueRuns.map((q) => [`Redis queue, ${q.workers} worker process(es)`, fmt(q.wallMs / 1000, 1), fmt(q.itemsPerSec, 1), fmt(q.ratio, 2), fmt(q.submitMs, 0)]),
      ],
      note:
        'Queue wall time runs from the submit call until the batch record says finished (results in Redis); ' +
        'in-process runs the same items the same way (chunks of the same size, as many at once) without the queue. ' +
        `All processes share this machine's ${machineInfo().cpuCores} CPU cores; on a CPU adapter (lavapipe) two workers compete for the same cores.`,
    };
    console.log(`\n${textTable(table)}`);
    const stem = `batch-${adapterSlug(adapter)}-${fileStamp(started)}`;
    const cmd = commandLine();
    const md = [
      `# Offline batch benchmark (${started.toISOString()})`,
      '',
      `Command: \`${cmd.npm ?? cmd.node}\`  `,
      `Machine: ${machineInfo().cpuModel} x${machineInfo().cpuCores}; adapter: ${adapter}; model: bert-tiny`,
      '',
      markdownTable(table),
    ].join('\n');
    const written = await writeReport(
      outDir,
      stem,
      {
        command: cmd,
        date: started.toISOString(),
        machine: machineInfo(),
        adapter,
        model: 'bert-tiny',
        items,
        tasks: taskCount,
        tokens: { min: minLen, max: maxLen },
        chunkSize,
        workerConcurrency: concurrency,
        inProcess: {
          before: { wallMs: round(inProcessBefore.wallMs), itemsPerSec: round(inProcessBefore.itemsPerSec) },
          after: { wallMs: round(inProcessAfter.wallMs), itemsPerSec: round(inProcessAfter.itemsPerSec) },
          meanItemsPerSec: round(inProcessItemsPerSec),
        },
        queue: queueRuns.map((q) => ({ workers: q.workers, submitMs: round(q.submitMs), wallMs: round(q.wallMs), itemsPerSec: round(q.itemsPerSec), ratioToInProcessMean: round(q.ratio) })),
      },
      md,
    );
    console.log(`\nwrote ${written.jsonPath} and ${written.markdownPath}`);
  } finally {
    await deletePrefix(admin, prefix);
    admin.disconnect();
    await rm(root, { recursive: true, force: true });
  }
}

await main();
