import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { ENV_KEYS } from '../../src/config/config.js';

/**
 * docker-compose.yml is validated by docker-compose itself (v1, Debian package
 * `docker-compose`, installed by scripts/setup-system.sh): `config` parses,
 * validates against the Compose schema, interpolates variables and prints the
 * resolved file, all without a Docker daemon. No container is started here.
 */
function composeConfig(file: string, env: Record<string, string> = {}): { status: number; stdout: string; stderr: string } {
  const cleanEnv: Record<string, string> = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp', ...env };
  const r = spawnSync('docker-compose', ['-f', file, 'config'], { cwd: resolve('.'), env: cleanEnv, encoding: 'utf8', timeout: 60_000 });
  if (r.error) {
    throw new Error(
      (r.error as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'docker-compose not found: install the Debian package `docker-compose` (sudo bash scripts/setup-system.sh)'
        : `docker-compose failed to start: ${r.error.message}`,
    );
  }
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: unknown[];
  container_name?: string;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

interface Resolved {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
}

// One docker-compose run serves the structural checks (each run takes seconds of Python start-up).
let cached: { status: number; stderr: string; parsed: Resolved | null } | null = null;
const resolved = (): Resolved => {
  if (!cached) {
    const r = composeConfig('docker-compose.yml');
    cached = { status: r.status, stderr: r.stderr, parsed: r.status === 0 ? (parseYaml(r.stdout) as Resolved) : null };
  }
  expect(cached.stderr).toBe('');
  expect(cached.status).toBe(0);
  return cached.parsed!;
};

describe('docker-compose.yml', () => {
  it('is valid Compose and defines redis, api, lb, worker, prometheus and grafana, each with a health check', () => {
    const { services } = resolved();
    expect(Object.keys(services).sort()).toEqual(['api', 'grafana', 'lb', 'prometheus', 'redis', 'worker']);
    for (const [name, s] of Object.entries(services)) {
      expect(s.healthcheck?.test?.[0], `${name} has no health check`).toBe('CMD');
    }
  });

  it('runs `petserve serve` and `petserve worker` from one image, configured only through documented variables', () => {
    const { api, worker } = resolved().services as { api: Service; worker: Service };
    expect(api.command).toEqual(['serve']);
    expect(worker.command).toEqual(['worker']);
    expect(api.image).toBe(worker.image);
    expect(api.build).toBeDefined();
    for (const s of [api, worker]) {
      for (const key of Object.keys(s.environment ?? {})) expect(Object.keys(ENV_KEYS), `${key} is not a config variable`).toContain(key);
      expect(s.environment?.['REDIS_URL']).toBe('redis://redis:6379');
      expect(s.environment?.['PETSERVE_HOST']).toBe('0.0.0.0');
      expect(s.depends_on?.['redis']?.condition).toBe('service_healthy');
    }
    // The worker's metrics port is the one Prometheus discovers replicas on.
    expect(worker.environment?.['PETSERVE_WORKER_METRICS_PORT']).toBe('9464');
    expect(api.environment?.['PETSERVE_PORT']).toBe('8080');
  });

  it('lets the worker scale: no fixed container name, no published port', () => {
    const { worker } = resolved().services as { worker: Service };
    expect(worker.container_name).toBeUndefined();
    expect(worker.ports).toBeUndefined();
  });

  it('runs two api replicas with a shared catalog behind haproxy, which alone publishes the port', () => {
    const { api, lb } = resolved().services as { api: Service & { scale?: number }; lb: Service };
    expect(api.scale).toBe(2);
    expect(api.ports).toBeUndefined();
    expect(api.container_name).toBeUndefined();
    expect(api.environment?.['PETSERVE_CATALOG_BLOB_DIR']).toMatch(/^\/app\/\.cache\//); // on the shared volume
    expect(api.environment?.['PETSERVE_CATALOG_CACHE_DIR']).not.toMatch(/^\/app\/\.cache\//); // per container
    expect(lb.ports).toHaveLength(1);
    expect(lb.command).toEqual(expect.arrayContaining(['/usr/local/etc/haproxy/haproxy.cfg', '/usr/local/etc/haproxy/replicas-compose.cfg']));
    expect((lb.volumes ?? [])[0]).toBe(`${resolve('configs/haproxy')}:/usr/local/etc/haproxy:ro`);
  });

  it('mounts models and tasks read-only, the shared cache and Redis data as volumes, and the monitoring configs', () => {
    const { services, volumes } = resolved();
    const targets = (s: Service): string[] => (s.volumes ?? []).map((v) => v.split(':').slice(1).join(':'));
    for (const name of ['api', 'worker']) {
      expect(targets(services[name]!)).toEqual(expect.arrayContaining(['/data/models:ro', '/data/tasks:ro', '/app/.cache:rw']));
    }
    expect(targets(services['redis']!)).toContain('/data:rw');
    expect(Object.keys(volumes).sort()).toEqual(['grafana-data', 'petserve-cache', 'prometheus-data', 'redis-data']);
    const sources = (s: Service): string[] => (s.volumes ?? []).map((v) => v.split(':')[0]!);
    expect(sources(services['prometheus']!)).toEqual(expect.arrayContaining([resolve('configs/prometheus.yml'), resolve('configs/prometheus-alerts.yml')]));
    expect(sources(services['grafana']!)).toEqual(expect.arrayContaining([resolve('configs/grafana/provisioning'), resolve('configs/grafana/dashboards')]));
  });

  it('takes model and task locations from the environment', () => {
    const r = composeConfig('docker-compose.yml', { PETSERVE_MODEL_DIR: '/data/models/bert-base', PETSERVE_MODELS_PATH: '/srv/models' });
    expect(r.status).toBe(0);
    const api = (parseYaml(r.stdout) as { services: Record<string, Service> }).services['api']!;
    expect(api.environment?.['PETSERVE_MODEL_DIR']).toBe('/data/models/bert-base');
    expect(api.volumes).toContain('/srv/models:/data/models:ro');
  });

  it('is checked for real: a file with an unknown service option is refused', () => {
    const broken = readFileSync('docker-compose.yml', 'utf8').replace('  worker:\n', '  worker:\n    replicas_typo: 3\n');
    const dir = mkdtempSync(join(tmpdir(), 'petserve-compose-'));
    writeFileSync(join(dir, 'docker-compose.yml'), broken);
    const r = composeConfig(join(dir, 'docker-compose.yml'));
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('replicas_typo');
  });
});
