import { EncoderResources } from '../../src/gpu/batch-encoder.js';
import { GpuContext } from '../../src/gpu/context.js';
import { silentLogger } from '../../src/util/logger.js';
import { benchAttention, lengthMixes } from './attention-bench.js';
import os from 'node:os';
const ctx = await GpuContext.create({ adapter: process.env.PETSERVE_GPU_ADAPTER }, silentLogger);
const res = new EncoderResources(ctx);
const mixes = lengthMixes(Number(process.argv[2] ?? 64), 42).filter((m) => m.name === 'uniform');
for (let i = 0; i < 2; i++) {
  console.log(os.loadavg());
  const r = await benchAttention(res, { mixes, budget: { targetMs: 500, maxMs: 30000, maxReps: 100, trials: 2 }, log: console.log });
  console.log(r[0]!.paddedOverPacked, r[0]!.packed.trialMs, r[0]!.padded.trialMs);
}
res.destroy(); ctx.destroy();
