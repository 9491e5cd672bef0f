// Step-by-step math on plain number arrays for the reference's own tests: written
// separately from ops-f64 so a test can recompute a case by hand.

export type Flat = number[];

/** W [rows, cols] row-major times vector x, plus b. */
export function matVec(W: Flat, rows: number, cols: number, x: Flat, b: Flat): Flat {
  const y: Flat = [];
  for (let r = 0; r < rows; r++) {
    let s = b[r]!;
    for (let c = 0; c < cols; c++) s += W[r * cols + c]! * x[c]!;
    y.push(s);
  }
  return y;
}

/** LayerNorm with eps 1e-12 (the tests' configs use transformers' default). */
export function layerNorm(x: Flat, g: Flat, b: Flat, eps = 1e-12): Flat {
  const mean = x.reduce((a, v) => a + v, 0) / x.length;
  const variance = x.reduce((a, v) => a + (v - mean) * (v - mean), 0) / x.length;
  return x.map((v, i) => ((v - mean) / Math.sqrt(variance + eps)) * g[i]! + b[i]!);
}

export const add = (a: Flat, b: Flat): Flat => a.map((v, i) => v + b[i]!);
export const rowOf = (table: Flat, r: number, width: number): Flat => table.slice(r * width, (r + 1) * width);
