import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../util/errors.js';

/** A boolean that also accepts 'true'/'false' strings (environment variables). */
const envBoolean = z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')]);

/** Keys as a YAML list or, from the environment, one comma-separated string. */
const keyList = z.preprocess(
  (v) => (typeof v === 'string' ? v.split(',').map((k) => k.trim()).filter((k) => k !== '') : v),
  z.array(z.string().min(16, 'an API key needs at least 16 characters')),
);

/**
 * Dawn toggles PetServe accepts (gpu.dawnToggles; src/gpu/dawn-toggles.ts turns
 * them into create() flags). Dawn ignores a name it does not know without a
 * word, so a typo would run with defaults while the operator believes
 * otherwise: only these names pass. The first five change what kernels
 * execute; the rest help debugging (start-up time, not kernel time).
 */
export const KNOWN_DAWN_TOGGLES = [
  /** No index clamping in WGSL and no Vulkan robustBufferAccess: an out-of-bounds access is undefined behaviour. */
  'disable_robustness',
  /** Keep robustness but skip the clamps integer range analysis proves unnecessary (safe). */
  'enable_integer_range_analysis_in_robustness',
  /** No WebGPU API validation: an invalid call is undefined behaviour instead of a GPUValidationError. */
  'skip_validation',
  /** var<workgroup> memory is not zeroed at the start of each workgroup. */
  'disable_workgroup_init',
  /** Buffers created mappedAtCreation are not zeroed first (ours are always filled). */
  'disable_lazy_clear_for_mapped_at_creation_buffer',
  /** Print every shader as Dawn compiles it (WGSL and the backend's translation) to stderr. */
  'dump_shaders',
  /** Keep WGSL identifiers in the backend's code, so dumped shaders read like ours. */
  'disable_symbol_renaming',
  /** Pass object labels down to the Vulkan objects (driver tools show ours). */
  'use_user_defined_labels_in_backend',
] as const;

/** Dawn toggle names as a YAML list or, from the environment, one comma-separated string; unknown names are refused. */
const dawnToggleList = z.preprocess(
  (v) => (typeof v === 'string' ? v.split(',').map((t) => t.trim()).filter((t) => t !== '') : v),
  z.array(z.enum(KNOWN_DAWN_TOGGLES)),
);

/**
 * The one typed configuration of PetServe. Sources, later wins:
 * schema defaults → YAML file (--config) → environment (PETSERVE_*) → CLI flags.
 * Loaded once at start-up and passed down; nothing deeper reads process.env.
 */
