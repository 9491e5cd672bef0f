import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { ConfigMap, Namespace, PersistentVolumeClaim, Service } from 'kubernetes-models/v1';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { ENV_KEYS } from '../../src/config/config.js';

/**
 * The Kubernetes manifests (configs/kustomization.yaml + configs/k8s/) checked
 * statically: every object against the Kubernetes OpenAPI schemas (the
 * kubernetes-models package validates with them), the kustomization's files
 * exist, and the wiring between objects (selectors, services, probes, the HPA's
 * target, HAProxy's replica names) agrees. No cluster is needed.
 */
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
}

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: never) => Validatable;

/** The schemas of the kinds the manifests use; a kind not listed here fails the test. */
const MODELS: Record<string, ModelClass> = {
  'v1/Namespace': Namespace,
  'v1/Service': Service,
  'v1/ConfigMap': ConfigMap,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
};

function modelFor(obj: { apiVersion: string; kind: string }): ModelClass {
  const cls = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (!cls) throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}`);
  return cls;
}

const kustomization = parseYaml(readFileSync('configs/kustomization.yaml', 'utf8')) as {
  resources: string[];
  namespace: string;
  configMapGenerator: { name: string; files: string[] }[];
};
const objects: K8sObject[] = kustomization.resources.flatMap((file) =>
  parseAllDocuments(readFileSync(join('configs', file), 'utf8')).map((d) => d.toJS() as K8sObject),
);
const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
const named = (kind: string, name: string) => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  expect(o, `${kind}/${name}`).toBeDefined();
  return o!;
};
type PodSpec = { containers: { name: string; env?: { name: string; value?: string }[]; args?: string[]; readinessProbe?: { httpGet?: { path: string } } }[]; volumes?: { configMap?: { name: string }; persistentVolumeClaim?: { claimName: string } }[] };
const podSpec = (o: K8sObject) => (o.spec as { template: { spec: PodSpec; metadata: { labels: Record<string, string>; annotations?: Record<string, string> } } }).template;

describe('Kubernetes manifests', () => {
  it('lists files that exist, including the shared HAProxy configuration', () => {
    for (const r of kustomization.resources) expect(existsSync(join('configs', r)), r).toBe(true);
    const files = kustomization.configMapGenerator.flatMap((g) => g.files.map((f) => f.split('=').pop()!));
    expect(files).toContain('haproxy/haproxy.cfg');
    expect(files).toContain('haproxy/replicas-env.cfg');
    for (const f of files) expect(existsSync(join('configs', f)), f).toBe(true);
  });

  it('every object is valid against the Kubernetes OpenAPI schema', () => {
    expect(objects.length).toBeGreaterThanOrEqual(10);
    for (const o of objects) {
      const Model = modelFor(o);
      expect(() => new Model(o as never).validate(), `${o.kind}/${o.metadata.name}`).not.toThrow();
    }
  });

  it('the schema check catches a broken object (so the test above can fail)', () => {
    const broken = structuredClone(named('StatefulSet', 'petserve-api')) as K8sObject & { spec: { replicas: unknown } };
    broken.spec.replicas = 'three';
    expect(() => new StatefulSet(broken as never).validate()).toThrow();
    const badPort = structuredClone(named('Service', 'petserve')) as K8sObject & { spec: { ports: { port: unknown }[] } };
    badPort.spec.ports[0]!.port = 'eighty';
    expect(() => new Service(badPort as never).validate()).toThrow();
    // (Like the API server, these schemas accept unknown fields; kubeconform --strict would refuse them.)
  });

  it('selectors match their pods and every Service selects a workload', () => {
    const workloads = [...byKind('Deployment'), ...byKind('StatefulSet')];
    for (const w of workloads) {
      const sel = (w.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;
      expect(podSpec(w).metadata.labels, w.metadata.name).toMatchObject(sel);
    }
    for (const s of byKind('Service')) {
      const sel = (s.spec as { selector: Record<string, string> }).selector;
      expect(workloads.some((w) => Object.entries(sel).every(([k, v]) => podSpec(w).metadata.labels[k] === v)), s.metadata.name).toBe(true);
    }
  });

  it('api pods serve on 8080 with readiness on /v2/health/ready and are scraped by Prometheus', () => {
    const api = podSpec(named('StatefulSet', 'petserve-api'));
    expect(api.spec.containers[0]!.args).toEqual(['serve']);
    expect(api.spec.containers[0]!.readinessProbe?.httpGet?.path).toBe('/v2/health/ready');
    expect(api.metadata.annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': '8080' });
    expect((named('StatefulSet', 'petserve-api').spec as { serviceName: string }).serviceName).toBe('petserve-api');
    expect((named('Service', 'petserve-api').spec as { clusterIP: string }).clusterIP).toBe('None');
  });

  it("HAProxy's replicas are the api StatefulSet's pod names, and it mounts the generated config", () => {
    const sts = named('StatefulSet', 'petserve-api');
    const replicas = (sts.spec as { replicas: number }).replicas;
    const lb = podSpec(named('Deployment', 'petserve-lb'));
    const env = new Map(lb.spec.containers[0]!.env!.map((e) => [e.name, e.value]));
    for (let i = 0; i < replicas; i++) expect(env.get(`PETSERVE_REPLICA_${i + 1}`)).toBe(`petserve-api-${i}.petserve-api:8080`);
    // The replicas file names exactly as many servers as there are replicas.
    const cfg = readFileSync('configs/haproxy/replicas-env.cfg', 'utf8');
    expect(cfg.match(/^\s*server r\d+ /gm)).toHaveLength(replicas);
    expect(lb.spec.volumes?.some((v) => v.configMap?.name === 'petserve-haproxy')).toBe(true);
  });

  it('the worker HPA scales the worker Deployment on the metric the adapter rule serves', () => {
    const hpa = named('HorizontalPodAutoscaler', 'petserve-worker').spec as {
      scaleTargetRef: { kind: string; name: string };
      metrics: { type: string; external: { metric: { name: string } } }[];
    };
    expect(hpa.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: 'petserve-worker' });
    const metric = hpa.metrics[0]!.external.metric.name;
    const rules = parseYaml(named('ConfigMap', 'petserve-prometheus-adapter').data!['config.yaml']!) as {
      externalRules: { name: { as: string }; metricsQuery: string }[];
    };
    const rule = rules.externalRules.find((r) => r.name.as === metric);
    expect(rule, metric).toBeDefined();
    expect(rule!.metricsQuery).toContain('petserve_queue_jobs');
  });

  it('api and workers share the ReadWriteMany volume, which holds the catalog blob directory', () => {
    const pvc = named('PersistentVolumeClaim', 'petserve-shared').spec as { accessModes: string[] };
    expect(pvc.accessModes).toEqual(['ReadWriteMany']);
    for (const w of [named('StatefulSet', 'petserve-api'), named('Deployment', 'petserve-worker')]) {
      expect(podSpec(w).spec.volumes?.some((v) => v.persistentVolumeClaim?.claimName === 'petserve-shared'), w.metadata.name).toBe(true);
      const env = new Map(podSpec(w).spec.containers[0]!.env!.map((e) => [e.name, e.value]));
      expect(env.get('PETSERVE_CATALOG_BLOB_DIR'), w.metadata.name).toMatch(/^\/data\/shared\//);
      for (const key of env.keys()) expect(Object.keys(ENV_KEYS), `${key} is not a config variable`).toContain(key);
    }
  });
});
