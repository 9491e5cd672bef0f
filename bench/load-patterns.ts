/**
 * What one storage-buffer load costs on this adapter by the pattern of its addresses across the
 * invocations of a workgroup: each lane on its own row (as GEMM reads X and W), contiguous across lanes,
 * the same for every lane (loop counter only, or workgroup id + loop counter), and vec4 per lane.
 * Why: on a CPU adapter (lavapipe) the invocations are SIMD lanes and a GEMM kernel is bound by how its
 * loads compile; a kernel shape (e.g. all lanes of a workgroup on the same W columns, so W loads are
 * workgroup-uniform) only pays if the driver turns that pattern into a cheaper load.
 * The probe kernels are generated here because they are measurement tools, not part of the engine.
 *
 *   npm run bench -- loads [--out DIR]
 */
import { GpuContext } from '../src/gpu/context.js';
import { silentLogger } from '../src/util/logger.js';
import { adapterSlug, commandLine, fileStamp, fmt, machineInfo, markdownTable, textTable, writeReport, type Table } from './lib/report.js';

const outIndex = process.argv.indexOf('--out');
const outDir = outIndex >= 0 ? process.argv[outIndex + 1]! : 'bench/results';

const INVOCATIONS = 1 << 16;
const LOADS = 256;
const WORKGROUP = 64;

/** Each pattern: the expression summed LOADS times per invocation, and the elements one load brings. */
const PATTERNS: { name: string; expr: string; vec4: boolean }[] = [
  { name: 'own row per lane (stride K)', expr: 'x[gid.x * K + k]', vec4: false },
  { name: 'contiguous across lanes', expr: 'x[k * NN + gid.x]', vec4: false },
  { name: 'same for all lanes (loop counter)', expr: 'x[k]', vec4: false },
  { name: 'same in a workgroup (workgroup id + k)', expr: 'x[wid.x * K + k]', vec4: false },
  { name: 'vec4, own row per lane', expr: 'dot(x[gid.x * K4 + k / 4u], vec4<f32>(1.0))', vec4: true },
  { name: 'vec4, same in a workgroup', expr: 'dot(x[wid.x * K4 + k / 4u], vec4<f32>(1.0))', vec4: true },
];

function probeShader(expr: string, vec4: boolean): string {
  return `
const K = ${LOADS}u;
const K4 = ${LOADS / 4}u;
const NN = ${INVOCATIONS}u;
@group(0) @binding(0) var<storage, read> x: array<${vec4 ? 'vec4<f32>' : 'f32'}>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  var s = 0.0;
  for (var k = 0u; k < K; k = k + ${vec4 ? '4u' : '1u'}) { s = s + ${expr}; }
  y[gid.x] = s;
}`;
}

const ctx = await GpuContext.create({ adapter: process.env['PETSERVE_GPU_ADAPTER'] }, silentLogger);
const device = ctx.device;
const input = device.createBuffer({ size: INVOCATIONS * LOADS * 4, usage: GPUBufferUsage.STORAGE });
const output = device.createBuffer({ size: INVOCATIONS * 4, usage: GPUBufferUsage.STORAGE });
const results: { pattern: string; msPerDispatch: number; elementsPerNs: number }[] = [];
for (const p of PATTERNS) {
  const module = device.createShaderModule({ code: probeShader(p.expr, p.vec4) });
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const bindGroup = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: input } },
      { binding: 1, resource: { buffer: output } },
    ],
  });
  const run = async (reps: number): Promise<void> => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    for (let r = 0; r < reps; r++) pass.dispatchWorkgroups(INVOCATIONS / WORKGROUP);
    pass.end();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  await run(1); // compiles
  let best = Infinity;
  for (let trial = 0; trial < 3; trial++) {
    const t0 = performance.now();
    await run(5);
    best = Math.min(best, (performance.now() - t0) / 5);
  }
  // Every pattern sums the same LOADS elements per invocation (vec4 patterns in LOADS / 4 loads).
  results.push({ pattern: p.name, msPerDispatch: best, elementsPerNs: (INVOCATIONS * LOADS) / (best * 1e6) });
}

const table: Table = {
  title: `f32 elements summed per ns by address pattern (${INVOCATIONS} invocations x ${LOADS} elements, workgroup ${WORKGROUP}), ${ctx.capabilities.adapterName}; best of 3 x 5 dispatches`,
  headers: ['pattern', 'ms / dispatch', 'elements / ns'],
  align: ['left', 'right', 'right'],
  rows: results.map((r) => [r.pattern, fmt(r.msPerDispatch, 1), fmt(r.elementsPerNs, 3)]),
};
console.log(textTable(table));
const date = new Date();
const stem = `load-patterns-${adapterSlug(ctx.capabilities.adapterName)}-${fileStamp(date)}`;
const md = [
  '# Storage-buffer load cost by address pattern',
  '',
  `- command: \`${commandLine().npm ?? commandLine().node}\``,
  `- adapter: ${ctx.capabilities.adapterName}; machine: ${machineInfo().cpuModel} (${machineInfo().cpuCores} cores)`,
  '',
  markdownTable(table),
].join('\n');
await writeReport(outDir, stem, { command: commandLine(), machine: machineInfo(), adapter: ctx.capabilities.adapterName, date: date.toISOString(), results }, md);
console.log(`wrote ${outDir}/${stem}.{json,md}`);
ctx.destroy();
