import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { ConfigError } from '../../src/util/errors.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'petserve-config-'));
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe('configuration: defaults, then file, then env, then flags', () => {
  it('defaults need no file', () => {
    const c = loadConfig();
    expect(c.model.dtype).toBe('auto');
    expect(c.gpu.adapter).toBeNull();
  });

  it('the shipped configs/default.yaml is valid', () => {
    expect(loadConfig({ file: 'configs/default.yaml' }).log.level).toBe('info');
  });

  it('env overrides the file and flags override env', async () => {
    const file = join(dir, 'a.yaml');
    await writeFile(file, 'model:\n  dtype: f16\n  dir: /from/file\ngpu:\n  adapter: nvidia\n');
    const c = loadConfig({ file, env: { PETSERVE_GPU_ADAPTER: 'llvmpipe' }, overrides: { 'model.dir': '/from/flag' } });
    expect(c.model.dtype).toBe('f16');
    expect(c.gpu.adapter).toBe('llvmpipe');
    expect(c.model.dir).toBe('/from/flag');
  });

  it('model.id comes from PETSERVE_MODEL_ID; unset it is null (the runtime then takes the directory name)', () => {
    expect(loadConfig({ env: { PETSERVE_MODEL_ID: 'acme-sentiment' } }).model.id).toBe('acme-sentiment');
    expect(loadConfig({}).model.id).toBeNull();
  });

  it('unknown keys, bad values, bad YAML and missing files are ConfigErrors that name the problem', async () => {
    expect(() => loadConfig({ overrides: { 'gpu.adaptr': 'x' } })).toThrow(/gpu: Unrecognized key: "adaptr"/);
    expect(() => loadConfig({ env: { PETSERVE_DTYPE: 'f64' } })).toThrow(/model\.dtype/);
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'model: [unclosed');
    expect(() => loadConfig({ file: bad })).toThrow(ConfigError);
    expect(() => loadConfig({ file: join(dir, 'none.yaml') })).toThrow(/cannot read config file/);
  });

  it('gpu.dawnToggles: none by default, names from a YAML list or comma-separated env, unknown names and contradictions refused', () => {
    expect(loadConfig().gpu.dawnToggles).toEqual({ enable: [], disable: [] });
    const env = loadConfig({ env: { PETSERVE_DAWN_ENABLE_TOGGLES: 'disable_robustness, disable_workgroup_init', PETSERVE_DAWN_DISABLE_TOGGLES: 'dump_shaders' } });
    expect(env.gpu.dawnToggles).toEqual({ enable: ['disable_robustness', 'disable_workgroup_init'], disable: ['dump_shaders'] });
    expect(loadConfig({ overrides: { 'gpu.dawnToggles.enable': ['skip_validation'] } }).gpu.dawnToggles.enable).toEqual(['skip_validation']);
    // Dawn itself ignores a name it does not know: a typo must fail here, not run with defaults.
    expect(() => loadConfig({ env: { PETSERVE_DAWN_ENABLE_TOGGLES: 'disable_robustnes' } })).toThrow(/gpu\.dawnToggles\.enable\.0/);
    expect(() => loadConfig({ overrides: { 'gpu.dawnToggles': { enable: ['skip_validation'], disable: ['skip_validation'] } } })).toThrow(
      /both enabled and disabled/,
    );
  });

  it('hardening keys: API keys from a YAML list or a comma-separated PETSERVE_API_KEYS, public switches, timeouts', async () => {
    const d = loadConfig().server;
    expect(d).toMatchObject({ apiKeys: [], publicMetrics: true, publicStatus: false, requestTimeoutMs: 60_000, headersTimeoutMs: 20_000 });
    const env = loadConfig({ env: { PETSERVE_API_KEYS: 'first-key-0123456789, second-key-0123456789', PETSERVE_PUBLIC_STATUS: 'true', PETSERVE_PUBLIC_METRICS: 'false' } });
    expect(env.server).toMatchObject({ apiKeys: ['first-key-0123456789', 'second-key-0123456789'], publicStatus: true, publicMetrics: false });
    const file = join(dir, 'keys.yaml');
    await writeFile(file, 'server:\n  apiKeys: [yaml-key-0123456789abc]\n  requestTimeoutMs: 5000\n');
    expect(loadConfig({ file }).server).toMatchObject({ apiKeys: ['yaml-key-0123456789abc'], requestTimeoutMs: 5000 });
    expect(() => loadConfig({ env: { PETSERVE_API_KEYS: 'short' } })).toThrow(/server\.apiKeys\.0: an API key needs at least 16 characters/);
  });
});
