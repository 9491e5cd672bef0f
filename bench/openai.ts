/**
 * OpenAI-compatible serving benchmark (issue 14): a spawned `petserve serve
 * --generation-model` (random decoder preset, N LoRA adapters) driven by C
 * closed-loop streaming clients over /v1/completions (SSE), beside the same
 * load answered in-process (startGenerationRuntime + gateway.generate, no HTTP,
 * no JSON, no SSE), in the same run. Each client walks the same seeded trace of
 * (adapter, prompt token ids) from its own offset; both sides decode greedily
 * with the same max_tokens, so they do the same GPU work. The throughput ratio
 * is what HTTP + SSE cost; the issue's target is ≤ 10 %.
 *
 *   npm run bench -- openai [--preset llama-bench] [--adapters 8] [--clients 16] [--duration 90] [--rounds 3]
 *                           [--prompt 16-48] [--max-tokens 32] [--out bench/results]
 *
 * The machine may be shared (other processes on the same CPU cores as
 * lavapipe): the two sides alternate in `--rounds` rounds of duration/rounds
 * seconds each, so load from outside falls on both alike; each round's other-CPU
 * share and overhead are reported.
 *
 * Not timed: writing the model and adapters, server start-up, and one warm-up
 * request per adapter on each side (pipeline compiles, adapter page-ins).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify as toYaml } from 'yaml';
import { loadConfig, type PetServeConfig } from '../src/config/config.js';
import { GpuContext } from '../src/gpu/context.js';
import { initModel } from '../src/model/init-model.js';
import { startGenerationRuntime } from '../src/runtime/generation-runtime.js';
import { silentLogger } from '../src/util/logger.js';
import { Rng } from '../src/util/random.js';
import { flag, intFlag } from './lib/args.js';
import { otherCpuShare, sampleCpu, type CpuSample } from './lib/cpu-load.js';
import { adapterSpecs, makeDecoderBase, percentile, presetFlag, rangeFlag, writeAdapters } from './lib/gen-workload.js';
import { benchProgress } from './lib/progress.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, round, textTable, writeReport, type Table } from './lib/report.js';
import { barChartSvg } from './lib/svg-chart.js';

const preset = presetFlag(flag('--preset'), 'llama-bench');
const adapterCount = intFlag('--adapters', 8);
const clients = intFlag('--clients', 16);
const durationS = intFlag('--duration', 90);
const rounds = intFlag('--rounds', 3);
const [promptMin, promptMax] = rangeFlag(flag('--prompt'), [16, 48], '--prompt');
const maxTokens = intFlag('--max-tokens', 32);
const outDir = flag('--out') ?? 'bench/results';
const TRACE_LENGTH = 512;
const TARGET_OVERHEAD = 0.1;
const note = (msg: string): void => void process.stderr.write(`${msg}\n`);

interface TraceItem {
  task: string;
  promptIds: number[];
}

interface Sample {
  ttftMs: number;
  /** NaN for one-token answers. */
  tpotMs: number;
  tokens: number;
}

interface Side {
  requests: number;
  errors: number;
  seconds: number;
  tokens: number;
  samples: Sample[];
  /** Share of the machine's CPU used by processes other than this one and the server. */
  otherCpuShare: number;
}

function makeTrace(taskIds: readonly string[], vocabSize: number): TraceItem[] {
  const rng = new Rng(1414);
  // Ids above the byte-level specials, below the vocabulary: any id is a valid prompt token.
  return Array.from({ length: TRACE_LENGTH }, (_, i) => ({
    task: taskIds[i % taskIds.length]!,
    promptIds: Array.from({ length: rng.int(promptMin, promptMax + 1) }, () => rng.int(16, vocabSize - 16)),
  }));
}

/** CPU time (user + system) of another process from /proc (Linux), ms; 0 where there is no /proc. */
function processCpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    // Fields after the ')' closing the command name: state is field 3, utime 14, stime 15 (clock ticks, 100 Hz on Linux).
    const rest = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(rest[11]) + Number(rest[12])) * 10;
  } catch {
    return 0;
  }
}

