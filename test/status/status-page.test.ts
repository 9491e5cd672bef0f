import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PET_KINDS } from '../../src/pet/types.js';
import { mulberry32, predict, startLiveServer, type LiveServer, type LiveTask } from './live-server.js';

/**
 * The status page in headless Chromium (Debian package `chromium`, driven by
 * playwright-core) against the real server under load. The screenshot lands in
 * docs/status-page.png when PETSERVE_UPDATE_SCREENSHOT=1, else in a temp dir.
 */
const CHROMIUM = process.env['PETSERVE_CHROMIUM'] ?? '/usr/bin/chromium';
const CLIENTS = 6;
// LoRA adapters of the random llama-tiny decoder served beside the encoder.
const DECODER_TASKS = ['support-chat', 'sql-writer', 'summarizer'];
// Four tasks per kind with names like a real deployment; a few embedding tasks.
const NAMES = ['sentiment', 'topic', 'toxicity', 'intent'];
const TASKS: LiveTask[] = PET_KINDS.flatMap((kind, k) =>
  NAMES.map((name, i) => ({ id: `${name}-${kind}`, kind, numLabels: (k + i) % 7 === 3 ? 0 : 2 + (i % 3) })),
);

let live: LiveServer;
let browser: Browser;
let shotDir: string;

/** Closed-loop clients for `ms`: each sends a request, waits for the answer, sends the next. Task popularity is skewed (Zipf-like). */
async function drive(ms: number, clients: number, seed: number): Promise<number> {
  const rand = mulberry32(seed);
  const weights = TASKS.map((_, i) => 1 / (i + 1));
  const total = weights.reduce((a, b) => a + b, 0);
  const pick = (): string => {
    let r = rand() * total;
    for (const [i, w] of weights.entries()) if ((r -= w) <= 0) return TASKS[i]!.id;
    return TASKS[0]!.id;
  };
  const until = Date.now() + ms;
  let sent = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (Date.now() < until) {
        const status = await predict(live.url, pick(), 2 + Math.floor(rand() * 24), rand);
        if (status !== 200) throw new Error(`predict answered ${status}`);
        sent += 1;
      }
    }),
  );
  return sent;
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install the Debian package \`chromium\` (sudo bash scripts/setup-system.sh) or set PETSERVE_CHROMIUM`);
  }
  // Tight pool (as many of the largest tasks as clients can put in one batch): some tasks are paged out.
  live = await startLiveServer(TASKS, { tightPoolFor: CLIENTS, decoderTasks: DECODER_TASKS });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  shotDir = await mkdtemp(join(tmpdir(), 'petserve-shot-'));
}, 600_000);

afterAll(async () => {
  await browser?.close();
  await live?.close();
  if (shotDir) await rm(shotDir, { recursive: true, force: true });
});