export const configSchema = z.strictObject({
  gpu: z
    .strictObject({
      /** Dawn backend: vulkan, metal, d3d12, ...; null lets Dawn choose. */
      backend: z.string().nullable().default(null),
      /** Case-insensitive substring of the adapter name, e.g. 'llvmpipe' or 'nvidia'. */
      adapter: z.string().nullable().default(null),
      powerPreference: z.enum(['high-performance', 'low-power']).default('high-performance'),
      /**
       * Dawn toggles, KNOWN_DAWN_TOGGLES only. None by default: robustness stays on, since
       * turning it off gained nothing beyond the run-to-run spread (docs/operating.md "Dawn toggles").
       */
      dawnToggles: z
        .strictObject({
          enable: dawnToggleList.default([]),
          disable: dawnToggleList.default([]),
        })
        .refine((t) => !t.enable.some((name) => t.disable.includes(name)), { message: 'a toggle cannot be both enabled and disabled' })
        .prefault({}),
    })
    .prefault({}),
  model: z
    .strictObject({
      /** Hugging Face BERT checkpoint directory (config.json + model.safetensors). */
      dir: z.string().nullable().default(null),
      /**
       * The id the base model answers under on every route (predict, V2, OpenAI, batches) with its own
       * classifier head; null = the basename of dir (the demo's: 'demo-base'). No task may take it.
       */
      id: z.string().min(1).nullable().default(null),
      /**
       * Storage type on the GPU; accumulation is f32 either way. 'auto': f16 where the adapter has
       * shader-f16, the weights fit f16 and f16 is measurably faster there, else f32 (src/runtime/dtype-choice.ts).
       */
      dtype: z.enum(['auto', 'f32', 'f16']).default('auto'),
    })
    .prefault({}),
  pets: z
    .strictObject({
      /**
       * The device's one GPU pool for resident PETs (clamped to the adapter's largest storage
       * binding): encoder tasks and, with generation.modelDir, the decoder's adapters share
       * this budget and one LRU (docs/generation.md, "Adapters").
       */
      poolBytes: z.coerce.number().int().positive().default(256 * 1024 * 1024),
      /** Host copies of PETs kept in memory; the rest are re-read from disk when paged in. */
      hostCacheBytes: z.coerce.number().int().positive().default(1024 * 1024 * 1024),
    })
    .prefault({}),
  generation: z
    .strictObject({
      /** Causal decoder checkpoint that `serve` runs beside the encoder (OpenAI chat/completions); null = no generation. */
      modelDir: z.string().nullable().default(null),
      /** Each subdirectory is a PEFT adapter (LoRA, IA³) of that decoder, registered at start as a task named after it. */
      tasksDir: z.string().nullable().default(null),
      /** The id the decoder base answers under (`model` field, /v1/models); null = the basename of modelDir. */
      modelId: z.string().min(1).nullable().default(null),
      /** GPU memory of the paged KV cache (all layers, K and V). */
      kvCacheBytes: z.coerce.number().int().positive().default(256 * 1024 * 1024),
      /** Tokens per KV block (the unit of allocation and of prefix sharing). */
      blockTokens: z.coerce.number().int().positive().max(256).default(16),
      /** Rows (tokens) in one step: decode rows first, then prefill chunks of what is left. */
      maxStepTokens: z.coerce.number().int().positive().default(512),
      /** Sequences running at once. */
      maxRunning: z.coerce.number().int().positive().default(128),
      /** Requests waiting beyond this are refused with an overload error (HTTP 429). */
      maxWaiting: z.coerce.number().int().positive().default(4096),
      /** max_tokens when a request gives none. */
      defaultMaxTokens: z.coerce.number().int().positive().default(256),
      /** Share full KV blocks of identical prompt prefixes within a task. */
      prefixCaching: envBoolean.default(true),
      /** Starvation bound of offline (batch queue) sequences: after waiting this long they are admitted like online ones. */
      maxOfflineWaitMs: z.coerce.number().int().nonnegative().default(30_000),
      /** Time every Nth step per dispatch (petserve_generation_lora_device_share); 0 = never. */
      profileEverySteps: z.coerce.number().int().nonnegative().default(32),
      /** Time-to-first-token objective of requests and tasks that name none: waiting sequences are admitted earliest deadline first. */
      defaultTtftSloMs: z.coerce.number().positive().default(10_000),
      /** Per-task objectives { taskId: { ttftMs?, tpotMs? } } (the decoder base under generation.modelId too); a request's ttft_slo_ms / tpot_slo_ms win. */
      taskSlo: z
        .record(z.string(), z.strictObject({ ttftMs: z.coerce.number().positive().optional(), tpotMs: z.coerce.number().positive().optional() }))
        .default({}),
    })
    .prefault({}),
  scheduler: z
    .strictObject({
      /** Batch policy: 'slo' (deadline-aware length-grouped DP, ours), 'pets' (PetS DP, no deadlines), 'fifo' (arrival order, fixed size). */
      policy: z.enum(['slo', 'pets', 'fifo']).default('slo'),
      /** Most tokens (sum of sequence lengths) in one batch. */
      maxBatchTokens: z.coerce.number().int().positive().default(8192),
      /** Most sequences in one batch. */
      maxBatchRows: z.coerce.number().int().positive().default(128),
      /** Requests waiting beyond this are refused with an overload error (HTTP 429). */
      maxQueue: z.coerce.number().int().positive().default(4096),
      /** Latency objective per request unless a task or the request says otherwise. */
      defaultSloMs: z.coerce.number().positive().default(2000),
      /** Per-task SLO overrides: { taskId: ms }. */
      taskSloMs: z.record(z.string(), z.coerce.number().positive()).default({}),
      /** No request waits longer than this before it is scheduled first (starvation bound). */
      maxWaitMs: z.coerce.number().positive().default(10000),
      /** Time every Nth batch per dispatch with timestamp queries (device-time metrics); 0 = never. */
      profileEveryBatches: z.coerce.number().int().min(0).default(32),
      /** Order and group PET dispatches by arithmetic intensity (operator scheduler). */
      operatorScheduler: envBoolean.default(true),
      /** Where profiled cost models are cached (keyed by adapter + model + dtype); null = not cached. */
      costCacheDir: z.string().nullable().default('.cache/cost-model'),
    })
    .prefault({}),
  server: z
    .strictObject({
      host: z.string().default('127.0.0.1'),
      port: z.coerce.number().int().min(0).max(65535).default(8080),
      /** Bearer token for the admin (task management) routes; null disables them. */
      adminToken: z.string().min(16).nullable().default(null),
      /** Directory whose subdirectories (one per task id) are registered at start. */
      tasksDir: z.string().nullable().default(null),
      /** Root under which POST /v1/tasks may register server-side paths; null refuses paths. */
      registerRoot: z.string().nullable().default(null),
      /** Where uploaded task archives are unpacked and kept (tasks re-read from here when paged in). */
      uploadDir: z.string().default('.cache/tasks'),
      /** Where `petserve serve` without a model generates its demo model and tasks (once). */
      demoDir: z.string().default('.cache/demo'),
      /** Largest JSON request body. */
      maxBodyBytes: z.coerce.number().int().positive().default(4 * 1024 * 1024),
      /** Largest uploaded task archive. */
      maxUploadBytes: z.coerce.number().int().positive().default(256 * 1024 * 1024),
      /** Most inputs in one predict/infer request. */
      maxInputsPerRequest: z.coerce.number().int().positive().default(64),
      /** Allowed CORS origins; empty = CORS off. */
      corsOrigins: z.array(z.string()).default([]),
      /** On SIGTERM/SIGINT, how long in-flight requests may take before exit. */
      shutdownTimeoutMs: z.coerce.number().int().positive().default(30000),
      /**
       * Data-plane API keys (Bearer). When any is set, predict, V2 infer and
       * model metadata, batches and status need one; a batch belongs to the key
       * that created it. Empty = no keys (then keep the server on 127.0.0.1).
       */
      apiKeys: keyList.default([]),
      /** GET /metrics without a key even when apiKeys are set (Prometheus scrapes without credentials). */
      publicMetrics: envBoolean.default(true),
      /** GET /v1/status shows per-task rows (ids, kinds, sizes, request counts) to anyone, without a key or the admin token. */
      publicStatus: envBoolean.default(false),
      /** A request whose body has not fully arrived this long after it began is answered 408 and closed. */
      requestTimeoutMs: z.coerce.number().int().positive().default(60_000),
      /** A client that has not sent all its headers this long after connecting is answered 408 and closed. */
      headersTimeoutMs: z.coerce.number().int().positive().default(20_000),
    })
    .prefault({}),
  redis: z
    .strictObject({
      url: z.string().default('redis://127.0.0.1:6379'),
    })
    .prefault({}),
  /**
   * The shared task catalog for several replicas (docs/operating.md "Running
   * several replicas"): tasks registered through any replica's admin API are
   * kept in Redis (redis.url) and their files in a shared blob directory.
   */
  catalog: z
    .strictObject({
      /** Shared directory (NFS / ReadWriteMany volume) of PET files; null = no shared catalog (one replica). */
      blobDir: z.string().nullable().default(null),
      /** Where this process copies catalog tasks' files before registering them (its host cache). */
      cacheDir: z.string().default('.cache/catalog'),
      /** Redis key prefix of the catalog (tests use their own). */
      prefix: z.string().min(1).default('petserve'),
    })
    .prefault({}),
  batches: z
    .strictObject({
      /** BullMQ queue/key prefix (tests use their own). */
      prefix: z.string().min(1).default('petserve'),
      /** Items per queued job. */
      chunkSize: z.coerce.number().int().positive().default(256),
      /** How long results and batch records stay in Redis. */
      resultsTtlSeconds: z.coerce.number().int().positive().default(7 * 24 * 3600),
      /** Chunks one worker process runs at once. */
      workerConcurrency: z.coerce.number().int().positive().default(2),
      /** Attempts per chunk for transient faults (exponential backoff). */
      attempts: z.coerce.number().int().positive().default(5),
      /** Most items in one batch. */
      maxItems: z.coerce.number().int().positive().default(1_000_000),
    })
    .prefault({}),
  kernels: z
    .strictObject({
      /**
       * Time the candidate kernels (src/kernels/candidates.ts) on this adapter and model in the background
       * after start, and switch to the fastest; readiness never waits for it (docs/architecture.md).
       */
      autotune: envBoolean.default(true),
      /** Where tuned picks are cached per adapter and model (read at start); null = not cached. */
      cacheDir: z.string().nullable().default('.cache/kernels'),
      /** Delay before the first tuning trial, so the first requests after start meet an idle device. */
      tuneDelayMs: z.coerce.number().int().min(0).default(5000),
    })
    .prefault({}),
  metrics: z
    .strictObject({
      /** Opt-in per-task request counter for the K busiest tasks (0 = no per-task labels). */
      perTaskTopK: z.coerce.number().int().min(0).default(0),
      /** `petserve worker` serves /metrics and /healthz on this port (workers have no API); null = off. */
      workerPort: z.coerce.number().int().min(0).max(65535).nullable().default(null),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    })
    .prefault({}),
});

