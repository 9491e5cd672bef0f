/**
 * One entry for every benchmark: `npm run bench -- <experiment> [flags]`.
 * Each experiment is its own script (runnable alone with `node --import tsx`);
 * this only dispatches, so a crash in one never leaves another half-run.
 */
import { spawnSync } from 'node:child_process';

const SCRIPTS: Record<string, { script: string; what: string; passName?: boolean }> = {
  tasks: { script: 'bench/scheduler.ts', what: 'tasks sweep: SeqS vs FIFO vs PetS-style vs ours, GPU memory', passName: true },
  lengths: { script: 'bench/scheduler.ts', what: 'length variance: fixed vs coordinated batching', passName: true },
  latency: { script: 'bench/scheduler.ts', what: 'open-loop latency and SLO attainment', passName: true },
  operators: { script: 'bench/scheduler.ts', what: 'operator scheduler on vs off per PET mix', passName: true },
  http: { script: 'bench/http.ts', what: 'HTTP server under load (autocannon) vs in-process engine' },
  batch: { script: 'bench/batch.ts', what: 'offline batches through Redis workers vs in-process engine' },
  kernels: { script: 'bench/kernels.ts', what: 'GEMM / attention / end-to-end kernels' },
  pets: { script: 'bench/pets.ts', what: 'PET memory per task and batch overhead' },
  profile: { script: 'bench/profile-ops.ts', what: 'device time per op of a PET batch' },
  cluster: { script: 'bench/cluster.ts', what: 'task-affinity routing (haproxy) vs round-robin over 3 replicas: page-ins, throughput' },
  'gen-adapters': { script: 'bench/gen-adapters.ts', what: 'generation with N LoRA adapters: merged swap vs one adapter per step vs ours vs base (S-LoRA style)' },
  'gen-decode': { script: 'bench/gen-decode.ts', what: 'decode tokens/s at batch 1/8/32, base and adapters, device time per operator' },
  openai: { script: 'bench/openai.ts', what: 'OpenAI-compatible streaming (HTTP + SSE, petserve serve) vs the same load in-process: req/s, TTFT, TPOT' },
  'seg-gemv': { script: 'bench/seg-gemv.ts', what: 'segmented LoRA GEMM layouts (32-row tiles vs one row per tile) on decode-step shapes' },
  'gen-kv': { script: 'bench/gen-kv.ts', what: 'paged KV cache use vs tokens held, prefix caching on and off' },
  toggles: { script: 'bench/dawn-toggles.ts', what: 'Dawn toggles (robustness off, ...) vs defaults: kernels and encoder, alternating child processes', passName: true },
  tune: { script: 'bench/kernel-tune.ts', what: 'kernel self-tuner: every candidate timed, end-to-end default vs pick (alternating)' },
  f16: { script: 'bench/f16-fidelity.ts', what: 'f16 vs f32 storage on the demo tasks: largest logit/probability difference, top-label agreement' },
  loads: { script: 'bench/load-patterns.ts', what: 'storage-buffer load cost by address pattern across lanes (why kernels are shaped as they are)' },
  peer: { script: 'bench/peer.ts', what: 'PetServe vs onnxruntime-web WebGPU and onnxruntime-node CPU (same checkpoint)', passName: true },
};

const [name, ...rest] = process.argv.slice(2);
const entry = name ? SCRIPTS[name] : undefined;
if (!entry) {
  process.stderr.write(`usage: npm run bench -- <experiment> [flags]\n\n`);
  for (const [k, v] of Object.entries(SCRIPTS)) process.stderr.write(`  ${k.padEnd(12)} ${v.what}\n`);
  process.exit(name ? 2 : 0);
}
const r = spawnSync(process.execPath, ['--import', 'tsx', entry.script, ...(entry.passName ? [name!] : []), ...rest], { stdio: 'inherit' });
process.exit(r.status ?? 1);
