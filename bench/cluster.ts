/**
 * Task affinity across replicas: three `petserve serve` processes behind
 * HAProxy, 64 tasks, Zipf-skewed traffic, each replica's GPU pool sized to hold
 * about a third of the tasks. Routing by task (configs/haproxy/haproxy.cfg:
 * consistent hashing with bounded load) against round-robin (the same file with
 * `balance roundrobin`), side by side in one run, replicas restarted between
 * runs so every run starts with empty pools. Reports PET page-ins per replica
 * (petserve_pet_page_ins_total) and throughput.
 *
 * With --warmup N, the first N requests of the trace (same routing) fill the
 * pools before anything is counted: the measured window then shows steady-state
 * page-ins (capacity misses) apart from each replica's first load of its tasks
 * (compulsory misses, which any routing pays once).
 *
 *   npm run bench -- cluster [--tasks 64] [--requests 600] [--warmup 0] [--concurrency 8] [--zipf 1.1] [--repeats 1]
 *                            [--hash-balance-factor 250]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config/config.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { initModel } from '../src/model/init-model.js';
import { initPet } from '../src/pet/init-pet.js';
import { TaskRegistry } from '../src/pet/registry.js';
import { freePort } from '../test/helpers/net.js';
import { flag, intFlag } from './lib/args.js';
import { benchProgress } from './lib/progress.js';
import { commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReport, type Table } from './lib/report.js';

const TASKS = intFlag('--tasks', 64);
const REQUESTS = intFlag('--requests', 600);
const WARMUP = intFlag('--warmup', 0, 0);
const CONCURRENCY = intFlag('--concurrency', 8);
const REPEATS = intFlag('--repeats', 1);
const ZIPF_S = Number(flag('--zipf') ?? '1.1');
/** HAProxy's hash-balance-factor for the affinity routing; 0 = no bounded load (pure consistent hashing). */
const BALANCE_FACTOR = intFlag('--hash-balance-factor', 250, 0);
const REPLICAS = 3;

interface Replica {
  port: number;
  child: ChildProcess;
}

async function startReplica(configFile: string): Promise<Replica> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/run-from-source.ts', 'serve', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  const port = await new Promise<number>((resolve, reject) => {
    const tail: string[] = [];
    createInterface({ input: child.stderr! }).on('line', (line) => {
      tail.push(line);
      if (tail.length > 5) tail.shift();
      if (line.includes('"msg":"listening"')) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.on('exit', (code) => reject(new Error(`replica exited ${code}: ${tail.join('\n')}`)));
  });
  return { port, child };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  await new Promise((ok) => child.on('exit', ok));
}

/** Sum of a Prometheus counter (all label sets) in an exposition text. */
function counter(text: string, name: string): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
    .reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

/** Task ranks drawn from Zipf(s) over n tasks with a fixed seed (same sequence for every routing). */
function zipfSequence(n: number, count: number, s: number, seed: number): number[] {
  const weights = Array.from({ length: n }, (_, k) => 1 / (k + 1) ** s);
  const total = weights.reduce((a, b) => a + b, 0);
  const cdf: number[] = [];
  let acc = 0;
  for (const w of weights) cdf.push((acc += w / total));
  let x = seed >>> 0;
  const rand = (): number => {
    // xorshift32: reproducible, independent of Math.random.
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
  return Array.from({ length: count }, () => {
    const u = rand();
    const k = cdf.findIndex((c) => u <= c);
    return k < 0 ? n - 1 : k;
  });
}

interface RunResult {
  routing: 'affinity' | 'round-robin';
  repeat: number;
  seconds: number;
  requestsPerSecond: number;
  failed: number;
  /** Failed requests by "status CODE". */
  failures: Record<string, number>;
  /** Page-ins during the warm-up requests (none counted below). */
  warmupPageIns: number;
  pageInsPerReplica: number[];
  pageInsTotal: number;
  requestsPerReplica: number[];
}

/** CONCURRENCY closed-loop clients send `sequence` (task ranks) through the load balancer. */
async function drive(
  lbPort: number,
  sequence: number[],
  label: string,
): Promise<{ byReplica: Map<string, number>; failed: number; failures: Map<string, number> }> {
  const byReplica = new Map<string, number>();
  let next = 0;
  let failed = 0;
  const failures = new Map<string, number>();
  const progress = benchProgress(label, sequence.length, 'req');
  try {
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        for (let i = next++; i < sequence.length; i = next++) {
          const task = `task-${String(sequence[i]).padStart(3, '0')}`;
          const res = await fetch(`http://127.0.0.1:${lbPort}/v1/tasks/${task}/predict`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ input_ids: [[101, 7 + (i % 50), 9, 102]] }),
          });
          const body = await res.text();
          if (res.status !== 200) {
            failed++;
            const code = `${res.status} ${(/"code":"([A-Z_]+)"/.exec(body) ?? [])[1] ?? ''}`.trim();
            failures.set(code, (failures.get(code) ?? 0) + 1);
          }
          const who = res.headers.get('x-petserve-replica') ?? '?';
          byReplica.set(who, (byReplica.get(who) ?? 0) + 1);
          progress.increment();
        }
      }),
    );
  } finally {
    progress.stop();
  }
  return { byReplica, failed, failures };
}

