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

// GPT-2's "gelu_new" (HF ACT2FN "gelu_new" / "gelu_pytorch_tanh"): the tanh
// approximation, which GPT-2 checkpoints were trained with, so the erf form
// would be a (small) model change. For huge |x| x³ overflows to ±inf and
// tanh_safe saturates to ±1, giving x or 0 as the exact form does.
fn gelu_tanh(x: f32) -> f32 {
  return 0.5 * x * (1.0 + tanh_safe(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

// silu(g) = g·sigmoid(g), with the sigmoid built from exp(−|g|) ∈ (0, 1] so no
// intermediate overflows: the textbook exp(g)/(1 + exp(g)) is inf/inf = NaN
// for g ≳ 89 in f32.
fn silu_safe(g: f32) -> f32 {
  let e = exp(-abs(g));
  let sigmoid = select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
  return g * sigmoid;
}
