import type { Registry } from 'prom-client';

/**
 * Read exported values the way Prometheus would see them: through the
 * registry's collection (collect callbacks run), not through metric objects.
 */
type Labels = Record<string, string | number>;

async function samples(reg: Registry, name: string): Promise<{ metricName?: string; labels: Labels; value: number }[]> {
  const json = await reg.getMetricsAsJSON();
  const base = name.replace(/_(bucket|sum|count)$/, '');
  const metric = json.find((m) => m.name === name || m.name === base);
  if (!metric) throw new Error(`metric ${name} is not registered`);
  return (metric.values as { metricName?: string; labels: Labels; value: number }[]).filter(
    (v) => name === base ? v.metricName === undefined || v.metricName === name : v.metricName === name,
  );
}

function matches(labels: Labels, want: Labels): boolean {
  return Object.entries(want).every(([k, v]) => String(labels[k]) === String(v));
}

/** Sum of the samples of `name` whose labels include `labels` (0 when none). */
export async function value(reg: Registry, name: string, labels: Labels = {}): Promise<number> {
  let total = 0;
  for (const s of await samples(reg, name)) if (matches(s.labels, labels)) total += s.value;
  return total;
}

/** Whether any sample of `name` has exactly these label values for the given keys. */
export async function has(reg: Registry, name: string, labels: Labels): Promise<boolean> {
  return (await samples(reg, name)).some((s) => matches(s.labels, labels));
}

/** The single unlabelled value of a gauge (NaN stays NaN). */
export async function gauge(reg: Registry, name: string): Promise<number> {
  const s = await samples(reg, name);
  if (s.length !== 1) throw new Error(`${name}: expected one sample, got ${s.length}`);
  return s[0]!.value;
}

/** Label sets of all samples of `name`. */
export async function labelSets(reg: Registry, name: string): Promise<Labels[]> {
  return (await samples(reg, name)).map((s) => s.labels);
}