async function runOnce(
  routing: RunResult['routing'],
  repeat: number,
  configFiles: string[],
  haproxyFiles: { routing: string; replicas: string },
  warmup: number[],
  sequence: number[],
): Promise<RunResult> {
  const replicas: Replica[] = [];
  // One at a time: GPU start-ups at once crowd a small machine.
  for (const f of configFiles) replicas.push(await startReplica(f));
  const lbPort = await freePort();
  const env = {
    ...process.env,
    PETSERVE_LB_BIND: `127.0.0.1:${lbPort}`,
    PETSERVE_LB_CHECK_MS: '1000',
    ...Object.fromEntries(replicas.map((r, i) => [`PETSERVE_REPLICA_${i + 1}`, `127.0.0.1:${r.port}`])),
  };
  const lb = spawn('haproxy', ['-db', '-f', haproxyFiles.routing, '-f', haproxyFiles.replicas], { env, stdio: 'ignore' });
  try {
    await new Promise((ok) => setTimeout(ok, 2500)); // first health checks (rise 2)
    const pageInsNow = (): Promise<number[]> =>
      Promise.all(replicas.map(async (r) => counter(await (await fetch(`http://127.0.0.1:${r.port}/metrics`)).text(), 'petserve_pet_page_ins_total')));
    const atStart = await pageInsNow();
    if (warmup.length > 0) await drive(lbPort, warmup, `cluster ${routing} #${repeat + 1} warm-up`);
    const before = await pageInsNow();
    const started = performance.now();
    const { byReplica, failed, failures } = await drive(lbPort, sequence, `cluster ${routing} #${repeat + 1}`);
    const seconds = (performance.now() - started) / 1000;
    const after = await pageInsNow();
    const pageIns = after.map((a, i) => a - before[i]!);
    return {
      routing,
      repeat,
      seconds: round(seconds, 2),
      // Answered (200) requests per second: failures are not throughput.
      requestsPerSecond: round((sequence.length - failed) / seconds, 2),
      failed,
      failures: Object.fromEntries(failures),
      warmupPageIns: before.reduce((a, b, i) => a + b - atStart[i]!, 0),
      pageInsPerReplica: pageIns,
      pageInsTotal: pageIns.reduce((a, b) => a + b, 0),
      requestsPerReplica: Array.from({ length: REPLICAS }, (_, i) => byReplica.get(`r${i + 1}`) ?? 0),
    };
  } finally {
    lb.kill('SIGTERM');
    for (const r of replicas) await stop(r.child);
  }
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'petserve-bench-cluster-'));
  try {
    await initModel({ preset: 'bert-tiny', outDir: join(root, 'model'), numLabels: 2, seed: 3, maxPositions: 64 });
    const base = await loadCheckpoint(join(root, 'model'));
    const kinds = ['lora', 'adapter', 'bitfit', 'ia3'] as const;
    for (let t = 0; t < TASKS; t++) {
      await initPet({ model: base, kind: kinds[t % kinds.length]!, outDir: join(root, 'tasks', `task-${String(t).padStart(3, '0')}`), seed: 1000 + t, numLabels: 2 });
    }
    // Pool sized to a third of the tasks: each task's packed size (f32 elements + u32
    // words, as the registry counts it) rounded up to the pool's 4 KiB pages.
    const PAGE_BYTES = 4096;
    const registry = new TaskRegistry(base);
    let pages = 0;
    for (let t = 0; t < TASKS; t++) {
      const info = await registry.register(`t${t}`, join(root, 'tasks', `task-${String(t).padStart(3, '0')}`));
      pages += Math.ceil(((info.packedFloats + info.packedWords) * 4) / PAGE_BYTES);
    }
    const poolBytes = Math.ceil(pages / 3) * PAGE_BYTES;

    const configFiles: string[] = [];
    for (let i = 0; i < REPLICAS; i++) {
      const config = loadConfig({
        overrides: {
          'model.dir': join(root, 'model'),
          'server.tasksDir': join(root, 'tasks'),
          'server.uploadDir': join(root, `uploads-${i}`),
          'server.port': 0,
          'server.maxInputsPerRequest': 4,
          'pets.poolBytes': poolBytes,
          'scheduler.costCacheDir': join(tmpdir(), 'petserve-bench-cluster-cost'),
          'scheduler.maxBatchTokens': 512,
          // Every request is meant to run: a closed loop of 8 clients is not an overload,
          // and refusals (429) would count as fast answers in the throughput.
          'scheduler.defaultSloMs': 120_000,
          'log.level': 'info',
        },
      });
      const file = join(root, `replica-${i}.yaml`);
      await writeFile(file, stringify(config));
      configFiles.push(file);
    }
    const shipped = await readFile('configs/haproxy/haproxy.cfg', 'utf8');
    if (!shipped.includes('    balance hash var(txn.task)\n') || !shipped.includes('    hash-balance-factor 250\n')) {
      throw new Error('haproxy.cfg no longer balances by task with hash-balance-factor 250: update bench/cluster.ts');
    }
    const affinityCfg = join(root, 'haproxy-affinity.cfg');
    await writeFile(affinityCfg, shipped.replace('    hash-balance-factor 250\n', BALANCE_FACTOR > 0 ? `    hash-balance-factor ${BALANCE_FACTOR}\n` : ''));
    const roundRobinCfg = join(root, 'haproxy-round-robin.cfg');
    await writeFile(roundRobinCfg, shipped.replace('    balance hash var(txn.task)\n', '    balance roundrobin\n'));
    // One trace: its first WARMUP requests warm the pools, the rest are measured.
    const trace = zipfSequence(TASKS, WARMUP + REQUESTS, ZIPF_S, 12345);
    const warmup = trace.slice(0, WARMUP);
    const sequence = trace.slice(WARMUP);

    const results: RunResult[] = [];
    for (let r = 0; r < REPEATS; r++) {
      // Alternate the order so neither routing always runs on a warmer machine.
      const order: RunResult['routing'][] = r % 2 === 0 ? ['affinity', 'round-robin'] : ['round-robin', 'affinity'];
      for (const routing of order) {
        const cfg = routing === 'affinity' ? affinityCfg : roundRobinCfg;
        results.push(await runOnce(routing, r, configFiles, { routing: cfg, replicas: 'configs/haproxy/replicas-env.cfg' }, warmup, sequence));
      }
    }

    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const of = (routing: RunResult['routing']) => results.filter((x) => x.routing === routing);
    const table: Table = {
      title:
        `Task affinity (hash-balance-factor ${BALANCE_FACTOR || 'off'}) vs round-robin: ${REPLICAS} replicas, ${TASKS} tasks, Zipf s=${ZIPF_S}, ` +
        `${WARMUP > 0 ? `${WARMUP} warm-up + ` : ''}${REQUESTS} measured requests x ${REPEATS}, concurrency ${CONCURRENCY}, pool = 1/3 of the tasks (${(poolBytes / 1024).toFixed(0)} KiB)`,
      headers: ['routing', 'repeat', 'answered/s', 'failed', ...(WARMUP > 0 ? ['page-ins in warm-up'] : []), 'page-ins r1/r2/r3', 'page-ins total', 'requests r1/r2/r3'],
      rows: results.map((x) => [
        x.routing,
        String(x.repeat + 1),
        fmt(x.requestsPerSecond),
        x.failed === 0 ? '0' : `${x.failed} (${Object.entries(x.failures).map(([k, v]) => `${v}x ${k}`).join(', ')})`,
        ...(WARMUP > 0 ? [String(x.warmupPageIns)] : []),
        x.pageInsPerReplica.join(' / '),
        String(x.pageInsTotal),
        x.requestsPerReplica.join(' / '),
      ]),
      note:
        `Mean page-ins: affinity ${fmt(mean(of('affinity').map((x) => x.pageInsTotal)), 1)}, round-robin ${fmt(mean(of('round-robin').map((x) => x.pageInsTotal)), 1)}; ` +
        `mean req/s: affinity ${fmt(mean(of('affinity').map((x) => x.requestsPerSecond)))}, round-robin ${fmt(mean(of('round-robin').map((x) => x.requestsPerSecond)))}.`,
    };
    process.stdout.write(textTable(table) + '\n');
    const stamp = fileStamp(new Date());
    const cmd = commandLine();
    const { markdownPath } = await writeReport(
      'bench/results',
      `cluster-llvmpipe-${stamp}`,
      { machine: machineInfo(), command: cmd, hashBalanceFactor: BALANCE_FACTOR, tasks: TASKS, warmup: WARMUP, requests: REQUESTS, concurrency: CONCURRENCY, zipf: ZIPF_S, poolBytes, results },
      `# Cluster affinity benchmark\n\nCommand: \`${cmd.npm ?? cmd.node}\`\n\n${markdownTable(table)}\n`,
    );
    process.stderr.write(`wrote ${markdownPath}\n`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
