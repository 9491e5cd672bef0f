import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { promtool } from '../metrics/promtool.js';
import { exportedSeriesNames, petserveNamesIn } from './exported-metrics.js';

interface Target {
  expr?: string;
  datasource?: { uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid?: string };
  targets?: Target[];
  panels?: Panel[];
}

const dashboard = JSON.parse(readFileSync('configs/grafana/dashboards/petserve.json', 'utf8')) as { uid: string; panels: Panel[] };
const panels: Panel[] = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queryPanels = panels.filter((p) => p.type !== 'row');
const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr ?? '' })));

describe('Grafana dashboard', () => {
  it('queries only metrics the server exports, and every panel queries at least one', async () => {
    const exported = await exportedSeriesNames();
    expect(queryPanels.length).toBeGreaterThan(10);
    for (const p of queryPanels) expect(p.targets?.length ?? 0, `panel '${p.title}' has no query`).toBeGreaterThan(0);
    for (const { panel, expr } of exprs) {
      const names = petserveNamesIn(expr);
      expect(names.length, `panel '${panel}': no PetServe metric in ${expr}`).toBeGreaterThan(0);
      for (const n of names) expect(exported.has(n), `panel '${panel}' queries ${n}, which is not exported`).toBe(true);
    }
  });

  it('covers throughput, latency, SLO, batching, PET overhead, GPU time, memory, queue depth and page-ins', () => {
    const used = new Set(exprs.flatMap((e) => petserveNamesIn(e.expr)));
    for (const n of [
      'petserve_requests_total',
      'petserve_request_latency_seconds_bucket',
      'petserve_slo_misses_total',
      'petserve_batch_requests_sum',
      'petserve_pet_overhead_ratio',
      'petserve_batch_device_seconds_sum',
      'petserve_base_model_bytes',
      'petserve_pet_pool_used_bytes',
      'petserve_scheduler_queue_depth',
      'petserve_queue_jobs',
      'petserve_pet_page_ins_total',
    ]) {
      expect(used.has(n), `dashboard never shows ${n}`).toBe(true);
    }
  });

  it('has a Generation row with TTFT, inter-token and e2e latency, tokens/s, sequences, KV blocks, prefix-cache hits and LoRA share', () => {
    const rowIndex = dashboard.panels.findIndex((p) => p.type === 'row' && p.title === 'Generation');
    expect(rowIndex).toBeGreaterThan(0);
    const nextRow = dashboard.panels.findIndex((p, i) => i > rowIndex && p.type === 'row');
    const inRow = dashboard.panels.slice(rowIndex + 1, nextRow < 0 ? undefined : nextRow);
    const names = new Set(inRow.flatMap((p) => (p.targets ?? []).flatMap((t) => petserveNamesIn(t.expr ?? ''))));
    for (const n of [
      'petserve_generation_ttft_seconds_bucket',
      'petserve_generation_inter_token_seconds_bucket',
      'petserve_generation_e2e_seconds_bucket',
      'petserve_generation_prompt_tokens_total',
      'petserve_generation_generated_tokens_total',
      'petserve_generation_running_sequences',
      'petserve_generation_waiting_sequences',
      'petserve_generation_preempted_total',
      'petserve_generation_kv_blocks_used',
      'petserve_generation_kv_blocks_capacity',
      'petserve_generation_prefix_cache_hit_ratio',
      'petserve_generation_lora_device_share',
    ]) {
      expect(names.has(n), `the Generation row never shows ${n}`).toBe(true);
    }
  });

  it('has PromQL that Prometheus parses (checked as recording rules by promtool)', () => {
    // Grafana substitutes $__rate_interval before sending a query; any valid duration stands in for it.
    const rules = exprs.map((e, i) => ({ record: `petserve:dashboard_query_${i}`, expr: e.expr.replaceAll('$__rate_interval', '1m') }));
    const dir = mkdtempSync(join(tmpdir(), 'petserve-dash-'));
    const file = join(dir, 'rules.yml');
    writeFileSync(file, toYaml({ groups: [{ name: 'dashboard', rules }] }));
    const r = promtool(['check', 'rules', file]);
    expect(r.output).toContain(`SUCCESS: ${rules.length} rules found`);
    expect(r.status).toBe(0);
  });

  it('uses the provisioned datasource and unique panel ids', () => {
    const ds = parseYaml(readFileSync('configs/grafana/provisioning/datasources/prometheus.yml', 'utf8')) as { datasources: { uid: string; url: string }[] };
    const uid = ds.datasources[0]!.uid;
    expect(ds.datasources[0]!.url).toBe('http://prometheus:9090');
    for (const p of queryPanels) {
      expect(p.datasource?.uid, p.title).toBe(uid);
      for (const t of p.targets ?? []) expect(t.datasource?.uid, p.title).toBe(uid);
    }
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const provider = parseYaml(readFileSync('configs/grafana/provisioning/dashboards/petserve.yml', 'utf8')) as { providers: { options: { path: string } }[] };
    expect(provider.providers[0]!.options.path).toBe('/var/lib/grafana/dashboards');
  });
});
