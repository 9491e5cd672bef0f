/**
 * Time to first answer from a fresh clone (issue 11): starts `petserve serve`
 * (bin/petserve.js, the compiled CLI) in an empty working directory, so there is
 * no .cache/ (no demo model, no cost model), polls /v2/health/ready, then sends
 * one predict. Prints the seconds to "ready" and to the first predict answer.
 *
 *   npm run build && node --import tsx bench/scheduler-first-answer.ts [--repo DIR] [--port 18123]
 *
 * --repo: the checkout whose bin/petserve.js to start (default: this one), so
 * a before/after pair can be measured from two checkouts on the same machine.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { flag, intFlag } from './lib/args.js';
import { otherCpuShare, sampleCpu } from './lib/cpu-load.js';

const repo = resolve(flag('--repo') ?? '.');
const port = intFlag('--port', 18123);
const timeoutS = intFlag('--timeout-s', 600);
const base = `http://127.0.0.1:${port}`;

const cwd = await mkdtemp(join(tmpdir(), 'petserve-first-answer-'));
const cpu0 = sampleCpu();
const t0 = performance.now();
const child = spawn(process.execPath, [join(repo, 'bin/petserve.js'), 'serve', '--port', String(port)], {
  cwd,
  env: { ...process.env, PETSERVE_LOG_LEVEL: 'info' },
  stdio: ['ignore', 'pipe', 'pipe'],
});
const log: string[] = [];
child.stdout.on('data', (d: Buffer) => log.push(d.toString()));
child.stderr.on('data', (d: Buffer) => log.push(d.toString()));
const seconds = (): number => (performance.now() - t0) / 1000;

try {
  let readyS: number | null = null;
  while (readyS === null) {
    if (seconds() > timeoutS) throw new Error(`not ready after ${timeoutS} s`);
    if (child.exitCode !== null) throw new Error(`petserve exited with ${child.exitCode}:\n${log.join('')}`);
    try {
      const r = await fetch(`${base}/v2/health/ready`);
      if (r.status === 200) readyS = seconds();
    } catch {
      // Not listening yet.
    }
    if (readyS === null) await sleep(100);
  }
  const r = await fetch(`${base}/v1/tasks/demo-lora/predict`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: 'the first answer of a fresh server' }),
  });
  const answerS = seconds();
  const body = (await r.json()) as unknown;
  if (r.status !== 200) throw new Error(`predict answered ${r.status}: ${JSON.stringify(body)}`);
  const status = (await (await fetch(`${base}/v1/status`)).json()) as { scheduler?: { costModel?: unknown } };
  const result = {
    repo,
    readySeconds: Math.round(readyS * 10) / 10,
    firstPredictSeconds: Math.round(answerS * 10) / 10,
    otherCpuShare: Math.round(otherCpuShare(cpu0) * 100) / 100,
    costModel: status.scheduler?.costModel ?? null,
  };
  console.log(JSON.stringify(result));
} finally {
  child.kill('SIGTERM');
  await new Promise((res) => child.once('exit', res));
  await rm(cwd, { recursive: true, force: true });
}
