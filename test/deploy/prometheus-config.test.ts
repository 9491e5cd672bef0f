import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { promtool } from '../metrics/promtool.js';
import { exportedSeriesNames, petserveNamesIn } from './exported-metrics.js';

interface RuleFile {
  groups: { name: string; rules: { alert?: string; expr: string }[] }[];
}

describe('Prometheus configuration', () => {
  it('is a valid prometheus.yml whose rule file is found and valid (promtool check config)', () => {
    const r = promtool(['check', 'config', 'configs/prometheus.yml']);
    expect(r.output).toContain('SUCCESS: 1 rule files found');
    expect(r.output).toMatch(/SUCCESS: \d+ rules found/);
    expect(r.status).toBe(0);
  });

  it('discovers every API and worker replica by DNS', () => {
    const cfg = parseYaml(readFileSync('configs/prometheus.yml', 'utf8')) as {
      scrape_configs: { job_name: string; metrics_path?: string; static_configs?: { targets: string[] }[]; dns_sd_configs?: { names: string[]; type: string; port: number }[] }[];
    };
    const jobs = new Map(cfg.scrape_configs.map((j) => [j.job_name, j]));
    expect(jobs.get('petserve-api')?.dns_sd_configs?.[0]).toMatchObject({ names: ['api'], type: 'A', port: 8080 });
    expect(jobs.get('petserve-api')?.metrics_path).toBe('/metrics');
    expect(jobs.get('petserve-worker')?.dns_sd_configs?.[0]).toMatchObject({ names: ['worker'], type: 'A', port: 9464 });
  });

  it('alerts only on metrics the server exports (or on up)', async () => {
    const exported = await exportedSeriesNames();
    const rules = parseYaml(readFileSync('configs/prometheus-alerts.yml', 'utf8')) as RuleFile;
    const all = rules.groups.flatMap((g) => g.rules);
    expect(all.length).toBeGreaterThan(5);
    for (const r of all) {
      const names = petserveNamesIn(r.expr);
      if (names.length === 0) expect(r.expr, r.alert).toMatch(/\bup\{/);
      for (const n of names) expect(exported.has(n), `alert ${r.alert} uses ${n}, which is not exported`).toBe(true);
    }
  });
});
