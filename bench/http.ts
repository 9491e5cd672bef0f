/**
 * HTTP serving benchmark (issue 5): a real `petserve serve` process driven by
 * autocannon (closed loop, C connections) with predict requests spread over
 * many tasks of every PET kind, beside the same requests answered in-process
 * by the same engine stack (input checks, scheduler, output formatting; no
 * HTTP, no JSON) at the same concurrency, in the same run. The ratio is what
 * the HTTP layer costs.
 *
 *   npm run bench -- http [--model bert-mini] [--tasks 64] [--connections 16] [--duration 20]
 *                         [--min-len 8] [--max-len 32] [--inputs 1] [--out bench/results]
 *
 * Not timed: start-up (model load, cost-model profile — cached in .cache/cost-model),
 * and a warm-up request per task that compiles every PET kind's pipelines.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';
import { stringify as toYaml } from 'yaml';
import { serve } from '../src/cli/serve-command.js';
import { loadConfig, type PetServeConfig } from '../src/config/config.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { initModel } from '../src/model/init-model.js';
import { isPresetName, type PresetName } from '../src/model/presets.js';
import { initPet } from '../src/pet/init-pet.js';
import { PET_KINDS } from '../src/pet/types.js';
import { startRuntime } from '../src/runtime/runtime.js';
import { InferenceGateway } from '../src/gateway/gateway.js';
import { predictOutput } from '../src/gateway/predict-output.js';
import { createLogger, silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import { flag, intFlag } from './lib/args.js';
import { benchProgress } from './lib/progress.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReport, type Table } from './lib/report.js';


// The server side of the benchmark: this same script, started as a child process.
const serveConfig = flag('--serve-config');
if (serveConfig !== undefined) {
  const config = loadConfig({ file: serveConfig });
  await serve(config, createLogger(config.log.level));
  process.exit(0);
}

const presetArg = flag('--model') ?? 'bert-mini';
if (!isPresetName(presetArg)) throw new Error(`--model must be a preset name, got ${presetArg}`);
const preset: PresetName = presetArg;
const taskCount = intFlag('--tasks', 64);
const connections = intFlag('--connections', 16);
const durationS = intFlag('--duration', 20);
const minLen = intFlag('--min-len', 8, 3);
const maxLen = intFlag('--max-len', 32, minLen);
const inputsPerRequest = intFlag('--inputs', 1);
const outDir = flag('--out') ?? 'bench/results';
const VOCAB_FLOOR = 1000;

interface Body {
  task: string;
  json: string;
  ids: number[][];
}

interface Measured {
  requests: number;
  seconds: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
}

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

async function setUp(root: string): Promise<{ config: PetServeConfig; taskIds: string[]; configFile: string }> {
  const modelDir = join(root, 'model');
  await initModel({ preset, outDir: modelDir, numLabels: 2, seed: 1 });
  const base = await loadCheckpoint(modelDir);
  const taskIds: string[] = [];
  for (let i = 0; i < taskCount; i++) {
    const kind = PET_KINDS[i % PET_KINDS.length]!;
    const id = `${kind}-${i}`;
    await initPet({ model: base, kind, outDir: join(root, 'tasks', id), seed: 1000 + i });
    taskIds.push(id);
  }
  const config = loadConfig({
    env: process.env,
    overrides: {
      'model.dir': modelDir,
      'server.tasksDir': join(root, 'tasks'),
      'server.uploadDir': join(root, 'uploads'),
      'server.demoDir': join(root, 'demo'),
      'server.host': '127.0.0.1',
      'server.port': 0,
      'server.maxInputsPerRequest': Math.max(64, inputsPerRequest),
      'scheduler.costCacheDir': '.cache/cost-model',
      // Closed-loop throughput: no request should expire while queued.
      'scheduler.defaultSloMs': 600_000,
      // info: a production server logs every request; 'listening' (with the port) is read from it.
      'log.level': 'info',
    },
  });
  const configFile = join(root, 'serve.yaml');
  await writeFile(configFile, toYaml(config));
  return { config, taskIds, configFile };
}

function makeBodies(taskIds: string[], vocabSize: number, count: number): Body[] {
  const rng = new Rng(4242);
  return Array.from({ length: count }, (_, i) => {
    const task = taskIds[i % taskIds.length]!;
    const ids = Array.from({ length: inputsPerRequest }, () => {
      const len = rng.int(minLen, maxLen + 1);
      return [101, ...Array.from({ length: len - 2 }, () => rng.int(VOCAB_FLOOR, vocabSize)), 102];
    });
    return { task, ids, json: JSON.stringify({ input_ids: ids }) };
  });
}

async function startServerProcess(configFile: string): Promise<{ url: string; stop(): Promise<number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/http.ts', '--serve-config', configFile], { stdio: ['ignore', 'inherit', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    // Keep reading stderr for the whole run: a full pipe would block the server's logger.
    createInterface({ input: child.stderr! }).on('line', (line) => {
      try {
        const log = JSON.parse(line) as { msg?: string; url?: string };
        if (log.msg === 'listening' && log.url) resolve(log.url);
        else if ((log as { level?: number }).level !== undefined && (log as { level: number }).level >= 40) process.stderr.write(`server: ${line}\n`);
      } catch {
        process.stderr.write(`server: ${line}\n`);
      }
    });
    void exited.then((code) => reject(new Error(`server exited (${code}) before listening`)));
  });
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

async function warmUp(send: (b: Body) => Promise<unknown>, bodies: Body[], taskIds: string[]): Promise<void> {
  // One request per task: compiles each PET kind's pipelines and pages every PET in once.
  const firstPerTask = taskIds.map((t) => bodies.find((b) => b.task === t)!);
  for (let i = 0; i < firstPerTask.length; i += connections) await Promise.all(firstPerTask.slice(i, i + connections).map(send));
}

async function measureHttp(url: string, bodies: Body[]): Promise<Measured> {
  let next = 0;
  const progress = benchProgress('http: autocannon -> petserve serve', 0, 'requests', { endsAtMs: Date.now() + durationS * 1000 });
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const run = autocannon(
      {
        url,
        connections,
        duration: durationS,
        requests: [
          {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            setupRequest: (req) => {
              const b = bodies[next++ % bodies.length]!;
              return { ...req, path: `/v1/tasks/${b.task}/predict`, body: b.json };
            },
          },
        ],
      },
      (err, r) => (err ? reject(err as Error) : resolve(r)),
    );
    run.on('response', () => progress.increment());
  }).finally(() => progress.stop());
  return {
    requests: result.requests.total,
    seconds: result.duration,
    errors: result.errors + result.non2xx,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
  };
}

async function measureInProcess(config: PetServeConfig, bodies: Body[], taskIds: string[]): Promise<Measured & { adapter: string }> {
  const runtime = await startRuntime(config, silentLogger);
  try {
    const gateway = InferenceGateway.forRuntime(runtime, config.server.maxInputsPerRequest);
    // The route's work minus HTTP: checks, one submit per sequence, output formatting.
    const answer = async (b: Body): Promise<unknown> => {
      const task = gateway.task(b.task);
      const results = await gateway.run(task, gateway.checkIds('input_ids', b.ids, undefined, false), {});
      return results.map((r) => predictOutput(task, r, false));
    };
    await warmUp(answer, bodies, taskIds);
    const latencies: number[] = [];
    let errors = 0;
    let next = 0;
    const started = performance.now();
    const endAt = started + durationS * 1000;
    const progress = benchProgress('http: in-process', 0, 'requests', { endsAtMs: Date.now() + durationS * 1000 });
    await Promise.all(
      Array.from({ length: connections }, async () => {
        while (performance.now() < endAt) {
          const b = bodies[next++ % bodies.length]!;
          const t0 = performance.now();
          try {
            await answer(b);
            latencies.push(performance.now() - t0);
            progress.increment();
          } catch {
            errors += 1;
            progress.update({ failed: errors });
          }
        }
      }),
    ).finally(() => progress.stop());
    const seconds = (performance.now() - started) / 1000;
    latencies.sort((a, b) => a - b);
    const adapter = runtime.ctx.capabilities.adapterName;
    return { requests: latencies.length, seconds, errors, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), adapter };
  } finally {
    await runtime.scheduler.drain(10_000);
    await runtime.close();
  }
}

const root = await mkdtemp(join(tmpdir(), 'petserve-http-bench-'));
try {
  const { config, taskIds, configFile } = await setUp(root);
  const base = await loadCheckpoint(config.model.dir!);
  const bodies = makeBodies(taskIds, base.config.vocabSize, 4096);
  process.stderr.write(`http bench: ${preset}, ${taskCount} tasks, ${connections} connections, ${durationS} s, ${minLen}-${maxLen} tokens × ${inputsPerRequest} per request\n`);

  const server = await startServerProcess(configFile);
  let http: Measured;
  try {
    const send = (b: Body): Promise<unknown> =>
      fetch(`${server.url}/v1/tasks/${b.task}/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: b.json }).then((r) => r.text());
    await warmUp(send, bodies, taskIds);
    http = await measureHttp(server.url, bodies);
  } finally {
    const code = await server.stop();
    if (code !== 0) process.stderr.write(`server exited with ${code}\n`);
  }
  const { adapter, ...inProcess } = await measureInProcess(config, bodies, taskIds);

  const rate = (m: Measured): number => m.requests / m.seconds;
  const row = (name: string, m: Measured): string[] => [
    name,
    fmt(rate(m), 1),
    fmt(rate(m) * inputsPerRequest, 1),
    fmt(m.p50Ms, 1),
    fmt(m.p99Ms, 1),
    String(m.requests),
    String(m.errors),
  ];
  const table: Table = {
    title: `HTTP vs in-process (${preset}, ${taskCount} tasks, ${connections} concurrent, ${durationS} s each)`,
    headers: ['path', 'requests/s', 'sequences/s', 'p50 ms', 'p99 ms', 'requests', 'errors'],
    rows: [row('HTTP (autocannon → petserve serve)', http), row('in-process (same engine stack)', inProcess)],
    note: `HTTP reaches ${fmt((100 * rate(http)) / rate(inProcess), 1)}% of in-process throughput. Adapter: ${adapter}.`,
  };
  console.log(textTable(table));
  const json = {
    benchmark: 'http',
    date: new Date().toISOString(),
    command: commandLine(),
    machine: machineInfo(),
    adapter,
    settings: { preset, taskCount, connections, durationS, minLen, maxLen, inputsPerRequest, scheduler: config.scheduler },
    http: { ...http, requestsPerSecond: round(rate(http), 2) },
    inProcess: { ...inProcess, requestsPerSecond: round(rate(inProcess), 2) },
    httpOverInProcess: round(rate(http) / rate(inProcess), 4),
  };
  const md = [`# HTTP serving benchmark`, '', `\`${commandLine().npm ?? commandLine().node}\``, '', markdownTable(table), ''].join('\n');
  const written = await writeReport(outDir, `http-${adapterSlug(adapter)}-${fileStamp(new Date())}`, json, md);
  console.log(`wrote ${written.jsonPath} and ${written.markdownPath}`);
} finally {
  await rm(root, { recursive: true, force: true });
}