/** Closed loop: each client sends the next trace item (its own offset) and waits for the whole answer, until the deadline. */
async function drive(label: string, seconds: number, round: number, send: (item: TraceItem) => Promise<Sample>, serverPid?: number): Promise<Side> {
  const samples: Sample[] = [];
  let errors = 0;
  const cpu0: CpuSample = sampleCpu();
  const server0 = processCpuMs(serverPid);
  const started = performance.now();
  const endAt = started + seconds * 1000;
  const progress = benchProgress(label, 0, 'requests', { endsAtMs: Date.now() + seconds * 1000 });
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let k = 0; performance.now() < endAt; k++) {
        // Each round continues further along the trace; both sides walk the same items.
        const item = trace[(c * Math.floor(TRACE_LENGTH / clients) + round * 97 + k) % TRACE_LENGTH]!;
        try {
          samples.push(await send(item));
          progress.increment();
        } catch (err) {
          errors += 1;
          if (errors <= 3) note(`${label}: ${err instanceof Error ? err.message : String(err)}`);
          progress.update({ failed: errors });
        }
      }
    }),
  ).finally(() => progress.stop());
  const elapsed = (performance.now() - started) / 1000;
  // The server's CPU is part of the measured work, not outside load: subtract it like our own.
  const cpu1 = sampleCpu();
  const serverMs = processCpuMs(serverPid) - server0;
  const other = otherCpuShare(cpu0, { ...cpu1, ownMs: cpu1.ownMs + serverMs });
  return { requests: samples.length, errors, seconds: elapsed, tokens: samples.reduce((n, s) => n + s.tokens, 0), samples, otherCpuShare: other };
}

// ---- HTTP + SSE side ----------------------------------------------------------------------------