export type PetServeConfig = z.infer<typeof configSchema>;

/** Environment variables and the config path each one sets. */
export const ENV_KEYS: Record<string, string[]> = {
  PETSERVE_GPU_BACKEND: ['gpu', 'backend'],
  PETSERVE_GPU_ADAPTER: ['gpu', 'adapter'],
  PETSERVE_GPU_POWER: ['gpu', 'powerPreference'],
  PETSERVE_DAWN_ENABLE_TOGGLES: ['gpu', 'dawnToggles', 'enable'],
  PETSERVE_DAWN_DISABLE_TOGGLES: ['gpu', 'dawnToggles', 'disable'],
  PETSERVE_MODEL_DIR: ['model', 'dir'],
  PETSERVE_MODEL_ID: ['model', 'id'],
  PETSERVE_DTYPE: ['model', 'dtype'],
  PETSERVE_POOL_BYTES: ['pets', 'poolBytes'],
  PETSERVE_HOST_CACHE_BYTES: ['pets', 'hostCacheBytes'],
  PETSERVE_LOG_LEVEL: ['log', 'level'],
  PETSERVE_KERNELS_AUTOTUNE: ['kernels', 'autotune'],
  PETSERVE_KERNELS_CACHE_DIR: ['kernels', 'cacheDir'],
  PETSERVE_GENERATION_MODEL_DIR: ['generation', 'modelDir'],
  PETSERVE_GENERATION_TASKS_DIR: ['generation', 'tasksDir'],
  PETSERVE_KV_CACHE_BYTES: ['generation', 'kvCacheBytes'],
  PETSERVE_MAX_STEP_TOKENS: ['generation', 'maxStepTokens'],
  PETSERVE_SCHEDULER_POLICY: ['scheduler', 'policy'],
  PETSERVE_MAX_BATCH_TOKENS: ['scheduler', 'maxBatchTokens'],
  PETSERVE_MAX_BATCH_ROWS: ['scheduler', 'maxBatchRows'],
  PETSERVE_MAX_QUEUE: ['scheduler', 'maxQueue'],
  PETSERVE_SLO_MS: ['scheduler', 'defaultSloMs'],
  PETSERVE_COST_CACHE_DIR: ['scheduler', 'costCacheDir'],
  PETSERVE_HOST: ['server', 'host'],
  PETSERVE_PORT: ['server', 'port'],
  PETSERVE_ADMIN_TOKEN: ['server', 'adminToken'],
  PETSERVE_API_KEYS: ['server', 'apiKeys'],
  PETSERVE_PUBLIC_METRICS: ['server', 'publicMetrics'],
  PETSERVE_PUBLIC_STATUS: ['server', 'publicStatus'],
  PETSERVE_TASKS_DIR: ['server', 'tasksDir'],
  PETSERVE_REGISTER_ROOT: ['server', 'registerRoot'],
  PETSERVE_UPLOAD_DIR: ['server', 'uploadDir'],
  REDIS_URL: ['redis', 'url'],
  PETSERVE_CATALOG_BLOB_DIR: ['catalog', 'blobDir'],
  PETSERVE_CATALOG_CACHE_DIR: ['catalog', 'cacheDir'],
  PETSERVE_BATCH_PREFIX: ['batches', 'prefix'],
  PETSERVE_BATCH_CHUNK_SIZE: ['batches', 'chunkSize'],
  PETSERVE_WORKER_CONCURRENCY: ['batches', 'workerConcurrency'],
  PETSERVE_WORKER_METRICS_PORT: ['metrics', 'workerPort'],
};

