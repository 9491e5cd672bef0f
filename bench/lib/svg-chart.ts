/**
 * Minimal SVG charts for benchmark reports (no dependency, readable in any
 * browser and on GitHub): grouped bars and lines.
 */

const W = 720;
const H = 400;
const M = { left: 70, right: 170, top: 40, bottom: 60 };
const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2'];

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function frame(title: string, xLabel: string, yLabel: string, yMax: number): string[] {
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - M.right / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    `<text x="${(M.left + W - M.right) / 2}" y="${H - 15}" text-anchor="middle">${esc(xLabel)}</text>`,
    `<text transform="translate(18 ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`,
  ];
  const plotH = H - M.top - M.bottom;
  for (let i = 0; i <= 5; i++) {
    const y = M.top + plotH - (plotH * i) / 5;
    out.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${y}" y2="${y}" stroke="#ddd"/>`);
    out.push(`<text x="${M.left - 6}" y="${y + 4}" text-anchor="end">${+((yMax * i) / 5).toPrecision(3)}</text>`);
  }
  return out;
}

function legend(names: readonly string[]): string[] {
  return names.flatMap((n, i) => [
    `<rect x="${W - M.right + 15}" y="${M.top + i * 20}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`,
    `<text x="${W - M.right + 32}" y="${M.top + i * 20 + 10}">${esc(n)}</text>`,
  ]);
}

export interface BarChart {
  title: string;
  xLabel: string;
  yLabel: string;
  categories: readonly string[];
  series: readonly { name: string; values: readonly (number | null)[] }[];
}

export function barChartSvg(c: BarChart): string {
  const yMax = niceMax(Math.max(...c.series.flatMap((s) => s.values.map((v) => v ?? 0))));
  const out = frame(c.title, c.xLabel, c.yLabel, yMax);
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const groupW = plotW / Math.max(1, c.categories.length);
  const barW = (groupW * 0.8) / Math.max(1, c.series.length);
  c.categories.forEach((cat, ci) => {
    const x0 = M.left + ci * groupW + groupW * 0.1;
    out.push(`<text x="${x0 + groupW * 0.4}" y="${H - M.bottom + 16}" text-anchor="middle">${esc(cat)}</text>`);
    c.series.forEach((s, si) => {
      const v = s.values[ci];
      if (v === null || v === undefined || !Number.isFinite(v)) return;
      const h = (plotH * v) / yMax;
      out.push(`<rect x="${x0 + si * barW}" y="${M.top + plotH - h}" width="${barW - 1}" height="${h}" fill="${COLORS[si % COLORS.length]}"/>`);
    });
  });
  out.push(...legend(c.series.map((s) => s.name)), '</svg>');
  return out.join('\n') + '\n';
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly { name: string; points: readonly [number, number][] }[];
}

export function lineChartSvg(c: LineChart): string {
  const xs = c.series.flatMap((s) => s.points.map((p) => p[0]));
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  const yMax = niceMax(Math.max(...c.series.flatMap((s) => s.points.map((p) => p[1]))));
  const out = frame(c.title, c.xLabel, c.yLabel, yMax);
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const px = (x: number): number => M.left + (xMax > xMin ? ((x - xMin) / (xMax - xMin)) * plotW : plotW / 2);
  const py = (y: number): number => M.top + plotH - (plotH * Math.min(y, yMax)) / yMax;
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    out.push(`<text x="${px(x)}" y="${H - M.bottom + 16}" text-anchor="middle">${+x.toPrecision(3)}</text>`);
  }
  c.series.forEach((s, si) => {
    const color = COLORS[si % COLORS.length];
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map((p) => `${px(p[0])},${py(p[1])}`).join(' ')}"/>`);
    for (const p of pts) out.push(`<circle cx="${px(p[0])}" cy="${py(p[1])}" r="3" fill="${color}"/>`);
  });
  out.push(...legend(c.series.map((s) => s.name)), '</svg>');
  return out.join('\n') + '\n';
}