async function startServer(configFile: string, decoderDir: string): Promise<{ url: string; child: ChildProcess; stop(): Promise<number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/run-from-source.ts', 'serve', '--config', configFile, '--generation-model', decoderDir], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    // Keep reading stderr for the whole run: a full pipe would block the server's logger.
    createInterface({ input: child.stderr! }).on('line', (line) => {
      try {
        const log = JSON.parse(line) as { msg?: string; url?: string; level?: number };
        if (log.msg === 'listening' && log.url) resolve(log.url);
        else if ((log.level ?? 0) >= 40) note(`server: ${line}`);
      } catch {
        note(`server: ${line}`);
      }
    });
    void exited.then((code) => reject(new Error(`server exited (${code}) before listening`)));
  });
  return {
    url,
    child,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** One streamed completion over a kept-alive connection; times the first and last SSE chunk carrying a choice. */
function streamCompletion(url: URL, agent: Agent, item: TraceItem): Promise<Sample> {
  const body = JSON.stringify({ model: item.task, prompt: item.promptIds, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } });
  const t0 = performance.now();
  return new Promise<Sample>((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: '/v1/completions', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`HTTP ${res.statusCode}`));
          return;
        }
        res.setEncoding('utf8');
        let buffer = '';
        let first = Number.NaN;
        let last = Number.NaN;
        let tokens = -1;
        let done = false;
        res.on('data', (chunk: string) => {
          const now = performance.now();
          buffer += chunk;
          let cut: number;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const event = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            if (!event.startsWith('data: ')) continue;
            const data = event.slice(6);
            if (data === '[DONE]') {
              done = true;
              continue;
            }
            const parsed = JSON.parse(data) as { choices?: unknown[]; usage?: { completion_tokens: number } | null };
            if (parsed.choices && parsed.choices.length > 0) {
              if (Number.isNaN(first)) first = now;
              last = now;
            }
            if (parsed.usage) tokens = parsed.usage.completion_tokens;
          }
        });
        res.on('end', () => {
          if (!done || tokens < 0) reject(new Error('stream ended without usage and [DONE]'));
          else resolve({ ttftMs: first - t0, tpotMs: tokens > 1 ? (last - first) / (tokens - 1) : Number.NaN, tokens });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

// ---- in-process side ------------------------------------------------------------------------------

async function inProcess(
  config: PetServeConfig,
  decoderDir: string,
  tasks: ReadonlyMap<string, string>,
): Promise<{ send: (item: TraceItem) => Promise<Sample>; adapterName: string; close(): Promise<void> }> {
  const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
  const g = config.generation;
  // Profiled like the server (every generation.profileEverySteps-th step), so both sides do the same device work.
  const rt = await startGenerationRuntime(ctx, config, {
    modelDir: decoderDir,
    tasks,
    ...(g.profileEverySteps > 0 ? { profile: 'dispatches' as const, profileEverySteps: g.profileEverySteps } : {}),
  });
  const send = async (item: TraceItem): Promise<Sample> => {
      const t0 = performance.now();
      let first = Number.NaN;
      let last = Number.NaN;
      const out = await rt.gateway.generate({
        task: item.task,
        promptIds: item.promptIds,
        maxTokens,
        sampling: { temperature: 0 },
        onToken: () => {
          last = performance.now();
          if (Number.isNaN(first)) first = last;
        },
      });
      const tokens = out.usage.completion_tokens;
      return { ttftMs: first - t0, tpotMs: tokens > 1 ? (last - first) / (tokens - 1) : Number.NaN, tokens };
  };
  return {
    send,
    adapterName: ctx.capabilities.adapterName,
    close: async () => {
      await rt.close();
      ctx.destroy();
    },
  };
}

async function warmUp(send: (item: TraceItem) => Promise<Sample>): Promise<void> {
  const firstPerTask = taskIds.map((t) => trace.find((i) => i.task === t)!);
  await Promise.all(firstPerTask.map(send));
}

// ---- run ------------------------------------------------------------------------------------------

const root = await mkdtemp(join(tmpdir(), 'petserve-bench-openai-'));
const startedAt = new Date();
note(`openai bench: ${preset}, ${adapterCount} adapters, ${clients} streaming clients, ${durationS} s per side, prompt ${promptMin}-${promptMax} tokens, max_tokens ${maxTokens}`);
const decoderDir = join(root, 'decoder');
const { vocabSize, parameterCount } = await makeDecoderBase(preset, decoderDir);
const specs = adapterSpecs(adapterCount, 14);
const tasks = await writeAdapters(decoderDir, join(root, 'adapters'), specs);
const taskIds = [...tasks.keys()];
const trace = makeTrace(taskIds, vocabSize);
// The encoder `serve` always runs beside the decoder: the smallest one, idle here.
await initModel({ preset: 'bert-tiny', outDir: join(root, 'encoder'), numLabels: 2, seed: 1 });
const config = loadConfig({
  env: {},
  overrides: {
    'model.dir': join(root, 'encoder'),
    'server.uploadDir': join(root, 'uploads'),
    'server.demoDir': join(root, 'demo'),
    'server.host': '127.0.0.1',
    'server.port': 0,
    'scheduler.costCacheDir': '.cache/cost-model',
    // info: a production server logs every request; 'listening' (with the port) is read from it.
    'log.level': 'info',
    // Nothing listens there: the batch routes answer 503, online serving is unaffected.
    'redis.url': 'redis://127.0.0.1:1',
    'generation.tasksDir': join(root, 'adapters'),
    'generation.kvCacheBytes': 64 * 1024 * 1024,
  },
});
const configFile = join(root, 'serve.yaml');
await writeFile(configFile, toYaml(config));

const httpRounds: Side[] = [];
const localRounds: Side[] = [];
const server = await startServer(configFile, decoderDir);
const local = await inProcess(config, decoderDir, tasks).catch(async (err: unknown) => {
  await server.stop();
  throw err;
});
const adapterName = local.adapterName;
const agent = new Agent({ keepAlive: true, maxSockets: clients });
try {
  const url = new URL(server.url);
  const sendHttp = (item: TraceItem): Promise<Sample> => streamCompletion(url, agent, item);
  await warmUp(sendHttp);
  await warmUp(local.send);
  const perRound = durationS / rounds;
  for (let r = 0; r < rounds; r++) {
    // Alternate which side goes first, so a load change during a round pair does not favour one side.
    const httpRound = (): Promise<Side> => drive(`openai round ${r + 1}/${rounds}: HTTP + SSE -> petserve serve`, perRound, r, sendHttp, server.child.pid);
    const localRound = (): Promise<Side> => drive(`openai round ${r + 1}/${rounds}: in-process`, perRound, r, local.send, server.child.pid);
    if (r % 2 === 0) {
      httpRounds.push(await httpRound());
      localRounds.push(await localRound());
    } else {
      localRounds.push(await localRound());
      httpRounds.push(await httpRound());
    }
    const o = 1 - httpRounds[r]!.requests / httpRounds[r]!.seconds / (localRounds[r]!.requests / localRounds[r]!.seconds);
    note(`  round ${r + 1}: overhead ${fmt(100 * o, 1)} %, other CPU ${fmt(100 * httpRounds[r]!.otherCpuShare, 0)} % (HTTP) / ${fmt(100 * localRounds[r]!.otherCpuShare, 0)} % (in-process)`);
  }
} finally {
  agent.destroy();
  const code = await server.stop();
  if (code !== 0) note(`server exited with ${code}`);
  await local.close();
}
await rm(root, { recursive: true, force: true });

/** The rounds of one side as one: counts and times added, samples pooled, other-CPU share time-weighted. */
const merge = (sides: readonly Side[]): Side => {
  const seconds = sides.reduce((n, s) => n + s.seconds, 0);
  return {
    requests: sides.reduce((n, s) => n + s.requests, 0),
    errors: sides.reduce((n, s) => n + s.errors, 0),
    seconds,
    tokens: sides.reduce((n, s) => n + s.tokens, 0),
    samples: sides.flatMap((s) => s.samples),
    otherCpuShare: sides.reduce((n, s) => n + s.otherCpuShare * s.seconds, 0) / Math.max(1e-9, seconds),
  };
};
const http = merge(httpRounds);

// ---- report ---------------------------------------------------------------------------------------

const summary = (s: Side) => {
  const ttft = s.samples.map((x) => x.ttftMs).filter(Number.isFinite);
  const tpot = s.samples.map((x) => x.tpotMs).filter(Number.isFinite);
  return {
    requests: s.requests,
    errors: s.errors,
    seconds: round(s.seconds, 2),
    requestsPerS: round(s.requests / s.seconds, 3),
    tokensPerS: round(s.tokens / s.seconds, 2),
    meanTokens: round(s.tokens / Math.max(1, s.requests), 2),
    ttftMs: { p50: round(percentile(ttft, 50), 1), p99: round(percentile(ttft, 99), 1) },
    tpotMs: { p50: round(percentile(tpot, 50), 2), p99: round(percentile(tpot, 99), 2) },
    otherCpuShare: round(s.otherCpuShare, 3),
  };
};
const h = summary(http);
const p = summary(merge(localRounds));
const roundRows = httpRounds.map((hr, r) => {
  const lr = localRounds[r]!;
  return {
    round: r + 1,
    httpRequestsPerS: round(hr.requests / hr.seconds, 3),
    inProcessRequestsPerS: round(lr.requests / lr.seconds, 3),
    overhead: round(1 - hr.requests / hr.seconds / (lr.requests / lr.seconds), 4),
    httpOtherCpuShare: round(hr.otherCpuShare, 3),
    inProcessOtherCpuShare: round(lr.otherCpuShare, 3),
  };
});
const overhead = 1 - h.requestsPerS / p.requestsPerS;
const tokenOverhead = 1 - h.tokensPerS / p.tokensPerS;
const pass = overhead <= TARGET_OVERHEAD && h.errors === 0;
const machine = machineInfo();
const cmd = commandLine();

const row = (name: string, s: ReturnType<typeof summary>): string[] => [
  name,
  String(s.requests),
  fmt(s.requestsPerS, 2),
  fmt(s.tokensPerS, 1),
  fmt(s.meanTokens, 1),
  fmt(s.ttftMs.p50, 0),
  fmt(s.ttftMs.p99, 0),
  fmt(s.tpotMs.p50, 1),
  fmt(s.tpotMs.p99, 1),
  String(s.errors),
  `${fmt(100 * s.otherCpuShare, 0)} %`,
];
const table: Table = {
  title: `OpenAI-compatible serving: ${clients} streaming clients over ${adapterCount} LoRA adapters, ${durationS} s per side in ${rounds} alternating rounds, ${preset} (${(parameterCount / 1e6).toFixed(1)}M params, random weights), greedy, max_tokens ${maxTokens}`,
  headers: ['path', 'requests', 'req/s', 'tokens/s', 'tokens/req', 'TTFT p50 ms', 'TTFT p99 ms', 'TPOT p50 ms', 'TPOT p99 ms', 'errors', 'other CPU'],
  rows: [row('HTTP + SSE (petserve serve)', h), row('in-process (gateway.generate)', p)],
  note:
    `HTTP+SSE overhead on throughput: ${fmt(100 * overhead, 1)} % of requests/s (${fmt(100 * tokenOverhead, 1)} % of tokens/s); ` +
    `target ≤ ${100 * TARGET_OVERHEAD} %: **${pass ? 'PASS' : 'FAIL'}**${h.errors > 0 ? ` (${h.errors} HTTP errors)` : ''}. ` +
    'TTFT from sending the request to the first chunk with a token (HTTP) or the first sampled token (in-process); TPOT = (last − first token time) / (tokens − 1). ' +
    '"other CPU" = share of the machine used by processes other than the benchmark and its server during the side.',
};
const roundsTable: Table = {
  title: 'Per round (the sides alternate; other CPU = load from outside the benchmark and its server)',
  headers: ['round', 'HTTP req/s', 'in-process req/s', 'overhead', 'other CPU (HTTP)', 'other CPU (in-process)'],
  rows: roundRows.map((r) => [
    String(r.round),
    fmt(r.httpRequestsPerS, 2),
    fmt(r.inProcessRequestsPerS, 2),
    `${fmt(100 * r.overhead, 1)} %`,
    `${fmt(100 * r.httpOtherCpuShare, 0)} %`,
    `${fmt(100 * r.inProcessOtherCpuShare, 0)} %`,
  ]),
};
note('');
note(textTable(table));
note('');
note(textTable(roundsTable));

const svg = barChartSvg({
  title: `HTTP + SSE relative to in-process (= 100): ${clients} clients, ${adapterCount} adapters, ${preset}`,
  xLabel: 'measure',
  yLabel: '% of in-process',
  categories: ['req/s', 'tokens/s', 'TTFT p50', 'TTFT p99', 'TPOT p50', 'TPOT p99'],
  series: [
    { name: 'in-process', values: [100, 100, 100, 100, 100, 100] },
    {
      name: 'HTTP + SSE',
      values: [
        (100 * h.requestsPerS) / p.requestsPerS,
        (100 * h.tokensPerS) / p.tokensPerS,
        (100 * h.ttftMs.p50) / p.ttftMs.p50,
        (100 * h.ttftMs.p99) / p.ttftMs.p99,
        (100 * h.tpotMs.p50) / p.tpotMs.p50,
        (100 * h.tpotMs.p99) / p.tpotMs.p99,
      ].map((v) => (Number.isFinite(v) ? round(v, 1) : null)),
    },
  ],
});

const stem = `openai-${adapterSlug(adapterName)}-${fileStamp(startedAt)}`;
const markdown = [
  `# OpenAI-compatible serving: HTTP + SSE vs in-process (${startedAt.toISOString()})`,
  '',
  `Command: \`${cmd.npm ?? cmd.node}\`  `,
  `Machine: ${machine.cpuModel} x${machine.cpuCores}, ${(machine.totalMemoryBytes / 2 ** 30).toFixed(0)} GiB, ${machine.os}; adapter: ${adapterName}; model: ${preset} (random weights, f32)`,
  '',
  `Workload: ${clients} closed-loop clients, each sending the next item of one seeded trace (${TRACE_LENGTH} items: adapter round-robin over ${adapterCount} random PEFT LoRA adapters, ` +
    `prompt of U[${promptMin},${promptMax}] random token ids) and waiting for its whole answer; greedy, max_tokens ${maxTokens}, stopping at EOS. ` +
    `HTTP: \`petserve serve --generation-model\` in its own process (log level info, the encoder idle beside it), \`POST /v1/completions\` with \`stream: true\` and \`stream_options.include_usage\` over kept-alive connections; ` +
    `in-process: \`startGenerationRuntime\` + \`gateway.generate\` in the benchmark's process, same config (KV cache 64 MiB, every ${config.generation.profileEverySteps}th step profiled). ` +
    `Both run at once (each idle while the other is measured); after one warm-up request per adapter on each, the sides alternate in ${rounds} rounds of ${fmt(durationS / rounds, 0)} s ` +
    '(HTTP first in odd rounds, in-process first in even ones), so load from other processes on this shared machine falls on both; requests still running at a round\'s deadline finish and count.',
  '',
  markdownTable(table),
  '',
  markdownTable(roundsTable),
  '',
  `![HTTP + SSE relative to in-process](${stem}.svg)`,
  '',
  '## How to run',
  '',
  '`npm run bench -- openai [--preset llama-bench] [--adapters 8] [--clients 16] [--duration 90] [--rounds 3] [--prompt 16-48] [--max-tokens 32] [--out bench/results]`: ' +
    'about 4–5 minutes with the defaults on lavapipe (2 cores). Set `XDG_RUNTIME_DIR` when running on Dawn/lavapipe headless.',
].join('\n');

await mkdir(outDir, { recursive: true });
await writeFile(join(outDir, `${stem}.svg`), svg);
const paths = await writeReport(
  outDir,
  stem,
  {
    benchmark: 'openai',
    date: startedAt.toISOString(),
    command: cmd,
    machine,
    adapter: adapterName,
    model: { preset, parameterCount, vocabSize },
    rounds: roundRows,
    workload: { adapters: adapterCount, clients, durationS, rounds, promptTokens: [promptMin, promptMax], maxTokens, traceLength: TRACE_LENGTH, profileEverySteps: config.generation.profileEverySteps },
    http: h,
    inProcess: p,
    overhead: { requestsPerS: round(overhead, 4), tokensPerS: round(tokenOverhead, 4), target: TARGET_OVERHEAD, pass },
  },
  markdown,
);
note(`wrote ${paths.jsonPath}, ${paths.markdownPath}, ${join(outDir, `${stem}.svg`)}`);
