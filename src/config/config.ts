import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../util/errors.js';

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
    })
    .prefault({}),
  model: z
    .strictObject({
      /** Hugging Face BERT checkpoint directory (config.json + model.safetensors). */
      dir: z.string().nullable().default(null),
      /** Storage type on the GPU; f16 needs the shader-f16 feature. Accumulation is f32 either way. */
      dtype: z.enum(['f32', 'f16']).default('f32'),
    })
    .prefault({}),
  pets: z
    .strictObject({
      /** GPU pool for resident PETs (clamped to the adapter's largest storage binding). */
      poolBytes: z.coerce.number().int().positive().default(256 * 1024 * 1024),
      /** Host copies of PETs kept in memory; the rest are re-read from disk when paged in. */
      hostCacheBytes: z.coerce.number().int().positive().default(1024 * 1024 * 1024),
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
  PETSERVE_MODEL_DIR: ['model', 'dir'],
  PETSERVE_DTYPE: ['model', 'dtype'],
  PETSERVE_POOL_BYTES: ['pets', 'poolBytes'],
  PETSERVE_HOST_CACHE_BYTES: ['pets', 'hostCacheBytes'],
  PETSERVE_LOG_LEVEL: ['log', 'level'],
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
