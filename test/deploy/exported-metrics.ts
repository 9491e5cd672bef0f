import { Registry } from 'prom-client';
import { GenerationMetrics } from '../../src/metrics/generation.js';
import { createMetrics } from '../../src/metrics/metrics.js';

/**
 * Every series name a PetServe process can export: all metrics defined with
 * every collector bound (and the opt-in per-task counter, and the generation
 * metrics of a server with a decoder), histograms expanded
 * to their `_bucket`/`_sum`/`_count` series. Dashboards and alerts may only
 * query these (plus Prometheus' own `up`).
 */
export async function exportedSeriesNames(): Promise<Set<string>> {
  const reg = new Registry();
  const m = createMetrics(reg, { perTaskTopK: 1 });
  m.bindMemory({ memory: () => ({ baseModelBytes: 0, activationArenaBytes: 0, pool: null }), taskMemory: () => [] });
  m.bindScheduler({ stats: () => ({ policy: 'slo', queued: 0, queuedOnline: 0, queuedOffline: 0, inFlightBatches: 0, maxQueue: 1, batchesRun: 0, requestsDone: 0 }) });
  m.bindQueue({ jobCounts: async () => ({}), workers: async () => 0 });
  new GenerationMetrics(reg);
  const names = new Set<string>();
  for (const metric of await reg.getMetricsAsJSON()) {
    // prom-client's typings declare `type` as a numeric enum; at run time it is the string 'histogram'.
    if (String(metric.type) === 'histogram') {
      for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${metric.name}${suffix}`);
    } else {
      names.add(metric.name);
    }
  }
  return names;
}

/** Metric names a PromQL expression refers to (PetServe's prefix only; functions and labels are not matched). */
export function petserveNamesIn(expr: string): string[] {
  // Label values in quotes are not names: drop string literals first.
  const code = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  return [...new Set(code.match(/\bpetserve_[a-z0-9_]+/g) ?? [])];
}