type Tree = Record<string, unknown>;

function setPath(tree: Tree, path: string[], value: unknown): void {
  let node = tree;
  for (const key of path.slice(0, -1)) {
    const child = node[key];
    if (typeof child !== 'object' || child === null) node[key] = {};
    node = node[key] as Tree;
  }
  node[path[path.length - 1]!] = value;
}

export interface LoadConfigOptions {
  /** YAML file to read; a missing file is an error. */
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Final overrides (from CLI flags), as dotted paths: { 'model.dtype': 'f16' }. */
  overrides?: Record<string, unknown>;
}

export function loadConfig(opts: LoadConfigOptions = {}): PetServeConfig {
  let tree: Tree = {};
  if (opts.file) {
    let text: string;
    try {
      text = readFileSync(opts.file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${opts.file}: ${(err as Error).message}`, { cause: err });
    }
    try {
      tree = (parseYaml(text) as Tree | null) ?? {};
    } catch (err) {
      throw new ConfigError(`config file ${opts.file} is not valid YAML: ${(err as Error).message}`, { cause: err });
    }
    if (typeof tree !== 'object' || Array.isArray(tree)) throw new ConfigError(`config file ${opts.file} must be a mapping`);
  }
  const env = opts.env ?? {};
  for (const [name, path] of Object.entries(ENV_KEYS)) {
    const v = env[name];
    if (v !== undefined && v !== '') setPath(tree, path, v);
  }
  for (const [dotted, v] of Object.entries(opts.overrides ?? {})) {
    if (v !== undefined) setPath(tree, dotted.split('.'), v);
  }
  const parsed = configSchema.safeParse(tree);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid configuration: ${issues}`);
  }
  return parsed.data;
}
