/**
 * TEMPORARY baseline of `npm run depcheck` (.dependency-cruiser.mjs): layering
 * violations that open work removes. Each entry names who removes it. When
 * that lands, delete the entry; the lead empties this file, and nobody adds
 * to it: a new violation is fixed, not listed.
 *
 * The format is dependency-cruiser's baseline (`depcruise --output-type baseline`).
 */
const cycle = (...names) => names.map((name) => ({ name, dependencyTypes: [] }));

export default [
  // src/gateway/ (issue 12, point 3, the lead) takes the gateway and the output
  // shaping out of server/, so the queue worker stops importing the HTTP layer.
  { type: 'dependency', from: 'src/queue/answer.ts', to: 'src/server/inference.ts', rule: { severity: 'error', name: 'layer-queue' } },
  { type: 'dependency', from: 'src/queue/answer.ts', to: 'src/server/protocol/predict-output.ts', rule: { severity: 'error', name: 'layer-queue' } },
  { type: 'dependency', from: 'src/queue/answer.ts', to: 'src/server/protocol/v1.ts', rule: { severity: 'error', name: 'layer-queue' } },

  // kernels/gemm.ts <-> kernels/tuning.ts (issue 12, point 5: H5's engine/kernels refactor).
  {
    type: 'cycle',
    from: 'src/kernels/gemm.ts',
    to: 'src/kernels/tuning.ts',
    rule: { severity: 'error', name: 'no-circular' },
    cycle: cycle('src/kernels/tuning.ts', 'src/kernels/gemm.ts'),
  },
];
