// Comparison helpers for checking GPU outputs against the float64 reference.
//
// The error is norm-relative: max_i |a_i - e_i| / max_i |e_i|. Dividing by the
// tensor's largest magnitude rather than each element's own keeps near-zero
// elements (where fp32 rounding dominates) from producing huge spurious ratios.

/** Floor for the denominator, so an all-zero expected tensor compares absolutely. */
const MIN_SCALE = 1e-6;

function checkSameLength(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string): void {
  if (actual.length !== expected.length) {
    throw new Error(`${label}: length mismatch, actual ${actual.length} vs expected ${expected.length}`);
  }
}

function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]!));
  return m;
}

interface WorstElement {
  error: number;
  index: number;
  scale: number;
}

function worstElement(actual: ArrayLike<number>, expected: ArrayLike<number>): WorstElement {
  const scale = Math.max(maxAbs(expected), MIN_SCALE);
  let worst: WorstElement = { error: 0, index: -1, scale };
  for (let i = 0; i < actual.length; i++) {
    const diff = Math.abs(actual[i]! - expected[i]!);
    // `!(diff <= ...)` so a NaN difference is always reported as the worst.
    if (!(diff <= worst.error * scale)) {
      worst = { error: diff / scale, index: i, scale };
      if (Number.isNaN(diff)) break;
    }
  }
  return worst;
}

/** max|a − e| / max(max|e|, 1e-6); NaN if any element of either side is NaN. */
export function maxRelError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  checkSameLength(actual, expected, 'maxRelError');
  return worstElement(actual, expected).error;
}

/**
 * Throws unless maxRelError(actual, expected) <= tol. Also throws if any actual
 * element is NaN: outputs are poisoned with NaN before kernels run, so NaN means
 * an element was never written. Returns the error on success.
 */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, label: string): number {
  checkSameLength(actual, expected, label);
  let nanCount = 0;
  let firstNan = -1;
  for (let i = 0; i < actual.length; i++) {
    if (Number.isNaN(actual[i])) {
      if (firstNan < 0) firstNan = i;
      nanCount++;
    }
  }
  if (nanCount > 0) {
    throw new Error(
      `${label}: ${nanCount} of ${actual.length} actual elements are NaN (never written?), first at index ${firstNan}`,
    );
  }
  const worst = worstElement(actual, expected);
  if (!(worst.error <= tol)) {
    const a = actual[worst.index];
    const e = expected[worst.index];
    throw new Error(
      `${label}: norm-relative error ${worst.error.toExponential(3)} > tol ${tol.toExponential(3)} ` +
        `at index ${worst.index} (actual ${a}, expected ${e}, |diff| ${Math.abs(a! - e!)}, max|expected| ${worst.scale})`,
    );
  }
  return worst.error;
}

/** Flattens nested reference output ([seq][token][hidden] etc.) to one row-major array. */
export function flattenNested(nested: readonly (number | readonly unknown[])[]): Float64Array {
  const out: number[] = [];
  const visit = (node: unknown): void => {
    if (typeof node === 'number') out.push(node);
    else if (Array.isArray(node)) node.forEach(visit);
    else throw new Error('flattenNested: element is neither a number nor an array');
  };
  visit(nested);
  return Float64Array.from(out);
}
