import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
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

  it('fires the generation alerts on a nearly full KV cache and on a growing backlog, not on a busy but steady decoder (promtool test rules)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'petserve-alerts-'));
    const tests = join(dir, 'generation-alerts.test.yml');
    const labels = '{instance="api-1:8080", job="petserve-api"}';
    const steady = '{instance="api-2:8080", job="petserve-api"}';
    writeFileSync(
      tests,
      toYaml({
        rule_files: [join(process.cwd(), 'configs/prometheus-alerts.yml')],
        evaluation_interval: '1m',
        tests: [
          {
            interval: '1m',
            input_series: [
              // api-1: 95% of the KV cache held for 30 minutes, waiting sequences rising by one a minute.
              { series: `petserve_generation_kv_blocks_used${labels}`, values: '950x30' },
              { series: `petserve_generation_kv_blocks_capacity${labels}`, values: '1000x30' },
              { series: `petserve_generation_waiting_sequences${labels}`, values: '1+1x30' },
              // api-2: 70% held, a constant queue of 5.
              { series: `petserve_generation_kv_blocks_used${steady}`, values: '700x30' },
              { series: `petserve_generation_kv_blocks_capacity${steady}`, values: '1000x30' },
              { series: `petserve_generation_waiting_sequences${steady}`, values: '5x30' },
            ],
            alert_rule_test: [
              {
                eval_time: '25m',
                alertname: 'PetServeKvCacheNearlyFull',
                exp_alerts: [{ exp_labels: { severity: 'warning', instance: 'api-1:8080', job: 'petserve-api' }, exp_annotations: { summary: 'api-1:8080: KV cache above 90% of generation.kvCacheBytes' } }],
              },
              {
                eval_time: '28m',
                alertname: 'PetServeGenerationBacklogGrowing',
                exp_alerts: [{ exp_labels: { severity: 'warning', instance: 'api-1:8080', job: 'petserve-api' }, exp_annotations: { summary: 'api-1:8080: generation requests waiting for admission keep growing' } }],
              },
              { eval_time: '5m', alertname: 'PetServeKvCacheNearlyFull', exp_alerts: [] },
            ],
          },
        ],
      }),
    );
    const r = promtool(['test', 'rules', tests]);
    expect(r.output).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });
});
