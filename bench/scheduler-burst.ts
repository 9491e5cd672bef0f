/**
 * A burst of concurrent predicts against `petserve serve` (issue 16, early
 * refusal): how many are refused at once (429 DEADLINE_UNREACHABLE / OVERLOADED)
 * vs answered 504 after waiting, vs answered, and the median time to each.
 *
 *   npm run build && node --import tsx bench/scheduler-burst.ts [--repo DIR] [--requests 200] [--port 18125]
 *
 * Starts the demo server of --repo in an empty directory (default SLO 2 s), sends
 * single requests one after another until the cost model reports converged (at
 * most --warmup of them; a server without an online model just gets them all),
 * then fires the burst at once.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { flag, intFlag } from './lib/args.js';
import { otherCpuShare, sampleCpu } from './lib/cpu-load.js';

const repo = resolve(flag('--repo') ?? '.');
const port = intFlag('--port', 18125);
const requests = intFlag('--requests', 200);
const warmup = intFlag('--warmup', 60);
const base = `http://127.0.0.1:${port}`;
const TASKS = ['demo-lora', 'demo-adapter', 'demo-diff', 'demo-mask', 'demo-ia3'];

const cwd = await mkdtemp(join(tmpdir(), 'petserve-burst-'));
const child = spawn(process.execPath, [join(repo, 'bin/petserve.js'), 'serve', '--port', String(port)], { cwd, env: process.env, stdio: 'ignore' });

const predict = async (i: number): Promise<{ status: number; code: string | null; ms: number; retryAfter: string | null }> => {
  const t0 = performance.now();
  const r = await fetch(`${base}/v1/tasks/${TASKS[i % TASKS.length]}/predict`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: `request number ${i} of the burst, a sentence of a dozen words or so` }),
  });
  const body = (await r.json()) as { error?: { code?: string }; code?: string };
  return { status: r.status, code: body.error?.code ?? body.code ?? null, ms: performance.now() - t0, retryAfter: r.headers.get('retry-after') };
};
const median = (xs: number[]): number | null => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : null);

try {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`petserve exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${base}/v2/health/ready`)).status === 200) break;
    } catch {
      // Not listening yet.
    }
    await sleep(200);
  }
  let costModel: unknown = null;
  let warm = 0;
  for (; warm < warmup; warm++) {
    await predict(warm);
    const status = (await (await fetch(`${base}/v1/status`)).json()) as { scheduler?: { costModel?: { phase?: string } | null } };
    costModel = status.scheduler?.costModel ?? null;
    if (status.scheduler?.costModel?.phase === 'converged') break;
  }
  const cpu0 = sampleCpu();
  const results = await Promise.all(Array.from({ length: requests }, (_, i) => predict(i)));
  const by = (pred: (r: (typeof results)[number]) => boolean): { count: number; medianMs: number | null } => {
    const rs = results.filter(pred);
    return { count: rs.length, medianMs: median(rs.map((r) => Math.round(r.ms))) };
  };
  console.log(
    JSON.stringify({
      repo,
      requests,
      warmupRequests: warm + 1,
      costModelBeforeBurst: costModel,
      ok: by((r) => r.status === 200),
      refused429: by((r) => r.status === 429),
      refusedCodes: [...new Set(results.filter((r) => r.status === 429).map((r) => r.code))],
      retryAfter: [...new Set(results.filter((r) => r.status === 429).map((r) => r.retryAfter))],
      expired504: by((r) => r.status === 504),
      other: results.filter((r) => ![200, 429, 504].includes(r.status)).map((r) => `${r.status} ${r.code}`),
      otherCpuShare: Math.round(otherCpuShare(cpu0) * 100) / 100,
    }),
  );
} finally {
  child.kill('SIGTERM');
  await new Promise((res) => child.once('exit', res));
  await rm(cwd, { recursive: true, force: true });
}
