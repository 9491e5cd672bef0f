/**
 * The layering of src/, enforced by `npm run depcheck` (part of `npm test`).
 *
 * A request travels one way: cli/server/queue -> gateway -> scheduler ->
 * engine -> pet/model -> kernels -> gpu, and no module reaches "up". Layers
 * are listed lowest first: a module may import from its own layer and from
 * any layer before it, never from one after it. Type-only imports count too:
 * an engine that knows a server type is coupled to the server.
 *
 * Where the folders outside the data path sit:
 * - config: one typed schema with defaults (it imports only util), so any
 *   layer may take its slice of it, though most receive it from above.
 * - tokenizer: text -> token ids from the checkpoint's tokenizer.json; it
 *   reads the checkpoint (model) and knows nothing of PETs or requests.
 * - metrics < queue < server: the top of the serving stack, in that order
 *   (the server hosts /metrics and the batch API; the queue worker never
 *   reaches into the HTTP layer; metrics observe the layers below through
 *   their observer interfaces).
 * - catalog: the shared task catalog (Redis) and blob store; it knows the
 *   PET registry's interface and nothing of requests, so the gateway and the
 *   admin routes can keep a replica's tasks in step through it.
 * - runtime: wires device, model, registry and scheduler for a process;
 *   only the CLI (and benches/tests) start it.
 */
const LAYERS = [
  'util',
  'config',
  'gpu',
  'kernels',
  'model',
  'tokenizer',
  'pet',
  'engine',
  'scheduler',
  'catalog',
  'gateway',
  'metrics',
  'queue',
  'server',
  'runtime',
  'cli',
];

const layerRules = LAYERS.slice(0, -1).map((layer, i) => {
  const higher = LAYERS.slice(i + 1);
  return {
    name: `layer-${layer}`,
    comment: `src/${layer}/ is below ${higher.join(', ')}: it may not import them (see the layer list in .dependency-cruiser.mjs)`,
    severity: 'error',
    from: { path: `^src/${layer}/` },
    to: { path: `^src/(${higher.join('|')})/` },
  };
});

export default {
  forbidden: [
    ...layerRules,
    {
      name: 'no-circular',
      comment: 'an import circle: the modules on it cannot be understood, tested or loaded one without the other',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'src-not-to-test-or-bench',
      comment: 'the product never imports its tests or benchmarks',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'an import that does not resolve; also guards the check itself (an unresolved import would pass every layer rule)',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.mjs', '.cjs', '.json', '.d.ts'],
    },
  },
};