describe('status page', () => {
  it('renders live traffic, tasks, memory and charts from local assets only, without script errors', async () => {
    // Traffic in three phases so the charts show changing load: 25 s in all.
    let sent = 0;
    for (const [ms, clients, seed] of [[8000, 2, 1], [9000, CLIENTS, 2], [8000, 4, 3]] as const) sent += await drive(ms, clients, seed);
    expect(sent).toBeGreaterThan(30);

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 }, deviceScaleFactor: 1 });
    const problems: string[] = [];
    const origins = new Set<string>();
    page.on('console', (m) => {
      // Chromium's own "Failed to load resource" line duplicates the response check below.
      if ((m.type() === 'error' || m.type() === 'warning') && !m.text().startsWith('Failed to load resource')) problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => origins.add(new URL(r.url()).origin));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
    });

    await page.goto(`${live.url}/`);
    await page.waitForSelector('body[data-generated-at]', { timeout: 30_000 });
    // Rendered from a fresh snapshot after the traffic.
    await page.waitForFunction(`document.querySelectorAll('#task-rows tr').length === ${TASKS.length}`, undefined, { timeout: 30_000 });

    const text = async (sel: string): Promise<string> => ((await page.textContent(sel)) ?? '').trim();
    expect(await text('#throughput')).toMatch(/^\d+(\.\d)? \/s$/);
    expect(await text('#p50')).toMatch(/^\d+(\.\d+)? m?s$/);
    expect(await text('#p99')).toMatch(/^\d+(\.\d+)? m?s$/);
    expect(await text('#slo')).toMatch(/%$/);
    expect(await text('#batch')).toMatch(/^\d/);
    expect(await text('#overhead')).toMatch(/%$/);
    expect(await text('#queue-depth')).toMatch(/^\d+$/);
    const resident = await text('#tasks-count');
    const [res, reg] = resident.split(' / ').map(Number);
    expect(reg).toBe(TASKS.length);
    expect(res).toBeGreaterThan(0);
    expect(res).toBeLessThan(TASKS.length);
    expect(await text('#info')).toContain('bert-tiny');

    // The busiest task is first and its count is the server's.
    const firstRow = await page.$$eval('#task-rows tr:first-child td', (tds) => tds.map((td) => td.textContent ?? ''));
    expect(firstRow[0]).toBe(TASKS[0]!.id);
    expect(Number(firstRow[5]!.replace(/,/g, ''))).toBe(live.metrics.taskRequests.get(TASKS[0]!.id));
    expect(Number(firstRow[5]!.replace(/,/g, ''))).toBeGreaterThan(0);

    // GPU memory split: four segments whose widths add up to the whole bar.
    const widths = await page.$$eval('#mem-bar > div', (ds) => ds.map((d) => parseFloat((d as unknown as { style: { width: string } }).style.width)));
    expect(widths.length).toBe(4);
    expect(widths.reduce((a, b) => a + b, 0)).toBeCloseTo(100, 3);
    expect(await text('#mem-table')).toMatch(/base model\s*[\d.]+ (KiB|MiB)/);

    // Three uPlot charts, each with series drawn from several points.
    expect(await page.locator('.uplot').count()).toBe(3);
    const points = await page.evaluate(async () => {
      const res = await fetch('v1/status');
      return ((await res.json()) as { series: unknown[] }).series.length;
    });
    expect(points).toBeGreaterThanOrEqual(4);

    // Everything came from the server itself (no CDN), and nothing was blocked (helmet's CSP is on).
    expect([...origins]).toEqual([live.url]);
    expect(problems).toEqual([]);

    const shot = process.env['PETSERVE_UPDATE_SCREENSHOT'] === '1' ? 'docs/status-page.png' : join(shotDir, 'status-page.png');
    await page.screenshot({ path: shot, fullPage: true });
    const png = await readFile(shot);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(png.length).toBeGreaterThan(20_000);
    await page.close();
  });

  it('shows a Generation section from the decoder: sequences, KV blocks, TTFT/TPOT, LoRA share and per-task counts matching /metrics', async () => {
    // A few chat requests over the adapters (two each, one of them streamed) and one on the base.
    const chat = async (model: string, stream: boolean): Promise<void> => {
      const res = await fetch(`${live.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: `hello from ${model}` }], max_tokens: 6, temperature: 0, stream }),
      });
      const body = await res.text();
      expect(res.status).toBe(200);
      if (stream) expect(body.trimEnd().endsWith('data: [DONE]')).toBe(true);
    };
    await Promise.all(DECODER_TASKS.flatMap((t, i) => (i === 0 ? [chat(t, true), chat(t, false), chat(t, false)] : [chat(t, true), chat(t, false)])));
    await chat('decoder', false);
    const metricsText = await (await fetch(`${live.url}/metrics`)).text();
    const metric = (name: string): number => Number(metricsText.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ')[1]);

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 }, deviceScaleFactor: 1 });
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    await page.goto(`${live.url}/`);
    await page.waitForSelector('#generation:not([hidden])', { timeout: 30_000 });
    await page.waitForFunction(`document.querySelectorAll('#gen-task-rows tr').length === ${DECODER_TASKS.length}`, undefined, { timeout: 30_000 });
    const text = async (sel: string): Promise<string> => ((await page.textContent(sel)) ?? '').trim();

    expect(await text('#gen-running')).toBe('0');
    expect(await text('#gen-waiting')).toBe('0 waiting');
    expect(await text('#gen-preempted')).toBe(String(metric('petserve_generation_preempted_total')));
    expect(await text('#gen-ttft')).toMatch(/^\d+(\.\d+)? m?s \/ \d+(\.\d+)? m?s$/);
    expect(await text('#gen-tpot')).toMatch(/^\d+(\.\d+)? m?s \/ \d+(\.\d+)? m?s$/);
    expect(await text('#gen-ttft-sub')).toMatch(/^8 sequences/);
    expect(await text('#gen-tokens')).toMatch(/^\d+(\.\d)? \/s$/);
    expect(await text('#gen-prefix')).toMatch(/%$/);
    // Every other step is profiled per dispatch: the adapters' share is a real fraction.
    expect(await text('#gen-lora')).toMatch(/^\d+(\.\d)? %$/);
    expect(metric('petserve_generation_lora_device_share')).toBeGreaterThan(0);
    expect(metric('petserve_generation_lora_device_share')).toBeLessThan(1);
    // KV bar: used, cached prefixes and free make up the capacity; nothing is held after the requests.
    const kvWidths = await page.$$eval('#gen-kv-bar > div', (ds) => ds.map((d) => parseFloat((d as unknown as { style: { width: string } }).style.width)));
    expect(kvWidths.length).toBe(3);
    expect(kvWidths[0]).toBe(0);
    expect(kvWidths.reduce((a, b) => a + b, 0)).toBeCloseTo(100, 3);
    expect(await text('#gen-kv')).toBe(`0 / ${metric('petserve_generation_kv_blocks_capacity').toLocaleString('en-US')} used (0 %)`);

    // The busiest decoder task first, with the count of sequences it finished.
    const rows = await page.$$eval('#gen-task-rows tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')));
    expect(rows[0]).toEqual([DECODER_TASKS[0], 'lora', '3']);
    expect(rows.slice(1).map((r) => r[2])).toEqual(['2', '2']);
    expect(rows.reduce((n, r) => n + Number(r[2]), 0) + 1).toBe(metric('petserve_generation_e2e_seconds_count'));

    // Without status detail (no key, server.publicStatus off) the rows are withheld and the page says why.
    await page.route('**/v1/status', async (route) => {
      const res = await route.fetch();
      const body = (await res.json()) as { generation: Record<string, unknown> };
      await route.fulfill({ response: res, json: { ...body, generation: { ...body.generation, tasks: [], tasksHidden: true } } });
    });
    // Polled from the test: a string predicate in the page would need 'unsafe-eval', which the page's CSP refuses.
    await expect.poll(() => page.locator('#gen-task-rows tr').count(), { timeout: 10_000 }).toBe(0);
    expect(await text('#gen-note')).toContain('API key');
    expect(problems).toEqual([]);
    await page.close();
  });

  it('shows an error banner, not a blank page, when the status endpoint fails', async () => {
    const page = await browser.newPage();
    await page.route('**/v1/status', (route) => route.fulfill({ status: 503, body: 'draining' }));
    await page.goto(`${live.url}/`);
    await page.waitForSelector('#error:not([hidden])', { timeout: 10_000 });
    expect(await page.textContent('#error')).toContain('503');
    await page.close();
  });
});
