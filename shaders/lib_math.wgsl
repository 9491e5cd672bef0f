// Shared math for kernels (inlined with `#include lib_math`).

// erf(x) by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7): WGSL has no erf,
// and Hugging Face BERT's "gelu" is the exact erf form, not the tanh one.
fn erf_approx(x: f32) -> f32 {
  let ax = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * ax);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  let y = 1.0 - poly * exp(-ax * ax);
  return select(-y, y, x >= 0.0);
}

fn gelu_erf(x: f32) -> f32 {
  return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}

// tanh written through exp of a non-positive argument so large |x| cannot
// overflow to inf/inf = NaN on drivers whose builtin tanh is naive.
fn tanh_safe(x: f32) -> f32 {
  let e = exp(-2.0 * abs(x));
  let y = (1.0 - e) / (1.0 + e);
  return select(-y, y, x >= 0.0);
}
