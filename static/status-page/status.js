// PetServe status page: polls GET v1/status and redraws. Plain browser script
// (no build step) so the page needs nothing beyond what the server ships;
// charts use uPlot, loaded before this file as the global `uPlot`.
'use strict';

(function () {
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);

  function fmtNum(x, digits) {
    if (x === null || x === undefined || !Number.isFinite(x)) return '–';
    return x.toLocaleString('en-US', { maximumFractionDigits: digits ?? 1, minimumFractionDigits: 0 });
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
    return ms >= 1000 ? `${fmtNum(ms / 1000, 2)} s` : `${fmtNum(ms, ms < 10 ? 2 : 0)} ms`;
  }
  function fmtPct(r) {
    return r === null || r === undefined || !Number.isFinite(r) ? '–' : `${fmtNum(r * 100, 1)} %`;
  }
  function fmtBytes(b) {
    if (b === null || b === undefined || !Number.isFinite(b)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) {
      b /= 1024;
      i += 1;
    }
    return `${fmtNum(b, b < 10 && i > 0 ? 2 : 1)} ${units[i]}`;
  }
  function setText(id, text) {
    const el = $(id);
    if (el) el.textContent = text;
  }
  function el(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (className) e.className = className;
    return e;
  }
  function kvRows(table, rows) {
    table.replaceChildren(
      ...rows.map(([k, v, swatch]) => {
        const tr = document.createElement('tr');
        const th = el('td');
        if (swatch) th.append(el('span', undefined, `swatch ${swatch}`));
        th.append(document.createTextNode(k));
        tr.append(th, el('td', v));
        return tr;
      }),
    );
  }

  // ---- charts ---------------------------------------------------------------
  const charts = {};
  function chartSize(container) {
    return { width: Math.max(260, container.clientWidth), height: 200 };
  }
  function makeChart(id, series) {
    const container = $(id);
    const opts = {
      ...chartSize(container),
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{}, { size: 56 }],
      series: [{}, ...series.map((s) => ({ spanGaps: false, width: 2, points: { show: false }, ...s }))],
    };
    const empty = [[], ...series.map(() => [])];
    charts[id] = new uPlot(opts, empty, container);
  }
  function initCharts() {
    makeChart('chart-throughput', [{ label: 'req/s', stroke: '#2463d1', fill: 'rgba(36,99,209,0.10)', value: (_u, v) => fmtNum(v, 1) }]);
    makeChart('chart-latency', [
      { label: 'p50', stroke: '#2e9c6a', value: (_u, v) => fmtMs(v) },
      { label: 'p99', stroke: '#b8322a', value: (_u, v) => fmtMs(v) },
    ]);
    makeChart('chart-batch', [{ label: 'requests/batch', stroke: '#d9902f', value: (_u, v) => fmtNum(v, 1) }]);
    window.addEventListener('resize', () => {
      for (const [id, chart] of Object.entries(charts)) chart.setSize(chartSize($(id)));
    });
  }
  function updateCharts(series) {
    const t = series.map((p) => p.t);
    charts['chart-throughput'].setData([t, series.map((p) => p.requestsPerSecond)]);
    charts['chart-latency'].setData([t, series.map((p) => p.p50Ms), series.map((p) => p.p99Ms)]);
    charts['chart-batch'].setData([t, series.map((p) => p.meanBatchRows)]);
  }

  // ---- panels ---------------------------------------------------------------
  function renderInfo(info, uptimeSeconds) {
    const box = $('info');
    const parts = Object.entries(info).filter(([, v]) => v !== null && v !== '');
    parts.push(['uptime', `${fmtNum(uptimeSeconds / 60, 1)} min`]);
    box.replaceChildren(
      ...parts.map(([k, v]) => {
        const span = el('span', `${k} `);
        span.append(el('b', String(v)));
        return span;
      }),
    );
  }

  function renderCards(s) {
    const t = s.traffic;
    setText('throughput', `${fmtNum(t.requestsPerSecond, 1)} /s`);
    setText('tokens', `${fmtNum(t.tokensPerSecond, 0)} tokens/s, last ${fmtNum(t.seconds, 0)} s`);
    setText('p50', fmtMs(t.p50Ms));
    setText('p99', fmtMs(t.p99Ms));
    setText('p90', `p90 ${fmtMs(t.p90Ms)}`);
    setText('slo', fmtPct(t.sloAttainment));
    setText('failed', `${fmtNum(t.failed, 0)} failed of ${fmtNum(t.requests, 0)}`);
    setText('batch', fmtNum(t.meanBatchRows, 1));
    setText('batch-tokens', t.meanBatchTokens === null ? 'no batches' : `${fmtNum(t.meanBatchTokens, 0)} tokens, ${fmtNum(t.batches, 0)} batches`);
    setText('overhead', s.petOverhead ? fmtPct(s.petOverhead.ratio) : '–');
    setText('overhead-sub', s.petOverhead ? `last ${s.petOverhead.batches} profiled batches` : 'no profiled batch yet');
    const sched = s.scheduler;
    const waiting = s.queue ? s.queue.jobs.waiting : null;
    setText('queue-depth', sched ? fmtNum(sched.queued, 0) : '–');
    setText('queue-sub', `${sched ? `${sched.queuedOnline} online, ${sched.queuedOffline} offline` : 'no scheduler'}${waiting !== null ? ` · ${waiting} jobs waiting` : ''}`);
    setText('tasks-count', `${fmtNum(s.tasks.resident, 0)} / ${fmtNum(s.tasks.registered, 0)}`);
    const kinds = Object.entries(s.tasks.byKind).filter(([, v]) => v.registered > 0);
    setText('tasks-sub', kinds.map(([k, v]) => `${k} ${v.registered}`).join(' · ') || 'no tasks');
  }

  function renderMemory(m) {
    const bar = $('mem-bar');
    if (!m) {
      bar.replaceChildren();
      kvRows($('mem-table'), [['no runner', '–']]);
      return;
    }
    const poolUsed = m.petPoolUsedBytes ?? 0;
    const poolFree = m.petPoolBudgetBytes === null ? 0 : Math.max(0, m.petPoolBudgetBytes - poolUsed);
    const parts = [
      ['base model', m.baseModelBytes, 'seg-base'],
      ['PET pool used', poolUsed, 'seg-pool'],
      ['PET pool free', poolFree, 'seg-free'],
      ['activation arena', m.activationArenaBytes, 'seg-arena'],
    ];
    const total = parts.reduce((a, p) => a + p[1], 0) || 1;
    bar.replaceChildren(
      ...parts.map(([name, bytes, cls]) => {
        const d = el('div', undefined, cls);
        d.style.width = `${(bytes / total) * 100}%`;
        d.title = `${name}: ${fmtBytes(bytes)}`;
        return d;
      }),
    );
    kvRows($('mem-table'), [
      ...parts.map(([name, bytes, cls]) => [name, fmtBytes(bytes), cls]),
      ['GPU total', fmtBytes(total)],
      ['PET page-ins / evictions', `${fmtNum(m.pageIns, 0)} / ${fmtNum(m.evictions, 0)}`],
      ['PET host cache', fmtBytes(m.hostCacheBytes)],
    ]);
  }

  function renderOverhead(o) {
    if (!o) {
      kvRows($('overhead-table'), [['no profiled batch yet', '–']]);
      return;
    }
    // Keys are the scheduler's PET op classes: diff and mask share the sparse
    // kernel; BitFit and IA³ run inside the shared GEMM epilogues (no op of their own).
    const names = { sparse: 'sparse (diff, mask)', task_heads: 'task heads', lora: 'LoRA', adapter: 'adapter' };
    const rows = Object.entries(o.byKind)
      .sort((a, b) => b[1] - a[1])
      .map(([cls, r]) => [names[cls] ?? cls, fmtPct(r)]);
    rows.push(['all PET ops', fmtPct(o.ratio)]);
    kvRows($('overhead-table'), rows);
  }

  function renderQueue(s) {
    const rows = [];
    if (s.scheduler) {
      rows.push(['policy', s.scheduler.policy]);
      rows.push(['queued (online / offline)', `${s.scheduler.queuedOnline} / ${s.scheduler.queuedOffline}`]);
      rows.push(['queue limit', fmtNum(s.scheduler.maxQueue, 0)]);
      rows.push(['batches in flight', fmtNum(s.scheduler.inFlightBatches, 0)]);
      rows.push(['batches run / requests done', `${fmtNum(s.scheduler.batchesRun, 0)} / ${fmtNum(s.scheduler.requestsDone, 0)}`]);
      const cm = s.scheduler.costModel;
      if (cm) {
        const err = cm.recentError === null ? '' : `, error ${fmtNum(cm.recentError * 100, 1)} %`;
        rows.push(['cost model', `${cm.phase}, ${fmtNum(cm.batches, 0)} batches${err} (from ${cm.source})`]);
      }
      const adm = s.scheduler.admission;
      if (adm) {
        const learned = adm.learnedFrom > 0 ? `margin learned from ${fmtNum(adm.learnedFrom, 0)} recent batches` : 'fixed margin until 8 batches near the deadline';
        rows.push(['admission', `admits predictions up to ${fmtNum(adm.admitsUpToMs, 0)} ms at the ${fmtNum(adm.sloMs, 0)} ms SLO (${learned})`]);
      }
    }
    for (const [model, k] of Object.entries(s.kernels ?? {})) {
      const progress = k.progress ? ` ${k.progress.done}/${k.progress.total}` : '';
      rows.push([`kernels (${model})`, `${k.state}${progress}: gemm ${k.choices.gemm}, attention ${k.choices.attention}, rows wg${k.choices.rowWorkgroupSize}`]);
    }
    if (s.queue) {
      rows.push(['batch queue', s.queue.up ? 'up' : 'unreachable']);
      for (const [state, n] of Object.entries(s.queue.jobs)) rows.push([`jobs ${state}`, fmtNum(n, 0)]);
      rows.push(['workers', fmtNum(s.queue.workers, 0)]);
    }
    if (rows.length === 0) rows.push(['no scheduler or queue attached', '–']);
    kvRows($('queue-table'), rows);
  }

  function renderTasks(tasks) {
    const body = $('task-rows');
    body.replaceChildren(
      ...tasks.list.map((t) => {
        const tr = document.createElement('tr');
        const kind = el('td');
        kind.append(el('span', t.kind, 'kind'));
        tr.append(
          el('td', t.id),
          kind,
          el('td', fmtBytes(t.gpuBytes), 'num'),
          el('td', fmtBytes(t.hostBytes), 'num'),
          el('td', t.resident ? 'yes' : 'no', t.resident ? 'yes' : 'no'),
          el('td', fmtNum(t.requests, 0), 'num'),
        );
        return tr;
      }),
    );
    setText('tasks-note', tasks.list.length < tasks.registered ? `busiest ${tasks.list.length} of ${tasks.registered}` : `${tasks.registered} registered`);
  }

  function renderGeneration(g) {
    const section = $('generation');
    section.hidden = !g;
    if (!g) return;
    setText('gen-running', fmtNum(g.running, 0));
    setText('gen-waiting', `${fmtNum(g.waiting, 0)} waiting`);
    setText('gen-preempted', fmtNum(g.preemptedTotal, 0));
    setText('gen-ttft', `${fmtMs(g.ttft.p50Ms)} / ${fmtMs(g.ttft.p99Ms)}`);
    setText('gen-ttft-sub', `${fmtNum(g.ttft.requests, 0)} sequences, last ${fmtNum(g.ttft.seconds, 0)} s`);
    setText('gen-tpot', `${fmtMs(g.tpot.p50Ms)} / ${fmtMs(g.tpot.p99Ms)}`);
    setText('gen-tokens', `${fmtNum(g.ttft.tokensPerSecond, 1)} /s`);
    setText('gen-tokens-sub', `of finished sequences, last ${fmtNum(g.ttft.seconds, 0)} s`);
    setText('gen-prefix', fmtPct(g.prefixCacheHitRatio));
    setText('gen-lora', fmtPct(g.loraDeviceShare));
    setText('gen-lora-sub', g.profiledSteps > 0 ? `last ${g.profiledSteps} profiled steps` : 'no profiled step yet');
    // KV blocks: referenced, cached (free but holding a reusable prefix), free.
    const cap = g.kvBlocksCapacity || 1;
    const parts = [
      ['used', g.kvBlocksUsed, 'seg-kv-used'],
      ['cached prefixes', g.kvBlocksCachedFree, 'seg-kv-cached'],
      ['free', Math.max(0, g.kvBlocksCapacity - g.kvBlocksUsed - g.kvBlocksCachedFree), 'seg-free'],
    ];
    $('gen-kv-bar').replaceChildren(
      ...parts.map(([name, n, cls]) => {
        const d = el('div', undefined, cls);
        d.style.width = `${(n / cap) * 100}%`;
        d.title = `${name}: ${fmtNum(n, 0)} blocks`;
        return d;
      }),
    );
    setText('gen-kv', `${fmtNum(g.kvBlocksUsed, 0)} / ${fmtNum(g.kvBlocksCapacity, 0)} used (${fmtPct(g.kvBlocksUsed / cap)})`);
    $('gen-task-rows').replaceChildren(
      ...g.tasks.map((t) => {
        const tr = document.createElement('tr');
        const kind = el('td');
        kind.append(el('span', t.kind, 'kind'));
        tr.append(el('td', t.id), kind, el('td', fmtNum(t.sequences, 0), 'num'));
        return tr;
      }),
    );
    setText('gen-note', g.tasksHidden ? 'per-task rows need an API key or the admin token' : `${g.tasks.length} decoder tasks`);
  }

  function render(s) {
    renderInfo(s.info, s.uptimeSeconds);
    renderCards(s);
    updateCharts(s.series);
    renderMemory(s.memory);
    renderOverhead(s.petOverhead);
    renderQueue(s);
    renderTasks(s.tasks);
    renderGeneration(s.generation);
    setText('updated', new Date(s.generatedAt).toLocaleTimeString());
    // Lets scripted checks (and people) see which snapshot is on screen.
    document.body.dataset.generatedAt = s.generatedAt;
  }

  async function poll() {
    try {
      const res = await fetch('v1/status', { cache: 'no-store', headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`GET v1/status answered ${res.status}`);
      render(await res.json());
      $('error').hidden = true;
    } catch (err) {
      const box = $('error');
      box.textContent = `status unavailable: ${err instanceof Error ? err.message : String(err)}`;
      box.hidden = false;
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  initCharts();
  void poll();
})();
